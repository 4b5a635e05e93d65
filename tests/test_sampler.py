"""ShapeGroupBatchSampler: shape-homogeneous batches, group order, DDP sharding, exact resume."""

from __future__ import annotations

import pytest

from bundle.workflows.sampler import HYPERCMR_GROUP_ORDER, ShapeGroupBatchSampler

GROUPS = ["T2map"] * 7 + ["cine_sax246"] * 5 + ["aorta_sag"] * 4 + ["zz_unseen"] * 2


def _flatten(batches):
    return [index for batch in batches for _, index in batch]


def test_batches_never_mix_groups_and_use_per_group_sizes():
    sampler = ShapeGroupBatchSampler(GROUPS, batch_size=2, group_batch_sizes={"T2map": 3, "cine_sax246": 1}, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    for batch in batches:
        assert len({GROUPS[i] for _, i in batch}) == 1
        size = {"T2map": 3, "cine_sax246": 1}.get(GROUPS[batch[0][1]], 2)
        assert len(batch) <= size
    assert sorted(_flatten(batches)) == list(range(len(GROUPS)))


def test_paper_order_follows_algorithm_1_then_unknown_groups():
    sampler = ShapeGroupBatchSampler(GROUPS, batch_size=2, group_order="paper", seed=0)
    seen = []
    for batch in sampler:
        name = GROUPS[batch[0][1]]
        if not seen or seen[-1] != name:
            seen.append(name)
    expected = [g for g in HYPERCMR_GROUP_ORDER if g in GROUPS] + ["zz_unseen"]
    assert seen == expected


def test_shuffle_order_interleaves_groups_and_depends_on_epoch():
    sampler = ShapeGroupBatchSampler(GROUPS, batch_size=1, group_order="shuffle", seed=0)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    names = [GROUPS[b[0][1]] for b in first]
    switches = sum(a != b for a, b in zip(names, names[1:]))
    assert switches > len(set(GROUPS))  # not group after group
    assert _flatten(first) != _flatten(second)
    sampler.set_epoch(0)
    assert list(sampler) == first  # a pure function of (seed, epoch)


def test_items_carry_their_epoch():
    sampler = ShapeGroupBatchSampler(GROUPS, batch_size=2, seed=0)
    sampler.set_epoch(4)
    assert all(epoch == 4 for batch in sampler for epoch, _ in batch)


@pytest.mark.parametrize("world", [2, 3])
def test_ddp_shards_are_equal_length_and_cover_everything(world):
    shards = [
        list(ShapeGroupBatchSampler(GROUPS, batch_size=2, seed=5, num_replicas=world, rank=r)) for r in range(world)
    ]
    assert len({len(s) for s in shards}) == 1
    assert len(shards[0]) == len(ShapeGroupBatchSampler(GROUPS, batch_size=2, seed=5, num_replicas=world, rank=0))
    covered = {i for shard in shards for i in _flatten(shard)}
    assert covered == set(range(len(GROUPS)))
    for step in range(len(shards[0])):
        for shard in shards:
            assert len({GROUPS[i] for _, i in shard[step]}) == 1


def test_set_start_skips_consumed_batches_for_resume():
    sampler = ShapeGroupBatchSampler(GROUPS, batch_size=2, group_order="shuffle", seed=9)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2)
    sampler.set_start(3)
    assert list(sampler) == full[3:]
    assert list(sampler) == full  # the offset applies to one pass only
    state = {"epoch": 2, "start": 5, "seed": 9}
    other = ShapeGroupBatchSampler(GROUPS, batch_size=2, group_order="shuffle", seed=0)
    other.load_state_dict(state)
    assert list(other) == full[5:]


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="group_order"):
        ShapeGroupBatchSampler(GROUPS, group_order="random")
    with pytest.raises(ValueError, match="batch size"):
        list(ShapeGroupBatchSampler(GROUPS, group_batch_sizes={"T2map": 0}))
    with pytest.raises(ValueError, match="at least one item"):
        ShapeGroupBatchSampler([])
    with pytest.raises(ValueError, match="rank"):
        ShapeGroupBatchSampler(GROUPS, num_replicas=2, rank=2)


def test_epoch_fraction_uses_a_different_subset_each_epoch():
    full = ShapeGroupBatchSampler(GROUPS, batch_size=1, seed=2)
    half = ShapeGroupBatchSampler(GROUPS, batch_size=1, seed=2, epoch_fraction=0.5)
    assert len(half) == sum(max(1, round(GROUPS.count(g) * 0.5)) for g in set(GROUPS)) < len(full)
    half.set_epoch(0)
    first = set(_flatten(list(half)))
    half.set_epoch(1)
    second = set(_flatten(list(half)))
    assert len(first) == len(half) and first != second
    with pytest.raises(ValueError, match="epoch_fraction"):
        ShapeGroupBatchSampler(GROUPS, epoch_fraction=0.0)

"""Rank liveness without torchrun: waits on a shared in-memory store, the other "rank" played by a thread."""

from __future__ import annotations

import threading
import time

import pytest
import torch.distributed as dist

from bundle.errors import RankLostError
from bundle.workflows.liveness import Heartbeat, beat_interval, lost_after, store_gather, wait_for_ranks


def test_beat_interval_and_lost_after_scale_with_the_timeout_within_bounds():
    assert beat_interval(300) == 2.0 and lost_after(300) == 20.0  # the default timeout: given up after 20 s
    assert beat_interval(30) == pytest.approx(0.3) and lost_after(30) == pytest.approx(3.0)
    assert beat_interval(1) == 0.1 and lost_after(1) == pytest.approx(1.0)


def test_wait_returns_once_every_rank_arrived():
    store = dist.HashStore()
    Heartbeat(store, 1, 0.05).start().stop()
    late = threading.Timer(0.3, lambda: store.set("k/arrived/1", b"1"))
    late.start()
    start = time.monotonic()
    wait_for_ranks(store, "k", 0, 2, timeout=10, stall_s=5)
    assert 0.25 < time.monotonic() - start < 5
    late.join()


def test_a_rank_without_heartbeats_is_named_soon_and_not_after_the_timeout():
    store = dist.HashStore()  # rank 1 beat once (at start-up), then died
    store.add("heartbeat/1", 1)
    start = time.monotonic()
    with pytest.raises(RankLostError, match=r"rank 1 of 2 stopped sending heartbeats .*killed or hung") as info:
        wait_for_ranks(store, "end", 0, 2, timeout=60, stall_s=0.5, what="the end")
    assert 0.5 <= time.monotonic() - start < 10
    assert info.value.ranks == [1] and "'the end'" in str(info.value)


def test_a_rank_that_beats_but_never_arrives_is_named_at_the_timeout():
    store = dist.HashStore()
    beating = Heartbeat(store, 2, 0.05).start()  # rank 2 is alive but hung in its main thread
    store.set("k/arrived/1", b"1")
    try:
        start = time.monotonic()
        with pytest.raises(RankLostError, match=r"rank 2 of 3 did not arrive .*still sends heartbeats") as info:
            wait_for_ranks(store, "k", 0, 3, timeout=1.0, stall_s=0.5)
        assert 1.0 <= time.monotonic() - start < 10
        assert info.value.ranks == [2]
    finally:
        beating.stop()
    assert not beating._thread.is_alive()  # joined, not left running into interpreter shutdown


def test_store_gather_gives_every_rank_all_objects_in_rank_order():
    store = dist.HashStore()
    results = {}

    def rank(r):
        results[r] = store_gather(store, "g", {"rank": r}, r, 3, timeout=10)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {r: [{"rank": 0}, {"rank": 1}, {"rank": 2}] for r in range(3)}

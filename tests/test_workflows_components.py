"""Dataset bad-data policy, per-item random state, step guard and crash-safe checkpoints."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents
from monai.transforms import Compose, MapTransform, Randomizable

from bundle.errors import NonFiniteDataError
from bundle.workflows.checkpoint import (
    AtomicCheckpointSaver,
    ResumeFromCheckpoint,
    RNGState,
    atomic_torch_save,
    latest_checkpoint,
)
from bundle.workflows.dataset import ReconDataset
from bundle.workflows.handlers import BadDataReport, NonFiniteLossError, SkippedDataError, StepGuard


class FailOn(MapTransform):
    """Raises a data error for the listed files, like LoadCMRSliced does for NaN k-space."""

    def __init__(self, bad):
        super().__init__(keys="file")
        self.bad = set(bad)

    def __call__(self, d):
        if d["file"] in self.bad:
            raise NonFiniteDataError.at(d["file"], "k-space contains NaN")
        return dict(d)


class Noise(Randomizable, MapTransform):
    def __init__(self):
        super().__init__(keys="file")

    def randomize(self, data=None):
        self.value = self.R.uniform()

    def __call__(self, d):
        self.randomize()
        return dict(d, noise=self.value)


ITEMS = [{"file": f"f{i}.mat", "z": 0, "t": i, "group": "g" if i < 4 else "h"} for i in range(6)]


def test_skip_substitutes_an_item_of_the_same_group_and_reports_it():
    ds = ReconDataset(ITEMS, Compose([FailOn({"f1.mat"})]), on_bad_data="skip")
    sample = ds[1]
    assert sample["file"] == "f2.mat" and sample["group"] == "g"
    assert "f1.mat: k-space contains NaN" in sample["skipped"]
    assert ds[0]["skipped"] == ""


def test_raise_reports_the_file():
    ds = ReconDataset(ITEMS, Compose([FailOn({"f1.mat"})]), on_bad_data="raise")
    with pytest.raises(NonFiniteDataError, match="f1.mat"):
        ds[1]


def test_a_group_with_only_bad_items_fails_clearly():
    ds = ReconDataset(ITEMS, Compose([FailOn({"f4.mat", "f5.mat"})]), on_bad_data="skip")
    with pytest.raises(ValueError, match="no usable item in group .h. near index 4 after 2 bad item"):
        ds[4]


def test_random_state_depends_only_on_seed_epoch_and_index():
    a = ReconDataset(ITEMS, Compose([Noise()]), seed=7)
    b = ReconDataset(ITEMS, Compose([Noise()]), seed=7)
    assert a[(0, 3)]["noise"] == b[(0, 3)]["noise"]
    b[(0, 1)]  # consuming other items must not change item 3
    assert a[(0, 3)]["noise"] == b[(0, 3)]["noise"]
    assert a[(1, 3)]["noise"] != a[(0, 3)]["noise"]


def test_bad_data_report_counts_and_fails_at_the_end():
    report = BadDataReport("training")
    report.record("/data/P001/cine_sax.mat: k-space contains NaN (z=1, t=0)")
    report.record("/data/P001/cine_sax.mat: k-space contains NaN (z=1, t=0)")  # same message counted once
    report.record("/data/P002/T1map.mat: all-zero slice (z=0, t=3)")
    assert report.total == 2
    with pytest.raises(SkippedDataError, match="2 bad item"):
        report.raise_if_any()


def _engine_with(loss_value, model, optimizer, accumulation_steps=1):
    engine = Engine(lambda e, b: None)
    engine.register_events(*IterationEvents)
    engine.optimizer = optimizer
    engine.accumulation_steps = accumulation_steps
    engine.state.iteration = 1
    engine.state.epoch_length = 4
    engine.state.batch = {"file": ["a.mat"], "z": torch.tensor([0]), "t": torch.tensor([2])}
    engine.state.output = {"loss": torch.tensor(loss_value)}
    return engine


def test_step_guard_skips_non_finite_steps_and_stops_after_n():
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    guard = StepGuard(clip_norm=1.0, max_bad_steps=2)
    before = [p.detach().clone() for p in model.parameters()]
    model(torch.ones(1, 3)).sum().mul(float("nan")).backward()
    engine = _engine_with(float("nan"), model, optimizer)
    guard(engine)
    assert all(p.grad is None for p in model.parameters())
    optimizer.step()  # what the trainer does next: a no-op without gradients
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(NonFiniteLossError, match="2 consecutive"):
        model(torch.ones(1, 3)).sum().mul(float("inf")).backward()
        guard(_engine_with(float("inf"), model, optimizer))


def test_step_guard_clips_and_resets_the_counter():
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = StepGuard(clip_norm=0.5, max_bad_steps=3)
    guard.consecutive_bad = 2
    (model(torch.full((1, 3), 100.0)).sum()).backward()
    guard(_engine_with(1.0, model, optimizer))
    norm = torch.sqrt(sum(p.grad.square().sum() for p in model.parameters()))
    assert norm == pytest.approx(0.5, rel=1e-5)
    assert guard.consecutive_bad == 0


def test_atomic_save_failure_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    atomic_torch_save({"w": torch.ones(3)}, path)

    def broken_save(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(3))
    assert os.listdir(tmp_path) == ["model.pt"]  # no temporary file left behind


def test_rng_state_round_trips_through_weights_only_load(tmp_path):
    import random

    rng = RNGState()
    atomic_torch_save({"rng": rng.state_dict()}, tmp_path / "rng.pt")
    expected = (torch.rand(2), np.random.rand(2), random.random())  # noqa: NPY002
    rng.load_state_dict(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    again = (torch.rand(2), np.random.rand(2), random.random())  # noqa: NPY002
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1])
    assert expected[2] == again[2]


def test_checkpoint_saver_keeps_newest_and_resume_loads_it(tmp_path):
    model = torch.nn.Linear(2, 2)
    engine = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(str(tmp_path), {"model": model}, n_saved=2)
    for iteration in (4, 8, 12):
        engine.state.iteration, engine.state.epoch = iteration, iteration // 4
        with torch.no_grad():
            model.weight.fill_(iteration)
        saver.save(engine)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint_e2_i8.pt", "checkpoint_e3_i12.pt"]
    assert latest_checkpoint(tmp_path).name == "checkpoint_e3_i12.pt"
    fresh = torch.nn.Linear(2, 2)
    ResumeFromCheckpoint(str(tmp_path), {"model": fresh})(Engine(lambda e, b: None))
    assert torch.all(fresh.weight == 12)


def _trainer(losses, max_bad_steps, accumulation_steps=1):
    from monai.engines import SupervisedTrainer

    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    data = [{"image": torch.ones(1, 2), "label": torch.zeros(1, 1), "file": ["f.mat"]} for _ in losses]
    calls = iter(losses)

    def loss_fn(pred, label):
        return (pred - label).square().mean() * next(calls)

    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss_function=loss_fn,
        train_handlers=[StepGuard(clip_norm=None, max_bad_steps=max_bad_steps)],
        accumulation_steps=accumulation_steps,
        decollate=False,
    )
    return trainer, model


def test_guard_in_a_monai_trainer_skips_exactly_the_bad_step():
    trainer, model = _trainer([1.0, float("nan"), 1.0], max_bad_steps=3)
    reference, ref_model = _trainer([1.0, 0.0, 1.0], max_bad_steps=3)  # a zero loss leaves SGD weights unchanged
    trainer.run()
    reference.run()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), ref_model.parameters()))


def test_guard_in_a_monai_trainer_stops_after_consecutive_bad_steps():
    trainer, _ = _trainer([1.0, float("nan"), float("inf"), 1.0], max_bad_steps=2)
    with pytest.raises(NonFiniteLossError, match="2 consecutive"):
        trainer.run()


def test_prepare_batch_passes_the_items_acs_width_to_the_network():
    from bundle.workflows.batch import PrepareReconBatch

    batch = {"kspace_masked": torch.zeros(2, 5, 8, 8, dtype=torch.complex64), "mask": torch.ones(2, 5, 8, 8)}
    assert PrepareReconBatch()(dict(batch))[3] == {}  # items without a width: the network's own setting
    assert PrepareReconBatch()(dict(batch, acs_width=torch.tensor([-1, -1])))[3] == {}
    # The network decides whether it uses the items' width (PromptMR.acs_source); the batch only hands it over.
    assert PrepareReconBatch()(dict(batch, acs_width=torch.tensor([24, 24])))[3] == {"acs_width": 24}
    # Widths measured from the official masks of two files may differ: the band both have fully sampled.
    assert PrepareReconBatch()(dict(batch, acs_width=torch.tensor([21, 20])))[3] == {"acs_width": 20}


def _amp_trainer(loss_factors, image: torch.Tensor, init_scale: float, lr: float = 0.1, weight=None):
    """A MONAI trainer with AMP on, a CPU ``GradScaler`` and the loss ``factor * pred`` (bias-free Linear).

    ``d loss / d pred = factor`` is what the scaler multiplies; the parameter gradient is ``factor * image``.
    """
    from monai.engines import SupervisedTrainer

    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1, bias=False)
    if weight is not None:
        with torch.no_grad():
            model.weight.copy_(torch.tensor([weight]))
    data = [{"image": image, "label": torch.zeros(1, 1), "file": ["f.mat"]} for _ in loss_factors]
    factors = iter(loss_factors)
    guard = StepGuard(clip_norm=None, max_bad_steps=5)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=lr),
        loss_function=lambda pred, label: pred.sum() * next(factors),
        train_handlers=[guard],
        amp=True,
        decollate=False,
    )
    # MONAI's Trainer.run() creates a fresh (here disabled, CUDA) scaler, so install the CPU one once it started.
    trainer.add_event_handler(
        Events.STARTED, lambda engine: setattr(engine, "scaler", torch.amp.GradScaler("cpu", init_scale=init_scale))
    )
    return trainer, model, guard


def test_steps_skipped_by_a_calibrating_grad_scaler_do_not_stop_training():
    # d loss / d pred = 1e30 overflows fp32 once scaled by more than ~2**28, so a scaler starting at 2**40
    # skips about 12 steps while it halves itself; the parameter gradient (1e30 * 1e-30) stays near 1.
    trainer, model, guard = _amp_trainer([1e30] * 20, torch.full((1, 2), 1e-30), init_scale=2.0**40)
    before = model.weight.detach().clone()
    trainer.run()  # far more than max_bad_steps overflows in a row, and no NonFiniteLossError
    assert guard.scaler_skipped >= 10 and guard.total_bad == 0
    assert trainer.scaler.get_scale() <= 2.0**29
    assert not torch.equal(before, model.weight)  # it trained once calibrated


def test_non_finite_losses_still_stop_an_amp_run():
    trainer, _, _ = _amp_trainer([float("nan")] * 6, torch.ones(1, 2), init_scale=2.0**16)
    with pytest.raises(NonFiniteLossError, match="5 consecutive"):
        trainer.run()


def test_overflows_that_persist_at_the_minimum_scale_still_stop_an_amp_run():
    # pred = 1e10 - 1e10 = 0 (a finite loss), but each weight's gradient is 1e30 * 1e10: inf even unscaled.
    trainer, _, guard = _amp_trainer([1e30] * 8, torch.full((1, 2), 1e10), init_scale=1.0, weight=[1.0, -1.0])
    with pytest.raises(NonFiniteLossError, match="5 consecutive"):
        trainer.run()
    assert guard.scaler_skipped == 0


def test_cudnn_autotuning_is_on_for_cuda_unless_deterministic(monkeypatch):
    from bundle.workflows import configure_cudnn

    try:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the CUDA branch, emulated on CPU
        assert configure_cudnn(deterministic=False) and torch.backends.cudnn.benchmark
        assert not torch.backends.cudnn.deterministic
        assert not configure_cudnn(deterministic=True) and not torch.backends.cudnn.benchmark
        assert torch.backends.cudnn.deterministic
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        assert not configure_cudnn(deterministic=False)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, False


class _ThreadCounts(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        from threadpoolctl import threadpool_info

        return torch.get_num_threads(), max((pool["num_threads"] for pool in threadpool_info()), default=1)


def test_dataloader_workers_use_one_torch_and_one_blas_thread():
    from threadpoolctl import threadpool_limits

    from bundle.workflows import worker_init

    def counts(init):
        loader = torch.utils.data.DataLoader(_ThreadCounts(), num_workers=1, worker_init_fn=init, batch_size=None)
        return [tuple(map(int, item)) for item in loader]

    with threadpool_limits(limits=2):  # a parent process with 2 BLAS threads, as on the 2-core machines
        assert counts(None)[0][1] == 2  # a plain worker inherits them
        assert counts(worker_init) == [(1, 1), (1, 1)]


def test_logging_handlers_convert_tensors_only_on_logging_iterations(tmp_path, monkeypatch):
    from monai.engines import SupervisedTrainer
    from monai.handlers import StatsHandler, TensorBoardStatsHandler, from_engine

    from bundle.workflows import TrainingScalars, log_every

    model = torch.nn.Linear(2, 1)
    data = [{"image": torch.ones(1, 2), "label": torch.zeros(1, 1)} for _ in range(7)]
    scalars = TrainingScalars(log_interval=3)
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        loss_function=torch.nn.MSELoss(),
        train_handlers=[
            scalars,
            StatsHandler(iteration_log=log_every(3), output_transform=from_engine(["loss"], first=True)),
            TensorBoardStatsHandler(
                log_dir=str(tmp_path), iteration_log=log_every(3), output_transform=lambda out: out["scalars"]
            ),
        ],
        decollate=False,
    )
    converted = set()  # iterations at which some tensor became a Python number (a GPU->host sync on CUDA)
    for name in ("__float__", "item", "__bool__", "tolist"):
        original = getattr(torch.Tensor, name)

        def spy(self, *args, _original=original, **kwargs):
            converted.add(trainer.state.iteration)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)
    logged = {}
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: logged.update({e.state.iteration: e.state.output}))
    trainer.run()
    monkeypatch.undo()
    assert converted <= {3, 6, 7}  # every 3rd iteration and the epoch's last
    assert {i for i, out in logged.items() if "scalars" in out} == {3, 6, 7}
    assert set(logged[7]["scalars"]) == {"train/loss", "train/lr"}

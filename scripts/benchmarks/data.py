"""Section ``data``: the training input pipeline (``train#preprocessing`` of ``configs/train.yaml``) on generated
v7.3 ``.mat`` files, through a real ``DataLoader`` and per transform."""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from monai.bundle import ConfigParser
from torch.utils.data import DataLoader

from bundle.data import build_datalist, write_mat
from bundle.workflows import ReconDataset, ShapeGroupBatchSampler, keep_freed_memory, worker_init

from .harness import median
from .model import CONFIGS


def write_dataset(
    root: Path, args: argparse.Namespace, h: int, w: int, seed: int = 0, coils: int | None = None
) -> list[Path]:
    """Random cine SAX k-space files ``(nt=12, nz, nc, ny=w, nx=h)`` in the CMRxRecon2024 training layout."""
    coils = args.coils if coils is None else coils
    rng = np.random.default_rng(seed)
    ky = np.arange(w) - w // 2
    kx = np.arange(h) - h // 2
    envelope = (1e-3 / (1.0 + (ky[:, None] ** 2 + kx[None, :] ** 2) / (0.05 * min(h, w)) ** 2)).astype(np.float32)
    paths = []
    for i in range(args.data_files):
        nz = args.data_nz[i % len(args.data_nz)]
        shape = (12, nz, coils, w, h)
        k = np.empty(shape, np.complex64)
        k.real = rng.standard_normal(shape, dtype=np.float32) * envelope
        k.imag = rng.standard_normal(shape, dtype=np.float32) * envelope
        path = root / "ChallengeData/MultiCoil/Cine/TrainingSet/FullSample" / f"P{i + 1:03d}" / "cine_sax.mat"
        write_mat(path, kspace_full=k)
        paths.append(path)
    return paths


def training_preprocessing(args: argparse.Namespace):
    """``train#preprocessing`` and the dataset/sampler settings of ``configs/train.yaml``."""
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    parser["num_adj_frames"] = args.frames
    parser["num_coils"] = args.coils
    settings = {key: parser.get_parsed_content(key) for key in ("seed", "on_bad_data", "group_order")}
    return parser.get_parsed_content("train#preprocessing"), settings


def time_loader(loader, batches: int) -> dict:
    """Slices/s of ``batches`` batches after the first (whose time, with worker start-up, is reported apart)."""
    t0 = time.perf_counter()
    it = iter(loader)
    first = next(it)
    t_first = time.perf_counter() - t0
    slices, t1 = 0, time.perf_counter()
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            break
        slices += batch["kspace_masked"].shape[0]
    elapsed = time.perf_counter() - t1
    del it
    return {
        "first_batch_s": t_first,
        "slices": slices,
        "seconds": elapsed,
        "slices_per_s": slices / elapsed if elapsed > 0 and slices else float("nan"),
        "batch_shape": list(first["kspace_masked"].shape),
    }


def transform_breakdown(dataset, items: int) -> tuple[dict[str, float], float]:
    """Median CPU ms per transform of ``train#preprocessing`` over ``items`` items, and items per CPU second.

    Runs in this process, one thread, as a DataLoader worker does. CPU time of this thread (not wall time), so
    other load on a shared machine does not inflate the figures; the first item (file opening, heap growth) is
    excluded.
    """
    per: dict[str, list[float]] = {}
    total, counted = 0.0, 0
    for index in range(min(items + 1, len(dataset))):
        d = dict(dataset.data[index])
        spent = 0.0
        for t in dataset.transform.transforms:
            if hasattr(t, "set_random_state"):
                t.set_random_state(seed=index)
            t0 = time.thread_time()
            d = t(d)
            dt = time.thread_time() - t0
            spent += dt
            if index:
                per.setdefault(type(t).__name__, []).append(dt)
        if index:
            total, counted = total + spent, counted + 1
    rate = counted / total if total > 0 else float("nan")
    return {name: 1e3 * median(v) for name, v in per.items()}, rate


def data_pipeline(args: argparse.Namespace, size: tuple[int, int], coils: int, device: torch.device) -> dict:
    """One data-section measurement with ``coils`` coils per file (compressed to ``--coils``)."""
    h, w = size
    tmp = Path(tempfile.mkdtemp(prefix="hypercmr_bench_"))
    try:
        t0 = time.perf_counter()
        write_dataset(tmp, args, h, w, coils=coils)
        generate_s = time.perf_counter() - t0
        datalist = build_datalist(tmp, subset="all", exclude=None, trims=None)
        preprocessing, cfg = training_preprocessing(args)
        dataset = ReconDataset(datalist, transform=preprocessing, seed=cfg["seed"], on_bad_data=cfg["on_bad_data"])
        transform_ms, cpu_rate = transform_breakdown(dataset, items=args.data_items)
        out = {
            "file_coils": coils,
            "items": len(datalist),
            "generate_s": generate_s,
            "transform_ms": transform_ms,
            "items_per_cpu_s": cpu_rate,
            "workers": {},
        }
        for workers in args.data_workers:
            sampler = ShapeGroupBatchSampler(
                datalist, batch_size=args.batch, group_order=cfg["group_order"], shuffle=True, seed=cfg["seed"]
            )
            loader = DataLoader(
                dataset,
                batch_sampler=sampler,
                num_workers=workers,
                worker_init_fn=worker_init if workers else None,
                pin_memory=device.type == "cuda",
                persistent_workers=False,
            )
            out["workers"][str(workers)] = time_loader(loader, args.data_batches)
        rates = [r["slices_per_s"] for r in out["workers"].values() if np.isfinite(r["slices_per_s"])]
        out["best_slices_per_s"] = max(rates) if rates else float("nan")
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def section_data(args: argparse.Namespace, size: tuple[int, int], device: torch.device) -> dict:
    """The training input pipeline at every ``--data-coils`` count (files compressed to ``--coils`` coils).

    Top-level figures are those of the first count; ``by_coils`` holds every count. The process keeps freed
    memory as DataLoader workers do (``bundle.workflows.keep_freed_memory``), so the in-process timings are a
    worker's.
    """
    keep_freed_memory()
    counts = args.data_coils or [args.coils]
    by_coils = {str(c): data_pipeline(args, size, c, device) for c in counts}
    return {**by_coils[str(counts[0])], "by_coils": by_coils}

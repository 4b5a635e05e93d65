"""Speed and memory benchmark of HyperCMR training and inference (PromptMR + HyperCMRLoss).

Usage::

    python scripts/benchmark.py --size 64x128 --cascades 2                 # CPU smoke run, all sections
    python scripts/benchmark.py --device cuda --size 512x246 --amp bf16 --checkpointing --json out.json
    python scripts/benchmark.py --size 512x246 --subprocess --sections train --checkpointing --repeats 1 --warmup 0
    python scripts/benchmark.py --network plus ...                           # the same, for PromptMR+

Sizes are ``HxW`` in model orientation: H = readout ``nx``, W = phase encode ``ny`` (the undersampled axis), so
the CMRxRecon2024 cine SAX matrix is ``512x246`` (stored on disk as ``(nt, nz, nc, ny=246, nx=512)``).

Sections (``--sections``, default ``train,infer,data,loss,flops``; ``ckpt``, ``ab``, ``import`` and ``coils`` are
opt-in):

* ``train``: one optimisation step (forward, HyperCMRLoss with the VGG term off, backward, AdamW step): median
  time, slices/s, per-phase times and peak memory (CUDA ``max_memory_allocated``; on CPU the peak RSS sampled
  by a background thread during the timed steps, and the process-lifetime ``ru_maxrss``);
* ``infer``: eval-mode ``no_grad`` forward per batch, per slice, and per whole cine SAX case (``--case-slices``,
  120 = 12 frames x 10 slices: timed directly when it is estimated to take <= ``--case-direct-max-s``,
  otherwise extrapolated from the per-slice time; the JSON says which);
* ``data``: slices/s delivered by a real ``DataLoader`` over ``train#preprocessing`` of ``configs/train.yaml``
  (parsed with MONAI's ``ConfigParser``), ``ReconDataset`` and ``ShapeGroupBatchSampler`` reading generated
  v7.3 ``.mat`` files, for each ``--data-workers`` count;
* ``loss``: HyperCMRLoss forward + backward alone, and its share of the training step;
* ``flops``: model FLOPs per slice with ``torch.utils.flop_counter.FlopCounterMode`` (forward, and forward +
  backward with the loss; convolutions and matmuls only, FFTs and element-wise ops are not counted) and the
  achieved FLOP/s of the timed train and infer sections;
* ``ckpt``: the training step with and without ``use_checkpoint``, each in its own subprocess (so that the
  peak memories are not mixed), and the memory and time ratios;
* ``import``: ``scripts/import_weights.py`` on a synthetic Lightning checkpoint of ``--cascades`` cascades in the
  PromptMR v1 layout (``promptmr.`` keys, ``loss.w``, hyper-parameters, AdamW states): file size, read +
  validation time, whole import time, and that the imported tensors equal the source (size-independent);
* ``coils``: ``CoilCompressd`` on one training item (masked, full and target k-space of ``--frames`` frames) from
  10 and 20 coils to ``--coils``, against the previous implementation (zero-filled ACS frame, complex128 SVD,
  einsum) in the same process, rounds interleaved;
* ``ab``: before/after of the hot-spot fixes (channels-last U-Nets, checkerboard centred FFT) interleaved in one
  process, and of ``--malloc-tuning`` in alternating subprocesses (``docs/benchmarks.md``).

``--malloc-tuning`` makes glibc keep freed memory (``mallopt``): on CPU, at real image sizes, page faults of
freshly ``mmap``-ed activations otherwise take up to half of a training step.

``--subprocess`` runs every (section, size) in a fresh interpreter: a process killed for memory (by the kernel,
or by the ``--mem-limit-gb`` watchdog, which exits with code 99 before the machine runs out) becomes a result
with ``status`` ``"killed"``/``"memory_limit"`` instead of ending the benchmark, and each child's ``ru_maxrss``
is its own peak.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bundle.losses import HyperCMRLoss  # noqa: E402
from bundle.mri import ifft2c, rss  # noqa: E402
from bundle.networks import PromptMR  # noqa: E402

SECTIONS = ("train", "infer", "data", "loss", "flops")
EXTRA_SECTIONS = ("ckpt", "ab", "import", "coils")
# In-process order: the data section forks DataLoader workers, so it runs last.
RUN_ORDER = ("train", "loss", "infer", "flops", "ckpt", "ab", "data", "import", "coils")
MEMORY_LIMIT_EXIT = 99
GB = 1024**3

# A network small enough for smoke tests (same shape rules as the paper model: H, W padded to multiples of 8).
TINY_NET = dict(
    n_feat0=4,
    feature_dim=(6, 8, 10),
    prompt_dim=(2, 4, 6),
    sens_n_feat0=4,
    sens_feature_dim=(6, 8, 10),
    sens_prompt_dim=(2, 4, 6),
    len_prompt=(2, 2, 2),
    prompt_size=(8, 4, 2),
    n_enc_cab=(1, 1, 1),
    n_dec_cab=(1, 1, 1),
    n_skip_cab=(1, 1, 1),
    n_bottleneck_cab=1,
)
# --network plus: the PromptMR+ 2024 options (92,859,005 parameters at the default widths).
PLUS_2024 = dict(model_version="plus", adaptive_input=True, n_buffer=4, n_history=11, use_sens_adj=True)


# --------------------------------------------------------------------------------------------------- arguments


def parse_sizes(values: Sequence[str] | None) -> list[tuple[int, int]]:
    """``["64x128", "32x64,48x32"]`` -> ``[(64, 128), (32, 64), (48, 32)]`` (H = nx, W = ny)."""
    sizes = []
    for value in values or ["64x128"]:
        for part in value.split(","):
            part = part.strip().lower()
            if not part:
                continue
            try:
                h, w = (int(n) for n in part.split("x"))
            except ValueError:
                raise argparse.ArgumentTypeError(f"size must look like 64x128 (HxW), got {part!r}") from None
            if h < 8 or w < 8:
                raise argparse.ArgumentTypeError(f"size {part!r} is too small (H, W >= 8)")
            sizes.append((h, w))
    return sizes


def parse_int_list(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--size", action="append", help="HxW (H = readout nx, W = phase encode ny); repeatable or a, b")
    p.add_argument("--coils", type=int, default=10)
    p.add_argument("--frames", type=int, default=5, help="adjacent frames stacked per slice (odd)")
    p.add_argument("--cascades", type=int, default=12)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--amp", choices=("bf16", "fp16", "off"), default="off")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--network", choices=("v1", "plus"), default="v1", help="PromptMR v1 or PromptMR+ 2024 options")
    p.add_argument("--checkpointing", action="store_true", help="per-cascade and per-SensNet-chunk checkpointing")
    p.add_argument("--sens-chunk", type=int, default=None, help="SensNet coil images per chunk (default: all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None, help="write all results here")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"subset of {SECTIONS + EXTRA_SECTIONS}")
    p.add_argument("--tiny", action="store_true", help="tiny network widths (smoke tests)")
    p.add_argument("--subprocess", action="store_true", help="run each (section, size) in its own process")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per subprocess")
    p.add_argument("--mem-limit-gb", type=float, default=None, help="RSS watchdog: exit with code 99 above this")
    p.add_argument("--case-slices", type=int, default=120, help="slices of a whole case (cine SAX: 12 x 10)")
    p.add_argument("--case-direct-max-s", type=float, default=20.0, help="time a whole case directly below this")
    p.add_argument("--data-workers", type=parse_int_list, default=[0, 1, 2], help="DataLoader num_workers list")
    p.add_argument("--data-files", type=int, default=2, help="generated .mat files (one patient each)")
    p.add_argument("--data-nz", type=parse_int_list, default=[2, 3], help="slices per file, cycled over files")
    p.add_argument("--data-batches", type=int, default=24, help="batches timed per worker count (after the first)")
    p.add_argument(
        "--data-coils",
        type=parse_int_list,
        default=None,
        help="coils per data file, e.g. 10,20 (compressed to --coils); default: --coils",
    )
    p.add_argument("--data-items", type=int, default=6, help="items timed per transform (CPU time, in-process)")
    p.add_argument(
        "--malloc-tuning",
        action="store_true",
        help="glibc mallopt: keep freed memory instead of returning it to the OS (avoids page-fault storms)",
    )
    p.add_argument("--ab-rounds", type=int, default=3, help="interleaved rounds per variant in the ab section")
    p.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.sizes = parse_sizes(args.size)
    args.section_list = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(args.section_list) - set(SECTIONS + EXTRA_SECTIONS)
    if unknown:
        raise SystemExit(f"unknown sections {sorted(unknown)}; choose from {SECTIONS + EXTRA_SECTIONS}")
    if args.frames < 1 or args.frames % 2 == 0:
        raise SystemExit("--frames must be a positive odd number")
    if args.repeats < 1 or args.warmup < 0:
        raise SystemExit("--repeats must be >= 1 and --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    return args


# --------------------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on; load averages matter on a shared machine."""
    import psutil

    info = {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_total_gb": round(psutil.virtual_memory().total / GB, 2),
        "memory_available_gb": round(psutil.virtual_memory().available / GB, 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "load_average_start": list(os.getloadavg()),
    }
    with contextlib.suppress(Exception):
        import monai

        info["monai"] = monai.__version__
    with contextlib.suppress(Exception):
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        info["git_head"] = rev.stdout.strip()
    return info


# --------------------------------------------------------------------------------------------------- measuring


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ru_maxrss_gb() -> float:
    """Peak RSS of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def apply_malloc_tuning() -> bool:
    """Make glibc keep freed memory in the heap instead of unmapping it (``mallopt``), as
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` would.

    PyTorch's CPU allocator has no cache: every activation above glibc's mmap threshold (at most 32 MB) is a
    fresh ``mmap`` whose pages are faulted in and zeroed by the kernel, and freed with ``munmap``, once per
    tensor per step. Returns False where ``mallopt`` is unavailable (not glibc).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        big = 2**31 - 1  # mallopt takes an int
        return bool(libc.mallopt(m_mmap_threshold, big)) and bool(libc.mallopt(m_trim_threshold, big))
    except (OSError, AttributeError):
        return False


class RSSMonitor:
    """Background thread sampling this process's RSS every ``interval`` s.

    Records the peak while active (torch kernels release the GIL, so sampling goes on during long ops) and, with
    ``limit_gb``, exits the process with :data:`MEMORY_LIMIT_EXIT` once RSS passes the limit: a controlled stand-in
    for the kernel's OOM killer that does not take the other processes of a shared machine down with it.
    """

    def __init__(self, interval: float = 0.005, limit_gb: float | None = None):
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.limit = None if limit_gb is None else limit_gb * GB
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reset(self) -> None:
        self.peak = self._proc.memory_info().rss

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            rss_now = self._proc.memory_info().rss
            self.peak = max(self.peak, rss_now)
            if self.limit is not None and rss_now > self.limit:
                sys.stderr.write(f"memory watchdog: RSS {rss_now / GB:.2f} GB > limit {self.limit / GB:.2f} GB\n")
                sys.stderr.flush()
                os._exit(MEMORY_LIMIT_EXIT)

    def __enter__(self) -> RSSMonitor:
        self.reset()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def peak_gb(self) -> float:
        return self.peak / GB


class PeakMemory:
    """Peak memory of a region: CUDA ``max_memory_allocated`` or sampled CPU RSS (see :meth:`describe`)."""

    def __init__(self, device: torch.device, limit_gb: float | None = None):
        self.device = device
        self.monitor = RSSMonitor(limit_gb=limit_gb)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.monitor.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.monitor.__exit__(*exc)

    def result(self) -> dict:
        out = {
            "peak_rss_sampled_gb": round(self.monitor.peak_gb, 3),
            "ru_maxrss_gb": round(ru_maxrss_gb(), 3),
        }
        if self.device.type == "cuda":
            out["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(self.device) / GB, 3)
            out["peak_mem_method"] = "torch.cuda.max_memory_allocated"
        else:
            out["peak_mem_gb"] = out["peak_rss_sampled_gb"]
            out["peak_mem_method"] = "CPU RSS sampled every 5 ms during the timed steps (psutil)"
        return out


def timed(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> list[float]:
    """Wall times of ``repeats`` calls after ``warmup`` untimed ones, synchronising CUDA around each."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


# --------------------------------------------------------------------------------------------------- model + inputs


def network_kwargs(args: argparse.Namespace, use_checkpoint: bool | None = None) -> dict:
    kw = dict(
        num_cascades=args.cascades,
        num_adj_frames=args.frames,
        use_checkpoint=args.checkpointing if use_checkpoint is None else use_checkpoint,
        sens_chunk_size=args.sens_chunk,
        num_low_frequencies=16,  # CMRxRecon2024 ACS width; what configs/train.yaml sets
    )
    if args.tiny:
        kw.update(TINY_NET)
    if args.network == "plus":
        kw.update(PLUS_2024)
    return kw


def build_network(args: argparse.Namespace, device: torch.device, use_checkpoint: bool | None = None) -> PromptMR:
    torch.manual_seed(0)
    return PromptMR(**network_kwargs(args, use_checkpoint)).to(device)


def amp_context(args: argparse.Namespace, device: torch.device):
    if args.amp == "off":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if args.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def synthetic_batch(args: argparse.Namespace, h: int, w: int, device: torch.device, seed: int = 0) -> dict:
    """One training batch as the DataLoader delivers it (B = ``--batch``), on ``device``.

    Fully sampled k-space is complex Gaussian shaped by a ``1 / (1 + r^2/r0^2)`` envelope at the ~1e-3 scale of
    CMRxRecon k-space (timings do not depend on the content, but denormals or NaNs would). The mask is Uniform
    R=4 with 16 ACS lines, ``(B, F, H, W)`` float like the pipeline's.
    """
    b, f, c = args.batch, args.frames, args.coils
    gen = torch.Generator().manual_seed(seed)
    ky = torch.arange(w) - w // 2
    kx = torch.arange(h) - h // 2
    envelope = 1.0 / (1.0 + (kx[:, None] ** 2 + ky[None, :] ** 2) / (0.05 * min(h, w)) ** 2)
    full = torch.randn(b, f * c, h, w, dtype=torch.complex64, generator=gen) * (1e-3 * envelope)
    line = torch.zeros(w)
    line[::4] = 1
    line[w // 2 - 8 : w // 2 + 8] = 1
    mask = line.expand(b, f, h, w).contiguous()
    masked = full * mask.repeat_interleave(c, dim=1)
    centre = full.view(b, f, c, h, w)[:, f // 2].contiguous()
    target = rss(ifft2c(centre), dim=1).unsqueeze(1)
    batch = {"kspace_masked": masked, "mask": mask, "target": target, "kspace_target": centre}
    return {k: v.to(device) for k, v in batch.items()}


class Bench:
    """Network, loss, optimiser and inputs of one size, built once and shared by the in-process sections."""

    def __init__(self, args: argparse.Namespace, size: tuple[int, int], device: torch.device):
        self.args, self.size, self.device = args, size, device
        self.batch = synthetic_batch(args, *size, device)
        self.net = build_network(args, device)
        self.model = torch.compile(self.net) if args.compile else self.net
        self.loss = HyperCMRLoss(w_vgg=0.0).to(device)
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=9e-5, weight_decay=1e-4)
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
        self.target = {"target": self.batch["target"], "kspace_target": self.batch["kspace_target"]}

    def forward(self):
        with amp_context(self.args, self.device):
            return self.model(self.batch["kspace_masked"], self.batch["mask"])

    def train_step(self, phases: dict[str, list[float]] | None = None) -> None:
        """zero_grad, forward, loss, backward, AdamW step; ``phases`` collects per-phase wall times."""
        marks = [time.perf_counter()]

        def mark() -> None:
            if phases is not None:
                sync(self.device)
                marks.append(time.perf_counter())

        self.optimizer.zero_grad(set_to_none=True)
        pred = self.forward()
        mark()
        total, _ = self.loss(pred, self.target)
        mark()
        self.scaler.scale(total).backward()
        mark()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        mark()
        if phases is not None:
            for name, a, b in zip(("forward", "loss", "backward", "optimizer"), marks, marks[1:]):
                phases.setdefault(name, []).append(b - a)


# --------------------------------------------------------------------------------------------------- sections


def section_train(bench: Bench) -> dict:
    args, device = bench.args, bench.device
    bench.net.train()
    for _ in range(args.warmup):
        bench.train_step()
    phases: dict[str, list[float]] = {}
    times = []
    with PeakMemory(device, args.mem_limit_gb) as mem:
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            bench.train_step(phases)
            sync(device)
            times.append(time.perf_counter() - t0)
    step = median(times)
    return {
        "step_s": step,
        "times_s": times,
        "slices_per_s": args.batch / step,
        "phases_s": {k: median(v) for k, v in phases.items()},
        "checkpointing": args.checkpointing,
        "network": args.network,
        **mem.result(),
    }


def loss_inputs(args: argparse.Namespace, size: tuple[int, int], device: torch.device):
    """Leaf ``(image, kspace)`` predictions (perturbed targets, so no network is needed) and the target dict."""
    batch = synthetic_batch(args, *size, device)
    gen = torch.Generator().manual_seed(1)
    noise = torch.randn(batch["target"].shape, generator=gen).to(device)
    image = (batch["target"] * (1 + 0.1 * noise)).requires_grad_(True)
    kspace = (batch["kspace_target"] * 0.9).requires_grad_(True)
    return (image, kspace), {"target": batch["target"], "kspace_target": batch["kspace_target"]}


def section_loss(args: argparse.Namespace, size: tuple[int, int], device: torch.device) -> dict:
    """HyperCMRLoss (VGG off) forward + backward alone; its share of the step is in the summary."""
    loss = HyperCMRLoss(w_vgg=0.0).to(device)
    (image, kspace), target = loss_inputs(args, size, device)

    def step() -> None:
        image.grad = kspace.grad = None
        total, _ = loss((image, kspace), target)
        total.backward()

    times = timed(step, max(args.repeats, 5), max(args.warmup, 1), device)  # cheap: a few more repeats
    return {"loss_fwd_bwd_s": median(times), "times_s": times}


def section_infer(bench: Bench) -> dict:
    args, device = bench.args, bench.device
    bench.net.eval()

    def run() -> None:
        with torch.no_grad():
            bench.forward()

    with PeakMemory(device, args.mem_limit_gb) as mem:
        times = timed(run, args.repeats, args.warmup, device)
    per_batch = median(times)
    per_slice = per_batch / args.batch
    out = {
        "network": args.network,
        "batch_s": per_batch,
        "times_s": times,
        "per_slice_s": per_slice,
        "slices_per_s": 1.0 / per_slice,
        "case_slices": args.case_slices,
        "case_s_extrapolated": per_slice * args.case_slices,
        **mem.result(),
    }
    if per_slice * args.case_slices <= args.case_direct_max_s:
        # A whole case in batches of --batch (the last batch may be partial, as in a real case).
        t0 = time.perf_counter()
        done = 0
        while done < args.case_slices:
            n = min(args.batch, args.case_slices - done)
            with torch.no_grad(), amp_context(args, device):
                bench.model(bench.batch["kspace_masked"][:n], bench.batch["mask"][:n])
            done += n
        sync(device)
        out["case_s"] = time.perf_counter() - t0
        out["case_method"] = "timed directly"
    else:
        out["case_s"] = out["case_s_extrapolated"]
        out["case_method"] = f"extrapolated: per-slice time x {args.case_slices}"
    return out


def section_flops(args: argparse.Namespace, size: tuple[int, int], device: torch.device) -> dict:
    """Model FLOPs per slice, counted without running anything heavy.

    The network runs on the ``meta`` device (shapes only, no data, no time), without checkpoint recomputation;
    its backward is driven by ``image.sum() + kspace.sum()``, whose own cost is not counted. HyperCMRLoss cannot
    run on ``meta`` (it opens an autocast region for the input's device type), so its forward + backward is
    counted on ``device`` with real tensors, where it is cheap.
    """
    from torch.utils.flop_counter import FlopCounterMode

    meta = torch.device("meta")
    with meta:
        net = PromptMR(**network_kwargs(args, use_checkpoint=False))
    batch = synthetic_batch(args, *size, meta)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net.eval()(batch["kspace_masked"], batch["mask"])
    fwd = counter.get_total_flops()
    counter = FlopCounterMode(display=False)
    with counter:
        image, kspace = net.train()(batch["kspace_masked"], batch["mask"])
        (image.sum() + torch.view_as_real(kspace).sum()).backward()
    net_train = counter.get_total_flops()

    loss = HyperCMRLoss(w_vgg=0.0).to(device)
    pred, target = loss_inputs(args, size, device)
    counter = FlopCounterMode(display=False)
    with counter:
        loss(pred, target)[0].backward()
    loss_flops = counter.get_total_flops()
    h, w = size
    b = args.batch
    return {
        "forward_flops_per_slice": fwd / b,
        "train_flops_per_slice": (net_train + loss_flops) / b,
        "train_flops_per_pixel": (net_train + loss_flops) / b / (h * w),
        "loss_flops_per_slice": loss_flops / b,
        "counted": "FlopCounterMode: conv/matmul only (FFTs, element-wise ops not counted); network on meta",
    }


# ----- hot-spot A/B


def _shift_fft2(x: torch.Tensor, inverse: bool) -> torch.Tensor:
    """The centred FFT as it was before the checkerboard fix: ``fftshift(F(ifftshift(x)))`` (the reference)."""
    y = torch.fft.ifftshift(x, dim=(-2, -1))
    y = torch.fft.ifft2(y, norm="ortho") if inverse else torch.fft.fft2(y, norm="ortho")
    return torch.fft.fftshift(y, dim=(-2, -1))


@contextlib.contextmanager
def hotspot_fixes(fft: bool = True, channels_last: bool = True):
    """Switch the in-code hot-spot fixes off (restoring the previous implementations) for an A/B comparison."""
    import bundle.mri as mri
    from bundle.networks import promptunet

    saved = mri._centred_fft2, promptunet.Conv2d.forward, promptunet.PromptUnet.forward_history
    if not fft:
        mri._centred_fft2 = _shift_fft2
    if not channels_last:
        promptunet.Conv2d.forward = torch.nn.Conv2d.forward
        # forward() goes through forward_history(); _forward has its signature without the layout change.
        promptunet.PromptUnet.forward_history = promptunet.PromptUnet._forward
    try:
        yield
    finally:
        mri._centred_fft2, promptunet.Conv2d.forward, promptunet.PromptUnet.forward_history = saved


AB_VARIANTS = {
    "before": dict(fft=False, channels_last=False),
    "checkerboard_fft": dict(fft=True, channels_last=False),
    "channels_last": dict(fft=False, channels_last=True),
    "after": dict(fft=True, channels_last=True),
}


def section_ab(args: argparse.Namespace, size: tuple[int, int], device: torch.device) -> dict:
    """Training step with each in-code fix on/off, interleaved round-robin in one process, plus the allocator
    setting back to back in subprocesses. CPU time is reported next to wall time: on a shared machine it is
    much less sensitive to other load (with ``--threads 1``)."""
    bench = Bench(args, size, device)
    bench.net.train()
    outputs = {}
    for name, flags in AB_VARIANTS.items():  # all before the first optimiser step changes the weights
        with hotspot_fixes(**flags), torch.no_grad():
            outputs[name] = bench.net(bench.batch["kspace_masked"], bench.batch["mask"])
    for flags in AB_VARIANTS.values():
        with hotspot_fixes(**flags):
            for _ in range(max(args.warmup, 1)):
                bench.train_step()
    ref_image, ref_kspace = outputs["before"]
    wall: dict[str, list[float]] = {n: [] for n in AB_VARIANTS}
    cpu: dict[str, list[float]] = {n: [] for n in AB_VARIANTS}
    for _ in range(args.ab_rounds):
        for name, flags in AB_VARIANTS.items():
            with hotspot_fixes(**flags):
                c0, t0 = time.process_time(), time.perf_counter()
                bench.train_step()
                sync(device)
                cpu[name].append(time.process_time() - c0)
                wall[name].append(time.perf_counter() - t0)
    out: dict = {"rounds": args.ab_rounds, "variants": {}}
    for name in AB_VARIANTS:
        image, kspace = outputs[name]
        out["variants"][name] = {
            "wall_s": median(wall[name]),
            "cpu_s": median(cpu[name]),
            "speedup_wall": median(wall["before"]) / median(wall[name]),
            "speedup_cpu": median(cpu["before"]) / median(cpu[name]),
            "max_rel_diff_image": float((image - ref_image).abs().max() / ref_image.abs().max()),
            "max_rel_diff_kspace": float((kspace - ref_kspace).abs().max() / ref_kspace.abs().max()),
            "wall_times_s": wall[name],
            "cpu_times_s": cpu[name],
        }
    del bench
    out["fft_ops"] = ab_fft_ops(args, size, device)
    if args.device == "cpu" and not args.malloc_tuning:
        out["malloc_tuning"] = ab_malloc(args, size)
    return out


def ab_fft_ops(args: argparse.Namespace, size: tuple[int, int], device: torch.device) -> dict:
    """Shift vs checkerboard centred FFT on what one cascade does with it: ``R_S`` then ``E_S``, forward and
    backward, on ``(B, F, C, H, W)`` k-space, interleaved. Cheap at any size, unlike whole training steps."""
    from bundle.networks.promptmr import sens_expand, sens_reduce

    b, f, c, (h, w) = args.batch, args.frames, args.coils, size
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(b, f, c, h, w, dtype=torch.complex64, generator=gen).to(device).requires_grad_(True)
    sens = torch.randn(b, f, c, h, w, dtype=torch.complex64, generator=gen).to(device)

    def ops() -> None:
        k.grad = None
        y = sens_expand(sens_reduce(k, sens), sens)
        torch.view_as_real(y).sum().backward()

    times: dict[str, list[float]] = {"shift": [], "checkerboard": []}
    for _ in range(max(args.ab_rounds, 5)):
        for name in times:
            with hotspot_fixes(fft=name == "checkerboard"):
                times[name] += timed(ops, 1, 1, device)
    shift, board = median(times["shift"]), median(times["checkerboard"])
    return {"shift_s": shift, "checkerboard_s": board, "speedup": shift / board}


def ab_malloc(args: argparse.Namespace, size: tuple[int, int]) -> dict:
    """``--malloc-tuning`` off/on, alternating training-step subprocesses (a process cannot undo ``mallopt``)."""
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(max(1, args.ab_rounds // 2)):
        for label in ("off", "on"):
            runs[label].append(run_child(args, "train", size, malloc_tuning=label == "on"))
    ok = {k: [r for r in v if r.get("status") == "ok"] for k, v in runs.items()}
    out: dict = {"runs": {k: [r.get("step_s") for r in v] for k, v in runs.items()}}
    if ok["off"] and ok["on"]:
        off = median([r["step_s"] for r in ok["off"]])
        on = median([r["step_s"] for r in ok["on"]])
        out.update(
            step_s_off=off,
            step_s_on=on,
            speedup=off / on,
            ru_maxrss_gb_off=max(r["ru_maxrss_gb"] for r in ok["off"]),
            ru_maxrss_gb_on=max(r["ru_maxrss_gb"] for r in ok["on"]),
        )
    return out


# ----- data pipeline


def write_dataset(
    root: Path, args: argparse.Namespace, h: int, w: int, seed: int = 0, coils: int | None = None
) -> list[Path]:
    """Random cine SAX k-space files ``(nt=12, nz, nc, ny=w, nx=h)`` in the CMRxRecon2024 training layout."""
    coils = args.coils if coils is None else coils
    from bundle.data import write_mat

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
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(REPO / "configs" / "train.yaml"))
    parser["num_adj_frames"] = args.frames
    parser["num_coils"] = args.coils
    settings = {key: parser.get_parsed_content(key) for key in ("seed", "on_bad_data", "group_order")}
    return parser.get_parsed_content("train#preprocessing"), settings


def time_loader(loader, batches: int) -> dict:
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
    """One data-section measurement at ``coils`` coils per file (compressed to ``--coils``... see section_data)."""
    from torch.utils.data import DataLoader

    from bundle.data import build_datalist
    from bundle.workflows import ReconDataset, ShapeGroupBatchSampler, worker_init

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
    from bundle.workflows import keep_freed_memory

    keep_freed_memory()
    counts = args.data_coils or [args.coils]
    by_coils = {str(c): data_pipeline(args, size, c, device) for c in counts}
    return {**by_coils[str(counts[0])], "by_coils": by_coils}


# ----- checkpointing comparison (always in subprocesses)


def section_ckpt(args: argparse.Namespace, size: tuple[int, int]) -> dict:
    runs = {}
    for flag in (False, True):
        runs["on" if flag else "off"] = run_child(args, "train", size, checkpointing=flag)
    out: dict = {"off": runs["off"], "on": runs["on"]}
    if runs["off"].get("status") == "ok" and runs["on"].get("status") == "ok":
        off, on = runs["off"], runs["on"]
        out["memory_ratio_off_over_on"] = off["peak_mem_gb"] / on["peak_mem_gb"]
        out["time_overhead"] = on["step_s"] / off["step_s"] - 1.0
        if args.device == "cpu":
            out["memory_ratio_ru_maxrss"] = off["ru_maxrss_gb"] / on["ru_maxrss_gb"]
    return out


# --------------------------------------------------------------------------------------------------- subprocesses


def child_argv(
    args: argparse.Namespace, section: str, size: tuple[int, int], checkpointing: bool, malloc_tuning: bool
) -> list[str]:
    """Command line re-running one (section, size) of ``args`` in a fresh interpreter."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--sections", section, "--size", f"{size[0]}x{size[1]}"]
    argv += ["--device", args.device, "--coils", str(args.coils), "--frames", str(args.frames)]
    argv += ["--network", args.network]
    argv += ["--cascades", str(args.cascades), "--batch", str(args.batch), "--amp", args.amp]
    argv += ["--repeats", str(args.repeats), "--warmup", str(args.warmup), "--case-slices", str(args.case_slices)]
    argv += ["--case-direct-max-s", str(args.case_direct_max_s), "--data-batches", str(args.data_batches)]
    argv += ["--data-workers", ",".join(map(str, args.data_workers)), "--data-files", str(args.data_files)]
    argv += ["--data-nz", ",".join(map(str, args.data_nz)), "--data-items", str(args.data_items)]
    if args.data_coils:
        argv += ["--data-coils", ",".join(map(str, args.data_coils))]
    flags = [("--compile", args.compile), ("--checkpointing", checkpointing), ("--tiny", args.tiny)]
    for flag, on in flags + [("--malloc-tuning", malloc_tuning)]:
        if on:
            argv.append(flag)
    for flag, value in (("--sens-chunk", args.sens_chunk), ("--threads", args.threads)):
        if value is not None:
            argv += [flag, str(value)]
    if args.mem_limit_gb is not None:
        argv += ["--mem-limit-gb", str(args.mem_limit_gb)]
    return argv


def run_child(
    args: argparse.Namespace,
    section: str,
    size: tuple[int, int],
    checkpointing: bool | None = None,
    malloc_tuning: bool | None = None,
) -> dict:
    """Run one section in a subprocess; a crash, kill, watchdog exit or timeout becomes the result."""
    checkpointing = args.checkpointing if checkpointing is None else checkpointing
    malloc_tuning = args.malloc_tuning if malloc_tuning is None else malloc_tuning
    with tempfile.TemporaryDirectory(prefix="hypercmr_bench_child_") as tmp:
        out_path = Path(tmp) / "result.json"
        argv = child_argv(args, section, size, checkpointing, malloc_tuning) + ["--child-out", str(out_path)]
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired as err:
            tail = (err.stderr or b"")[-2000:]
            return {
                "status": "timeout",
                "timeout_s": args.timeout,
                "checkpointing": checkpointing,
                "stderr_tail": tail.decode(errors="replace") if isinstance(tail, bytes) else tail,
            }
        wall = time.perf_counter() - t0
        if proc.returncode == 0 and out_path.exists():
            result = json.loads(out_path.read_text())["results"][section][0]
            result["subprocess_wall_s"] = wall
            if args.device == "cpu" and "ru_maxrss_gb" in result:
                # In a child that ran one section the process-lifetime peak is that section's own peak.
                result["peak_mem_gb"] = result["ru_maxrss_gb"]
                result["peak_mem_method"] = "CPU peak RSS of a dedicated subprocess (getrusage ru_maxrss)"
            return result
    rc = proc.returncode
    if rc == MEMORY_LIMIT_EXIT:
        status = "memory_limit"
    elif rc in (-signal.SIGKILL, 137):
        status = "killed"  # the kernel's OOM killer sends SIGKILL
    else:
        status = "failed"
    return {
        "status": status,
        "returncode": rc,
        "checkpointing": checkpointing,
        "mem_limit_gb": args.mem_limit_gb,
        "subprocess_wall_s": wall,
        "stderr_tail": proc.stderr[-2000:],
    }


def section_import(args: argparse.Namespace) -> dict:
    """Import a synthetic PromptMR v1 Lightning checkpoint as ``scripts/import_weights.py`` does, timed."""
    from bundle.networks import load_pretrained
    from scripts.import_weights import main as import_weights

    net = build_network(args, torch.device("cpu"), use_checkpoint=False)
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=2e-4)
    for p in trainable:  # one step with zero gradients creates the AdamW moments a real checkpoint holds
        p.grad = torch.zeros_like(p)
    optimizer.step()
    args_ = net.network_args
    hparams = {k: args_[k] for k in args_ if k not in ("num_adj_frames", "sens_mask_type", "reference_radial_bug")}
    hparams.update(num_adj_slices=args_["num_adj_frames"], lr=2e-4, lr_step_size=11, lr_gamma=0.1, low_mem=False)
    state = {f"promptmr.{k}": v for k, v in net.state_dict().items()}
    state["loss.w"] = torch.ones(1, 1, 7, 7)
    checkpoint = {
        "epoch": 11,
        "global_step": 258576,
        "pytorch-lightning_version": "2.0.0",
        "state_dict": state,
        "hyper_parameters": hparams,
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [torch.optim.lr_scheduler.StepLR(optimizer, 11, 0.1).state_dict()],
    }
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / f"promptmr-{args.cascades}cascades-epoch=11-step=258576.ckpt"
        torch.save(checkpoint, src)
        del checkpoint, state
        t0 = time.perf_counter()
        imported, _ = load_pretrained(src)
        read_s = time.perf_counter() - t0
        equal = all(torch.equal(imported[k], v) for k, v in net.state_dict().items())
        del imported
        t0 = time.perf_counter()
        code = import_weights([str(src), "--out-dir", str(Path(tmp) / "out")])
        total_s = time.perf_counter() - t0
        return {
            "cascades": args.cascades,
            "parameters": sum(p.numel() for p in net.parameters()),
            "checkpoint_gb": src.stat().st_size / 1e9,
            "model_pt_gb": (Path(tmp) / "out" / "model.pt").stat().st_size / 1e9,
            "read_and_validate_s": read_s,
            "import_s": total_s,
            "exit_code": code,
            "tensors_equal": equal,
        }


def _coil_compress_before(d: dict, num_coils: int) -> dict:
    """``CoilCompressd`` as it was before the Gram/eigh matrix and the GEMM (reference for the A/B)."""
    from bundle.transforms.kspace import extract_acs

    centre = d["kspace_masked"][d["kspace_masked"].shape[0] // 2]
    acs = extract_acs(centre, d["mask"], acs_width=16)
    u = np.linalg.svd(acs.reshape(acs.shape[0], -1).astype(np.complex128), full_matrices=False)[0]
    m = u[:, :num_coils].conj().T.astype(np.complex64)
    out = {}
    for key in ("kspace_masked", "kspace_full", "kspace_target"):
        x = d[key] if d[key].ndim == 4 else d[key][None]
        y = np.einsum("vc,fcxy->fvxy", m, x, optimize=True).astype(x.dtype, copy=False)
        out[key] = y if d[key].ndim == 4 else y[0]
    return out


def section_coils(args: argparse.Namespace, size: tuple[int, int]) -> dict:
    """Coil compression of one training item, before and after, at 10 and 20 input coils."""
    from bundle.transforms import CoilCompressd, make_mask

    nx, ny = size
    rng = np.random.default_rng(0)
    rows = []
    for coils in (10, 20):
        shape = (args.frames, coils, nx, ny)
        kspace = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
        mask = make_mask("Uniform", 4, args.frames, nx, ny)
        item = {"kspace_masked": kspace * mask[:, None], "kspace_full": kspace, "mask": mask, "file": "bench.mat"}
        item["kspace_target"] = kspace[args.frames // 2]
        after_fn = CoilCompressd(num_coils=args.coils)
        before, after = [], []
        for _ in range(max(args.repeats, 3)):  # interleaved, so machine noise hits both alike
            before += timed(partial(_coil_compress_before, item, args.coils), 1, 0, torch.device("cpu"))
            after += timed(partial(after_fn, item), 1, 0, torch.device("cpu"))
        row = {"coils": coils, "after_ms": median(after) * 1e3}
        if coils > args.coils:  # below that the transform is a no-op in both versions
            row.update(before_ms=median(before) * 1e3, speedup=median(before) / median(after))
        rows.append(row)
    return {"rows": rows}


# --------------------------------------------------------------------------------------------------- driver


def run_in_process(args: argparse.Namespace, section: str, size: tuple[int, int], bench: Bench | None) -> dict:
    device = torch.device(args.device)
    if section == "data":
        return section_data(args, size, device)
    if section == "ckpt":
        return section_ckpt(args, size)
    if section == "ab":
        return section_ab(args, size, device)
    if section == "import":
        return section_import(args)
    if section == "coils":
        return section_coils(args, size)
    if section in ("loss", "flops"):
        return (section_loss if section == "loss" else section_flops)(args, size, device)
    return (section_train if section == "train" else section_infer)(bench)


def run_all(args: argparse.Namespace) -> dict[str, list[dict]]:
    device = torch.device(args.device)
    results: dict[str, list[dict]] = {s: [] for s in RUN_ORDER if s in args.section_list}
    for size in args.sizes:
        bench = None
        for section in results:
            t0 = time.perf_counter()
            if args.subprocess and section not in ("ckpt", "ab"):
                result = run_child(args, section, size)
            else:
                try:
                    if bench is None and section in ("train", "infer"):
                        bench = Bench(args, size, device)
                    result = {"status": "ok", **run_in_process(args, section, size, bench)}
                except torch.OutOfMemoryError as err:
                    result = {"status": "oom", "error": str(err)[:500]}
            result.setdefault("status", "ok")
            result["size"] = f"{size[0]}x{size[1]}"
            result["section_wall_s"] = time.perf_counter() - t0
            results[section].append(result)
            print(f"  [{section} {result['size']}] {result['status']} in {result['section_wall_s']:.1f} s", flush=True)
        del bench
    return results


def _first(results: dict, section: str, size: str) -> dict | None:
    for r in results.get(section, []):
        if r["size"] == size and r.get("status") == "ok":
            return r
    return None


def summarize(results: dict[str, list[dict]], sizes: Sequence[tuple[int, int]]) -> list[dict]:
    """Cross-section figures and the targets (shown, never asserted)."""
    rows = []
    for h, w in sizes:
        key = f"{h}x{w}"
        train, loss, infer = _first(results, "train", key), _first(results, "loss", key), _first(results, "infer", key)
        data, flops, ckpt = _first(results, "data", key), _first(results, "flops", key), _first(results, "ckpt", key)
        row: dict = {"size": key}
        if train and data:
            row["pipeline_over_train"] = data["best_slices_per_s"] / train["slices_per_s"]
            row["target_pipeline_3x"] = row["pipeline_over_train"] >= 3.0
        if train and loss:
            row["loss_share"] = loss["loss_fwd_bwd_s"] / train["step_s"]
            row["target_loss_share_lt_10pct"] = row["loss_share"] < 0.10
        if flops and train:
            row["train_flop_per_s"] = flops["train_flops_per_slice"] * train["slices_per_s"]
        if flops and infer:
            row["infer_flop_per_s"] = flops["forward_flops_per_slice"] / infer["per_slice_s"]
        if train:
            row["train_peak_mem_gb"] = train["peak_mem_gb"]
            row["fits_24gb"] = train["peak_mem_gb"] < 24.0
        if ckpt and "memory_ratio_off_over_on" in ckpt:
            row["ckpt_memory_ratio"] = ckpt["memory_ratio_off_over_on"]
            row["ckpt_time_overhead"] = ckpt["time_overhead"]
            row["target_ckpt_2x_memory"] = ckpt["memory_ratio_off_over_on"] >= 2.0
            row["target_ckpt_overhead_le_35pct"] = ckpt["time_overhead"] <= 0.35
        rows.append(row)
    return rows


def _fmt(value, spec: str = ".3g") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def print_tables(results: dict[str, list[dict]], summary: list[dict]) -> None:
    def table(title: str, header: Sequence[str], rows: list[Sequence]) -> None:
        if not rows:
            return
        print(f"\n{title}")
        widths = [max(len(str(h)), *(len(_fmt(r[i])) for r in rows)) for i, h in enumerate(header)]
        print("  ".join(str(h).ljust(n) for h, n in zip(header, widths)))
        for r in rows:
            print("  ".join(_fmt(v).ljust(n) for v, n in zip(r, widths)))

    def ok(r: dict) -> bool:
        return r.get("status") == "ok"

    table(
        "Training step (forward + loss + backward + AdamW)",
        ["size", "status", "step s", "slices/s", "fwd s", "bwd s", "opt s", "peak GB", "memory measured as"],
        [
            [r["size"], r["status"], r.get("step_s"), r.get("slices_per_s")]
            + [r.get("phases_s", {}).get(k) for k in ("forward", "backward", "optimizer")]
            + [r.get("peak_mem_gb"), r.get("peak_mem_method", r.get("stderr_tail", "")[-60:])]
            for r in results.get("train", [])
        ],
    )
    table(
        "Inference (eval, no_grad)",
        ["size", "status", "per slice s", "slices/s", "case s", "case method", "peak GB"],
        [
            [r["size"], r["status"], r.get("per_slice_s"), r.get("slices_per_s"), r.get("case_s")]
            + [r.get("case_method"), r.get("peak_mem_gb")]
            for r in results.get("infer", [])
        ],
    )
    table(
        "Data pipeline (DataLoader over train#preprocessing; wall time)",
        ["size", "file coils", "workers", "slices/s", "first batch s", "slices"],
        [
            [r["size"], c, n, v["slices_per_s"], v["first_batch_s"], v["slices"]]
            for r in results.get("data", [])
            if ok(r)
            for c, rc in r["by_coils"].items()
            for n, v in rc["workers"].items()
        ],
    )
    transforms = sorted(
        {t for r in results.get("data", []) if ok(r) for rc in r["by_coils"].values() for t in rc["transform_ms"]}
    )
    table(
        "Data pipeline per worker core (CPU ms per item and transform, one thread)",
        ["size", "file coils", "items/CPU s"] + transforms,
        [
            [r["size"], c, rc["items_per_cpu_s"]] + [rc["transform_ms"].get(t) for t in transforms]
            for r in results.get("data", [])
            if ok(r)
            for c, rc in r["by_coils"].items()
        ],
    )
    table(
        "Loss (HyperCMRLoss, VGG off) forward + backward",
        ["size", "status", "loss s"],
        [[r["size"], r["status"], r.get("loss_fwd_bwd_s")] for r in results.get("loss", [])],
    )
    table(
        "Model FLOPs (FlopCounterMode)",
        ["size", "fwd GFLOP/slice", "train GFLOP/slice", "train MFLOP/pixel"],
        [
            [r["size"], r["forward_flops_per_slice"] / 1e9, r["train_flops_per_slice"] / 1e9]
            + [r["train_flops_per_pixel"] / 1e6]
            for r in results.get("flops", [])
            if ok(r)
        ],
    )
    table(
        "Gradient checkpointing (train step, off vs on, separate subprocesses)",
        ["size", "off s", "on s", "off GB", "on GB", "memory ratio", "time overhead"],
        [
            [r["size"], r["off"].get("step_s"), r["on"].get("step_s"), r["off"].get("peak_mem_gb")]
            + [r["on"].get("peak_mem_gb"), r.get("memory_ratio_off_over_on"), r.get("time_overhead")]
            for r in results.get("ckpt", [])
            if "off" in r
        ],
    )
    table(
        "Weight import (synthetic Lightning checkpoint -> model.pt + network.yaml)",
        ["cascades", "parameters", "ckpt GB", "model.pt GB", "read+check s", "import s", "equal"],
        [
            [r["cascades"], r["parameters"], r["checkpoint_gb"], r["model_pt_gb"]]
            + [r["read_and_validate_s"], r["import_s"], r["tensors_equal"]]
            for r in results.get("import", [])
            if ok(r)
        ],
    )
    table(
        "Coil compression (CoilCompressd, one training item, to --coils virtual coils)",
        ["size", "input coils", "before ms", "after ms", "speedup"],
        [
            [r["size"], row["coils"], row.get("before_ms"), row["after_ms"], row.get("speedup")]
            for r in results.get("coils", [])
            if ok(r)
            for row in r["rows"]
        ],
    )
    table(
        "Hot-spot A/B (train step, variants interleaved in one process)",
        ["size", "variant", "wall s", "cpu s", "speedup wall", "speedup cpu", "max rel diff image"],
        [
            [r["size"], name, v["wall_s"], v["cpu_s"], v["speedup_wall"], v["speedup_cpu"], v["max_rel_diff_image"]]
            for r in results.get("ab", [])
            if ok(r)
            for name, v in r["variants"].items()
        ],
    )
    table(
        "Centred FFT A/B (R_S then E_S, forward + backward, one cascade's worth)",
        ["size", "shift s", "checkerboard s", "speedup"],
        [
            [r["size"], r["fft_ops"]["shift_s"], r["fft_ops"]["checkerboard_s"], r["fft_ops"]["speedup"]]
            for r in results.get("ab", [])
            if ok(r)
        ],
    )
    table(
        "Allocator A/B (--malloc-tuning off/on, alternating subprocesses)",
        ["size", "off s", "on s", "speedup", "off ru_maxrss GB", "on ru_maxrss GB"],
        [
            [r["size"]]
            + [r["malloc_tuning"].get(k) for k in ("step_s_off", "step_s_on", "speedup")]
            + [r["malloc_tuning"].get(k) for k in ("ru_maxrss_gb_off", "ru_maxrss_gb_on")]
            for r in results.get("ab", [])
            if ok(r) and "malloc_tuning" in r
        ],
    )
    keys = ["pipeline_over_train", "loss_share", "train_flop_per_s", "infer_flop_per_s", "train_peak_mem_gb"]
    keys += ["ckpt_memory_ratio", "ckpt_time_overhead"]
    table(
        "Summary (targets are shown, not asserted)", ["size", *keys], [[s["size"], *map(s.get, keys)] for s in summary]
    )


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    malloc_tuned = apply_malloc_tuning() if args.malloc_tuning else False
    device = torch.device(args.device)
    t0 = time.perf_counter()
    monitor = None
    if args.child_out is not None and args.mem_limit_gb is not None:
        # Guards the whole child (model build, warm-up), not only the timed region.
        monitor = RSSMonitor(interval=0.02, limit_gb=args.mem_limit_gb).__enter__()
    report = {"machine": machine_info(device), "args": {k: v for k, v in vars(args).items() if k != "child_out"}}
    report["args"]["sizes"] = [f"{h}x{w}" for h, w in args.sizes]
    report["machine"]["malloc_tuning_applied"] = malloc_tuned
    for key in ("json", "size"):
        report["args"].pop(key, None)
    results = run_all(args)
    report["results"] = results
    report["summary"] = summarize(results, args.sizes)
    report["machine"]["load_average_end"] = list(os.getloadavg())
    report["wall_s"] = time.perf_counter() - t0
    if monitor is not None:
        monitor.__exit__(None, None, None)
    if args.child_out is not None:
        args.child_out.write_text(json.dumps(report, default=str))
        return report
    print_tables(results, report["summary"])
    print(f"\nwall time {report['wall_s']:.1f} s on {report['machine']['device_name']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()

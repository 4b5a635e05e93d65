"""Measuring harness: machine description, timers, memory monitors, the allocator setting and the subprocess runner.

Nothing here knows about networks or sections; :func:`run_child` re-runs one ``(section, size)`` of the current
command line in a fresh interpreter (``scripts/benchmark.py``), so that its peak memory is its own and a kill for
memory becomes a result instead of the end of the run.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import monai
import psutil
import torch

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINT = REPO / "scripts" / "benchmark.py"
MEMORY_LIMIT_EXIT = 99
GB = 1024**3


# --------------------------------------------------------------------------------------------------- machine


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_head() -> str:
    with contextlib.suppress(OSError):
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
        return rev.stdout.strip()
    return ""


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on; load averages matter on a shared machine."""
    return {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_total_gb": round(psutil.virtual_memory().total / GB, 2),
        "memory_available_gb": round(psutil.virtual_memory().available / GB, 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "monai": monai.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model(),
        "load_average_start": list(os.getloadavg()),
        "git_head": git_head(),
    }


# --------------------------------------------------------------------------------------------------- timing


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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


# --------------------------------------------------------------------------------------------------- memory


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
        self._proc = psutil.Process()
        self.interval = interval
        self.limit = None if limit_gb is None else limit_gb * GB
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reset(self) -> None:
        self.peak = self._proc.memory_info().rss

    def _sample(self) -> None:
        rss_now = self._proc.memory_info().rss
        self.peak = max(self.peak, rss_now)
        if self.limit is not None and rss_now > self.limit:
            sys.stderr.write(f"memory watchdog: RSS {rss_now / GB:.2f} GB > limit {self.limit / GB:.2f} GB\n")
            sys.stderr.flush()
            os._exit(MEMORY_LIMIT_EXIT)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RSSMonitor:
        # Sampled on entry and exit as well: on a loaded machine the thread may not wake once in a short region.
        self.reset()
        self._sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    @property
    def peak_gb(self) -> float:
        return self.peak / GB


class PeakMemory:
    """Peak memory of a region: CUDA ``max_memory_allocated`` or sampled CPU RSS (see :meth:`result`)."""

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
        out = {"peak_rss_sampled_gb": round(self.monitor.peak_gb, 3), "ru_maxrss_gb": round(ru_maxrss_gb(), 3)}
        if self.device.type == "cuda":
            out["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(self.device) / GB, 3)
            out["peak_mem_method"] = "torch.cuda.max_memory_allocated"
        else:
            out["peak_mem_gb"] = out["peak_rss_sampled_gb"]
            out["peak_mem_method"] = "CPU RSS sampled every 5 ms during the timed steps (psutil)"
        return out


# --------------------------------------------------------------------------------------------------- subprocesses

# Options a child inherits from the parent's command line: value options (lists joined by commas, None left
# out) and switches. The child gets its own --sections, --size, --checkpointing and --malloc-tuning.
CHILD_VALUES = (
    "device",
    "coils",
    "frames",
    "network",
    "cascades",
    "batch",
    "amp",
    "repeats",
    "warmup",
    "case_slices",
    "case_direct_max_s",
    "data_batches",
    "data_workers",
    "data_files",
    "data_nz",
    "data_coils",
    "data_items",
    "sens_chunk",
    "threads",
    "mem_limit_gb",
    "demo_size",
    "demo_modalities",
    "demo_model",
)
CHILD_SWITCHES = ("compile", "tiny")


def child_argv(
    args: argparse.Namespace, section: str, size: tuple[int, int], checkpointing: bool, malloc_tuning: bool
) -> list[str]:
    """Command line re-running one (section, size) of ``args`` in a fresh interpreter."""
    argv = [sys.executable, str(ENTRY_POINT), "--sections", section, "--size", f"{size[0]}x{size[1]}"]
    for name in CHILD_VALUES:
        value = getattr(args, name)
        if value is None:
            continue
        text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        argv += ["--" + name.replace("_", "-"), text]
    for name, on in [(n, getattr(args, n)) for n in CHILD_SWITCHES] + [
        ("checkpointing", checkpointing),
        ("malloc_tuning", malloc_tuning),
    ]:
        if on:
            argv.append("--" + name.replace("_", "-"))
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

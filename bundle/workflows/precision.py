"""Mixed precision: which dtype autocast uses on a device, and an inferer that applies it.

MONAI's ``amp=True`` always means ``torch.autocast("cuda")`` plus a ``GradScaler``. That is right for fp16 on
CUDA only: bf16 needs no loss scaling (its exponent range is fp32's), and CPU autocast needs
``device_type="cpu"``. So the engines get ``amp=True`` only for fp16 (:attr:`Precision.grad_scaler`), and every
other autocast is done by :class:`AutocastInferer` around the network call. The losses, FFTs, coil combination
and data consistency stay fp32 either way (the network casts its U-Net outputs back, the losses disable
autocast), see ``docs/README.md`` "Mixed precision".

Training defaults to ``amp: auto``; inference and evaluation default to ``amp: cuda`` (autocast on GPUs only),
so that their results on a CPU are exact fp32 and do not depend on which CPU they run on.
"""

from __future__ import annotations

import functools
import logging
import platform
from dataclasses import dataclass

import torch
from monai.inferers import SimpleInferer

__all__ = ["Precision", "AutocastInferer", "cpu_has_native_bf16", "resolve_precision"]

logger = logging.getLogger(__name__)

_DTYPES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (x86 AVX512-BF16 or AMX-BF16, Arm BF16 extension).

    ``torch.backends.cpu.get_cpu_capability()`` reports the vector ISA ("AVX512"), which many CPUs without bf16
    instructions share; on those, oneDNN emulates bf16 and autocast is slower than fp32. So the CPU's own feature
    flags decide, and oneDNN must support bf16 as well.
    """
    try:
        if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
    except (AttributeError, RuntimeError):
        return False
    if platform.system() != "Linux":
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def _parse_switch(value) -> bool | str:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("auto", "cuda"):
            return text
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off", "none", ""):
            return False
        raise ValueError(f"amp must be auto, cuda, true or false, not {value!r}")
    return bool(value)


def _parse_dtype(value) -> torch.dtype | None:
    if value is None or (isinstance(value, str) and value.strip().lower() == "auto"):
        return None
    if isinstance(value, torch.dtype):
        dtype = value
    elif isinstance(value, str) and value.strip().lower().removeprefix("torch.") in _DTYPES:
        dtype = _DTYPES[value.strip().lower().removeprefix("torch.")]
    else:
        raise ValueError(f"amp_dtype must be auto, bf16 or fp16, not {value!r}")
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"amp_dtype must be auto, bf16 or fp16, not {value!r}")
    return dtype


@dataclass(frozen=True)
class Precision:
    """The autocast setting of one run: ``dtype`` is ``None`` for plain fp32."""

    device_type: str
    dtype: torch.dtype | None = None

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    @property
    def grad_scaler(self) -> bool:
        """fp16 on CUDA: the engines' own ``amp=True`` path (autocast + ``GradScaler``) is used."""
        return self.dtype == torch.float16 and self.device_type == "cuda"

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self):
        """``torch.autocast`` context for this setting (a disabled one for fp32)."""
        return torch.autocast(self.device_type, dtype=self.dtype or torch.float32, enabled=self.enabled)


def resolve_precision(amp="auto", amp_dtype="auto", device="cpu") -> Precision:
    """Decide the autocast dtype, and log it with the reason in one line (``precision: fp32 (...)``).

    * ``amp`` false: fp32.
    * ``amp`` cuda (the inference and evaluation default): as auto on CUDA, fp32 on every other device.
    * CUDA, ``amp`` auto, cuda or true: bf16 where the GPU supports it, else fp16 (with loss scaling).
    * CPU, ``amp`` auto: bf16 only where the CPU has native bf16 (:func:`cpu_has_native_bf16`), else fp32;
      ``amp`` true: bf16 regardless (with a warning where it is emulated). fp16 autocast on CPU is refused.
    * other devices: fp32 unless ``amp`` is true and ``amp_dtype`` is given.

    ``amp_dtype`` (auto, bf16, fp16 or a torch dtype) overrides the dtype choice where ``amp`` is on.
    """
    precision, reason = _resolve(amp, amp_dtype, device)
    logger.info("precision: %s (%s)", precision.name, reason)
    return precision


def _resolve(amp, amp_dtype, device) -> tuple[Precision, str]:
    switch = _parse_switch(amp)
    dtype = _parse_dtype(amp_dtype)
    device_type = torch.device(device).type
    if switch is False:
        if device_type == "cpu":
            native = "has native bf16" if cpu_has_native_bf16() else "has no native bf16"
            return Precision(device_type), f"amp is off in the config; this CPU {native}"
        return Precision(device_type), "amp is off"
    if switch == "cuda" and device_type != "cuda":
        return Precision(device_type), f"amp: cuda autocasts on GPUs only; this run is on {device_type}"
    if device_type == "cuda":
        if dtype is not None:
            return Precision(device_type, dtype), "amp_dtype set in the config"
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return Precision(device_type, torch.bfloat16), "this GPU supports bf16"
        return Precision(device_type, torch.float16), "this GPU has no bf16: fp16 with loss scaling"
    if device_type == "cpu":
        if dtype == torch.float16:
            raise ValueError("amp_dtype fp16 needs a CUDA device; use bf16 (or amp false) on the CPU")
        native = cpu_has_native_bf16()
        if switch == "auto" and not native:
            return Precision(device_type), "this CPU has no native bf16: AVX512_BF16/AMX_BF16 not found"
        if not native:
            logger.warning("amp is on, but this CPU has no native bf16: autocast is emulated and likely slower")
            return Precision(device_type, torch.bfloat16), "amp: true on a CPU without native bf16 (emulated)"
        return Precision(device_type, torch.bfloat16), "this CPU has native bf16 (AVX512_BF16 or AMX_BF16)"
    if switch is True and dtype is not None:
        return Precision(device_type, dtype), f"amp: true and amp_dtype set, on {device_type}"
    return Precision(device_type), f"no autocast rule for {device_type} with amp: {amp}"


class AutocastInferer(SimpleInferer):
    """``SimpleInferer`` that runs the network under ``precision``'s autocast.

    Inside an engine that already autocasts (MONAI's fp16 path) it adds nothing. Autocast covers the network
    only: the engines compute the loss and metrics outside this call, and they run in fp32 regardless.
    """

    def __init__(self, precision: Precision | None = None) -> None:
        super().__init__()
        self.precision = precision or Precision("cpu")

    def __call__(self, inputs, network, *args, **kwargs):
        p = self.precision
        if not p.enabled or torch.is_autocast_enabled(p.device_type):
            return super().__call__(inputs, network, *args, **kwargs)
        with p.autocast():
            return super().__call__(inputs, network, *args, **kwargs)

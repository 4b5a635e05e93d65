"""HyperCMR for CMRxRecon2024 as a MONAI bundle: PromptMR + SensNet + PromptUnet, trained with the Eagle loss.

Sub-packages are imported on first attribute access, so ``$import bundle`` in a config is cheap and
``bundle.networks.PromptMR`` works without importing every sub-package explicitly.
"""

from __future__ import annotations

import importlib

__version__ = "0.4.1"

_SUBMODULES = ("data", "errors", "io", "losses", "metrics", "mri", "networks", "process", "transforms", "workflows")

__all__ = list(_SUBMODULES)


def __getattr__(name: str):
    if name in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))

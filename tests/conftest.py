"""Shared test fixtures (shared helpers: helpers.py). Everything is tiny: the suite stays fast on 2 cores."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

# The decoded raw-data cache of every test (and its subprocesses) lives in a temporary folder, never in ~/.cache.
os.environ.setdefault("HYPERCMR_CACHE", tempfile.mkdtemp(prefix="hypercmr-cache-"))

# One thread per xdist worker: the suite runs 2 workers on 2 cores.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    """A tiny demo tree (CMRxRecon2024 layout), made once per test module."""
    from bundle.data import make_demo_dataset

    root = tmp_path_factory.mktemp("demo")
    make_demo_dataset(root, seed=0, size="tiny")
    return root

"""Shared test fixtures. Everything here is tiny so that the whole suite stays fast on 2 CPU cores."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

# One thread per xdist worker: the suite runs 2 workers on 2 cores.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)

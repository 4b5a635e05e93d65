"""Shared test fixtures. Everything here is tiny so that the whole suite stays fast on 2 CPU cores."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

# One thread per xdist worker: the suite runs 2 workers on 2 cores.
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


REPO = Path(__file__).resolve().parents[1]

# PromptMR overrides that keep the architecture but shrink it to a few thousand parameters, for workflow tests.
TINY_NET = {
    "network_def#num_cascades": 1,
    "network_def#n_feat0": 4,
    "network_def#feature_dim": [6, 8, 10],
    "network_def#prompt_dim": [2, 4, 6],
    "network_def#sens_n_feat0": 4,
    "network_def#sens_feature_dim": [6, 8, 10],
    "network_def#sens_prompt_dim": [2, 4, 6],
    "network_def#prompt_size": [8, 4, 2],
    "network_def#n_enc_cab": [1, 1, 1],
    "network_def#n_dec_cab": [1, 1, 1],
    "network_def#n_bottleneck_cab": 1,
}

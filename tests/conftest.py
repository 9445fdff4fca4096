"""Shared fixtures: deterministic seeds and few threads, so the suite is fast and repeatable."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

# Two cores on CI: more intra-op threads than cores only adds contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)

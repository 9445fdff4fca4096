"""Shared fixtures: deterministic seeds and few threads, so the suite is fast and repeatable."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

# Property tests draw the same examples on every run, so CI never fails on a draw it has not
# seen before (a flaky failure); `HYPOTHESIS_PROFILE=explore pytest` searches afresh each run.
# Tests that keep only well-posed draws (`assume`) may discard many: that is not an error.
settings.register_profile(
    "ci", derandomize=True, suppress_health_check=[HealthCheck.filter_too_much], print_blob=True
)
settings.register_profile("explore", suppress_health_check=[HealthCheck.filter_too_much])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Two cores on CI: more intra-op threads than cores only adds contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)

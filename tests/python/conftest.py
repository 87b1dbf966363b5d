# SPDX-License-Identifier: BSD-3-Clause
"""Fixtures shared by the melissa.stats tests."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import pytest

from melissa import stats


@pytest.fixture
def rng() -> np.random.Generator:
    """A fixed seed: every statistical bound in these tests was checked against this stream."""
    return np.random.default_rng(20240611)


@pytest.fixture
def restore_num_threads() -> Iterator[None]:
    """set_num_threads is process-wide: put back what the test found, whatever it did."""
    original = stats.get_num_threads()
    yield
    stats.set_num_threads(original)


@pytest.fixture
def short_switch_interval() -> Iterator[None]:
    """A 0.1 ms GIL switch interval (default 5 ms) shrinks the time another Python thread can run
    between the main thread's timestamp and its entry into a kernel, so the GIL tests can tell
    "ran during the kernel" from "ran just before it" on short kernels."""
    original = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(original)

# SPDX-License-Identifier: BSD-3-Clause
"""The benchmarks still run (their --quick modes), so that bench/ cannot rot unnoticed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize(
    "command",
    [["bench_stats.py", "--quick"], ["quantile_accuracy.py", "--cells", "50"],
     ["bench_training.py", "--quick"]],
    ids=["bench_stats", "quantile_accuracy", "bench_training"],
)
def test_benchmark_runs(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / command[0]), *command[1:]],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "|" in done.stdout  # a markdown table was printed

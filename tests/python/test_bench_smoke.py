# SPDX-License-Identifier: BSD-3-Clause
"""The benchmarks still run (their --quick modes), so that bench/ cannot rot unnoticed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
MPI_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


@pytest.mark.parametrize(
    "command",
    [["bench_stats.py", "--quick"], ["quantile_accuracy.py", "--cells", "50"],
     ["moments_accuracy.py", "--cells", "4", "--n", "200"], ["bench_training.py", "--quick"],
     ["bench_active_sampling.py", "--quick"]],
    ids=["bench_stats", "quantile_accuracy", "moments_accuracy", "bench_training",
         "bench_active_sampling"],
)
def test_benchmark_runs(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / command[0]), *command[1:]],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "|" in done.stdout  # a markdown table was printed


def test_transport_benchmark_runs() -> None:
    """bench/transport_bench.sh builds its C++ program first, then runs a few seconds."""
    done = subprocess.run([str(BENCH / "transport_bench.sh"), "--quick"], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **MPI_ROOT})
    assert done.returncode == 0, done.stderr
    assert "melissa / raw" in done.stdout


def test_launcher_benchmark_runs() -> None:
    done = subprocess.run([sys.executable, str(BENCH / "bench_launcher.py"), "--simulations",
                           "10", "--scheduler", "local"], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **MPI_ROOT})
    assert done.returncode == 0, done.stderr
    assert "local:" in done.stdout and "simulations/s" in done.stdout
    passes = subprocess.run([sys.executable, str(BENCH / "bench_launcher.py"), "--pass-cost"],
                            capture_output=True, text=True, timeout=300)
    assert passes.returncode == 0, passes.stderr
    # Linear in the simulations running: a pass over 80,000 costs 80x one over 1,000, not 6400x.
    per_simulation = [float(line.split(",")[-1].split()[0]) for line in passes.stdout.splitlines()]
    assert len(per_simulation) == 3 and per_simulation[2] < 5 * per_simulation[0], passes.stdout

# SPDX-License-Identifier: BSD-3-Clause
"""The heat-equation examples: they build against the installed package, and the C, Fortran and
Python solvers compute the same fields on 1 and 3 MPI ranks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAT = ROOT / "examples" / "heat"
MPI_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def test_heat_solvers_agree_across_languages_and_ranks(tmp_path: Path) -> None:
    build = tmp_path / "heat"
    subprocess.run([str(HEAT / "build.sh"), str(build)], check=True, timeout=300)
    done = subprocess.run([sys.executable, str(HEAT / "check_solvers.py"), str(build)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, **MPI_ROOT})
    assert done.returncode == 0, done.stdout + done.stderr


def test_statistics_demo_prints_estimates_beside_exact_values() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "stats_demo.py")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Sobol indices of the Ishigami function" in done.stdout

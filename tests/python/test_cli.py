# SPDX-License-Identifier: BSD-3-Clause
"""The `melissa` command's own behaviour: verbosity, pipes, the {python} placeholder, and the
logs a new run starts with."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from test_study import SOLVER, melissa, study_config

from melissa.config import parse_config


def test_schema_into_a_reader_that_leaves_early_is_quiet() -> None:
    done = subprocess.run(f"{sys.executable} -m melissa schema | head -c 10", shell=True,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout == "{\n  \"$defs"
    assert done.stderr == ""


def test_python_placeholder_is_the_launchers_interpreter() -> None:
    config = parse_config({
        "study_options": {"parameter_sweep_size": 2, "nb_parameters": 1, "l_bounds": [0],
                          "u_bounds": [1], "field_names": ["u"], "nb_time_steps": 1},
        "sa_config": {"mean": True},
        "client_config": {"executable_command": "{python} solver.py --python {python}x"}})
    assert config.client_config.argv == [sys.executable, "solver.py", "--python", "{python}x"]


def test_verbosity_and_a_new_runs_logs(tmp_path: Path) -> None:
    config = study_config(tmp_path, sa={"mean": True},
                          command=f"{{python}} {SOLVER} --fields u,v")
    launcher_log = tmp_path / "out" / "logs" / "launcher.log"
    quiet = melissa("-q", "run", str(config))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "", "-q prints errors only"
    assert "8/8 simulations completed" in quiet.stdout
    (tmp_path / "out" / "logs" / "simulations" / "simulation-99.err").write_text("stale")

    normal = melissa("run", "--overwrite", str(config))
    assert normal.returncode == 0, normal.stderr
    assert "done 8/8" in normal.stderr and "simulation 0 started" not in normal.stderr
    # The logs are this run's: one study in launcher.log, no file of the last run left.
    assert launcher_log.read_text().count("INFO study ") == 1
    assert not (tmp_path / "out" / "logs" / "simulations" / "simulation-99.err").exists()

    verbose = melissa("-v", "run", "--overwrite", str(config))
    assert verbose.returncode == 0, verbose.stderr
    assert "simulation 0 started" in verbose.stderr and "done 8/8" in verbose.stderr

    resumed = melissa("run", "--resume", str(config))
    assert resumed.returncode == 0, resumed.stderr
    # A resumed run adds to the logs of the run it takes up.
    assert launcher_log.read_text().count("INFO study ") == 2

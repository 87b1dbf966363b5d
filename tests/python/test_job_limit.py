# SPDX-License-Identifier: BSD-3-Clause
"""job_limit "auto": how many simulations each scheduler runs at once, where it can tell.
Studies through Slurm with it are in test_slurm.py."""

from __future__ import annotations

import os

import pytest

from melissa.launcher.schedulers import OpenMpiScheduler, Scheduler
from melissa.launcher.slurm import SlurmScheduler


def test_locally_every_core_runs_a_simulation() -> None:
    cores = len(os.sched_getaffinity(0))
    for scheduler in (Scheduler(), OpenMpiScheduler()):
        assert scheduler.capacity(1, 2) == cores
        assert scheduler.capacity(cores + 1, 2) == 1, "a simulation wider than the machine runs"


def test_from_a_login_node_the_queue_tells(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)  # these tests may run in an allocation
    assert SlurmScheduler().capacity(1, 1) is None


@pytest.mark.parametrize(("cpus_per_node", "processes", "expected"), [
    ("36(x2),72", 4, (144 - 2) // 4),
    ("2(x3)", 1, 4),
    ("8", 16, 1),
])
def test_inside_an_allocation_its_cpus_less_the_servers(
        monkeypatch: pytest.MonkeyPatch, cpus_per_node: str, processes: int,
        expected: int) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "1")
    monkeypatch.setenv("SLURM_JOB_CPUS_PER_NODE", cpus_per_node)
    assert SlurmScheduler().capacity(processes, 2) == expected

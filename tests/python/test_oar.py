# SPDX-License-Identifier: BSD-3-Clause
"""Studies through a real OAR 2.5: a cluster of 3 nodes started on this machine by
`VC_SCHEDULER=oar tools/virtual-cluster` (PostgreSQL and Almighty on node1, OAR's sshd on every
node). The launcher runs on node1 as on a login node, the server and the simulations being OAR
jobs placed on the nodes, or in an OAR job of its own; either way they talk tcp between nodes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_faults import wait_for
from test_slurm import (
    Cluster,
    assert_equals_the_local_study,
    assert_interrupt_leaves_no_job,
    cluster_config,
)

# Namespaces of this run's own, not test_slurm.py's (see there).
NAMES = {"VC_PREFIX": f"mvco{os.getpid()}", "VC_SUBNET": "10.79.0", "VC_SCHEDULER": "oar"}

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]


class OarCluster(Cluster):
    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.env.update(NAMES)

    def jobs_in(self, directory: Path) -> list[dict[str, Any]]:
        """Every job launched in or under `directory`, finished ones included, as oarstat
        gives them."""
        listed = self.run("exec", "node1", "oarstat", "--full", "--json", "--sql",
                          f"launching_directory LIKE '{directory}%'").stdout
        return list(json.loads(listed).values()) if listed.strip() else []

    def queue(self) -> list[str]:
        """The jobs not over yet: "<id> <name> <state>"."""
        listed = self.run("exec", "node1", "oarstat", "--json").stdout
        return [f"{job_id} {job['name']} {job['state']}"
                for job_id, job in (json.loads(listed) if listed.strip() else {}).items()]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OarCluster]:
    if shutil.which("oarsub") is None:
        pytest.fail("OAR is missing: make install puts Debian's oar-* packages and postgresql in")
    cluster = OarCluster(tmp_path_factory.mktemp("cluster") / "vc")
    started = cluster.run("start", "3")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield cluster
    finally:
        cluster.run("stop")


def test_sobol_study_through_oar_equals_a_local_one(cluster: OarCluster, tmp_path: Path) -> None:
    config = cluster_config(tmp_path, "oar", sobol=True)
    done = cluster.run("exec", "node1", sys.executable, "-m", "melissa", "run", str(config),
                       timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "20/20 simulations completed" in done.stdout
    assert_equals_the_local_study(tmp_path, config)

    jobs = cluster.jobs_in(config.parent)
    # The server and 4 Sobol groups of 5, simulations submitted together as array jobs.
    assert len(jobs) == 21
    assert all(job["state"] == "Terminated" and job["exit_code"] == 0 for job in jobs)
    assert len({job["array_id"] for job in jobs}) < 21
    server = next(job for job in jobs if job["name"] == "melissa-server")
    # scheduler_options reach the simulations' oarsub, not the server's.
    assert [job["project"] for job in jobs].count("melissa-test") == 20
    assert server["project"] != "melissa-test"
    elsewhere = [job for job in jobs
                 if job["assigned_network_address"] != server["assigned_network_address"]]
    assert elsewhere, "every simulation ran on the server's node: no tcp between nodes"
    assert not cluster.queue()


def test_interrupted_study_leaves_no_job(cluster: OarCluster, tmp_path: Path) -> None:
    assert_interrupt_leaves_no_job(
        cluster, cluster_config(tmp_path, "oar", step_delay=1, parameter_sweep_size=30))


def test_sobol_study_inside_an_oar_job(cluster: OarCluster, tmp_path: Path) -> None:
    """The launcher in an OAR job of the 3 nodes: the server and the simulations are processes
    of that job, on its cores."""
    config = cluster_config(tmp_path, "oar", sobol=True)
    output = tmp_path / "launcher.out"
    submitted = cluster.run("exec", "node1", "oarsub", "--resource=nodes=3",
                            f"--stdout={output}", f"--stderr={output}", f"--directory={tmp_path}",
                            f"{sys.executable} -m melissa run {config}")
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    launcher = re.findall(r"^OAR_JOB_ID=(\d+)$", submitted.stdout, re.MULTILINE)
    wait_for(lambda: not cluster.queue(), 300, "the launcher's job ended")
    [job] = [job for job in cluster.jobs_in(tmp_path) if str(job["Job_Id"]) in launcher]
    assert job["exit_code"] == 0, output.read_text()
    assert "20/20 simulations completed" in output.read_text()
    assert_equals_the_local_study(tmp_path, config)
    # Processes of the launcher's job, not jobs of their own.
    assert not cluster.jobs_in(config.parent)
    hosts = {line for path in (config.parent / "out").rglob("*.hosts")
             for line in path.read_text().split()}
    assert len(hosts) > 1, "every job ran on one node: no tcp between nodes"

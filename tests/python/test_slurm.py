# SPDX-License-Identifier: BSD-3-Clause
"""Studies through a real Slurm: a cluster of 3 nodes started on this machine by
tools/virtual-cluster (network, UTS and mount namespaces; slurmctld, 3 slurmd, munged, and the
accounting that sacct reads: slurmdbd and MariaDB). The launcher runs on node1 as on a login
node; the server and the simulations are batch jobs that Slurm places on the nodes, talking tcp
between them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_faults import assert_same_results, wait_for
from test_study import ROOT_MPI, melissa, study_config

from melissa.launcher.schedulers import JobState

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "tools" / "virtual-cluster"
# Namespaces of this run's own: a developer's cluster, another run's, or one that a killed run
# left behind may exist.
NAMES = {"VC_PREFIX": f"mvct{os.getpid()}", "VC_SUBNET": "10.78.0"}

pytestmark = [pytest.mark.cluster,
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]


class Cluster:
    def __init__(self, directory: Path, names: dict[str, str] = NAMES) -> None:
        self.env = {**os.environ, **ROOT_MPI, **names, "VC_DIR": str(directory)}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CLUSTER), *args], capture_output=True, text=True,
                              timeout=timeout, env=self.env, cwd=ROOT)

    def start_on(self, node: str, *argv: str) -> subprocess.Popen[str]:
        return subprocess.Popen([str(CLUSTER), "exec", node, *argv], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env, cwd=ROOT)

    def jobs(self) -> list[dict[str, str]]:
        """Every job the controller knows (finished ones included), as scontrol gives them."""
        listed = self.run("exec", "node1", "scontrol", "show", "job", "-o").stdout
        return [dict(item.split("=", 1) for item in line.split() if "=" in item)
                for line in listed.splitlines() if line.startswith("JobId=")]

    def accounted(self, job_ids: list[str]) -> dict[str, tuple[str, str]]:
        """What accounting keeps of these jobs: job id -> (state, "status:signal")."""
        listed = self.run("exec", "node1", "sacct", "-n", "-X", "-P", "-o",
                          "JobID,State,ExitCode", "-j", ",".join(job_ids)).stdout
        return {job_id: (state, code) for job_id, state, code in
                (line.split("|") for line in listed.splitlines())}

    def node_cpus(self) -> int:
        """The CPUs of one node (each declares what the machine has)."""
        return int(self.run("exec", "node1", "sinfo", "-h", "-N", "-n", "node1", "-o", "%c").stdout)

    def queue(self) -> list[str]:
        # -r: a job array's tasks one per line, pending ones too.
        return self.run("exec", "node1", "squeue", "-h", "-r", "-o", "%i %j %T").stdout.splitlines()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if shutil.which("slurmctld") is None:
        pytest.fail("Slurm is missing: make install puts Debian's slurm-wlm and munge in")
    cluster = Cluster(tmp_path_factory.mktemp("cluster") / "vc")
    started = cluster.run("start", "3")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield cluster
    finally:
        cluster.run("stop")


# Where a study's scheduler_options reach only its simulations: tests look for the mark.
SIMULATION_OPTIONS = {"slurm": ["--comment=melissa-test"], "oar": ["--project=melissa-test"]}


def cluster_config(tmp_path: Path, scheduler: str = "slurm", *, sobol: bool = False,
                   step_delay: float = 0.0, launcher: dict[str, Any] | None = None,
                   **overrides: Any) -> Path:
    """A study through the scheduler, in tmp_path/cluster, its simulations sending a step every
    step_delay seconds; the same study run locally at full speed, in tmp_path."""
    sa = {"mean": True, "variance": True, "min": True, "max": True, "sobol_indices": sobol}
    config = study_config(tmp_path, sa=sa,
                          study={"field_shapes": {"u": [40], "v": [40]},
                                 "parameter_sweep_size": 4 if sobol else 8, **overrides})
    clustered = json.loads(config.read_text().split("\n", 1)[1])
    clustered["launcher_config"].update(scheduler=scheduler, **(launcher or {}),
                                        scheduler_options={
                                            "simulation": SIMULATION_OPTIONS[scheduler]})
    if step_delay:
        clustered["client_config"]["executable_command"] += f" --step-delay {step_delay:g}"
    (tmp_path / "cluster").mkdir()
    (tmp_path / "cluster" / "config.json").write_text(json.dumps(clustered))
    return tmp_path / "cluster" / "config.json"


def assert_interrupt_leaves_no_job(cluster: Cluster, config: Path) -> None:
    """Ctrl-C to the launcher once simulations are queued: it exits 130, no job of the study is
    left, and what completed is kept."""
    launcher = cluster.start_on("node1", sys.executable, "-m", "melissa", "run", str(config))
    wait_for(lambda: sum("melissa-simulation" in line for line in cluster.queue()) >= 2, 120,
             "simulations queued")
    time.sleep(1)
    # nsenter passes the signal on to the launcher, as a terminal's Ctrl-C would reach it.
    launcher.send_signal(signal.SIGINT)
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, stderr
    assert not cluster.queue()
    assert (config.parent / "out" / "results.nc").exists(), "what completed was kept"


def assert_equals_the_local_study(tmp_path: Path, config: Path) -> None:
    local = melissa("run", str(tmp_path / "config.json"))
    assert local.returncode == 0, local.stderr
    assert_same_results(config.parent / "out" / "results.nc", tmp_path / "out" / "results.nc")


def run_inside_an_allocation(cluster: Cluster, tmp_path: Path, config: Path) -> str:
    """`melissa run` as a batch job of 6 tasks over the 3 nodes; what it printed."""
    output = tmp_path / "launcher.out"
    done = cluster.run("exec", "node1", "sbatch", "--wait", "--nodes=3", "--ntasks=6",
                       f"--output={output}", f"--chdir={tmp_path}", "--wrap",
                       f"{sys.executable} -m melissa run {config}", timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr + output.read_text()
    assert not cluster.queue()
    # Steps of the launcher's job, not jobs of their own.
    assert not [job for job in cluster.jobs() if job["JobName"].startswith("melissa-")
                and job["WorkDir"] in (str(config.parent), str(config.parent / "out"))]
    return output.read_text()


def test_sobol_study_through_slurm_equals_a_local_one(cluster: Cluster, tmp_path: Path) -> None:
    config = cluster_config(tmp_path, sobol=True)
    done = cluster.run("exec", "node1", sys.executable, "-m", "melissa", "run", str(config),
                       timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "20/20 simulations completed" in done.stdout
    assert_equals_the_local_study(tmp_path, config)

    jobs = [job for job in cluster.jobs()
            if job["WorkDir"] in (str(config.parent), str(config.parent / "out"))]
    # The server and 4 Sobol groups of 5, as tasks of job arrays: fewer sbatch calls than jobs.
    assert len(jobs) == 21 and all(job["JobState"] == "COMPLETED" for job in jobs)
    # Accounting keeps them, as the launcher names them: an array's task as ARRAY_TASK.
    ids = [f"{job['ArrayJobId']}_{job['ArrayTaskId']}" if "ArrayTaskId" in job else job["JobId"]
           for job in jobs]
    assert cluster.accounted(ids) == {job_id: ("COMPLETED", "0:0") for job_id in ids}
    assert any("ArrayTaskId" in job for job in jobs)
    server = next(job for job in jobs if job["JobName"] == "melissa-server")
    # scheduler_options reach the simulations' sbatch, not the server's.
    assert [job.get("Comment") for job in jobs].count("melissa-test") == 20
    assert server.get("Comment") != "melissa-test"
    elsewhere = [job for job in jobs if job["NodeList"] != server["NodeList"]]
    assert elsewhere, "every simulation ran on the server's node: no tcp between nodes"
    assert not cluster.queue()


def test_cancelled_simulation_job_is_retried(cluster: Cluster, tmp_path: Path) -> None:
    config = cluster_config(tmp_path, step_delay=0.5)
    launcher = cluster.start_on("node1", sys.executable, "-m", "melissa", "run", str(config))
    log = config.parent / "out" / "logs" / "launcher.log"

    def running_simulation() -> str | None:
        """Simulation 2's job (a task of a job array, as the launcher logged it), once it runs."""
        found = re.search(r"simulation 2 started \(attempt 1\) as Slurm job (\S+):",
                          log.read_text() if log.exists() else "")
        if found is None:
            return None
        running = {line.split()[0] for line in cluster.queue() if line.split()[2] == "RUNNING"}
        return found[1] if found[1] in running else None

    wait_for(lambda: running_simulation() is not None, 120, "simulation 2 running")
    cancelled = str(running_simulation())
    assert cluster.run("exec", "node1", "scancel", cancelled).returncode == 0
    stdout, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, stdout + stderr
    assert "simulation 2 failed" in stderr and "8/8 simulations completed" in stdout
    # Its end as accounting keeps it, and the launcher's word of it: its script's status, which
    # depends on how srun took the cancellation (143, a SIGTERM, that sacct prints less 128; 40
    # seen once, srun having caught a SIGCONT first).
    assert cluster.accounted([cancelled]) == {cancelled: ("CANCELLED by 0", "0:0")}
    assert re.search(r"simulation 2 failed \(exit status \d+", log.read_text())
    assert_equals_the_local_study(tmp_path, config)


def test_interrupted_study_leaves_no_job(cluster: Cluster, tmp_path: Path) -> None:
    assert_interrupt_leaves_no_job(
        cluster, cluster_config(tmp_path, step_delay=1, parameter_sweep_size=30))


def test_auto_job_limit_follows_what_the_cluster_starts(cluster: Cluster,
                                                         tmp_path: Path) -> None:
    """job_limit "auto": as many simulations run as the nodes hold, a few wait in the queue,
    and when a node comes back the study takes it up."""
    config = cluster_config(tmp_path, step_delay=0.5, launcher={"job_limit": "auto"},
                            parameter_sweep_size=24)
    cpus = cluster.node_cpus()
    seen: list[tuple[int, int]] = []  # (running, pending) simulations, as squeue lists them

    def count() -> tuple[int, int]:
        states = [line.split()[2] for line in cluster.queue() if "simulation" in line]
        seen.append((states.count("RUNNING"), states.count("PENDING")))
        return seen[-1]

    drain = ["exec", "node1", "scontrol", "update", "NodeName=node3"]
    assert cluster.run(*drain, "State=DRAIN", "Reason=melissa-test").returncode == 0
    launcher = cluster.start_on("node1", sys.executable, "-m", "melissa", "run", str(config))
    try:
        # Two nodes, the server's 2 ranks on them: the rest of their CPUs for simulations.
        wait_for(lambda: count() == (2 * cpus - 2, 4), 120, "the two nodes full, 4 waiting")
        assert cluster.run(*drain, "State=RESUME").returncode == 0
        wait_for(lambda: count()[0] == 3 * cpus - 2, 120, "node3 taken up")
    except BaseException:
        launcher.send_signal(signal.SIGINT)
        launcher.communicate(timeout=120)
        raise
    finally:
        cluster.run(*drain, "State=RESUME")
    stdout, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, stdout + stderr
    assert "24/24 simulations completed" in stdout
    # Never more waiting than it takes to fill a slot at once; never a job the study did not need.
    assert max(pending for _, pending in seen) <= 4, seen
    assert len([job for job in cluster.jobs() if "simulation" in job["JobName"]
                and job["WorkDir"] == str(config.parent)]) == 24
    assert_equals_the_local_study(tmp_path, config)


def test_sobol_study_inside_an_allocation(cluster: Cluster, tmp_path: Path) -> None:
    """The launcher in a batch job of its own: the server and the simulations are job steps
    sharing its allocation of the 3 nodes, as many at once as it holds (job_limit "auto")."""
    config = cluster_config(tmp_path, sobol=True, launcher={"job_limit": "auto"})
    assert "20/20 simulations completed" in run_inside_an_allocation(cluster, tmp_path, config)
    # 6 tasks' CPUs, 2 of them the server's.
    assert "job limit 4" in (config.parent / "out" / "logs" / "launcher.log").read_text()
    assert_equals_the_local_study(tmp_path, config)


@pytest.mark.parametrize("inside", [False, True], ids=["login-node", "allocation"])
def test_training_study_through_slurm(cluster: Cluster, tmp_path: Path, inside: bool) -> None:
    from test_training import training_config

    config = training_config(tmp_path)
    config["study_options"]["parameter_sweep_size"] = 16
    config["launcher_config"]["scheduler"] = "slurm"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    if inside:
        printed = run_inside_an_allocation(cluster, tmp_path, path)
    else:
        done = cluster.run("exec", "node1", sys.executable, "-m", "melissa", "run", str(path),
                           timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        printed = done.stdout
    assert "16/16 simulations completed" in printed
    metrics = [json.loads(line) for line in
               (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["validation_loss"] is not None
    assert (tmp_path / "out" / "model.pt").exists()
    assert not cluster.queue()


def job_outcomes(directory: Path) -> None:
    """On a node (this module run as a script): SlurmScheduler's view of 4 jobs that end each
    their way, a job array's task completing, one exiting with 3, one cancelled while it runs,
    and a single job completing; printed as JSON with the batch commands it ran, in order."""
    from melissa.launcher import batch, slurm
    from melissa.launcher.schedulers import JobSpec

    commands: list[str] = []

    def counted(argv: list[str], **kwargs: Any) -> str:
        commands.append(argv[0])
        return batch.run_command(argv, **kwargs)

    slurm.run_command = counted
    scheduler = slurm.SlurmScheduler()

    def spec(name: str, command: str) -> JobSpec:
        return JobSpec(name, ["sh", "-c", command], 1, directory / f"{name}.out",
                       directory / f"{name}.err", directory)

    jobs = scheduler.submit_all([spec(f"simulation{k}", command) for k, command in
                                 enumerate(["sleep 1", "sleep 1; exit 3", "sleep 600"])])
    jobs.append(scheduler.submit(spec("server", "true")))
    wait_for(lambda: jobs[2].poll() is JobState.RUNNING, 60, "the job to cancel running")
    scheduler.cancel_job(jobs[2].job_id)
    wait_for(lambda: not any(job.poll().active for job in jobs), 60, "every job's end")
    print(json.dumps({"ends": [[job.poll().value, job.exit_code] for job in jobs],
                      "commands": commands}))


@pytest.mark.parametrize("accounting", [True, False], ids=["sacct", "no-accounting"])
def test_job_ends_come_from_accounting_or_the_controller(cluster: Cluster, tmp_path: Path,
                                                         accounting: bool) -> None:
    """With accounting, one sacct for the jobs that have left the queue; without (many sites),
    sacct fails once and scontrol tells, as the launcher logs: the same ends either way."""
    if not accounting:
        cluster = Cluster(tmp_path / "vc", {"VC_PREFIX": f"mvcu{os.getpid()}",
                                            "VC_SUBNET": "10.81.0", "VC_ACCOUNTING": "0"})
        started = cluster.run("start", "1")
        assert started.returncode == 0, started.stdout + started.stderr
    try:
        done = cluster.run("exec", "node1", sys.executable, __file__, str(tmp_path), timeout=120)
    finally:
        if not accounting:
            cluster.run("stop")
    assert done.returncode == 0, done.stdout + done.stderr
    printed = json.loads(done.stdout)
    ends = printed["ends"]
    assert ends[:2] == [["completed", 0], ["failed", 3]] and ends[3] == ["completed", 0], ends
    # The cancelled job's status is srun's, which depends on how it took the cancellation.
    assert ends[2][0] == "failed" and ends[2][1] not in (None, 0), ends
    commands = printed["commands"]
    assert commands.count("sacct") <= commands.count("squeue")
    if accounting:
        assert "scontrol" not in commands and "no job accounting" not in done.stderr
    else:
        assert commands.count("sacct") == 1
        assert "scontrol" in commands
        assert "no job accounting (" in done.stderr and "storage is disabled" in done.stderr


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.INFO)
    job_outcomes(Path(sys.argv[1]))

# SPDX-License-Identifier: BSD-3-Clause
"""The launcher's own cost: a study of many tiny simulations (the heat solver on a 4 x 4 grid,
2 steps: a few milliseconds of work each), so that what is measured is the launcher, the
scheduler and the server's bookkeeping, not the simulations.

    python bench/bench_launcher.py --simulations 2000 --scheduler local slurm

For `slurm`, the study runs on a virtual cluster of 3 nodes (tools/virtual-cluster, root) that
this script starts and stops, the launcher on node1 as on a login node. It prints, per
scheduler: the study's time, simulations per second, the launcher's time per simulation, and
for Slurm the sbatch calls it made (job arrays) and the jobs Slurm ran.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAT = ROOT / "build" / "examples" / "heat" / "heat_c"
CLUSTER = ROOT / "tools" / "virtual-cluster"
MELISSA = [sys.executable, "-m", "melissa", "run"]
ENV = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
       "VC_PREFIX": "mvcb", "VC_SUBNET": "10.79.0"}


def config(directory: Path, simulations: int, scheduler: str, job_limit: int,
           sleep: float) -> Path:
    path = directory / "config.json"
    command = f"{HEAT} --nx 4 --ny 4 --steps 2"
    if sleep:
        # Many simulations alive at once, each costing nothing while it waits.
        command = f"sh -c 'sleep {sleep:g}; exec \"$0\" \"$@\"' {command}"
    path.write_text(json.dumps({
        "study_options": {
            "parameter_sweep_size": simulations, "nb_parameters": 5,
            "l_bounds": [0, 100, 100, 100, 100], "u_bounds": [100, 500, 500, 500, 500],
            "sampler": "halton", "field_names": ["temperature"],
            "field_shapes": {"temperature": [4, 4]}, "nb_time_steps": 2},
        "sa_config": {"mean": True, "variance": True},
        "launcher_config": {"scheduler": scheduler, "job_limit": job_limit},
        "client_config": {"executable_command": command},
        "output_dir": "out"}))
    return path


def run(simulations: int, scheduler: str, job_limit: int, sleep: float) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-launcher-") as tmp:
        path = config(Path(tmp), simulations, scheduler, job_limit, sleep)
        command = MELISSA + [str(path)]
        if scheduler == "slurm":
            command = [str(CLUSTER), "exec", "node1", *command]
        start = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, env=ENV,
                              timeout=3600)
        seconds = time.monotonic() - start
        if done.returncode != 0 or f"{simulations}/{simulations}" not in done.stdout:
            raise SystemExit(f"{scheduler}: the study failed:\n{done.stdout}{done.stderr}")
        log = (Path(tmp) / "out" / "logs" / "launcher.log").read_text()
        jobs = re.findall(r"as Slurm job (\d+)(?:_\d+)?:", log)
        cpu = float(re.findall(r"launcher: ([\d.]+) s of CPU", log)[-1])
        return {"seconds": seconds, "per_second": simulations / seconds,
                "ms_per_simulation": 1e3 * seconds / simulations,
                "cpu_ms_per_simulation": 1e3 * cpu / simulations,
                "sbatch_calls": len(set(jobs)), "jobs": len(jobs)}


def pass_cost(running: int, ranks: int) -> float:
    """Seconds of one pass of the launcher's loop over `running` simulations in flight: what it
    asks of the servers' progress for each (StudyRun.confirmed, StudyRun.data_seen), the
    finished ones fragmented into a range every other simulation, the worst case."""
    from types import SimpleNamespace

    from melissa.launcher.study import StudyRun
    from melissa.protocol import RankProgress, ranges

    sims = range(0, 2 * running, 2)
    progress = [RankProgress(rank, 0.0, ranges(range(1, 2 * running, 2)),
                             [[sim, 10, 5] for sim in sims]) for rank in range(ranks)]
    study = SimpleNamespace(ranks_progress=progress)
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for sim in sims:
            StudyRun.confirmed(study, sim)  # type: ignore[arg-type]
            StudyRun.data_seen(study, sim)  # type: ignore[arg-type]
        rounds.append(time.perf_counter() - start)
    return sorted(rounds)[len(rounds) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=2000)
    parser.add_argument("--job-limit", type=int, default=12)
    parser.add_argument("--scheduler", nargs="+", default=["local", "slurm"],
                        choices=["local", "slurm"])
    parser.add_argument("--sleep", type=float, default=0.0,
                        help="seconds each simulation waits before it starts: with a large "
                        "--job-limit, what many simulations alive at once cost the launcher")
    parser.add_argument("--pass-cost", action="store_true",
                        help="only the cost of one pass of the launcher's loop, by simulations "
                        "running at once")
    args = parser.parse_args()
    if args.pass_cost:
        for running in (1_000, 10_000, 80_000):
            seconds = pass_cost(running, 16)
            print(f"{running:6d} simulations running, 16 server ranks: a pass of the launcher's "
                  f"loop {1e3 * seconds:7.1f} ms, {1e6 * seconds / running:4.1f} us per "
                  "simulation")
        return 0
    if not HEAT.exists():
        subprocess.run([str(ROOT / "examples" / "heat" / "build.sh"), str(HEAT.parent)],
                       check=True)
    ENV["VC_DIR"] = str(Path(tempfile.mkdtemp(prefix="bench-vc-")) / "vc")
    if "slurm" in args.scheduler:
        subprocess.run([str(CLUSTER), "start", "3"], check=True, env=ENV,
                       stdout=subprocess.DEVNULL)
    try:
        print(f"{args.simulations} simulations, job_limit {args.job_limit}, 1 server rank"
              + (f", each waiting {args.sleep:g} s" if args.sleep else ""))
        for scheduler in args.scheduler:
            figures = run(args.simulations, scheduler, args.job_limit, args.sleep)
            slurm = (f", {figures['sbatch_calls']:.0f} sbatch calls for "
                     f"{figures['jobs']:.0f} jobs" if scheduler == "slurm" else "")
            print(f"{scheduler:>6}: {figures['seconds']:7.1f} s, {figures['per_second']:5.1f} "
                  f"simulations/s, {figures['ms_per_simulation']:6.1f} ms per simulation, "
                  f"launcher CPU {figures['cpu_ms_per_simulation']:5.1f} ms per simulation"
                  f"{slurm}")
    finally:
        if "slurm" in args.scheduler:
            subprocess.run([str(CLUSTER), "stop"], env=ENV)
    return 0


if __name__ == "__main__":
    sys.exit(main())

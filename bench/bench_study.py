# SPDX-License-Identifier: BSD-3-Clause
"""The heat-equation study through melissa against the file-based workflow it replaces.

    python bench/bench_study.py [--simulations 128] [--nx 64] [--steps 100]
                                [--transports zmq ucx auto] [--quick]

All run the same simulations of the C heat solver (examples/heat, 2 MPI ranks each, 2 at a
time) with the same parameters:

- melissa, once per transport (launcher_config.transport): `melissa run` on a statistics study
  (mean, variance, skewness, kurtosis, min, max, threshold exceedance, quantiles) with a 2-rank
  server; nothing but results.nc and logs is written;
- files: each simulation writes every time step of its field (--write-fields), then numpy and
  scipy compute the same statistics from the files (exact quantiles).

Reported: wall time end to end, the simulations' own run time (median), peak memory of the
server ranks and of the analysis, bytes written to disk.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HEAT = ROOT / "examples" / "heat"
MPI_ROOT = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
THRESHOLDS = [100.0, 200.0, 300.0]
PROBABILITIES = [0.05, 0.5, 0.95]


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def study_config(args: argparse.Namespace, solver: Path, output: Path, transport: str) -> dict:
    return {
        "study_options": {
            "parameter_sweep_size": args.simulations, "nb_parameters": 5,
            "l_bounds": [0, 100, 100, 100, 100], "u_bounds": [100, 500, 500, 500, 500],
            "sampler": "halton", "seed": 5, "field_names": ["temperature"],
            "nb_time_steps": args.steps,
        },
        "sa_config": {"mean": True, "variance": True, "skewness": True, "kurtosis": True,
                      "min": True, "max": True, "threshold_exceedance": THRESHOLDS,
                      "quantiles": PROBABILITIES},
        "launcher_config": {"job_limit": 2, "num_server_processes": 2,
                            "num_client_processes": 2, "transport": transport},
        "client_config": {"executable_command":
                          f"{solver} --nx {args.nx} --ny {args.nx} --steps {args.steps}"},
        "output_dir": str(output),
    }


def run_melissa(args: argparse.Namespace, solver: Path, work: Path, transport: str) -> dict:
    output = work / f"melissa-{transport}"
    config = work / f"config-{transport}.json"
    config.write_text(json.dumps(study_config(args, solver, output, transport)))
    start = time.perf_counter()
    subprocess.run([str(ROOT / ".venv" / "bin" / "melissa"), "run", str(config), "--overwrite"],
                   check=True, capture_output=True, env={**os.environ, **MPI_ROOT})
    wall = time.perf_counter() - start
    launcher = (output / "logs" / "launcher.log").read_text()
    runs = [float(s) for s in re.findall(r"completed in ([0-9.]+) s", launcher)]
    peaks = [int(m) for rank in output.glob("logs/server-*.log")
             for m in re.findall(r"peak memory (\d+) kB", rank.read_text())]
    return {"wall": wall, "run": statistics.median(runs), "memory_kb": sum(peaks),
            "disk": disk_bytes(output), "output": output}


def run_solver(args: argparse.Namespace, solver: Path, parameters: np.ndarray,
               output: list[str]) -> float:
    """One simulation without melissa (2 ranks); its wall time."""
    mpirun = shutil.which("mpirun") or "mpirun"
    start = time.perf_counter()
    subprocess.run([mpirun, "--oversubscribe", "-np", "2", str(solver), "--nx", str(args.nx),
                    "--ny", str(args.nx), "--steps", str(args.steps), "--no-melissa", *output,
                    *map(repr, parameters.tolist())],
                   check=True, capture_output=True, env={**os.environ, **MPI_ROOT})
    return time.perf_counter() - start


def run_plain(args: argparse.Namespace, solver: Path, parameters: np.ndarray) -> float:
    """The median run of a simulation that neither sends nor writes: the solver alone, two at a
    time as in the studies."""
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda p: run_solver(args, solver, p, []), parameters[:16]))
    return statistics.median(runs)


def run_files(args: argparse.Namespace, solver: Path, work: Path, parameters: np.ndarray
              ) -> dict:
    fields = work / "files"
    shutil.rmtree(fields, ignore_errors=True)

    def simulation(sim: int) -> float:
        directory = fields / f"simulation-{sim}"
        directory.mkdir(parents=True)
        return run_solver(args, solver, parameters[sim], ["--write-fields", str(directory)])

    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # the same job limit
        runs = list(pool.map(simulation, range(len(parameters))))
    simulated = time.perf_counter() - start
    analysis = [sys.executable, str(Path(__file__)), "--analyse", str(fields),
                "--steps", str(args.steps), "--nx", str(args.nx)]
    start = time.perf_counter()
    subprocess.run(analysis, check=True)
    analysed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # the largest child: this one
    return {"wall": simulated + analysed, "simulations": simulated, "analysis": analysed,
            "run": statistics.median(runs), "memory_kb": peak, "disk": disk_bytes(fields)}


def analyse(fields: Path, steps: int, nx: int) -> None:
    """The file-based analysis: per time step, every simulation's field, then numpy/scipy."""
    import scipy.stats

    sims = sorted(fields.glob("simulation-*"))
    out = {}
    for step in range(steps):
        data = np.stack([np.fromfile(sim / f"step-{step:04d}.bin", dtype="<f8") for sim in sims])
        out[step] = {
            "mean": data.mean(0), "variance": data.var(0, ddof=1),
            "skewness": scipy.stats.skew(data, 0), "kurtosis": scipy.stats.kurtosis(data, 0),
            "min": data.min(0), "max": data.max(0),
            "exceedance": np.stack([(data > t).sum(0) for t in THRESHOLDS]),
            "quantiles": np.quantile(data, PROBABILITIES, axis=0),
        }
    np.savez(fields / "results.npz", **{f"{k}_{s}": v for s, d in out.items()
                                       for k, v in d.items()})
    assert data.shape[1] == nx * nx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulations", type=int, default=128)
    parser.add_argument("--nx", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--transports", nargs="+", default=["zmq", "ucx"],
                        choices=["zmq", "ucx", "auto"], help="melissa's, each a run of its own")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--analyse", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.analyse:
        analyse(args.analyse, args.steps, args.nx)
        return
    if args.quick:
        args.simulations, args.nx, args.steps = 6, 16, 10
    work = ROOT / "build" / "bench-study"
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(HEAT / "build.sh"), str(ROOT / "build" / "examples" / "heat")],
                   check=True)
    solver = ROOT / "build" / "examples" / "heat" / "heat_c"
    runs = {t: run_melissa(args, solver, work, t) for t in args.transports}
    import xarray as xr

    with xr.open_dataset(next(iter(runs.values()))["output"] / "results.nc") as ds:
        parameters = ds["parameters"].values
    # The solver alone before the files: writing back gigabytes of them slows whatever follows.
    plain = run_plain(args, solver, parameters)
    files = run_files(args, solver, work, parameters)
    shutil.rmtree(work / "files", ignore_errors=True)

    gigabytes = args.simulations * args.steps * args.nx**2 * 8 / 1e9
    print("## Heat-equation study: melissa against files\n")
    print(f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    print(f"- machine: {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"- command: `python bench/bench_study.py --simulations {args.simulations} --nx "
          f"{args.nx} --steps {args.steps} --transports {' '.join(args.transports)}`")
    print(f"- {args.simulations} simulations of a {args.nx} x {args.nx} grid, {args.steps} time "
          f"steps ({gigabytes:.2f} GB of fields), 2 MPI ranks each, 2 at a time; melissa's "
          "server: 2 ranks\n")
    print("| workflow | wall time (s) | simulation run, median (s) | peak memory (MB) | "
          "written to disk (MB) |")
    print("|---|---|---|---|---|")
    for transport, melissa in runs.items():
        print(f"| melissa (in transit, {transport}) | {melissa['wall']:.1f} | "
              f"{melissa['run']:.2f} | {melissa['memory_kb'] / 1024:.0f} (server ranks) | "
              f"{melissa['disk'] / 1e6:.1f} |")
    print(f"| files, then numpy ({files['simulations']:.1f} s + {files['analysis']:.1f} s) | "
          f"{files['wall']:.1f} | {files['run']:.2f} | {files['memory_kb'] / 1024:.0f} "
          f"(analysis) | {files['disk'] / 1e6:.1f} |")
    print()
    for transport, melissa in runs.items():
        print(f"- melissa ({transport}) end to end: {files['wall'] / melissa['wall']:.2f}x "
              f"faster than files; disk: {files['disk'] / max(melissa['disk'], 1):.0f}x less; "
              f"a simulation's run {melissa['run'] / plain:.2f}x the solver alone's")
    for transport in [t for t in runs if t != "zmq"] if "zmq" in runs else []:
        print(f"- {transport} over zmq, end to end: "
              f"{runs['zmq']['wall'] / runs[transport]['wall']:.2f}x; a simulation's run: "
              f"{runs['zmq']['run'] / runs[transport]['run']:.2f}x")
    print(f"- a simulation's run (2 at a time), median: {plain:.2f} s for the solver alone, "
          f"{files['run'] / plain:.2f}x that writing its fields")


if __name__ == "__main__":
    main()

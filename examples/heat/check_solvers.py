# SPDX-License-Identifier: BSD-3-Clause
"""Checks that the C, Fortran and Python heat solvers compute the same fields, on 1 and 3 MPI
ranks (3 ranks over 11 rows: uneven blocks), without a melissa server (--no-melissa
--write-fields).

    python examples/heat/check_solvers.py [BUILD_DIR]

BUILD_DIR holds heat_c and heat_fortran (examples/heat/build.sh BUILD_DIR; default
build/examples/heat under the repository). Prints the largest relative difference from the C
solver on one rank, and exits with 1 if it is above 1e-12 or a run fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NX, NY, STEPS = 13, 11, 25
# A negative initial temperature in exponent notation: the launcher appends repr() of the
# parameters, which may read so.
TEMPERATURES = ["-1.25e+1", "100", "250.25", "300", "475"]
TOLERANCE = 1e-12


def solvers(build_dir: Path) -> dict[str, list[str]]:
    return {"c": [str(build_dir / "heat_c")], "fortran": [str(build_dir / "heat_fortran")],
            "python": [sys.executable, str(HERE / "heat.py")]}


def run(command: list[str], ranks: int, out: Path) -> np.ndarray:
    """The fields of every time step, shape (STEPS, NY, NX)."""
    out.mkdir()
    mpirun = shutil.which("mpirun") or shutil.which("mpiexec")
    if mpirun is None:
        sys.exit("check_solvers: mpirun is not on PATH")
    env = dict(os.environ)
    if os.geteuid() == 0:  # OpenMPI refuses to run as root otherwise (containers, CI)
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    argv = [mpirun, "--oversubscribe", "-np", str(ranks), *command, "--nx", str(NX), "--ny",
            str(NY), "--steps", str(STEPS), "--no-melissa", "--write-fields", str(out),
            *TEMPERATURES]
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        sys.exit(f"check_solvers: {' '.join(argv)} failed ({result.returncode}):\n"
                 f"{result.stderr}")
    files = sorted(out.iterdir())
    expected = [f"step-{t:04d}.bin" for t in range(STEPS)]
    if [f.name for f in files] != expected:
        sys.exit(f"check_solvers: {' '.join(argv)} wrote {[f.name for f in files]}")
    return np.stack([np.fromfile(f, dtype="<f8").reshape(NY, NX) for f in files])


def physics_problem(fields: np.ndarray) -> str | None:
    """What a correct solver cannot give: values beyond the range of the temperatures (the
    explicit scheme keeps the maximum principle), or the boundaries in the wrong place. The
    equation is linear and the initial field uniform, so each cell of the left half exceeds its
    mirror image in the right half by a positive multiple of LEFT - RIGHT, and likewise for the
    bottom half and BOTTOM - TOP."""
    initial, left, right, bottom, top = (float(t) for t in TEMPERATURES)
    if fields.min() < min(initial, left, right, bottom, top) or \
            fields.max() > max(initial, left, right, bottom, top):
        return f"values in [{fields.min()}, {fields.max()}], beyond the temperatures"
    last = fields[-1]
    halves = {"left": (last[:, : NX // 2] - last[:, ::-1][:, : NX // 2], left - right),
              "bottom": (last[: NY // 2] - last[::-1][: NY // 2], bottom - top)}
    for side, (excess, sign) in halves.items():
        if not np.all(np.sign(excess) == np.sign(sign)):
            return f"the {side} half is not the side of its boundary temperature"
    return None


def main() -> int:
    build_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[1] / "build/examples/heat"
    with tempfile.TemporaryDirectory(prefix="heat-check-") as tmp:
        fields = {(name, ranks): run(command, ranks, Path(tmp) / f"{name}-{ranks}")
                  for name, command in solvers(build_dir).items() for ranks in (1, 3)}
    reference = fields["c", 1]
    worst = 0.0
    for (name, ranks), field in fields.items():
        scale = np.maximum(np.abs(field), np.abs(reference))
        difference = np.abs(field - reference)
        relative = float(np.max(np.divide(difference, scale, out=np.zeros_like(scale),
                                          where=difference > 0)))
        print(f"{name:8s} {ranks} rank(s): max relative difference from C on 1 rank {relative:.3g}")
        worst = max(worst, relative)
    problem = physics_problem(reference)
    if problem:
        print(f"check_solvers: the C solver's field looks wrong: {problem}", file=sys.stderr)
        return 1
    if worst > TOLERANCE:
        print(f"check_solvers: the solvers differ by {worst:.3g} > {TOLERANCE:g}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

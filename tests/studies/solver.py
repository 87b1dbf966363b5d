# SPDX-License-Identifier: BSD-3-Clause
"""A solver for the study tests: fields with known statistics, and ways to misbehave.

    python solver.py [options] P1 P2 ... (the launcher appends the parameters)

--model polynomial: cell i of a field of n cells at step t is
    p1 sin(x_i + t) + p2^2 + p3 x_i t, x_i = i / n (any number of parameters >= 3, extra unused)
--model ishigami: three parameters on [-pi, pi]; cell i is the Ishigami function with
    a = 1 + 6 i / (n - 1) and b = 0.05 + 0.1 i / (n - 1): indices known per cell, constant in time.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np


def field(model: str, parameters: np.ndarray, step: int, cells: int) -> np.ndarray:
    i = np.arange(cells)
    if model == "ishigami":
        a = 1.0 + 6.0 * i / max(cells - 1, 1)
        b = 0.05 + 0.1 * i / max(cells - 1, 1)
        x1, x2, x3 = parameters[:3]
        return np.sin(x1) + a * np.sin(x2) ** 2 + b * x3**4 * np.sin(x1)
    x = i / cells
    return parameters[0] * np.sin(x + step) + parameters[1] ** 2 + parameters[2] * x * step


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["polynomial", "ishigami"], default="polynomial")
    parser.add_argument("--cells", type=int, default=40)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--fields", default="u", help="comma-separated field names")
    parser.add_argument("--float32", action="store_true")
    parser.add_argument("--no-melissa", action="store_true", help="run offline")
    parser.add_argument("--write-fields", type=Path, help="also write every field to .npy here")
    parser.add_argument("--crash-ids", default="", help="simulation ids that exit with status 3")
    parser.add_argument("--crash-once-after", type=int,
                        help="on a first attempt, exit with status 4 after this many steps")
    parser.add_argument("--hang-ids", default="", help="simulation ids that hang after step 1")
    parser.add_argument("--sigkill-ids", default="",
                        help="with --crash-once-after: these ids SIGKILL themselves instead")
    parser.add_argument("--cells-for-ids", default="",
                        help="id:cells,...: these simulations send fields of another size")
    parser.add_argument("--steps-for-ids", default="",
                        help="id:steps,...: these simulations send another number of steps")
    parser.add_argument("--field-for-ids", default="",
                        help="id:name,...: these simulations send their last field under "
                        "another name")
    parser.add_argument("--no-finalize-ids", default="",
                        help="simulation ids that exit with status 0 without finalize")
    parser.add_argument("--ignore-melissa-errors", action="store_true",
                        help="go on without melissa when init fails, exiting 0 (as a solver "
                        "that ignores the error codes)")
    parser.add_argument("--step-delay", type=float, default=0.0,
                        help="seconds of 'computation' per step")
    parser.add_argument("parameters", type=float, nargs="+")
    args = parser.parse_args()

    sim = int(os.environ.get("MELISSA_SIMULATION_ID", "0"))
    names = args.fields.split(",")
    cells = int(_for_id(args.cells_for_ids, sim, args.cells))
    steps = int(_for_id(args.steps_for_ids, sim, args.steps))
    names[-1] = _for_id(args.field_for_ids, sim, names[-1])
    dtype = np.float32 if args.float32 else np.float64
    if str(sim) in args.crash_ids.split(","):
        print(f"simulation {sim} crashes on purpose", file=sys.stderr)
        return 3
    client = None
    if not args.no_melissa:
        from melissa import client
        try:
            for name in names:
                client.init(name, cells)
        except RuntimeError as error:
            if not args.ignore_melissa_errors:
                raise
            print(f"melissa failed, going on without it: {error}", file=sys.stderr)
            client = None
    marker = Path(f".attempted-{sim}")
    for step in range(steps):
        time.sleep(args.step_delay)
        for k, name in enumerate(names):
            values = (field(args.model, np.array(args.parameters), step, cells)
                      + k).astype(dtype)
            if client is not None:
                client.send(name, values)
            if args.write_fields is not None:
                np.save(args.write_fields / f"{name}-sim{sim}-step{step}.npy", values)
        if args.crash_once_after == step + 1 and not marker.exists():
            marker.touch()
            print(f"simulation {sim} crashes once after step {step + 1}", file=sys.stderr)
            if str(sim) in args.sigkill_ids.split(","):
                os.kill(os.getpid(), signal.SIGKILL)
            elif not args.sigkill_ids:
                return 4
        if step == 1 and str(sim) in args.hang_ids.split(","):
            time.sleep(3600)
    if client is not None and str(sim) not in args.no_finalize_ids.split(","):
        client.finalize()
    return 0


def _for_id(table: str, sim: int, default: object) -> str:
    """The value given to `sim` in a table "id:value,id:value", or the default."""
    values = dict(entry.split(":") for entry in table.split(",") if entry)
    return values.get(str(sim), str(default))


if __name__ == "__main__":
    sys.exit(main())

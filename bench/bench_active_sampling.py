# SPDX-License-Identifier: BSD-3-Clause
"""Active sampling (Breed) against parameters drawn up front (Halton), for the same number of
simulations.

    python bench/bench_active_sampling.py [--seeds 5] [--simulations 96] [--quick]

Online training emulated in one process, as a study runs it: simulations complete in waves of
`--wave` (the job limit); each wave's samples join the training set, the model trains
`--steps-per-simulation` steps per simulation of the wave on batches drawn from everything
received, the loss of each sample is averaged per simulation as the training server does
(melissa.server.training: sample_losses, smooth_losses), and the sampler draws the next wave
from those losses. The samplers, the model (melissa's default MLP) and its training step are
melissa's own; only the transport and the processes are left out.

Two problems:
- heat: the 2D heat solver of examples/heat (5 temperatures, 12x12 cells, 10 time steps);
- front: 2 parameters on [0, 1]^2 and a field of 32 cells that jumps across the line
  p1 + 0.3 p2 = 0.75 (width 0.02): a small hard region in the parameter space.

Reported: the validation loss (MSE of the standardised fields) on 64 held-out simulations drawn
uniformly at random, the same for both samplers, after training; the median and the range over
`--seeds` seeds (the study's seed: its draws and the model's initial weights), and Breed's
median over Halton's; then, from the validation loss after each wave, how many simulations
each sampler took to reach Halton's final median loss, and twice it: the paper's claim is
that active sampling reaches a given loss with fewer simulations.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from melissa.config import parse_config
from melissa.sampling import make_sampler
from melissa.server.training import TrainingServer, smooth_losses

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "heat"
BATCH = 32
HELD_OUT = 64

Field = Callable[[np.ndarray], np.ndarray]  # parameters -> (time steps, cells)


def heat_fields(parameters: np.ndarray) -> np.ndarray:
    sys.path.insert(0, str(EXAMPLES))
    from heat import Grid  # the example's numerics
    from mpi4py import MPI

    grid = Grid(12, 12, 1.0, tuple(parameters), MPI.COMM_SELF)
    steps = []
    for _ in range(10):
        grid.step()
        steps.append(np.array(grid.cells(), dtype=np.float32).ravel())
    return np.stack(steps)


def front_fields(parameters: np.ndarray) -> np.ndarray:
    x = np.linspace(0.0, 1.0, 32)
    jump = np.tanh((parameters[0] + 0.3 * parameters[1] - 0.75) / 0.02)
    return np.stack([(jump * np.sin(np.pi * x) + 0.2 * parameters[1] * x) * (1 + 0.1 * t)
                     for t in range(4)]).astype(np.float32)


# The fields, the bounds and the number of time steps of each problem.
PROBLEMS: dict[str, tuple[Field, list[float], list[float], int]] = {
    "heat": (heat_fields, [0.0, 100.0, 100.0, 100.0, 100.0], [100.0, 500.0, 500.0, 500.0,
                                                                  500.0], 10),
    "front": (front_fields, [0.0, 0.0], [1.0, 1.0], 4),
}


def config(problem: str, simulations: int, seed: int, breed: bool) -> Any:
    _, low, high, steps = PROBLEMS[problem]
    dl: dict[str, Any] = {"batch_size": BATCH, "buffer_size": 10_000,
                          "per_server_watermark": BATCH, "learning_rate": 2e-3,
                          "validation_simulations": 0}
    if breed:
        dl["active_sampling"] = {"method": "breed", "initial": simulations // 4}
    return parse_config({
        "study_options": {"parameter_sweep_size": simulations, "nb_parameters": len(low),
                          "l_bounds": low, "u_bounds": high, "sampler": "halton",
                          "field_names": ["u"], "nb_time_steps": steps, "seed": seed},
        "dl_config": dl,
        "client_config": {"executable_command": "true"},
    })


def samples(fields: Field, parameters: np.ndarray) -> tuple[np.ndarray, ...]:
    """(simulation, parameters, time step, values) of every time step of each simulation."""
    rows = [(sim, step, values) for sim, p in enumerate(parameters)
            for step, values in enumerate(fields(p))]
    sims = np.array([r[0] for r in rows])
    return sims, parameters[sims], np.array([r[1] for r in rows]), np.stack([r[2] for r in rows])


def study(problem: str, simulations: int, seed: int, breed: bool, wave: int,
          steps_per_simulation: int, held_out: tuple[np.ndarray, ...]) -> list[float]:
    """The validation loss after each wave: the last one is the study's."""
    fields = PROBLEMS[problem][0]
    cfg = config(problem, simulations, seed, breed)
    sampler = make_sampler(cfg, Path.cwd())
    server = TrainingServer(cfg, torch.device("cpu"))
    # One normalisation for both samplers: the held-out set's, so that losses compare.
    server.make_tensors(*held_out[1:])
    torch.manual_seed(seed)
    model = server.build_model(len(PROBLEMS[problem][1]) + 1, held_out[3].shape[1])
    optimizer = server.build_optimizer(model)
    rng = np.random.default_rng(seed)
    parameters = sampler.draw(cfg.initial_simulations)
    done = 0
    data: list[np.ndarray] = []
    losses: dict[int, float] = {}
    counts: dict[int, int] = {}
    validation_inputs, validation_targets = server.make_tensors(*held_out[1:])
    curve = []
    while done < simulations:
        if len(parameters) < done + wave and len(parameters) < simulations:
            parameters = np.concatenate([parameters, sampler.draw(
                min(done + wave, simulations) - len(parameters))])
        arrived = samples(fields, parameters[done:done + wave])
        arrived = (arrived[0] + done, *arrived[1:])
        done = min(done + wave, simulations)
        data = list(arrived) if not data else [np.concatenate([a, b]) for a, b in zip(data, arrived,
                                                                                 strict=True)]
        for _ in range(steps_per_simulation * wave):
            rows = rng.integers(0, len(data[0]), BATCH)
            inputs, targets = server.make_tensors(data[1][rows], data[2][rows], data[3][rows])
            smooth_losses(losses, counts, data[0][rows],
                          server.sample_losses(model, inputs, targets).double().numpy())
            server.training_step(model, optimizer, inputs, targets)
        sampler.observe(losses)
        total, count = server.validation_loss(model, validation_inputs, validation_targets)
        curve.append(total / count)
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--simulations", type=int, default=96)
    parser.add_argument("--wave", type=int, default=8)
    parser.add_argument("--steps-per-simulation", type=int, default=40)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=PROBLEMS)
    parser.add_argument("--quick", action="store_true", help="a smoke test: 1 seed, 24 "
                        "simulations, 5 steps per simulation")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.simulations, args.steps_per_simulation = 1, 24, 5
    torch.set_num_threads(1)

    print("## Active sampling: Breed against Halton\n")
    print(f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    print(f"- machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          "1 training thread")
    print(f"- command: `python bench/bench_active_sampling.py --seeds {args.seeds} "
          f"--simulations {args.simulations} --wave {args.wave} --steps-per-simulation "
          f"{args.steps_per_simulation} --problems {' '.join(args.problems)}`\n")
    print("| problem | sampler | median validation loss | min | max | / Halton's median |")
    print("|---|---|---|---|---|---|")
    # Per problem and sampler, the median over seeds of the validation loss after each wave.
    curves: dict[tuple[str, str], np.ndarray] = {}
    for problem in args.problems:
        _, low, high, _ = PROBLEMS[problem]
        unit = np.random.default_rng(12345).random((HELD_OUT, len(low)))
        held_out = samples(PROBLEMS[problem][0], low + unit * (np.array(high) - low))
        medians = {}
        for name, breed in (("Halton", False), ("Breed", True)):
            runs = np.array([study(problem, args.simulations, seed, breed, args.wave,
                                   args.steps_per_simulation, held_out)
                             for seed in range(args.seeds)])
            losses = runs[:, -1]
            curves[problem, name] = np.median(runs, axis=0)
            medians[name] = float(np.median(losses))
            print(f"| {problem} | {name} | {medians[name]:.4g} | {min(losses):.4g} | "
                  f"{max(losses):.4g} | {medians[name] / medians['Halton']:.2f} |", flush=True)
    print("\nSimulations each sampler took to reach a loss (its median over seeds, after each "
          f"wave of {args.wave}): Halton's final median loss, and twice it.\n")
    print("| problem | target loss | Halton | Breed | Breed / Halton |")
    print("|---|---|---|---|---|")
    for problem in args.problems:
        final = float(curves[problem, "Halton"][-1])
        for target in (2 * final, final):
            needed = {name: simulations_to_reach(curves[problem, name], target, args.wave,
                                                 args.simulations)
                      for name in ("Halton", "Breed")}
            ratio = (f"{needed['Breed'] / needed['Halton']:.2f}"
                     if needed["Breed"] and needed["Halton"] else "-")
            print(f"| {problem} | {target:.4g} | {needed['Halton'] or 'not reached'} | "
                  f"{needed['Breed'] or 'not reached'} | {ratio} |")


def simulations_to_reach(curve: np.ndarray, target: float, wave: int,
                         simulations: int) -> int | None:
    """The simulations done after the first wave whose loss is at most `target`; None if no
    wave's is."""
    reached = np.flatnonzero(curve <= target)
    return None if len(reached) == 0 else min((int(reached[0]) + 1) * wave, simulations)


if __name__ == "__main__":
    main()

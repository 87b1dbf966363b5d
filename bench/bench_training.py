# SPDX-License-Identifier: BSD-3-Clause
"""Online training against training from files, side by side in one run.

    python bench/bench_training.py [--samples 6000] [--cells 4096] [--batch 64] [--quick]

The same samples (fields of a 2D heat-like solution, parameterised by 5 values and a time step)
and the same model (melissa's default MLP) and training step, fed two ways:

- online: a producer thread (the running simulations) pushes fresh samples into melissa's C++
  replay buffer (FIRO) as the receiver would, while the training loop draws batches from it;
  every sample is new, as in a study that runs more simulations than could be stored;
- offline: `--samples` samples were written beforehand as one file each (what a file-based
  workflow leaves), and a torch DataLoader reads them back, shuffled, with 0 and 2 workers,
  epoch after epoch.

Reported: training samples/s of each (online as against the first offline epoch), and the wall
time each needs to bring the validation loss under a target (offline counts only training, not
the writing of the files), both capped at `--max-samples` samples used.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from melissa import _core
from melissa.config import parse_config
from melissa.server.training import TrainingServer

N_PARAMS = 5
STEPS = 10


def make_config(batch: int) -> TrainingServer:
    config = parse_config({
        "study_options": {"parameter_sweep_size": 1, "nb_parameters": N_PARAMS,
                          "l_bounds": [0.0] * N_PARAMS, "u_bounds": [1.0] * N_PARAMS,
                          "field_names": ["u"], "nb_time_steps": STEPS},
        "dl_config": {"batch_size": batch, "buffer_size": 10_000, "per_server_watermark": batch,
                      "learning_rate": 3e-3},
        "client_config": {"executable_command": "true"},
    })
    return TrainingServer(config, torch.device("cpu"))


def field(parameters: np.ndarray, step: int, cells: int) -> np.ndarray:
    """A smooth 2D field: boundary values blending in over time from an initial value."""
    side = int(np.sqrt(cells))
    x, y = np.meshgrid(np.linspace(0, 1, side), np.linspace(0, 1, side))
    initial, left, right, bottom, top = parameters
    blend = 1 - np.exp(-(step + 1) / 3)
    boundary = (left * (1 - x) + right * x + bottom * (1 - y) + top * y) / 2
    return ((1 - blend) * initial + blend * boundary).astype(np.float32).reshape(-1)


def samples(n: int, cells: int, seed: int) -> list[tuple[np.ndarray, int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        parameters = rng.random(N_PARAMS).astype(np.float32)
        step = k % STEPS
        out.append((parameters, step, field(parameters, step, cells)))
    return out


class FileSamples(Dataset):
    """One .npy file per sample, as a file-based workflow would leave them."""

    def __init__(self, directory: Path, n: int) -> None:
        self.directory, self.n = directory, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: int) -> tuple[np.ndarray, int, np.ndarray]:
        with np.load(self.directory / f"sample-{k}.npz") as data:
            return data["parameters"], int(data["step"]), data["values"]


def validation_loss(server: TrainingServer, model: nn.Module,
                    held_out: list[tuple[np.ndarray, int, np.ndarray]]) -> float:
    inputs, targets = server.make_tensors(np.stack([s[0] for s in held_out]),
                                          np.array([s[1] for s in held_out]),
                                          np.stack([s[2] for s in held_out]))
    total, count = server.validation_loss(model, inputs, targets)
    return total / count


class Run:
    """One training run: the model, and when the validation loss first fell under target."""

    def __init__(self, batch: int, cells: int, held_out: list, target: float) -> None:
        torch.manual_seed(0)
        self.server = make_config(batch)
        self.model = self.server.build_model(N_PARAMS + 1, cells)
        self.optimizer = self.server.build_optimizer(self.model)
        self.held_out, self.target = held_out, target
        self.start = time.perf_counter()
        self.used = self.batches = 0
        self.reached: float | None = None

    def step(self, parameters: np.ndarray, steps: np.ndarray, values: np.ndarray) -> bool:
        """Trains on one batch; returns whether the target is reached."""
        inputs, targets = self.server.make_tensors(parameters, steps, values)
        self.server.training_step(self.model, self.optimizer, inputs, targets)
        self.used += len(steps)
        self.batches += 1
        if self.batches % 20 == 0 and \
                validation_loss(self.server, self.model, self.held_out) < self.target:
            self.reached = time.perf_counter() - self.start
        return self.reached is not None


def train_online(run: Run, batch: int, cells: int, max_samples: int) -> tuple[float, Run]:
    """samples/s over the first pass's worth of samples, and the run."""
    buffer = _core.ReplayBuffer("FIRO", capacity=4 * batch, watermark=batch, n_fields=1)
    stop = threading.Event()
    rng = np.random.default_rng(3)
    parameters = rng.random((max_samples, N_PARAMS)).astype(np.float32)

    def simulations() -> None:
        for sim in range(max_samples):
            if stop.is_set():
                break
            step = sim % STEPS
            buffer.push(sim, step, 0, field(parameters[sim], step, cells))
        buffer.drain()

    producer = threading.Thread(target=simulations)
    producer.start()
    while not buffer.exhausted():
        ids, steps, values = buffer.batch(batch, 1.0)
        if len(ids) and run.step(parameters[ids], steps, values):
            break
    stop.set()
    while not buffer.exhausted():  # unblock the producer
        buffer.batch(batch, 0.1)
    producer.join()
    return run.used / (time.perf_counter() - run.start), run


def train_offline(run: Run, directory: Path, n: int, batch: int, workers: int,
                  max_samples: int) -> tuple[float, Run]:
    loader = DataLoader(FileSamples(directory, n), batch_size=batch, shuffle=True,
                        num_workers=workers)
    first_epoch = 0.0
    while run.used < max_samples:
        for parameters, steps, values in loader:
            if run.step(parameters.numpy(), steps.numpy(), values.numpy()) or \
                    run.used >= max_samples:
                break
        first_epoch = first_epoch or run.used / (time.perf_counter() - run.start)
        if run.reached is not None:
            break
    return first_epoch, run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--cells", type=int, default=4096, help="a square number")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--target", type=float, default=0.01,
                        help="validation loss (standardised MSE) to reach")
    parser.add_argument("--max-samples", type=int, default=200_000,
                        help="samples a run may use before it gives up on the target")
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.cells, args.max_samples = 600, 256, 3000
    torch.set_num_threads(1)  # the same compute for both; the second core feeds the data
    data = samples(args.samples, args.cells, seed=1)
    held_out = samples(200, args.cells, seed=2)
    directory = Path(tempfile.mkdtemp(prefix="melissa-bench-", dir=Path.cwd()))
    try:
        start = time.perf_counter()
        for k, (parameters, step, values) in enumerate(data):
            np.savez(directory / f"sample-{k}.npz", parameters=parameters, step=step,
                     values=values)
        writing = time.perf_counter() - start
        rows = [("online (melissa ReplayBuffer, FIRO, fresh samples)",
                 train_online(Run(args.batch, args.cells, held_out, args.target), args.batch,
                              args.cells, args.max_samples))]
        for workers in (0, 2):
            rows.append((f"offline ({args.samples} .npz files, DataLoader, {workers} workers)",
                         train_offline(Run(args.batch, args.cells, held_out, args.target),
                                       directory, len(data), args.batch, workers,
                                       args.max_samples)))
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    print("## Online against file-based training\n")
    print(f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    print(f"- machine: {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, 1 training thread")
    print(f"- command: `python bench/bench_training.py --samples {args.samples} --cells "
          f"{args.cells} --batch {args.batch} --target {args.target} --max-samples "
          f"{args.max_samples}`")
    megabytes = args.samples * args.cells * 4 / 1e6
    print(f"- {args.samples} samples of {args.cells} cells ({megabytes:.0f} MB); writing them "
          f"as files took {writing:.1f} s (not counted below)\n")
    online = rows[0][1][0]
    print(f"| feed | samples/s | online / this | seconds to validation loss < {args.target:g} "
          "| samples used |")
    print("|---|---|---|---|---|")
    for name, (rate, run) in rows:
        when = f"{run.reached:.1f}" if run.reached is not None else "not reached"
        print(f"| {name} | {rate:,.0f} | {online / rate:.2f} | {when} | {run.used:,} |")


if __name__ == "__main__":
    main()

# SPDX-License-Identifier: BSD-3-Clause
"""The training server of a deep-surrogate study: a neural network learns from the simulations
while they run.

    mpirun -np M python -m melissa.server.training OUTPUT_DIR

Started by the launcher. Whole time steps arrive round robin at the server ranks, whose C++
receivers fill replay buffers (melissa._core.ReplayBuffer) on their own threads; the ranks train
one model together with torch.distributed (DDP: gloo on CPUs, NCCL on GPUs), each drawing its
share of every batch from its own buffer.

To bring your own model, loss or optimizer, subclass TrainingServer and name it in the config as
dl_config.server_class = "module:Class" (the module must be importable by the server, e.g. next
to the config or on PYTHONPATH). Its hooks:

    build_model(n_inputs, n_outputs)           the network (torch.nn.Module)
    build_optimizer(model)                     its optimizer
    make_tensors(parameters, time_steps, values)  a batch -> (inputs, targets) tensors
    training_step(model, optimizer, inputs, targets)  one step; returns the loss (float)
    validation_loss(model, inputs, targets)    the summed loss and the number of samples
    sample_losses(model, inputs, targets)      the loss of each sample (active sampling reads it)
    predict(model, inputs)                     outputs back in the fields' units
    state(), load_state(state)                 what a checkpoint and model.pt keep of the server

Without one, an MLP learns (parameters, time step) -> every field's values. The final model,
OUTPUT_DIR/model.pt, is what melissa.surrogate.load rebuilds: with the same class, whose
make_tensors (given zero values: no targets) and predict turn parameters into fields.
"""

from __future__ import annotations

import io
import json
import logging
import mmap
import os
import signal
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from melissa import _core
from melissa.config import Config
from melissa.plugins import load_class
from melissa.protocol import EXIT_STOPPED, DrawnParameters, SimulationLosses, StudyDescription
from melissa.server.receiver import open_receiver
from melissa.study_files import StudyFiles, durable_file, write_durably

if TYPE_CHECKING:
    # Imported where a server runs: melissa.surrogate imports this module to rebuild a model,
    # and importing mpi4py initialises MPI, which may fail outside a job (on a login node).
    from melissa.server.common import Watch

log = logging.getLogger("melissa.server")

IDLE_WAIT = 0.01  # seconds a rank sleeps when not every rank can draw a batch
# With active sampling, a simulation's loss is an exponential average over the batches its
# samples were in, the latest weighing this much: the model improves as it trains, so older
# losses say less of where it stands.
LOSS_SMOOTHING = 0.3
LOSS_REPORT_INTERVAL = 1.0  # seconds between two SimulationLosses files of a rank
# Held-out fields saved beside their predictions, for plots: of this many simulations, each at
# its first, middle and last time step.
PLOTTED_SIMULATIONS = 2


class TrainingServer:
    """The default surrogate and training loop; subclass it to change any hook."""

    hidden_layers = (256, 256)

    def __init__(self, config: Config, device: torch.device) -> None:
        self.config = config
        self.device = device
        study = config.study_options
        low, high = study.ranges()
        self.low = torch.tensor(low, dtype=torch.float32)
        self.span = torch.tensor(high, dtype=torch.float32) - self.low
        self.last_step = max(study.nb_time_steps - 1, 1)
        # Targets are standardised by a scale fixed from the first batch, so that the loss has
        # the same meaning all along and across a resumed run (it is checkpointed).
        self.target_shift: float | None = None
        self.target_scale: float | None = None

    def build_model(self, n_inputs: int, n_outputs: int) -> nn.Module:
        layers: list[nn.Module] = []
        width = n_inputs
        for hidden in self.hidden_layers:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, n_outputs))
        return nn.Sequential(*layers)

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        assert self.config.dl_config is not None
        return torch.optim.Adam(model.parameters(), lr=self.config.dl_config.learning_rate)

    def make_tensors(self, parameters: np.ndarray, time_steps: np.ndarray,
                     values: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = (torch.as_tensor(parameters, dtype=torch.float32) - self.low) / self.span
        t = torch.as_tensor(time_steps, dtype=torch.float32)[:, None] / self.last_step
        y = torch.as_tensor(values)
        if self.target_shift is None or self.target_scale is None:
            self.target_shift = float(y.mean())
            self.target_scale = float(y.std()) or 1.0
        y = (y - self.target_shift) / self.target_scale
        return torch.cat([x, t], dim=1).to(self.device), y.to(self.device)

    def training_step(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                      inputs: torch.Tensor, targets: torch.Tensor) -> float:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        optimizer.step()
        return loss.item()

    def validation_loss(self, model: nn.Module, inputs: torch.Tensor,
                        targets: torch.Tensor) -> tuple[float, int]:
        return float(self.sample_losses(model, inputs, targets).sum()), len(targets)

    def sample_losses(self, model: nn.Module, inputs: torch.Tensor,
                      targets: torch.Tensor) -> torch.Tensor:
        """The loss of each sample, shape (samples,): what an active sampler ranks simulations
        by."""
        with torch.no_grad():
            error = nn.functional.mse_loss(model(inputs), targets, reduction="none")
            return error.mean(dim=1)

    def predict(self, model: nn.Module, inputs: torch.Tensor) -> np.ndarray:
        """Predictions in the fields' own units."""
        with torch.no_grad():
            out = model(inputs.to(self.device)).cpu()
        return (out * (self.target_scale or 1.0) + (self.target_shift or 0.0)).numpy()

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps of the server besides the model and the optimizer."""
        return {"target_shift": self.target_shift, "target_scale": self.target_scale}

    def load_state(self, state: dict[str, Any]) -> None:
        self.target_shift = state["target_shift"]
        self.target_scale = state["target_scale"]


def load_server_class(name: str | None, config_dir: Path) -> type[TrainingServer]:
    return TrainingServer if name is None else load_class(name, config_dir, TrainingServer)


def init_distributed(comm: Any, device: torch.device) -> None:
    """One process group over the server's MPI ranks: rank 0 picks the rendezvous."""
    if comm.rank == 0:
        with socket.socket() as probe:
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        address = (socket.gethostname(), port)
    else:
        address = None
    host, port = comm.bcast(address)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://{host}:{port}", rank=comm.rank,
                            world_size=comm.size)


class Trainer:
    """One rank's training loop, in lockstep with the other ranks."""

    def __init__(self, config: Config, study: StudyDescription, files: StudyFiles, comm: Any,
                 receiver: _core.Receiver, buffer: _core.ReplayBuffer, server: TrainingServer,
                 device: torch.device, writer: Any) -> None:
        assert config.dl_config is not None
        self.config, self.dl = config, config.dl_config
        self.parameters = np.asarray(study.parameters, dtype=np.float32)
        self.config_dir = study.config_dir
        self.files, self.comm, self.receiver = files, comm, receiver
        self.buffer, self.server = buffer, server
        self.device, self.writer = device, writer
        self.local_batch = config.per_rank(self.dl.batch_size)
        self.synchronised = False  # whether the servers' states came from rank 0
        self.model: nn.Module | None = None  # what trains: the network wrapped by DDP
        self.network: nn.Module | None = None  # the network itself: what is saved
        self.sample_cells = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.batches = 0
        self.samples = 0
        # Checkpoints taken so far: what ties each rank's buffer file to training.pt (not the
        # batch: a server that waits for data takes checkpoints at the same batch).
        self.checkpoints = 0
        self.train_losses: list[float] = []
        # The last validation's line of metrics.jsonl: the launcher shows it live, model.pt keeps
        # the final one.
        self.last_validation: dict[str, Any] = {}
        self.started = time.monotonic()
        self.last_checkpoint = time.monotonic()
        # Per simulation, for an active sampler: the smoothed loss and the samples it took.
        self.tracking = self.dl.active_sampling is not None
        self.simulation_losses: dict[int, float] = {}
        self.simulation_samples: dict[int, int] = {}
        self.last_loss_report = 0.0

    def parameters_of(self, ids: np.ndarray) -> np.ndarray:
        """The parameters of these simulations; those drawn while the study runs are read from
        the launcher's DrawnParameters, written before it started them."""
        if len(ids) and int(ids.max()) >= len(self.parameters):
            drawn = DrawnParameters.read(self.files.drawn_parameters)
            if drawn is not None:
                self.parameters = np.asarray(drawn.parameters, dtype=np.float32)
            if int(ids.max()) >= len(self.parameters):
                raise RuntimeError(f"simulation {int(ids.max())} sent data, but the launcher "
                                   f"drew the parameters of {len(self.parameters)} only")
        return self.parameters[ids]

    # -- agreement between ranks -----------------------------------------------------------

    def all_ranks(self, flags: list[bool]) -> list[bool]:
        """Each flag ANDed over the ranks (one small allreduce)."""
        tensor = torch.tensor([int(f) for f in flags], dtype=torch.int32)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return [bool(v) for v in tensor.tolist()]

    def any_rank(self, flag: bool) -> bool:
        return not self.all_ranks([not flag])[0]

    # -- the model ---------------------------------------------------------------------------

    def ensure_model(self) -> None:
        """Built once every rank holds a sample: only then is the output size known (or at
        start from the checkpoint, when resuming). Collective."""
        if self.model is not None:
            return
        cells = torch.tensor([self.buffer.sample_cells], dtype=torch.int64)
        dist.all_reduce(cells, op=dist.ReduceOp.MAX)
        self.build(int(cells))

    def build(self, cells: int) -> None:
        n_inputs = self.config.study_options.nb_parameters + 1
        # The study's seed fixes the initial weights (DDP copies rank 0's to the others).
        torch.manual_seed(self.config.study_options.seed)
        model = self.server.build_model(n_inputs, cells).to(self.device)
        self.optimizer = self.server.build_optimizer(model)
        self.network = model
        self.model = nn.parallel.DistributedDataParallel(
            model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.sample_cells = cells
        log.info("model: %s", model)

    def resume(self, state: dict[str, Any]) -> None:
        """Builds the model of the checkpoint `state` and takes up training where it stood,
        with this rank's random generators as they were."""
        self.build(state["sample_cells"])
        assert self.network is not None and self.optimizer is not None
        self.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.server.load_state(state["server"])
        self.synchronised = True
        self.batches, self.samples = state["batches"], state["samples"]
        self.checkpoints = state["checkpoints"]
        if self.tracking and state["sampler"] is not None:
            losses, samples = state["sampler"][self.comm.rank]
            self.simulation_losses, self.simulation_samples = dict(losses), dict(samples)
        torch_rng, numpy_rng = state["rng"][self.comm.rank]
        torch.set_rng_state(torch_rng.cpu())
        np.random.set_state(numpy_rng)  # noqa: NPY002 (see checkpoint)
        log.info("resumed from %s at batch %d", self.files.checkpoint, self.batches)

    # -- one step ----------------------------------------------------------------------------

    def step(self, batch: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> None:
        """One training step on a batch drawn from the buffer, or on `batch`."""
        assert self.model is not None and self.optimizer is not None
        ids, steps, values = batch or self.buffer.batch(self.local_batch, 0.0)
        inputs, targets = self.server.make_tensors(self.parameters_of(ids), steps, values)
        if not self.synchronised:
            # The first batch fixed each rank's normalisation from its own samples: every rank
            # takes rank 0's, or the ranks would fit the model to targets in different units.
            self.server.load_state(self.comm.bcast(self.server.state()))
            self.synchronised = True
            inputs, targets = self.server.make_tensors(self.parameters_of(ids), steps, values)
        if self.tracking:
            assert self.network is not None
            self.track(ids, self.server.sample_losses(self.network, inputs, targets))
        loss = self.server.training_step(self.model, self.optimizer, inputs, targets)
        self.train_losses.append(loss)
        # One allreduce for the batch's size and for rank 0's clock: every rank checkpoints at
        # the same step, since a checkpoint is collective.
        due = self.comm.rank == 0 and (time.monotonic() - self.last_checkpoint
                                       > self.dl.checkpoint_interval)
        agreed = torch.tensor([len(ids), int(due)], dtype=torch.int64)
        dist.all_reduce(agreed)
        self.batches += 1
        self.samples += int(agreed[0])
        if self.writer is not None:
            self.writer.add_scalar("loss/train", loss, self.batches)
        if self.batches % self.dl.nb_batches_update == 0:
            self.validate()
        if agreed[1]:
            self.checkpoint()

    def track(self, ids: np.ndarray, losses: torch.Tensor) -> None:
        """Takes a batch's losses, as the model stood before it learnt from them, into each
        simulation's; every LOSS_REPORT_INTERVAL, tells the launcher."""
        smooth_losses(self.simulation_losses, self.simulation_samples, ids,
                      losses.double().cpu().numpy())
        now = time.monotonic()
        if now - self.last_loss_report >= LOSS_REPORT_INTERVAL:
            self.last_loss_report = now
            SimulationLosses(self.comm.rank,
                             {str(k): v for k, v in self.simulation_losses.items()},
                             {str(k): v for k, v in self.simulation_samples.items()}
                             ).write(self.files.losses(self.comm.rank))

    def validate(self) -> None:
        assert self.network is not None
        ids, steps, values = self.buffer.validation_samples()
        total = torch.zeros(2, dtype=torch.float64)
        if len(ids):
            inputs, targets = self.server.make_tensors(self.parameters_of(ids), steps, values)
            loss_sum, count = self.server.validation_loss(self.network, inputs, targets)
            total += torch.tensor([loss_sum, count], dtype=torch.float64)
        dist.all_reduce(total)
        validation = float(total[0] / total[1]) if total[1] > 0 else None
        elapsed = time.monotonic() - self.started
        train = float(np.mean(self.train_losses)) if self.train_losses else None
        self.train_losses.clear()
        buffer = self.buffer_metrics()
        line = {"batches": self.batches, "samples": self.samples, "train_loss": train,
                "validation_loss": validation, "samples_per_second": self.samples / elapsed,
                **buffer, "seconds": elapsed}
        log.info("validation: %s", line)
        self.last_validation = line
        if self.comm.rank == 0:
            with open(self.files.output_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(line) + "\n")
            if self.writer is not None:
                if validation is not None:
                    self.writer.add_scalar("loss/validation", validation, self.batches)
                self.writer.add_scalar("samples_per_second", line["samples_per_second"],
                                       self.batches)
                for name, value in buffer.items():
                    self.writer.add_scalar(name.replace("buffer_", "buffer/"), value,
                                           self.batches)

    def buffer_metrics(self) -> dict[str, float]:
        """The buffers' figures summed over the ranks (collective): samples held, received,
        evicted to make room and drawn, and the mean uses of every sample that was held."""
        stats = self.buffer.stats()
        uses = stats["uses"]
        total = torch.tensor([stats["size"], stats["received"], stats["evicted"], stats["drawn"],
                              sum(k * n for k, n in uses.items()), sum(uses.values())],
                             dtype=torch.float64)
        dist.all_reduce(total)
        size, received, evicted, drawn, used, samples = total.tolist()
        return {"buffer_size": int(size), "buffer_received": int(received),
                "buffer_evicted": int(evicted), "buffer_drawn": int(drawn),
                "buffer_mean_uses": used / samples if samples else 0.0}

    # -- checkpoints -------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Each rank's buffer into its own file, then, once every rank's is whole, model,
        optimizer, the server's state, the random generators' states and where training stands
        from rank 0. Collective."""
        assert self.network is not None and self.optimizer is not None
        self.last_checkpoint = time.monotonic()
        self.checkpoints += 1
        finished = sorted({sim for rank in
                           self.comm.allgather(self.receiver.finished_simulations())
                           for sim in rank})
        written = self.write_buffer()
        # numpy's global generator, legacy as it is: a user's server class may draw from it.
        rng = self.comm.gather((torch.get_rng_state(), np.random.get_state()))  # noqa: NPY002
        # The active sampler's side on this server: each rank's losses of the simulations it
        # trained on, which it goes on averaging (the launcher keeps the sampler's own state).
        sampler = (self.comm.gather((self.simulation_losses, self.simulation_samples))
                   if self.tracking else None)
        # training.pt names the checkpoint of the buffers it goes with: without every rank's, the
        # previous training.pt stays, and a resume finds buffers of another checkpoint (it then
        # starts them empty).
        if not all(self.comm.allgather(written)) or self.comm.rank != 0:
            return
        state = {"model": self.network.state_dict(), "sample_cells": self.sample_cells,
                 "optimizer": self.optimizer.state_dict(), "server": self.server.state(),
                 "batches": self.batches, "samples": self.samples,
                 "checkpoints": self.checkpoints,
                 "finished_simulations": finished, "buffer_ranks": self.comm.size,
                 "rng": rng, "sampler": sampler}
        data = io.BytesIO()
        torch.save(state, data)
        try:
            write_durably(self.files.checkpoint, data.getvalue())
        except OSError as error:
            # Training goes on; the previous checkpoint stays whole.
            log.error("checkpoint at batch %d not written (%s)", self.batches, error)
            return
        log.info("checkpoint at batch %d", self.batches)

    def write_buffer(self) -> bool:
        """This rank's buffer into its file, tagged with the checkpoint's number; False (logged)
        if it could not be written."""
        path = self.files.buffer_checkpoint(self.comm.rank)
        try:
            # Straight to the file, a buffer at a time: the bytes of a whole buffer would double
            # the rank's memory.
            with durable_file(path) as file:
                size, written = self.buffer.write_state(file.fileno(), self.checkpoints)
        except OSError as error:
            log.error("buffer at batch %d not written (%s)", self.batches, error)
            return False
        log.info("buffer at batch %d: %d bytes, %s", self.batches, size, written)
        return True

    def field_sizes(self) -> list[int]:
        """Cells of each field, in field_names order: how a sample's values split into fields.
        Rank 0 knows every field's size from the handshakes, unless none came (a resumed study
        with nothing left to run): then only the declared ones, or the one field's."""
        declared = self.config.study_options.field_sizes
        if len(declared) == 1:
            return [self.sample_cells]
        known = self.receiver.field_sizes()
        return [size or known.get(k, 0) for k, size in enumerate(declared)]

    def save_model(self) -> None:
        """The final model, with what melissa.surrogate.load needs to rebuild it and to split
        its outputs into fields, and a few held-out fields beside their predictions for plots."""
        assert self.network is not None
        ids, steps, values = self.buffer.validation_samples()
        keep = plotted(ids, steps)
        predicted = np.empty((0, values.shape[1] if values.ndim == 2 else 0), np.float32)
        if len(keep):
            inputs, _ = self.server.make_tensors(self.parameters_of(ids[keep]), steps[keep],
                                                 values[keep])
            predicted = self.server.predict(self.network, inputs)
        gathered = self.comm.gather((ids[keep], steps[keep], values[keep], predicted))
        if self.comm.rank != 0:
            return
        torch.save({"model": self.network.state_dict(), "server": self.server.state(),
                    "batches": self.batches, "samples": self.samples,
                    "config": self.config.model_dump(mode="json"), "config_dir": self.config_dir,
                    "sample_cells": self.sample_cells, "field_sizes": self.field_sizes(),
                    "metrics": self.last_validation}, self.files.model)
        parts = [part for part in gathered if len(part[0])]
        if parts:
            sims, steps, simulated, predicted = (
                np.concatenate([part[k] for part in parts]) for k in range(4))
            keep = plotted(sims, steps)
            np.savez(self.files.predictions, simulation=sims[keep], time_step=steps[keep],
                     simulated=simulated[keep], predicted=predicted[keep])


def smooth_losses(losses: dict[int, float], samples: dict[int, int], ids: np.ndarray,
                  sample_losses: np.ndarray) -> None:
    """Takes a batch's losses (of samples of simulations `ids`) into each simulation's
    exponential average `losses` (its mean over the batch weighing LOSS_SMOOTHING) and into
    its count of `samples`."""
    sims, where = np.unique(ids, return_inverse=True)
    counts = np.bincount(where)
    means = np.bincount(where, weights=sample_losses) / counts
    for sim, mean, count in zip(sims.tolist(), means.tolist(), counts.tolist(), strict=True):
        old = losses.get(sim)
        losses[sim] = mean if old is None else old + LOSS_SMOOTHING * (mean - old)
        samples[sim] = samples.get(sim, 0) + count


def plotted(ids: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Rows of the held-out samples to plot: the first PLOTTED_SIMULATIONS simulations, each at
    its first, middle and last time step held here (the field's evolution, not six steps in a
    row)."""
    rows: list[int] = []
    for sim in np.unique(ids)[:PLOTTED_SIMULATIONS]:
        of_sim = np.flatnonzero(ids == sim)
        of_sim = of_sim[np.argsort(steps[of_sim], kind="stable")]
        rows += sorted({int(of_sim[0]), int(of_sim[len(of_sim) // 2]), int(of_sim[-1])},
                       key=lambda row: int(steps[row]))
    return np.asarray(rows, dtype=np.int64)


def leftovers(trainer: Trainer) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """What the ranks still hold once one has nothing left, dealt out again so that every rank
    takes the same number of full batches (ranks train in lockstep). Fewer than one global batch
    of samples stays unused."""
    held = trainer.buffer.batch(2**62, 0.0)
    every = [part for part in trainer.comm.allgather(held) if len(part[0])]
    if not every:
        return []
    ids, steps, values = (np.concatenate([part[k] for part in every]) for k in range(3))
    # The same permutation on every rank: a shuffle, and a disjoint share for each.
    order = np.random.default_rng(trainer.batches).permutation(len(ids))
    world, size = trainer.comm.size, trainer.local_batch
    batches = []
    for first in range(0, len(ids) - world * size + 1, world * size):
        mine = order[first + trainer.comm.rank * size: first + (trainer.comm.rank + 1) * size]
        batches.append((ids[mine], steps[mine], values[mine]))
    return batches


def train(trainer: Trainer, watch: Watch, buffer: _core.ReplayBuffer,
          interrupted: list[bool]) -> bool:
    """Trains while data comes; once the launcher says the study is over, drains the buffers.
    False if the server must stop without a model instead: the launcher is gone, abandoned the
    study, or sent SIGTERM (to restart the server)."""
    draining = False
    while True:
        watch.metrics = {**trainer.last_validation, "batches": trainer.batches}
        watch.report_progress()
        stop = None if draining else watch.study_over()
        if stop is not None:
            buffer.drain()
            draining = True
        leave = interrupted[0] or watch.launcher_gone or (stop is not None
                                                          and not stop.write_results)
        can, everyone_draining, stay = trainer.all_ranks(
            [buffer.has_batch(trainer.local_batch), draining, not leave])
        if not stay:
            return False
        if everyone_draining and not can and trainer.any_rank(buffer.exhausted()):
            break
        if not can:
            time.sleep(IDLE_WAIT)
            continue
        trainer.ensure_model()
        trainer.step()
    if trainer.model is not None:
        for batch in leftovers(trainer):
            trainer.step(batch)
    return True


def restore_buffer(buffer: _core.ReplayBuffer, files: StudyFiles, rank: int, ranks: int,
                   state: dict[str, Any]) -> None:
    """This rank's buffer as the checkpoint `state` left it, before any data comes. One that
    cannot be taken up (written for another checkpoint, damaged) is logged, and the rank starts
    empty, as a study that lost its buffers: training goes on."""
    if state["buffer_ranks"] != ranks:
        raise ValueError(f"{files.checkpoint} holds the buffers of {state['buffer_ranks']} server "
                         f"ranks, this server has {ranks}: resume with launcher_config."
                         f"num_server_processes = {state['buffer_ranks']}")
    path = files.buffer_checkpoint(rank)
    try:
        # Mapped, not read: clean page cache rather than a second copy of the buffer.
        with open(path, "rb") as file, \
                mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            buffer.load_state(data, state["checkpoints"])
    except (OSError, ValueError) as error:
        log.error("buffer not restored from %s (%s): this rank starts with an empty buffer",
                  path, error)
        return
    log.info("buffer restored at batch %d: %s", state["batches"], buffer.stats())


def main(argv: list[str] | None = None) -> int:
    from mpi4py import MPI

    from melissa.server.common import Watch, start

    started = start(argv, __doc__.splitlines()[0])
    if started is None:
        return 2
    comm, files, study, config = started.comm, started.files, started.study, started.config
    dl = config.dl_config
    assert dl is not None
    device = (torch.device("cuda", comm.rank % torch.cuda.device_count())
              if torch.cuda.is_available() else torch.device("cpu"))
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # Torch takes every core for each rank; the ranks of a node would then fight over
        # them (a step 8x slower with 2 threads on 2 busy cores than with 1).
        node_ranks = comm.Split_type(MPI.COMM_TYPE_SHARED).size
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // node_ranks))
    server_class = load_server_class(dl.server_class, Path(study.config_dir))
    # The first simulations: they run first, so validation means something from the start.
    validation = list(range(config.validation_simulations))
    buffer = _core.ReplayBuffer(dl.buffer, config.per_rank(dl.buffer_size),
                                dl.per_server_watermark, len(config.study_options.field_names),
                                validation, config.study_options.seed * 1000 + comm.rank,
                                dl.pseudo_epochs or 0)
    checkpoint = None
    if study.resume:
        checkpoint = torch.load(files.checkpoint, map_location=device, weights_only=False)
        restore_buffer(buffer, files, comm.rank, comm.size, checkpoint)
    routing = "whole_by_time_step" if dl.routing == "time_step" else "whole_by_simulation"
    receiver, address = open_receiver(
        comm, config.study_options.field_names, int(study.token, 16), buffer, routing=routing,
        field_sizes=config.study_options.field_sizes,
        nb_time_steps=config.study_options.nb_time_steps, bind_address=study.bind_address or None,
        transport=config.launcher_config.transport)
    init_distributed(comm, device)
    writer = None
    if comm.rank == 0:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(files.output_dir / "tensorboard"))
    log.info("training on %s", device)
    started.publish(address)
    trainer = Trainer(config, study, files, comm, receiver, buffer,
                      server_class(config, device), device, writer)
    watch = Watch(files, comm.rank, receiver, config)
    if checkpoint is not None:
        trainer.resume(checkpoint)
    interrupted = [False]
    signal.signal(signal.SIGTERM, lambda *_: interrupted.__setitem__(0, True))
    if not train(trainer, watch, buffer, interrupted):
        if trainer.model is not None:
            trainer.checkpoint()
        receiver.stop()
        started.withdraw()
        return EXIT_STOPPED
    if trainer.model is None:
        log.error("no training happened: the buffers never reached the watermark on every rank")
        return 1
    trainer.validate()
    trainer.checkpoint()
    trainer.save_model()
    log.info("training done: %d batches, %d samples; buffer %s", trainer.batches,
             trainer.samples, buffer.stats())
    receiver.stop()
    if writer is not None:
        writer.close()
    dist.destroy_process_group()
    started.withdraw()
    return 0


if __name__ == "__main__":
    # The importable module runs, not this __main__ copy of it: a user's server class derives
    # from melissa.server.training.TrainingServer, which must be the class checked against.
    from melissa.server import training
    from melissa.server.common import run_rank

    run_rank(training.main)

# SPDX-License-Identifier: BSD-3-Clause
"""The statistics server of a sensitivity-analysis study.

    mpirun -np M python -m melissa.server.statistics OUTPUT_DIR

Started by the launcher. Each rank owns a contiguous range of every field's cells; its C++
receiver feeds the statistics kernels of every (field, time step) straight from the network.
Rank 0 publishes the address clients connect to. When the launcher writes that no simulation
is left, each rank waits for the data of every completed simulation, then the ranks write
OUTPUT_DIR/results.nc together.
"""

from __future__ import annotations

import logging
import mmap
import resource
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np

from melissa import _core, convergence
from melissa.config import Config
from melissa.protocol import (
    EXIT_RESULTS_UNWRITABLE,
    EXIT_STOPPED,
    StopRequest,
    StudyDescription,
)
from melissa.sampling import draw_replacement_group
from melissa.server import results
from melissa.server.common import Watch, run_rank, start
from melissa.server.receiver import open_receiver
from melissa.study_files import StudyFiles, durable_file

log = logging.getLogger("melissa.server")

POLL_INTERVAL = 0.2


def make_consumer(config: Config, study: StudyDescription) -> _core.FieldStatistics:
    """The kernels the config asks for. The covariance pairs go by field id, or parameter index
    for a pair of a field with a parameter, whose values the kernels then need for every
    simulation: the study's draw and, in a Sobol study, every group the launcher may redraw in
    place of a dropped one (parameter_sweep_size at most), deterministic as they are."""
    sa = config.sa_config
    assert sa is not None
    options = config.study_options
    fields, names = options.field_names, options.names
    pairs = [(fields.index(a), fields.index(b), False) if b in fields
             else (fields.index(a), names.index(b), True) for a, b in sa.covariance]
    parameters = np.zeros((0, options.nb_parameters))
    if any(parameter for *_, parameter in pairs):
        parameters = np.asarray(study.parameters, dtype=np.float64)[:config.n_simulations]
        if sa.sobol_indices:
            parameters = np.concatenate([parameters, *(
                draw_replacement_group(options, k) for k in range(options.parameter_sweep_size))])
    return _core.FieldStatistics(
        moments_order=sa.moments_order,
        extrema=sa.min or sa.max,
        thresholds=sa.threshold_exceedance,
        probabilities=sa.quantiles,
        sobol_params=options.nb_parameters if sa.sobol_indices else 0,
        covariance=pairs,
        parameters=parameters,
    )


class Checkpoints:
    """This rank's checkpoints: its accumulators, Sobol groups and covariance pairs in flight and
    delivery state, consistent with each other (the receiver waits meanwhile), in melissa's
    versioned format. One that cannot be written (a full disk) is logged and tried again later,
    never fatal: the previous one stays whole meanwhile."""

    def __init__(self, receiver: _core.Receiver, consumer: _core.FieldStatistics,
                 files: StudyFiles, rank: int, interval: float) -> None:
        self.receiver, self.consumer = receiver, consumer
        self.path = files.statistics_checkpoint(rank)
        self.interval = interval
        self.last = time.monotonic()

    def save_if_due(self) -> None:
        if time.monotonic() - self.last > self.interval:
            self.save()

    def save(self) -> None:
        self.last = time.monotonic()
        try:
            # Straight to the file, a buffer at a time: the bytes of a whole checkpoint would
            # double the rank's memory.
            with durable_file(self.path) as file:
                summary = self.receiver.checkpoint(self.consumer, file.fileno())
        except OSError as error:
            log.error("checkpoint not written (%s); the previous one is kept, next try in %g s",
                      error, self.interval)
            return
        log.info("checkpoint: %d simulations complete, %d bytes", len(summary["finished"]),
                 summary["size"])

    def resume(self) -> None:
        # Mapped, not read: the file's pages are clean page cache, which the kernel drops under
        # memory pressure, rather than a copy of the whole state beside the state being built.
        with open(self.path, "rb") as file, \
                mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
            self.receiver.restore_checkpoint(self.consumer, data)
        log.info("resumed from %s: %d simulations complete", self.path,
                 len(self.receiver.finished_simulations()))


class SobolFigures:
    """This rank's Sobol intervals summed up for the launcher (convergence.rank_metrics), once
    a group has completed here since the last time, and the last one cost (it copies every
    accumulator) at most 1 / convergence.DUTY of the time since; whatever it cost when nothing
    is in flight here: the study's last groups, which the launcher waits for."""

    def __init__(self, receiver: _core.Receiver, consumer: _core.FieldStatistics,
                 config: Config, watch: Watch) -> None:
        self.receiver, self.consumer, self.watch = receiver, consumer, watch
        self.n_params = config.study_options.nb_parameters
        self.last_step = config.study_options.nb_time_steps - 1
        assert config.sa_config is not None
        self.target = config.sa_config.sobol_ci_target
        self.groups: int | None = None
        self.interval = convergence.MIN_INTERVAL
        self.computed = self.looked = -float("inf")

    def update_if_due(self) -> None:
        now = time.monotonic()
        if now - self.looked < convergence.MIN_INTERVAL:
            return
        self.looked = now
        # Read before the states are copied: they hold every group complete by then.
        finished = self.receiver.finished_simulations()
        groups = convergence.complete_groups(finished, self.n_params + 2)
        if groups == self.groups:
            return
        if (now - self.computed < self.interval
                and not set(self.receiver.counters()["simulations"]) <= set(finished)):
            return
        # One (field, time step) at a time: a copy of every accumulator at once would double
        # the rank's memory.
        states = ((step, cells, self.consumer.state(field, step))
                  for field, step, _, cells in (self.consumer.pieces() if groups > 0 else []))
        metrics = convergence.rank_metrics(states, self.n_params, self.last_step, self.target,
                                           groups)
        self.computed = time.monotonic()
        cost = self.computed - now
        self.interval = max(convergence.MIN_INTERVAL, convergence.DUTY * cost)
        self.groups = groups
        self.watch.metrics = {**metrics, "interval": self.interval}
        if cost > 1.0:
            log.info("Sobol interval widths of %d groups computed in %.1f s; next in %.0f s at "
                     "the soonest", groups, cost, self.interval)


def serve(watch: Watch, interrupted: list[bool], checkpoints: Checkpoints,
          figures: SobolFigures | None) -> StopRequest | None:
    """Receives until the launcher's stop request says what completed and all of it is here,
    saving a checkpoint every interval; None when the launcher is gone or a SIGTERM came."""
    while True:
        if figures is not None:
            figures.update_if_due()
        watch.report_progress()
        checkpoints.save_if_due()
        stop = watch.study_over()
        if stop is not None:
            return stop
        if interrupted[0] or watch.launcher_gone:
            return None
        time.sleep(POLL_INTERVAL)


def write_results(comm: Any, config: Config, study: StudyDescription, files: StudyFiles,
                  receiver: _core.Receiver, consumer: _core.FieldStatistics,
                  stop: StopRequest) -> None:
    """The ranks write their cells in turn into a temporary file, which rank 0 then renames to
    results.nc: an earlier results.nc is replaced only by a complete one. Raises OSError on
    every rank if any rank failed (a full disk, say)."""
    names = config.study_options.field_names
    time_field = config.study_options.time.field if config.study_options.time else None
    sizes: dict[str, int] = {}
    for rank_sizes in comm.allgather(receiver.field_sizes()):
        sizes.update({names[field]: size for field, size in rank_sizes.items()})
    for name in names:
        if name not in sizes:
            log.warning("no data of field %s ever arrived: it is left out of the results", name)
    partial = files.private / "results.partial.nc"
    failure: str | None = None
    try:
        if comm.rank == 0:
            results.create(partial, config, sizes, stop.parameters, stop.statuses, study.config,
                           Path(study.config_dir), stop.attributes)
    except WRITE_ERRORS as error:
        failure = f"rank 0 could not create it: {_write_error(error, partial)}"
    failure = comm.bcast(failure)
    pieces = consumer.pieces()
    # One rank at a time appends its cells: NetCDF files take one writer.
    for writer in range(comm.size):
        if failure is None and writer == comm.rank and pieces:
            try:
                with netCDF4.Dataset(partial, "a") as ds:
                    # One (field, time step) at a time: the rank's peak stays near its state.
                    for field, step, offset, cells in pieces:
                        values = results.statistics_of(config, cells, consumer.state(field, step))
                        results.write_into(ds, names[field], step, offset, values,
                                           time_field)
            except WRITE_ERRORS as error:
                failure = f"rank {comm.rank} could not write its cells: " \
                          f"{_write_error(error, partial)}"
        failure = next((f for f in comm.allgather(failure) if f is not None), None)
    if failure is None and comm.rank == 0:
        try:
            partial.replace(files.results)
        except OSError as error:
            failure = f"rank 0 could not rename it: {error}"
    failure = comm.bcast(failure)
    if failure is not None:
        if comm.rank == 0:
            partial.unlink(missing_ok=True)
        raise OSError(failure)


# The NetCDF library reports a failed write (a full disk among others) as a RuntimeError.
WRITE_ERRORS = (OSError, RuntimeError)


def _write_error(error: Exception, path: Path) -> str:
    """The error, with the room left where it happened: NetCDF's own words ("HDF error") do not
    say that the disk is full."""
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        return str(error)
    return f"{error} ({free / 2**20:.1f} MiB free in {path.parent})"


def main(argv: list[str] | None = None) -> int:
    started = start(argv, __doc__.splitlines()[0])
    if started is None:
        return 2
    comm, files, study, config = started.comm, started.files, started.study, started.config
    assert config.sa_config is not None
    consumer = make_consumer(config, study)
    receiver, address = open_receiver(
        comm, config.study_options.field_names, int(study.token, 16), consumer,
        field_sizes=config.study_options.field_sizes,
        nb_time_steps=config.study_options.nb_time_steps, bind_address=study.bind_address or None,
        transport=config.launcher_config.transport)
    log.info("receiving at %s", {k: v for k, v in receiver.endpoint.items() if k != "ucx"}
             | {"transport": "ucx" if receiver.endpoint["ucx"] else "zmq"})
    checkpoints = Checkpoints(receiver, consumer, files, comm.rank,
                              config.sa_config.checkpoint_interval)
    if study.resume:
        checkpoints.resume()
    started.publish(address)
    # The launcher's way to stop this server without results (to restart it, say).
    interrupted = [False]
    signal.signal(signal.SIGTERM, lambda *_: interrupted.__setitem__(0, True))
    watch = Watch(files, comm.rank, receiver, config)
    figures = (SobolFigures(receiver, consumer, config, watch) if config.sa_config.sobol_indices
               else None)
    stop = serve(watch, interrupted, checkpoints, figures)
    # Each rank decides at its own pace: one that saw the launcher go while another saw its stop
    # request would leave the other waiting in write_results' collectives.
    if not all(comm.allgather(stop is not None)):
        stop = None
    counters = receiver.counters()
    log.info("received %d messages, %d bytes; dropped %s; not counted in the statistics: %s; "
             "left incomplete: %d Sobol groups, %d covariance pairs", counters["messages"],
             counters["bytes"], counters["dropped"] or "nothing", consumer.dropped() or "nothing",
             consumer.pending_groups(), consumer.pending_halves())
    receiver.stop()
    # Whatever checkpoint_interval is: the results can always be written again from it.
    checkpoints.save()
    if stop is None or not stop.write_results:
        started.withdraw()
        return EXIT_STOPPED if stop is None else 0
    try:
        write_results(comm, config, study, files, receiver, consumer, stop)
    except OSError as error:
        log.error("results not written (%s); the final checkpoint holds everything: make room "
                  "and `melissa run --resume` writes them", error)
        started.withdraw()
        return EXIT_RESULTS_UNWRITABLE
    log.info("results written to %s; peak memory %d kB", files.results,
             resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    started.withdraw()
    return 0


if __name__ == "__main__":
    run_rank(main)

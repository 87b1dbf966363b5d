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
import resource
import signal
import time
from collections.abc import Callable
from typing import Any

import netCDF4

from melissa import _core
from melissa.config import Config
from melissa.server import results
from melissa.server.common import Watch, run_rank, start
from melissa.server.receiver import open_receiver
from melissa.study_files import StudyFiles, read_json

log = logging.getLogger("melissa.server")

POLL_INTERVAL = 0.2


def make_consumer(config: Config) -> _core.FieldStatistics:
    sa = config.sa_config
    assert sa is not None
    return _core.FieldStatistics(
        moments_order=sa.moments_order,
        extrema=sa.min or sa.max,
        thresholds=sa.threshold_exceedance,
        probabilities=sa.quantiles,
        sobol_params=config.study_options.nb_parameters if sa.sobol_indices else 0,
    )


def checkpoint(receiver: _core.Receiver, consumer: _core.FieldStatistics, files: StudyFiles,
               rank: int) -> None:
    """This rank's accumulators, Sobol groups in flight and delivery state, consistent with
    each other (the receiver waits meanwhile), written atomically."""
    data = receiver.checkpoint(consumer)
    path = files.statistics_checkpoint(rank)
    path.parent.mkdir(exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(path)
    log.info("checkpoint: %d bytes", len(data))


def resume(receiver: _core.Receiver, consumer: _core.FieldStatistics, files: StudyFiles,
           rank: int) -> None:
    receiver.restore_checkpoint(consumer, files.statistics_checkpoint(rank).read_bytes())
    log.info("resumed from %s: %d simulations complete", files.statistics_checkpoint(rank),
             len(receiver.finished_simulations()))


def serve(watch: Watch, interrupted: list[bool], save: Callable[[], None],
          interval: float) -> dict[str, Any]:
    """Receives until the launcher's stop file says what completed and all of it is here,
    saving a checkpoint every `interval` seconds."""
    last_checkpoint = time.monotonic()
    while True:
        watch.report_progress()
        if time.monotonic() - last_checkpoint > interval:
            save()
            last_checkpoint = time.monotonic()
        outcome = watch.study_over()
        if outcome is not None:
            return outcome
        if interrupted[0]:
            log.warning("interrupted: writing the results received so far")
            return read_json(watch.files.stop) or {
                "completed": sorted(watch.receiver.finished_simulations()), "failed": []}
        time.sleep(POLL_INTERVAL)


def write_results(comm: Any, config: Config, raw_config: dict[str, Any], files: StudyFiles,
                  receiver: _core.Receiver, consumer: _core.FieldStatistics,
                  study: dict[str, Any], outcome: dict[str, Any]) -> None:
    names = config.study_options.field_names
    sizes: dict[str, int] = {}
    for rank_sizes in comm.allgather(receiver.field_sizes()):
        sizes.update({names[field]: size for field, size in rank_sizes.items()})
    for name in names:
        if name not in sizes:
            log.warning("no data of field %s ever arrived: it is left out of the results", name)
    if comm.rank == 0:
        statuses = ["not_run"] * len(study["parameters"])
        for outcome_name in ("completed", "completed_before", "failed"):
            for sim in outcome.get(outcome_name, []):
                statuses[sim] = outcome_name.removesuffix("_before")
        results.create(files.results, config, sizes, study["parameters"], statuses, raw_config)
    comm.Barrier()
    states = consumer.states()
    # One rank at a time appends its cells: NetCDF files take one writer.
    for writer in range(comm.size):
        if writer == comm.rank and states:
            with netCDF4.Dataset(files.results, "a") as ds:
                for field, step, offset, cells, state in states:
                    values = results.statistics_of(config, cells, state)
                    results.write_into(ds, names[field], step, offset, values)
        comm.Barrier()


def main(argv: list[str] | None = None) -> int:
    started = start(argv, __doc__.splitlines()[0])
    if started is None:
        return 2
    comm, files, study, config = started.comm, started.files, started.study, started.config
    consumer = make_consumer(config)
    receiver, address = open_receiver(comm, config.study_options.field_names,
                                      int(study["token"], 16), consumer)
    log.info("receiving at %s", receiver.endpoint)
    if study.get("resume"):
        resume(receiver, consumer, files, comm.rank)
    started.publish(address)
    interrupted = [False]
    signal.signal(signal.SIGTERM, lambda *_: interrupted.__setitem__(0, True))
    watch = Watch(files, comm.rank, receiver, config.launcher_config.timeouts.shutdown)
    assert config.sa_config is not None
    outcome = serve(watch, interrupted,
                    lambda: checkpoint(receiver, consumer, files, comm.rank),
                    config.sa_config.checkpoint_interval)
    counters = receiver.counters()
    log.info("received %d messages, %d bytes; dropped %s; Sobol groups left incomplete: %d",
             counters["messages"], counters["bytes"], counters["dropped"] or "nothing",
             consumer.pending_groups())
    receiver.stop()
    write_results(comm, config, study["config"], files, receiver, consumer, study, outcome)
    log.info("results written to %s; peak memory %d kB", files.results,
             resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return 0


if __name__ == "__main__":
    run_rank(main)

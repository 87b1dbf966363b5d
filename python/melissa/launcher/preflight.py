# SPDX-License-Identifier: BSD-3-Clause
"""What the launcher checks before anything starts, so that a study that cannot run stops at
once with a message naming the config key, instead of failing in every simulation, or in its
server hours later."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from melissa.config import Config, ConfigError
from melissa.server import results

log = logging.getLogger("melissa.launcher")

COMMAND = "client_config.executable_command"


@dataclass(frozen=True)
class Checked:
    solver: list[str]  # the solver's command, its program resolved
    estimate: MemoryEstimate


def preflight(config: Config, config_dir: Path) -> Checked:
    """The checks that need this machine: the solver's program, and the memory the study needs."""
    argv = resolve_solver(config, config_dir)
    if config.sa_config is not None:
        check_results_layout(config, config_dir)
    estimate = check_memory(config, physical_memory())
    log.info("memory estimate: launcher %s, server %s over %d ranks (at most %s on one), "
             "%d simulations at once", _size(estimate.launcher), _size(estimate.server),
             config.launcher_config.num_server_processes, _size(estimate.server_rank),
             estimate.at_once)
    return Checked(argv, estimate)


def check_results_layout(config: Config, config_dir: Path) -> None:
    """The dimensions and coordinates results.nc will have: found wrong only when the server
    writes it, they would cost the whole study."""
    study = config.study_options
    declared = {name: size for name, size in zip(study.field_names, study.field_sizes,
                                                 strict=True) if size}
    results.read_coordinates(study, config_dir, results.layouts(study, declared))


def resolve_solver(config: Config, config_dir: Path) -> list[str]:
    """The solver's command with its program checked now, before anything starts. Only the
    program is checked: in `python3 solver.py` the script is the interpreter's business."""
    argv = config.client_config.argv
    program = argv[0]
    if "/" in program:
        # Not resolve(): a venv's python is a symlink whose target is outside the venv.
        path = Path(os.path.abspath(config_dir / program))
        if not path.exists():
            raise ConfigError(f"{COMMAND}: {path} does not exist")
        if path.is_dir():
            raise ConfigError(f"{COMMAND}: {path} is a directory, not a program")
        if not os.access(path, os.X_OK):
            raise ConfigError(f"{COMMAND}: {path} is not executable: make it so (chmod +x), or "
                              "start the command with its interpreter, as in `python3 "
                              "solver.py`")
        return [str(path), *argv[1:]]
    if shutil.which(program) is None:
        raise ConfigError(f"{COMMAND}: '{program}' is not on PATH")
    return argv


# What the training server imports beyond melissa's own dependencies: the `train` extra.
TRAINING_MODULES = ("torch", "tensorboard")


def check_training_modules() -> None:
    """Before anything starts: a training study without PyTorch would fail only once its server
    starts, with an ImportError that does not say what to install."""
    missing = [name for name in TRAINING_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(
            f"dl_config: online training needs {' and '.join(missing)}, which melissa installs "
            "with its `train` extra: pip install 'melissa-intransit[train]' (install your "
            "site's PyTorch build first, or PyPI's default, a CUDA build of several GB, comes "
            "with it)")


def check_server_class(config: Config, config_dir: Path) -> None:
    """The user's training server, found and checked now, as the server will load it."""
    if config.dl_config is None or not config.dl_config.server_class:
        return
    # The one server module the launcher imports: checking the class needs its base class.
    from melissa.server.training import load_server_class

    try:
        load_server_class(config.dl_config.server_class, config_dir)
    except (ImportError, AttributeError, TypeError, ValueError) as error:
        raise ConfigError(f"dl_config.server_class: {error}") from None


# -- memory ------------------------------------------------------------------------------------
# Bytes of the structures the estimate counts. The statistics' and the parameters' were
# measured (RSS growth over 10^4 to 10^6 of them, CPython 3.11, glibc): against accumulators of
# 1 to 1000 cells the estimate is 3 to 40 % over. The launcher's and the receivers' bookkeeping
# is counted from their structures.

# Per (field, time step) with cells on a rank: a map node and the Accumulators in C++, then the
# tuple and dicts of their copy in Python; per kernel; per state array (a std::vector's block,
# then a NumPy array in the copy).
ENTRY_BYTES = 650
KERNEL_BYTES = 120
STATE_ARRAY_BYTES = 320
# Per simulation in the launcher: its row of parameters as Python floats (written to
# study.json) and its entries in the launcher's queues and sets; every server rank reads the
# parameters back from study.json.
LAUNCHER_SIMULATION_BYTES = 200
PARAMETER_ROW_BYTES = 64
PARAMETER_BYTES = 64
# Per simulation in each receiver: its state and map nodes, then per field a node and a bit per
# time step in a std::vector<bool> grown one step at a time (so up to twice the bits).
RECEIVER_SIMULATION_BYTES = 300
RECEIVER_FIELD_BYTES = 100
# A delivered time step of a running simulation in a checkpoint: a uint32, then a Python int in
# a list.
CHECKPOINT_STEP_BYTES = 40
# A training sample besides its values: its ids and the vector's header and block.
SAMPLE_BYTES = 96


@dataclass(frozen=True)
class MemoryPart:
    what: str
    keys: str  # the config keys that drive it
    total: int  # bytes, all server ranks (or the launcher) together
    rank: int  # bytes on any one server rank, at most (0 for the launcher's)


@dataclass(frozen=True)
class MemoryEstimate:
    """A bound on what a study holds at its peak, besides its simulations and any user code:
    the sum of each part's peak, though not every peak comes at once."""

    parts: tuple[MemoryPart, ...]
    launcher: int
    server: int  # all ranks together
    server_rank: int  # any one rank, at most
    at_once: int  # simulations running at once: what the server holds grows with them

    @property
    def total(self) -> int:
        return self.launcher + self.server


@dataclass(frozen=True)
class _Layout:
    """How the server ranks share every field's cells: balanced contiguous ranges
    (wire::range_begin), so that min(cells, ranks) ranks hold some, none more than the share."""

    cells: list[int]
    steps: int
    ranks: int

    def spread(self, per_cell: int, per_piece: int = 0) -> tuple[int, int]:
        """(all ranks, any one rank at most) of per_cell bytes per cell and time step of every
        field, plus per_piece per (field, time step) on each rank holding cells of it."""
        total = sum(per_cell * c + per_piece * min(c, self.ranks) for c in self.cells)
        rank = sum(per_cell * self.share(c) + per_piece for c in self.cells)
        return self.steps * total, self.steps * rank

    def share(self, cells: int) -> int:
        return -(-cells // self.ranks)


def physical_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def estimate_memory(config: Config, at_once: int | None = None) -> MemoryEstimate:
    """The memory the launcher and the server need at their peak, from the config alone, with
    `at_once` simulations running at once (job_limit; with "auto", every one of the study)."""
    limit = config.launcher_config.job_limit
    at_once = at_once or (config.n_simulations if limit == "auto" else limit)
    study = config.study_options
    ranks = config.launcher_config.num_server_processes
    # An undeclared field costs at least its bookkeeping per time step: counted as 1 cell, a
    # huge nb_time_steps is still caught.
    layout = _Layout([size or 1 for size in study.field_sizes], study.nb_time_steps, ranks)
    n_sims = config.n_simulations
    parameters = "study_options.parameter_sweep_size, study_options.nb_parameters"
    row = PARAMETER_ROW_BYTES + PARAMETER_BYTES * study.nb_parameters
    launcher = MemoryPart("the parameters and the launcher's bookkeeping", parameters,
                          n_sims * (row + LAUNCHER_SIMULATION_BYTES), 0)
    receiver = n_sims * (RECEIVER_SIMULATION_BYTES + len(layout.cells)
                         * (RECEIVER_FIELD_BYTES + -(-layout.steps // 4)))
    server = [
        MemoryPart("the parameters, read by every server rank", parameters,
                   ranks * n_sims * row, n_sims * row),
        MemoryPart("the time steps each receiver saw of every simulation",
                   "study_options.parameter_sweep_size, study_options.nb_time_steps, "
                   "study_options.field_names", ranks * receiver, receiver),
        *(_statistics_parts(config, layout, at_once) if config.sa_config is not None
          else _training_parts(config, layout)),
    ]
    return MemoryEstimate((launcher, *server), launcher.total,
                          sum(part.total for part in server), sum(part.rank for part in server),
                          at_once)


SHAPES_AND_STEPS = "study_options.field_shapes, study_options.nb_time_steps"


def _statistics_parts(config: Config, layout: _Layout, job_limit: int) -> list[MemoryPart]:
    sa = config.sa_config
    assert sa is not None
    p = config.study_options.nb_parameters
    # (asked, bytes per cell, state arrays) of each kernel, as cpp/stats keeps them: 8 bytes a
    # float64 or uint64, 4 the moments' float32 shift (from order 2).
    shift = sa.moments_order >= 2
    kernels = [(sa.moments_order > 0, 4 * shift + 8 * sa.moments_order,
                1 + shift + sa.moments_order),
               (sa.min or sa.max, 8 * 2, 3),
               (bool(sa.threshold_exceedance), 8 * len(sa.threshold_exceedance), 2),
               (bool(sa.quantiles), 8 * (2 + 2 * len(sa.quantiles)), 5),
               (sa.sobol_indices, 8 * (8 + 16 * p), 25),
               # On the first field of each pair only; counted on every field, a bound.
               (bool(sa.covariance), 8 * 5 * len(sa.covariance), 6 * len(sa.covariance))]
    asked = [(cell_bytes, arrays) for on, cell_bytes, arrays in kernels if on]
    per_cell = sum(cell_bytes for cell_bytes, _ in asked)
    per_piece = (ENTRY_BYTES + KERNEL_BYTES * len(asked)
                 + STATE_ARRAY_BYTES * sum(arrays for _, arrays in asked))
    names = [name for name in ("mean", "variance", "skewness", "kurtosis", "min", "max",
                               "threshold_exceedance", "quantiles", "sobol_indices", "covariance")
             if getattr(sa, name)]
    keys = f"{SHAPES_AND_STEPS}, sa_config ({', '.join(names)})"
    # Once: checkpoints stream to their file and are taken up from it mapped, and results are
    # written a (field, time step) at a time.
    parts = [MemoryPart("the statistics' accumulators",
                        keys + (", study_options.nb_parameters" if sa.sobol_indices else ""),
                        *layout.spread(per_cell, per_piece))]
    if sa.sobol_indices:
        # A group is open while a member runs, each member's fields held whole until the group
        # is complete; with job_limit simulations at a time, at most job_limit groups.
        groups = min(job_limit, config.study_options.parameter_sweep_size)
        parts.append(MemoryPart("the Sobol groups in flight",
                                f"launcher_config.job_limit, study_options.nb_parameters, "
                                f"{SHAPES_AND_STEPS}", *layout.spread(groups * (p + 2) * 8)))
    if any(pair[1] in config.study_options.field_names for pair in sa.covariance):
        # A field of a pair waits, whole, for the other field of its simulation and step.
        parts.append(MemoryPart("the covariance pairs' fields in flight",
                                f"launcher_config.job_limit, sa_config.covariance, "
                                f"{SHAPES_AND_STEPS}",
                                *layout.spread(job_limit * len(sa.covariance) * 8)))
    # A checkpoint lists the time steps each running simulation delivered.
    listed = job_limit * len(layout.cells) * layout.steps * CHECKPOINT_STEP_BYTES
    parts.append(MemoryPart("the delivered time steps in a checkpoint",
                            "launcher_config.job_limit, study_options.nb_time_steps",
                            layout.ranks * listed, listed))
    # Rank 0 creates results.nc setting every threshold count to -1 from one array (netCDF4
    # broadcasts the scalar to the whole variable); later each rank in turn turns one
    # (field, time step) at a time into results, from a kernel rebuilt from the copy.
    create = 8 * len(sa.threshold_exceedance) * layout.steps * sum(layout.cells)
    results = 8 * (sum(getattr(sa, name) for name in ("mean", "variance", "skewness",
                                                      "kurtosis", "min", "max"))
                   + len(sa.threshold_exceedance) + len(sa.quantiles)
                   + (6 * p if sa.sobol_indices else 0))
    one_piece = max(layout.share(c) for c in layout.cells) * (per_cell + results)
    writing = max(create, one_piece)
    parts.append(MemoryPart("writing results.nc", keys, writing, writing))
    return parts


def _training_parts(config: Config, layout: _Layout) -> list[MemoryPart]:
    dl = config.dl_config
    assert dl is not None
    sample = 4 * sum(layout.cells) + SAMPLE_BYTES
    held = config.validation_simulations * layout.steps
    # Whole samples go round robin over the ranks, by time step or by simulation.
    held_on_rank = (layout.share(held) if dl.routing == "time_step"
                    else layout.share(config.validation_simulations) * layout.steps)
    # Thrice: the buffer's, the copy validation takes, and its tensors.
    return [MemoryPart("the replay buffer", "dl_config.buffer_size, study_options.field_shapes",
                       dl.buffer_size * sample, config.per_rank(dl.buffer_size) * sample),
            MemoryPart("the held-out validation samples",
                       f"dl_config.validation_simulations, {SHAPES_AND_STEPS}",
                       3 * held * sample, 3 * held_on_rank * sample)]


def check_memory(config: Config, available: int) -> MemoryEstimate:
    """The estimate, or a ConfigError when it exceeds `available` bytes: with the local
    scheduler, the launcher and every server rank together, as all of them run here; else
    the launcher alone, and the largest server rank alone, each on a machine like this one.
    With job_limit "auto", the estimate of the most simulations at once that fit: the launcher
    runs no more than that."""
    if config.launcher_config.job_limit != "auto":
        return _check_memory(config, available, None)
    fits, beyond = 1, config.n_simulations + 1
    estimate = _check_memory(config, available, fits)  # refused if even one does not fit
    while beyond - fits > 1:  # what the server holds grows with the simulations at once
        middle = (fits + beyond) // 2
        try:
            estimate, fits = _check_memory(config, available, middle), middle
        except ConfigError:
            beyond = middle
    return estimate


def _check_memory(config: Config, available: int, at_once: int | None) -> MemoryEstimate:
    estimate = estimate_memory(config, at_once)
    ranks = config.launcher_config.num_server_processes
    # The bytes of each part that must fit, and whose they are.
    if config.launcher_config.scheduler == "local":
        what = f"the launcher and {ranks} server rank{'s' if ranks > 1 else ''}"
        here = {part: part.total for part in estimate.parts}
    elif estimate.server_rank >= estimate.launcher:
        what = "the largest server rank"
        here = {part: part.rank for part in estimate.parts}
    else:
        what = "the launcher"
        # The launcher's parts are those no server rank holds.
        here = {part: 0 if part.rank else part.total for part in estimate.parts}
    needed = sum(here.values())
    if needed <= available:
        return estimate
    # The largest parts, until they make most of it: those are the keys to change.
    drivers: list[str] = []
    covered = 0
    for part in sorted(here, key=here.__getitem__, reverse=True):
        if covered >= 0.9 * needed:
            break
        drivers.append(f"{part.what}, {_size(here[part])} ({part.keys})")
        covered += here[part]
    undeclared = [name for name, size in zip(config.study_options.field_names,
                                             config.study_options.field_sizes, strict=True)
                  if not size]
    note = (f" (study_options.field_shapes leaves out {', '.join(undeclared)}, counted as 1 "
            "cell)" if undeclared else "")
    raise ConfigError(f"the study needs about {_size(needed)} of memory for {what}, more than "
                      f"this machine's {_size(available)}; mostly {'; '.join(drivers)}{note}")


def _size(n: float) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    while n >= 1024 and len(units) > 1:
        n /= 1024
        units.pop(0)
    return f"{n:.1f} {units[0]}"

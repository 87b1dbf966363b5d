# SPDX-License-Identifier: BSD-3-Clause
"""The study's configuration: one JSON file (comments allowed), validated whole before anything
starts. `melissa schema` prints its JSON Schema.

Sections, with the names Melissa users know: study_options, sa_config (statistics) or dl_config
(training), launcher_config, client_config, and output_dir.
"""

from __future__ import annotations

import difflib
import math
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import json5
import scipy.stats
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

__all__ = ["Config", "ConfigError", "load_config"]

# Simulation ids are uint32 on the wire and in MELISSA_SIMULATION_ID.
MAX_SIMULATIONS = 2**32
# The receiver keeps a bit per delivered time step and refuses time steps from 2^26 on
# (kMaxTimeSteps in cpp/server/receiver.cpp).
MAX_TIME_STEPS = 2**26
# The client refuses a MELISSA_TIMEOUT above this; the other durations share the bound, 11 days.
MAX_SECONDS = 1e6


class ConfigError(ValueError):
    """A config that cannot run; the message names every offending key."""


class _Section(BaseModel):
    # An unknown key is an error, not a silently ignored typo; so is "4" or true for a number
    # (strict; an int still passes for a float), and Infinity or NaN, which json5 reads.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


Probability = Annotated[float, Field(gt=0.0, lt=1.0)]
Seconds = Annotated[float, Field(gt=0.0, le=MAX_SECONDS)]


class Distribution(_Section):
    name: str = Field(description="A continuous distribution of scipy.stats: uniform, norm, "
                      "lognorm, truncnorm, beta, ...")
    args: dict[str, float] = Field(
        default_factory=dict, description="Its arguments as scipy.stats names them (shape "
        "parameters, loc, scale), e.g. {\"a\": -2, \"b\": 2, \"loc\": 300, \"scale\": 5} "
        "for truncnorm."
    )

    @model_validator(mode="after")
    def _exists(self) -> Distribution:
        self.frozen()
        return self

    def frozen(self) -> Any:
        """The scipy.stats distribution; ValueError naming what is wrong."""
        family = getattr(scipy.stats, self.name, None)
        if not isinstance(family, scipy.stats.rv_continuous):
            raise ValueError(f"{self.name!r} is not a continuous distribution of scipy.stats "
                             "(e.g. uniform, norm, lognorm, truncnorm, beta)")
        try:
            distribution = family(**self.args)
            median = float(distribution.ppf(0.5))
        except TypeError as error:
            raise ValueError(f"{self.name}{self.args}: {error}") from None
        if not math.isfinite(median):
            raise ValueError(f"{self.name}{self.args} is not a valid distribution (check its "
                             "arguments: a scale must be positive)")
        return distribution


class TimeAxis(_Section):
    start: float = Field(0.0, description="The solver's time at the first time step.")
    step: PositiveFloat | None = Field(None, description="Time between two time steps.")
    field: str | None = Field(
        None, description="Instead of start and step: a field of field_names in which the "
        "solver sends its time (one cell) at each time step; its ensemble mean is the time."
    )
    units: str = Field("s", description="Units of time, as CF writes them: s, days since "
                       "2000-01-01, ...")

    @model_validator(mode="after")
    def _one_source(self) -> TimeAxis:
        if (self.step is None) == (self.field is None):
            raise ValueError("give either step (and start) or field, the solver's time")
        if self.field is not None and "start" in self.model_fields_set:
            raise ValueError("start goes with step, not with field")
        return self


class StudyOptions(_Section):
    parameter_sweep_size: Annotated[int, Field(gt=0, le=MAX_SIMULATIONS)] = Field(
        description="Number of parameter samples; with Sobol indices, the number of pick-freeze "
        "groups, each of nb_parameters + 2 simulations. At most 2^32 simulations in all."
    )
    nb_parameters: PositiveInt = Field(description="Number of uncertain parameters.")
    parameter_names: list[str] | None = Field(
        None, description="A name for each parameter, used in results.nc, plots and messages; "
        "default x1, x2, ..."
    )
    l_bounds: list[float] | None = Field(
        None, description="Lower bound of each parameter, drawn uniformly between its bounds. "
        "Required unless parameter_distributions is given."
    )
    u_bounds: list[float] | None = Field(None, description="Upper bound of each parameter.")
    parameter_distributions: list[Distribution] | None = Field(
        None, description="Instead of the bounds: the distribution of each parameter, e.g. "
        "[{\"name\": \"uniform\", \"args\": {\"loc\": 0, \"scale\": 2}}, {\"name\": "
        "\"norm\", \"args\": {\"loc\": 300, \"scale\": 5}}]. Drawn by the sampler's points "
        "on the unit cube through each distribution's inverse CDF."
    )
    sampler: Literal["random", "halton", "sobol", "lhs"] = Field(
        "random", description="How parameters are drawn (scipy.stats.qmc for the last three)."
    )
    field_names: list[str] = Field(min_length=1, description="The fields each solver sends.")
    field_shapes: dict[str, Annotated[list[PositiveInt], Field(min_length=1)]] = Field(
        default_factory=dict, description="Shape of each field a solver sends, e.g. "
        "{\"temperature\": [21, 21]}: its cells are the product. Optional, field by field; the "
        "launcher estimates the server's memory from it before anything starts, counting a "
        "field left out as 1 cell."
    )
    field_units: dict[str, str] = Field(
        default_factory=dict, description="Units of each field (UDUNITS, as CF asks), e.g. "
        "{\"temperature\": \"K\"}; written in results.nc and on plots."
    )
    field_dimensions: dict[str, Annotated[list[str], Field(min_length=1)]] = Field(
        default_factory=dict, description="Names of the dimensions of a field of field_shapes, "
        "slowest first, e.g. {\"temperature\": [\"y\", \"x\"]}; default: x for one "
        "dimension, y and x for two, z, y and x for three."
    )
    coordinates_file: str | None = Field(
        None, description="A NetCDF file whose 1-D variables named after field dimensions give "
        "their coordinates in results.nc (with their units attribute); relative to the config "
        "file."
    )
    nb_time_steps: Annotated[int, Field(gt=0, le=MAX_TIME_STEPS)] = Field(
        description="Time steps each solver sends per field, at most 2^26."
    )
    time: TimeAxis | None = Field(
        None, description="The solver's time of each time step, {\"start\": 0, \"step\": 0.01, "
        "\"units\": \"s\"}; default: the time step's number."
    )
    seed: Annotated[int, Field(ge=0)] = Field(
        0, description="Seed of the sampler: the same seed draws the same study."
    )
    simulation_timeout: Seconds = Field(
        300.0, description="Seconds a simulation may go without sending data before it is "
        "killed (and retried)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> StudyOptions:
        problems = []
        bounds = self.l_bounds is not None or self.u_bounds is not None
        if bounds and self.parameter_distributions is not None:
            problems.append("give either l_bounds and u_bounds or parameter_distributions, not "
                            "both (a uniform parameter is {\"name\": \"uniform\", \"args\": "
                            "{\"loc\": low, \"scale\": high - low}})")
        elif self.parameter_distributions is None:
            missing = [n for n in ("l_bounds", "u_bounds") if getattr(self, n) is None]
            if missing:
                problems.append(f"{' and '.join(missing)} missing: each parameter needs bounds, "
                                "or give parameter_distributions")
        for name in ("l_bounds", "u_bounds", "parameter_names", "parameter_distributions"):
            values = getattr(self, name)
            if values is not None and len(values) != self.nb_parameters:
                problems.append(f"{name} has {len(values)} values, "
                                f"nb_parameters is {self.nb_parameters}")
        if not problems and self.l_bounds is not None and self.u_bounds is not None:
            for name, low, high in zip(self.names, self.l_bounds, self.u_bounds, strict=True):
                if not low < high:
                    problems.append(f"parameter {name}: l_bounds {low} is not below u_bounds "
                                    f"{high}")
        if self.parameter_names is not None:
            if len(set(self.parameter_names)) != len(self.parameter_names):
                problems.append(f"parameter_names repeats a name: {self.parameter_names}")
            if any(not name or name.strip() != name for name in self.parameter_names):
                problems.append(f"parameter_names must be non-empty names without surrounding "
                                f"blanks: {self.parameter_names}")
        if len(set(self.field_names)) != len(self.field_names):
            problems.append(f"field_names repeats a name: {self.field_names}")
        if any(not name or name.strip() != name for name in self.field_names):
            problems.append(f"field_names must be non-empty names without surrounding blanks: "
                            f"{self.field_names}")
        if self.time is not None and self.time.field is not None:
            if self.time.field not in self.field_names:
                problems.append(f"time.field {self.time.field!r} is not in field_names "
                                f"{self.field_names}")
            elif math.prod(self.field_shapes.get(self.time.field, [1])) != 1:
                problems.append(f"time.field {self.time.field!r} has the shape "
                                f"{self.field_shapes[self.time.field]}: the time is one value")
        for key in ("field_shapes", "field_units", "field_dimensions"):
            unknown = [name for name in getattr(self, key) if name not in self.field_names]
            if unknown:
                problems.append(f"{key} names {unknown}, not in field_names {self.field_names}")
        for name, dimensions in self.field_dimensions.items():
            shape = self.field_shapes.get(name)
            if shape is None:
                problems.append(f"field_dimensions names the dimensions of {name}, which has no "
                                "field_shapes")
            elif len(dimensions) != len(shape) or len(set(dimensions)) != len(dimensions):
                problems.append(f"field_dimensions gives {name} the dimensions {dimensions}, its "
                                f"shape {shape} needs {len(shape)} distinct names")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def names(self) -> list[str]:
        """The parameters' names: parameter_names, or x1, x2, ..."""
        return self.parameter_names or [f"x{k + 1}" for k in range(self.nb_parameters)]

    def distributions(self) -> list[Any]:
        """Each parameter's distribution, a frozen scipy.stats distribution."""
        if self.parameter_distributions is not None:
            return [d.frozen() for d in self.parameter_distributions]
        assert self.l_bounds is not None and self.u_bounds is not None
        return [scipy.stats.uniform(loc=low, scale=high - low)
                for low, high in zip(self.l_bounds, self.u_bounds, strict=True)]

    def ranges(self) -> tuple[list[float], list[float]]:
        """Where each parameter lies: its bounds, or for a distribution its support, cut to the
        0.1 % and 99.9 % quantiles where unbounded. What scales a surrogate's inputs."""
        low, high = [], []
        for distribution in self.distributions():
            support = distribution.support()
            low.append(float(support[0]) if math.isfinite(support[0])
                       else float(distribution.ppf(1e-3)))
            high.append(float(support[1]) if math.isfinite(support[1])
                        else float(distribution.ppf(1 - 1e-3)))
        return low, high

    @property
    def field_sizes(self) -> list[int]:
        """Cells of each field, in field_names order, from field_shapes; 0 where undeclared."""
        return [math.prod(self.field_shapes[name]) if name in self.field_shapes else 0
                for name in self.field_names]


class SaConfig(_Section):
    mean: bool = Field(True, description="Mean of every cell and time step.")
    variance: bool = Field(False, description="Sample variance (ddof=1).")
    skewness: bool = Field(False, description="Skewness (biased, as scipy.stats.skew).")
    kurtosis: bool = Field(False, description="Excess kurtosis (as scipy.stats.kurtosis).")
    min: bool = Field(False, description="Minimum.")
    max: bool = Field(False, description="Maximum.")
    threshold_exceedance: list[float] = Field(
        default_factory=list, description="Thresholds: how many values exceeded each."
    )
    quantiles: list[Probability] = Field(
        default_factory=list, description="Probabilities of the quantiles (Robbins-Monro)."
    )
    sobol_indices: bool = Field(False, description="First and total Sobol indices with "
                                "confidence intervals (Martinez estimator).")
    sobol_ci_target: Annotated[float, Field(gt=0.0, le=2.0)] | None = Field(
        None, description="Stop drawing Sobol groups once the 95 % confidence intervals are "
        "this narrow: when at least sobol_ci_quantile of them (over every cell, time step, "
        "parameter, first and total order; a cell whose output never varies has none) are at "
        "most this wide, in figures of 32 groups or more. Groups begun by then complete; the "
        "others are not_run. At most parameter_sweep_size groups. Default: run every group."
    )
    sobol_ci_quantile: Probability = Field(
        0.95, description="The share of the intervals that must be no wider than "
        "sobol_ci_target."
    )
    covariance: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = Field(
        default_factory=list, description="Pairs [field, field] or [field, parameter name] "
        "whose covariance and correlation over the ensemble are computed cell by cell, e.g. "
        "[[\"u\", \"v\"], [\"u\", \"x1\"]]."
    )
    checkpoint_interval: Seconds = Field(
        300.0, description="Seconds between checkpoints of the server's state."
    )

    @model_validator(mode="after")
    def _asks_something(self) -> SaConfig:
        if not (self.moments_order or self.min or self.max or self.threshold_exceedance
                or self.quantiles or self.sobol_indices or self.covariance):
            raise ValueError("sa_config asks for no statistic: set at least one of mean, "
                             "variance, skewness, kurtosis, min, max, threshold_exceedance, "
                             "quantiles, sobol_indices, covariance")
        if self.sobol_ci_target is not None and not self.sobol_indices:
            raise ValueError("sobol_ci_target needs sobol_indices: true")
        return self

    @property
    def moments_order(self) -> int:
        """The order of moments the asked statistics need (0: none)."""
        for order, flag in ((4, self.kurtosis), (3, self.skewness), (2, self.variance),
                            (1, self.mean)):
            if flag:
                return order
        return 0


class ActiveSampling(_Section):
    method: str = Field(
        description="The sampler that draws the parameters of the simulations not yet launched "
        "while the study runs: 'breed' (new simulations around the parameters whose samples the "
        "surrogate fits worst), or the user's own, 'module:Class', a subclass of "
        "melissa.sampling.ActiveSampler."
    )
    initial: PositiveInt | None = Field(
        None, description="Simulations drawn up front by study_options.sampler, before any "
        "loss is known (the held-out ones among them); default: a quarter of the study, at "
        "least validation_simulations + 1."
    )
    parents: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.25, description="breed: the share of the simulations with a known loss, those of the "
        "highest losses, that new simulations are drawn around (each parent chosen with a "
        "probability proportional to its loss)."
    )
    sigma_start: Annotated[float, Field(gt=0.0, le=0.5)] = Field(
        0.1, description="breed: the standard deviation of the Gaussian perturbation of a "
        "parent, as a share of each parameter's range (of its distribution's quantiles), at the "
        "first draw after the initial ones; it goes linearly to sigma_end at the last."
    )
    sigma_end: Annotated[float, Field(gt=0.0, le=0.5)] = Field(
        0.02, description="breed: the perturbation's standard deviation at the study's last draw."
    )
    exploration_start: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.5, description="breed: the share of draws taken from study_options.sampler (plain "
        "exploration) at the first draw after the initial ones; it goes linearly to "
        "exploration_end at the last."
    )
    exploration_end: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.1, description="breed: the exploration share at the study's last draw."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="Keys for a user's sampler (module:Class), which "
        "gets them as self.options."
    )

    @field_validator("method")
    @classmethod
    def _known(cls, method: str) -> str:
        if method != "breed" and ":" not in method:
            raise ValueError(f"'{method}' is neither 'breed' nor a user's sampler "
                             "'module:Class'")
        return method


class DlConfig(_Section):
    batch_size: PositiveInt = Field(
        32, description="Samples per training step over all server ranks (each rank draws its "
        "share)."
    )
    buffer: Literal["FIFO", "FIRO", "Reservoir", "BatchReservoir"] = Field(
        "FIRO", description="FIFO: first in, first out; FIRO: first in, random out; Reservoir: "
        "a uniform random sample of everything received, samples reused; BatchReservoir: a "
        "simulation's time series kept together, a whole simulation evicted to make room, "
        "samples reused."
    )
    pseudo_epochs: PositiveInt | None = Field(
        None, description="Uses after which a sample leaves the buffer; default: 1 for FIFO and "
        "FIRO, no limit for Reservoir and BatchReservoir (a sample stays until replaced). FIFO "
        "takes only 1."
    )
    buffer_size: PositiveInt = Field(
        1000, description="Samples held over all server ranks (each rank holds its share)."
    )
    per_server_watermark: PositiveInt = Field(
        100, description="Samples a server rank holds before training starts."
    )
    nb_batches_update: PositiveInt = Field(
        50, description="Training steps between two validations."
    )
    checkpoint_interval: Seconds = Field(
        300.0, description="Seconds between checkpoints of the model and the optimizer."
    )
    learning_rate: PositiveFloat = Field(1e-3, description="The optimizer's learning rate.")
    validation_simulations: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Simulations held out of training, for validation (the first ones, so "
        "that validation can start early); default: one in ten, at least one where the study "
        "has two or more. 0: no validation."
    )
    server_class: str | None = Field(
        None, description="The user's training server, 'module:Class', a subclass of "
        "melissa.server.training.TrainingServer; default: an MLP (parameters, time step) -> "
        "fields."
    )
    routing: Literal["time_step", "simulation"] = Field(
        "time_step", description="Whole time steps go round robin to the server ranks over "
        "time steps, or over simulations."
    )
    active_sampling: ActiveSampling | None = Field(
        None, description="Parameters drawn during the study where the surrogate is worst "
        "(active learning); default: every simulation's drawn up front by "
        "study_options.sampler."
    )

    @model_validator(mode="after")
    def _pseudo_epochs(self) -> DlConfig:
        if self.buffer == "FIFO" and self.pseudo_epochs not in (None, 1):
            raise ValueError(f"dl_config.pseudo_epochs {self.pseudo_epochs} with buffer 'FIFO': "
                             "FIFO serves samples in arrival order, each once (more would serve "
                             "the same batch again); reuse needs FIRO, Reservoir or "
                             "BatchReservoir")
        return self


class Timeouts(_Section):
    server_start: Seconds = Field(
        120.0, description="Seconds the server may take to start and publish its address."
    )
    transport: Seconds = Field(
        60.0, description="Seconds a client waits for the server (MELISSA_TIMEOUT)."
    )
    shutdown: Seconds = Field(
        120.0, description="Seconds the server may take to write results once all is done."
    )
    heartbeat: Seconds = Field(
        60.0, description="Seconds of silence after which a server rank counts as lost (it is "
        "restarted) and the launcher as gone (its server stops after a final checkpoint)."
    )


class LauncherConfig(_Section):
    scheduler: Literal["local", "openmpi", "slurm", "oar"] = Field(
        "local", description="local: processes on this machine (mpirun only for MPI jobs of "
        "several processes); openmpi: every job through mpirun; slurm: the server and every "
        "simulation as Slurm batch jobs; oar: the same through OAR."
    )
    scheduler_options: dict[Literal["server", "simulation"], list[str]] = Field(
        default_factory=dict, description="Extra arguments of the batch scheduler's submission "
        "command by kind of job, e.g. {\"simulation\": [\"--partition=short\", "
        "\"--time=00:10:00\"]}."
    )
    job_limit: PositiveInt | Literal["auto"] = Field(
        2, description="Simulations running at once; \"auto\": as many as the scheduler starts "
        "(with slurm, pending jobs are the sign that the cluster is full; locally, one per core)."
    )
    num_server_processes: PositiveInt = Field(1, description="MPI ranks of the server.")
    num_client_processes: PositiveInt = Field(1, description="MPI ranks of each simulation.")
    simulation_retries: Annotated[int, Field(ge=0)] = Field(
        1, description="How many times a failed simulation is started again before it counts "
        "as failed."
    )
    server_restarts: Annotated[int, Field(ge=0)] = Field(
        3, description="How many times a server that died or fell silent is restarted from its "
        "last checkpoint before the study stops."
    )
    mpirun_options: list[str] = Field(
        default_factory=list, description="Extra mpirun arguments, e.g. a hostfile."
    )
    transport: Literal["zmq", "ucx", "auto"] = Field(
        "zmq", description="What carries the simulations' data to the server: zmq (ZeroMQ: Unix "
        "sockets within a node, TCP between nodes), ucx (UCX: shared memory within a node, RDMA "
        "or TCP between nodes, as UCX finds them; UCX_TLS and other UCX_* variables tune it; "
        "faster, but see the README's known limits), or auto: the server takes both, and each "
        "simulation takes UCX to a server on its own node or over RDMA, ZeroMQ where UCX would "
        "use TCP (zmq alone where this melissa was built without UCX)."
    )
    timeouts: Timeouts = Field(default_factory=Timeouts)

    @field_validator("transport")
    @classmethod
    def _transport_built(cls, transport: str) -> str:
        from melissa import _core

        if transport != "auto" and transport not in _core.transports():
            raise ValueError(f"{transport!r}: this melissa was built without it (it has "
                             f"{', '.join(_core.transports())}; UCX needs libucx-dev at build "
                             "time)")
        return transport

    @field_validator("job_limit", mode="wrap")
    @classmethod
    def _one_job_limit_error(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        """One error, not one per member of the union."""
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(f'Input should be a positive integer or "auto" (got {value!r})') \
                from None


class ClientConfig(_Section):
    executable_command: str = Field(
        min_length=1, description="The solver's command; the launcher appends the run's "
        "parameter values as arguments. {python} stands for the launcher's own interpreter."
    )

    @field_validator("executable_command")
    @classmethod
    def _splits(cls, command: str) -> str:
        try:
            argv = shlex.split(command)
        except ValueError as error:
            raise ValueError(f"cannot be split into arguments: {error}") from None
        if not argv:
            raise ValueError("is blank: it must start with the solver's program")
        return command

    @property
    def argv(self) -> list[str]:
        """The command's words; `{python}` is the launcher's own interpreter, the one melissa is
        installed in (a bare `python3` may be another, without it)."""
        return [sys.executable if word == "{python}" else word
                for word in shlex.split(self.executable_command)]


class Config(_Section):
    study_options: StudyOptions
    sa_config: SaConfig | None = None
    dl_config: DlConfig | None = None
    launcher_config: LauncherConfig = Field(default_factory=LauncherConfig)
    client_config: ClientConfig
    output_dir: str = Field("melissa-study", description="Where logs and results go "
                            "(relative paths are relative to the config file).")

    @model_validator(mode="after")
    def _one_server(self) -> Config:
        if (self.sa_config is None) == (self.dl_config is None):
            raise ValueError("the config needs exactly one of sa_config (statistics) and "
                             "dl_config (training)")
        if self.dl_config is not None:
            dl = self.dl_config
            ranks = self.launcher_config.num_server_processes
            if dl.per_server_watermark > self.per_rank(dl.buffer_size):
                raise ValueError(f"dl_config.per_server_watermark {dl.per_server_watermark} "
                                 f"exceeds what a server rank holds: buffer_size "
                                 f"{dl.buffer_size} over {ranks} ranks")
            if self.validation_simulations >= self.n_simulations:
                raise ValueError("dl_config.validation_simulations leaves no simulation to "
                                 "train on")
            if dl.active_sampling is not None:
                initial = self.initial_simulations
                if initial <= self.validation_simulations or initial > self.n_simulations:
                    raise ValueError(
                        f"dl_config.active_sampling.initial {initial} must exceed "
                        f"validation_simulations {self.validation_simulations} (held-out "
                        f"simulations are drawn up front) and be at most the study's "
                        f"{self.n_simulations} simulations")
            # Every rank must get data, or none can train: ranks train in lockstep.
            routed = (self.study_options.nb_time_steps if dl.routing == "time_step"
                      else self.n_simulations - self.validation_simulations)
            if routed < ranks:
                raise ValueError(f"dl_config.routing '{dl.routing}' spreads {routed} "
                                 f"{dl.routing.replace('_', ' ')}s over {ranks} server ranks: "
                                 "some would get no data")
        if self.sa_config is not None:
            study = self.study_options
            if study.time is not None and study.time.field is not None \
                    and not self.sa_config.mean:
                raise ValueError("study_options.time.field needs sa_config.mean: the time is "
                                 "the ensemble mean of that field")
            for pair in self.sa_config.covariance:
                if pair[0] not in study.field_names or pair[1] not in [*study.field_names,
                                                                      *study.names]:
                    raise ValueError(f"sa_config.covariance: {pair} must name a field of "
                                     f"field_names {study.field_names}, then a field or a "
                                     f"parameter of {study.names}")
                if pair[0] == pair[1]:
                    raise ValueError(f"sa_config.covariance: {pair} pairs a field with itself "
                                     "(its variance is sa_config.variance)")
                shapes = [study.field_shapes.get(name) for name in pair]
                if None not in shapes and shapes[0] != shapes[1]:
                    raise ValueError(f"sa_config.covariance: {pair} pairs fields of different "
                                     f"shapes, {shapes[0]} and {shapes[1]} (field_shapes): "
                                     "they are compared cell by cell")
            pairs = [tuple(pair) for pair in self.sa_config.covariance]
            repeated = sorted({pair for pair in pairs if pairs.count(pair) > 1})
            if repeated:
                raise ValueError(f"sa_config.covariance lists {list(repeated[0])} twice")
            if set(study.field_names) & set(study.names):
                raise ValueError(f"a parameter is named as a field: parameter_names "
                                 f"{study.names}, field_names {study.field_names}")
        if self.n_simulations > MAX_SIMULATIONS:
            groups = self.study_options.parameter_sweep_size
            raise ValueError(f"study_options.parameter_sweep_size {groups} makes "
                             f"{self.n_simulations} simulations with Sobol indices, more than "
                             f"the {MAX_SIMULATIONS} (2^32) that simulation ids can number")
        return self

    def per_rank(self, total: int) -> int:
        """A global size's share on each server rank (rounded up)."""
        ranks = self.launcher_config.num_server_processes
        return -(-total // ranks)

    @property
    def validation_simulations(self) -> int:
        """Simulations held out for validation: dl_config's, or one in ten by default."""
        assert self.dl_config is not None
        if self.dl_config.validation_simulations is not None:
            return self.dl_config.validation_simulations
        return max(1, self.n_simulations // 10) if self.n_simulations >= 2 else 0

    @property
    def initial_simulations(self) -> int:
        """Simulations drawn before the study starts: all of them, unless active sampling draws
        the others while it runs."""
        active = self.dl_config.active_sampling if self.dl_config is not None else None
        if active is None:
            return self.n_simulations
        if active.initial is not None:
            return active.initial
        return min(self.n_simulations,
                   max(self.n_simulations // 4, self.validation_simulations + 1))

    @property
    def n_simulations(self) -> int:
        study = self.study_options
        group = study.nb_parameters + 2 if self.sobol else 1
        return study.parameter_sweep_size * group

    @property
    def sobol(self) -> bool:
        return self.sa_config is not None and self.sa_config.sobol_indices


def _describe(error: ValidationError) -> str:
    lines = []
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "config"
        if problem["type"] == "extra_forbidden":
            known = _known_keys(problem["loc"][:-1])
            guess = difflib.get_close_matches(str(problem["loc"][-1]), known, n=1)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            lines.append(f"{where}: unknown key{hint}")
        elif problem["type"] == "missing":
            lines.append(f"{where}: missing (required)")
        else:
            message = problem["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message} (got {problem.get('input')!r})"
                         if problem["type"] != "value_error" else f"{where}: {message}")
    return "\n".join(lines)


def _known_keys(location: tuple[Any, ...]) -> list[str]:
    model: Any = Config
    for part in location:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        candidates = [a for a in getattr(annotation, "__args__", (annotation,))
                      if isinstance(a, type) and issubclass(a, BaseModel)]
        if not candidates:
            return []
        model = candidates[0]
    return list(model.model_fields)


def parse_config(data: Any) -> Config:
    """Validates a config already read; raises ConfigError naming every offending key."""
    try:
        return Config.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"invalid config:\n{_describe(error)}") from None


def load_config(path: str | Path) -> tuple[Config, Path]:
    """Reads and validates a config file; returns it and its output directory, resolved."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"cannot read the config {path}: {error.strerror}") from None
    try:
        data = json5.loads(text)
    except ValueError as error:
        raise ConfigError(f"{path} is not valid JSON (comments allowed): {error}") from None
    config = parse_config(data)
    output = Path(config.output_dir)
    return config, output if output.is_absolute() else (path.parent / output).resolve()


def schema() -> dict[str, Any]:
    """The JSON Schema of a config."""
    return Config.model_json_schema()

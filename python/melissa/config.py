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


class StudyOptions(_Section):
    parameter_sweep_size: Annotated[int, Field(gt=0, le=MAX_SIMULATIONS)] = Field(
        description="Number of parameter samples; with Sobol indices, the number of pick-freeze "
        "groups, each of nb_parameters + 2 simulations. At most 2^32 simulations in all."
    )
    nb_parameters: PositiveInt = Field(description="Number of uncertain parameters.")
    l_bounds: list[float] = Field(description="Lower bound of each parameter.")
    u_bounds: list[float] = Field(description="Upper bound of each parameter.")
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
    nb_time_steps: Annotated[int, Field(gt=0, le=MAX_TIME_STEPS)] = Field(
        description="Time steps each solver sends per field, at most 2^26."
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
        for name in ("l_bounds", "u_bounds"):
            if len(getattr(self, name)) != self.nb_parameters:
                problems.append(f"{name} has {len(getattr(self, name))} values, "
                                f"nb_parameters is {self.nb_parameters}")
        if not problems:
            for k, (low, high) in enumerate(zip(self.l_bounds, self.u_bounds, strict=True)):
                if not low < high:
                    problems.append(f"parameter {k}: l_bounds {low} is not below u_bounds {high}")
        if len(set(self.field_names)) != len(self.field_names):
            problems.append(f"field_names repeats a name: {self.field_names}")
        if any(not name or name.strip() != name for name in self.field_names):
            problems.append(f"field_names must be non-empty names without surrounding blanks: "
                            f"{self.field_names}")
        unknown = [name for name in self.field_shapes if name not in self.field_names]
        if unknown:
            problems.append(f"field_shapes names {unknown}, not in field_names "
                            f"{self.field_names}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

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
    checkpoint_interval: Seconds = Field(
        300.0, description="Seconds between checkpoints of the server's state."
    )

    @model_validator(mode="after")
    def _asks_something(self) -> SaConfig:
        if not (self.moments_order or self.min or self.max or self.threshold_exceedance
                or self.quantiles or self.sobol_indices):
            raise ValueError("sa_config asks for no statistic: set at least one of mean, "
                             "variance, skewness, kurtosis, min, max, threshold_exceedance, "
                             "quantiles, sobol_indices")
        return self

    @property
    def moments_order(self) -> int:
        """The order of moments the asked statistics need (0: none)."""
        for order, flag in ((4, self.kurtosis), (3, self.skewness), (2, self.variance),
                            (1, self.mean)):
            if flag:
                return order
        return 0


class DlConfig(_Section):
    batch_size: PositiveInt = Field(
        32, description="Samples per training step over all server ranks (each rank draws its "
        "share)."
    )
    buffer: Literal["FIFO", "FIRO", "Reservoir"] = Field(
        "FIRO", description="FIFO: first in, first out; FIRO: first in, random out; Reservoir: "
        "a uniform random sample of everything received, samples reused."
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
    validation_simulations: Annotated[int, Field(ge=0)] = Field(
        0, description="Simulations held out of training, for validation (the first ones, so "
        "that validation can start early)."
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
    timeouts: Timeouts = Field(default_factory=Timeouts)

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
            if dl.validation_simulations >= self.n_simulations:
                raise ValueError("dl_config.validation_simulations leaves no simulation to "
                                 "train on")
            # Every rank must get data, or none can train: ranks train in lockstep.
            routed = (self.study_options.nb_time_steps if dl.routing == "time_step"
                      else self.n_simulations - dl.validation_simulations)
            if routed < ranks:
                raise ValueError(f"dl_config.routing '{dl.routing}' spreads {routed} "
                                 f"{dl.routing.replace('_', ' ')}s over {ranks} server ranks: "
                                 "some would get no data")
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

# SPDX-License-Identifier: BSD-3-Clause
"""Config values that cannot run are refused before anything starts, with a message naming the
key: numbers given as strings or booleans, non-finite numbers, a blank or unrunnable solver,
sizes beyond what simulation ids, the receiver or this machine's memory can hold."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from test_study import melissa, study_config

from melissa.config import MAX_TIME_STEPS, Config, ConfigError, load_config, parse_config, schema
from melissa.launcher import preflight as checks


def statistics_config(**sections: dict[str, Any]) -> dict[str, Any]:
    """A valid statistics config, each section updated with the given keys."""
    config: dict[str, Any] = {
        "study_options": {"parameter_sweep_size": 8, "nb_parameters": 3,
                          "l_bounds": [0.0, 0.0, 0.0], "u_bounds": [1.0, 2.0, 3.0],
                          "field_names": ["u", "v"], "nb_time_steps": 4},
        "sa_config": {"mean": True, "variance": True, "threshold_exceedance": [1.0],
                      "quantiles": [0.5]},
        "launcher_config": {"job_limit": 2, "num_server_processes": 2,
                            "timeouts": {"transport": 20.0}},
        "client_config": {"executable_command": f"{sys.executable} solver.py"},
    }
    return _updated(config, sections)


def training_config(**sections: dict[str, Any]) -> dict[str, Any]:
    config = statistics_config()
    del config["sa_config"]
    config["dl_config"] = {"buffer_size": 100, "per_server_watermark": 10,
                           "validation_simulations": 2, "learning_rate": 0.01}
    return _updated(config, sections)


def _updated(config: dict[str, Any], sections: dict[str, dict[str, Any]]) -> dict[str, Any]:
    config = copy.deepcopy(config)
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    return config


def refused(config: dict[str, Any], *expected: str) -> str:
    """The message of the ConfigError parse_config raises; each expected text is in it."""
    with pytest.raises(ConfigError) as raised:
        parse_config(config)
    message = str(raised.value)
    for text in expected:
        assert text in message, message
    return message


# -- types: "4" and true are no numbers -----------------------------------------------------------

@pytest.mark.parametrize(("section", "key", "value", "where"), [
    ("study_options", "parameter_sweep_size", "4", "study_options.parameter_sweep_size"),
    ("study_options", "nb_time_steps", True, "study_options.nb_time_steps"),
    ("study_options", "nb_time_steps", 4.0, "study_options.nb_time_steps"),
    ("study_options", "l_bounds", [True, 0, 0], "study_options.l_bounds.0"),
    ("study_options", "u_bounds", [1, "2", 3], "study_options.u_bounds.1"),
    ("study_options", "simulation_timeout", "60", "study_options.simulation_timeout"),
    ("study_options", "seed", False, "study_options.seed"),
    ("sa_config", "mean", "true", "sa_config.mean"),
    ("sa_config", "variance", 1, "sa_config.variance"),
    ("sa_config", "threshold_exceedance", [True], "sa_config.threshold_exceedance.0"),
    ("sa_config", "quantiles", ["0.5"], "sa_config.quantiles.0"),
    ("launcher_config", "job_limit", True, "launcher_config.job_limit"),
    ("launcher_config", "timeouts", {"transport": "20"}, "launcher_config.timeouts.transport"),
])
def test_strings_and_booleans_are_no_numbers(section: str, key: str, value: Any,
                                              where: str) -> None:
    refused(statistics_config(**{section: {key: value}}), f"{where}: Input should be")


def test_training_numbers_are_strict_too() -> None:
    refused(training_config(dl_config={"learning_rate": "0.01"}), "dl_config.learning_rate")
    refused(training_config(dl_config={"buffer_size": True}), "dl_config.buffer_size")


def test_ints_pass_where_floats_are_expected() -> None:
    config = parse_config(statistics_config(
        study_options={"l_bounds": [0, 0, 0], "u_bounds": [1, 2, 3], "simulation_timeout": 60},
        sa_config={"threshold_exceedance": [1, 2]}))
    assert config.study_options.l_bounds == [0.0, 0.0, 0.0]
    assert config.sa_config is not None
    assert all(isinstance(x, float) for x in config.sa_config.threshold_exceedance)


# -- non-finite numbers -------------------------------------------------------------------------

@pytest.mark.parametrize(("section", "key", "value", "where"), [
    ("study_options", "l_bounds", [-float("inf"), 0, 0], "study_options.l_bounds.0"),
    ("study_options", "u_bounds", [1, float("nan"), 3], "study_options.u_bounds.1"),
    ("study_options", "simulation_timeout", float("inf"), "study_options.simulation_timeout"),
    ("sa_config", "threshold_exceedance", [float("inf")], "sa_config.threshold_exceedance.0"),
    ("sa_config", "quantiles", [float("nan")], "sa_config.quantiles.0"),
    ("sa_config", "checkpoint_interval", float("nan"), "sa_config.checkpoint_interval"),
    ("launcher_config", "timeouts", {"shutdown": float("inf")},
     "launcher_config.timeouts.shutdown"),
])
def test_non_finite_numbers_are_refused(section: str, key: str, value: Any, where: str) -> None:
    refused(statistics_config(**{section: {key: value}}), f"{where}: Input should be a finite")


def test_non_finite_learning_rate_is_refused() -> None:
    refused(training_config(dl_config={"learning_rate": float("nan")}),
            "dl_config.learning_rate: Input should be a finite")


def test_json5_infinity_is_refused(tmp_path: Path) -> None:
    """json5 reads Infinity and NaN: the file's text, not only Python's floats, is refused."""
    path = tmp_path / "config.json"
    text = json.dumps(statistics_config()).replace('"l_bounds": [0.0', '"l_bounds": [-Infinity')
    path.write_text(text.replace('"u_bounds": [1.0', '"u_bounds": [NaN'))
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    assert "study_options.l_bounds.0: Input should be a finite number" in str(raised.value)
    assert "study_options.u_bounds.0: Input should be a finite number" in str(raised.value)


# -- the solver's command -----------------------------------------------------------------------

@pytest.mark.parametrize(("command", "message"), [
    ("", "client_config.executable_command: String should have at least 1 character"),
    ("   ", "client_config.executable_command: is blank"),
    ("solver 'unclosed", "client_config.executable_command: cannot be split into arguments"),
])
def test_blank_or_unsplittable_command_is_refused(command: str, message: str) -> None:
    refused(statistics_config(client_config={"executable_command": command}), message)


def solver_config(command: str) -> Any:
    return parse_config(statistics_config(client_config={"executable_command": command}))


def test_solver_that_is_not_executable_is_refused(tmp_path: Path) -> None:
    (tmp_path / "solver.sh").write_text("#!/bin/sh\n")
    (tmp_path / "solver.sh").chmod(0o644)
    with pytest.raises(ConfigError, match=r"client_config.executable_command: .*solver.sh is not "
                       r"executable: make it so \(chmod \+x\)"):
        checks.preflight(solver_config("./solver.sh --x 1"), tmp_path)


def test_directory_as_solver_is_refused(tmp_path: Path) -> None:
    (tmp_path / "build").mkdir()
    with pytest.raises(ConfigError, match=r"client_config.executable_command: .*build is a "
                       "directory, not a program"):
        checks.preflight(solver_config("./build"), tmp_path)


def test_missing_solver_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="client_config.executable_command: .*nothing does not "
                       "exist"):
        checks.preflight(solver_config("./nothing"), tmp_path)
    with pytest.raises(ConfigError, match="client_config.executable_command: 'no-such-program' "
                       "is not on PATH"):
        checks.preflight(solver_config("no-such-program"), tmp_path)


def test_interpreter_and_script_pass_with_the_program_resolved(tmp_path: Path) -> None:
    """Only the program must be executable: the script of `python3 script.py` need not be."""
    (tmp_path / "solver.py").write_text("")
    (tmp_path / "solver.sh").write_text("#!/bin/sh\n")
    (tmp_path / "solver.sh").chmod(0o755)
    assert checks.preflight(solver_config("python3 solver.py --x 1"), tmp_path).solver == [
        "python3", "solver.py", "--x", "1"]
    assert checks.preflight(solver_config("./solver.sh"), tmp_path).solver == [
        str(tmp_path / "solver.sh")]


# -- sizes --------------------------------------------------------------------------------------

def test_more_simulations_than_ids_are_refused() -> None:
    refused(statistics_config(study_options={"parameter_sweep_size": 10**12}),
            "study_options.parameter_sweep_size: Input should be less than or equal to "
            "4294967296")
    # With Sobol indices, nb_parameters + 2 simulations per group.
    refused(statistics_config(study_options={"parameter_sweep_size": 2**31},
                              sa_config={"sobol_indices": True}),
            "study_options.parameter_sweep_size 2147483648 makes 10737418240 simulations")


def test_time_steps_beyond_the_receivers_are_refused() -> None:
    parse_config(statistics_config(study_options={"nb_time_steps": MAX_TIME_STEPS}))
    for steps in (MAX_TIME_STEPS + 1, 2**31):
        refused(statistics_config(study_options={"nb_time_steps": steps}),
                "study_options.nb_time_steps: Input should be less than or equal to 67108864")


@pytest.mark.parametrize(("section", "values", "where"), [
    ("launcher_config", {"job_limit": 0}, "launcher_config.job_limit"),
    ("launcher_config", {"job_limit": "many"}, "launcher_config.job_limit"),
    ("launcher_config", {"num_server_processes": 0}, "launcher_config.num_server_processes"),
    ("launcher_config", {"simulation_retries": -1}, "launcher_config.simulation_retries"),
    ("launcher_config", {"timeouts": {"transport": 0}}, "launcher_config.timeouts.transport"),
    ("launcher_config", {"timeouts": {"transport": 2e6}}, "launcher_config.timeouts.transport"),
    ("study_options", {"simulation_timeout": -1}, "study_options.simulation_timeout"),
    ("study_options", {"seed": -1}, "study_options.seed"),
])
def test_numbers_out_of_bounds_are_refused(section: str, values: dict[str, Any],
                                           where: str) -> None:
    refused(statistics_config(**{section: values}), f"{where}: Input should be")


def test_transport_is_one_this_build_has(monkeypatch: pytest.MonkeyPatch) -> None:
    from melissa import _core

    refused(statistics_config(launcher_config={"transport": "rdma"}),
            "launcher_config.transport: Input should be 'zmq', 'ucx' or 'auto'")
    for transport in ("auto", *_core.transports()):
        parse_config(statistics_config(launcher_config={"transport": transport}))
    # As a build without UCX (MELISSA_UCX=OFF, the wheel) answers.
    monkeypatch.setattr(_core, "transports", lambda: ["zmq"])
    refused(statistics_config(launcher_config={"transport": "ucx"}),
            "launcher_config.transport: 'ucx': this melissa was built without it (it has zmq")
    parse_config(statistics_config(launcher_config={"transport": "auto"}))


# -- what the results are named and how parameters are drawn ---------------------------------

def test_names_default_to_x1_and_follow_parameter_names() -> None:
    assert parse_config(statistics_config()).study_options.names == ["x1", "x2", "x3"]
    named = parse_config(statistics_config(study_options={"parameter_names": ["k", "T0", "q"]}))
    assert named.study_options.names == ["k", "T0", "q"]


def test_distributions_replace_the_bounds() -> None:
    config = statistics_config()
    del config["study_options"]["l_bounds"], config["study_options"]["u_bounds"]
    config["study_options"]["parameter_distributions"] = [
        {"name": "norm", "args": {"loc": 1.0, "scale": 2.0}},
        {"name": "uniform"}, {"name": "beta", "args": {"a": 2.0, "b": 3.0}}]
    study = parse_config(config).study_options
    assert [d.dist.name for d in study.distributions()] == ["norm", "uniform", "beta"]
    assert study.distributions()[0].mean() == 1.0


@pytest.mark.parametrize(("options", "message"), [
    ({"parameter_names": ["a", "b"]}, "parameter_names has 2 values, nb_parameters is 3"),
    ({"parameter_names": ["a", "a", "b"]}, "parameter_names repeats a name"),
    ({"parameter_names": ["a", " b", "c"]}, "parameter_names must be non-empty names"),
    ({"parameter_names": ["u", "b", "c"]}, "a parameter is named as a field"),
    ({"parameter_distributions": [{"name": "norm"}] * 3},
     "give either l_bounds and u_bounds or parameter_distributions, not both"),
    ({"l_bounds": None}, "l_bounds missing: each parameter needs bounds"),
    ({"field_units": {"w": "K"}}, "field_units names ['w'], not in field_names"),
    ({"field_dimensions": {"u": ["y", "x"]}}, "names the dimensions of u, which has no "
                                              "field_shapes"),
    ({"field_shapes": {"u": [3, 4]}, "field_dimensions": {"u": ["x", "x"]}},
     "its shape [3, 4] needs 2 distinct names"),
    ({"time": {"start": 0.0, "step": 0.0}}, "study_options.time.step: Input should be greater"),
])
def test_bad_names_units_and_bounds_are_refused(options: dict[str, Any], message: str) -> None:
    config = statistics_config(study_options=options)
    config["study_options"] = {k: v for k, v in config["study_options"].items() if v is not None}
    refused(config, message)


@pytest.mark.parametrize(("distribution", "message"), [
    ({"name": "gauss"}, "'gauss' is not a continuous distribution of scipy.stats"),
    ({"name": "poisson", "args": {"mu": 2.0}}, "'poisson' is not a continuous distribution"),
    ({"name": "norm", "args": {"scale": -1.0}}, "is not a valid distribution"),
    ({"name": "norm", "args": {"sigma": 1.0}}, "unexpected keyword argument 'sigma'"),
])
def test_bad_distributions_are_refused(distribution: dict[str, Any], message: str) -> None:
    config = statistics_config()
    del config["study_options"]["l_bounds"], config["study_options"]["u_bounds"]
    config["study_options"]["parameter_distributions"] = [distribution, {"name": "uniform"},
                                                          {"name": "uniform"}]
    refused(config, "study_options.parameter_distributions.0", message)


@pytest.mark.parametrize(("sa", "message"), [
    ({"covariance": [["u", "w"]]}, "sa_config.covariance: ['u', 'w'] must name a field"),
    ({"covariance": [["x1", "u"]]}, "must name a field of field_names ['u', 'v'], then"),
    ({"covariance": [["u", "u"]]}, "pairs a field with itself"),
    ({"covariance": [["u", "x1"], ["u", "x1"]]}, "sa_config.covariance lists ['u', 'x1'] twice"),
    ({"covariance": [["u", "v"]]}, "pairs fields of different shapes, [2, 3] and [6]"),
    ({"covariance": [["u"]]}, "sa_config.covariance.0: List should have at least 2 items"),
    ({"sobol_ci_target": 0.1}, "sobol_ci_target needs sobol_indices: true"),
    ({"sobol_indices": True, "sobol_ci_target": 0.0}, "sa_config.sobol_ci_target: Input"),
])
def test_bad_statistics_choices_are_refused(sa: dict[str, Any], message: str) -> None:
    shapes = {"field_shapes": {"u": [2, 3], "v": [6]}}
    refused(statistics_config(sa_config=sa, study_options=shapes), message)


@pytest.mark.parametrize(("groups", "held"), [(1, 0), (8, 1), (20, 2), (95, 9)])
def test_validation_simulations_default_to_one_in_ten(groups: int, held: int) -> None:
    """A single simulation is left to train on; an explicit count is kept, 0 included."""
    config = training_config(study_options={"parameter_sweep_size": groups})
    del config["dl_config"]["validation_simulations"]
    assert parse_config(config).validation_simulations == held
    config["dl_config"]["validation_simulations"] = 0
    assert parse_config(config).validation_simulations == 0


# -- field_shapes and the memory estimate -------------------------------------------------------

def test_field_sizes_come_from_field_shapes() -> None:
    config = parse_config(statistics_config(study_options={"field_shapes": {"v": [21, 21]}}))
    assert config.study_options.field_sizes == [0, 441]


@pytest.mark.parametrize(("shapes", "message"), [
    ({"w": [4]}, "field_shapes names ['w'], not in field_names ['u', 'v']"),
    ({"u": []}, "study_options.field_shapes.u: List should have at least 1 item"),
    ({"u": [4, 0]}, "study_options.field_shapes.u.1: Input should be greater than 0"),
    ({"u": [True]}, "study_options.field_shapes.u.0: Input should be a valid integer"),
])
def test_bad_field_shapes_are_refused(shapes: dict[str, Any], message: str) -> None:
    refused(statistics_config(study_options={"field_shapes": shapes}), message)


def test_field_shapes_is_in_the_schema() -> None:
    described = schema()["$defs"]["StudyOptions"]["properties"]["field_shapes"]["description"]
    assert "memory" in described


def test_memory_estimate_grows_with_cells_steps_and_statistics() -> None:
    def estimate(**sections: dict[str, Any]) -> int:
        return checks.estimate_memory(parse_config(statistics_config(**sections))).server

    small = estimate()
    assert estimate(study_options={"field_shapes": {"u": [1000]}}) > small + 2 * 8 * 1000 * 4
    assert estimate(study_options={"nb_time_steps": 400}) > 50 * small
    assert estimate(sa_config={"sobol_indices": True}) > small


def test_memory_beyond_the_machine_is_refused_naming_its_keys() -> None:
    config = parse_config(statistics_config(study_options={"field_shapes": {"u": [1000, 1000]}}))
    estimate = checks.check_memory(config, 2**40)
    with pytest.raises(ConfigError) as raised:
        checks.check_memory(config, estimate.total - 1)
    message = str(raised.value)
    assert "the study needs about 272.8 MiB of memory for the launcher and 2 server ranks" in \
        message, message
    assert "study_options.field_shapes, study_options.nb_time_steps, sa_config (mean, variance, " \
        "threshold_exceedance, quantiles)" in message


def test_huge_nb_time_steps_is_caught_without_field_shapes() -> None:
    config = parse_config(statistics_config(study_options={"nb_time_steps": MAX_TIME_STEPS}))
    with pytest.raises(ConfigError, match="study_options.nb_time_steps"):
        checks.check_memory(config, 24 * 2**30)


def test_launcher_that_cannot_hold_the_parameters_is_refused() -> None:
    config = parse_config(statistics_config(study_options={"parameter_sweep_size": 2**32}))
    with pytest.raises(ConfigError, match="study_options.parameter_sweep_size, "
                       "study_options.nb_parameters"):
        checks.check_memory(config, 24 * 2**30)


def test_training_memory_counts_the_replay_buffer() -> None:
    config = parse_config(training_config(
        study_options={"field_shapes": {"u": [1000, 1000], "v": [1000, 1000]}},
        dl_config={"buffer_size": 10_000, "per_server_watermark": 10}))
    with pytest.raises(ConfigError, match=r"the replay buffer, 74\.5 GiB \(dl_config.buffer_size"):
        checks.check_memory(config, 24 * 2**30)


def test_openmpi_compares_the_largest_rank_only() -> None:
    """Under mpirun the ranks may spread over several machines: each must fit one."""
    shapes = {"study_options": {"field_shapes": {"u": [1000, 1000]}}}
    local = parse_config(statistics_config(**shapes))
    spread = parse_config(statistics_config(**shapes, launcher_config={"scheduler": "openmpi"}))
    estimate = checks.estimate_memory(local)
    assert estimate.server_rank < estimate.total
    with pytest.raises(ConfigError):
        checks.check_memory(local, estimate.server_rank + estimate.launcher)
    checks.check_memory(spread, estimate.server_rank + estimate.launcher)


def test_auto_job_limit_runs_what_the_servers_memory_holds() -> None:
    """A Sobol group in flight holds its members' fields: with "auto", the simulations at once
    stop where the memory does, rather than the study being refused."""
    def sobol(job_limit: int | str) -> Config:
        return parse_config(statistics_config(
            study_options={"field_shapes": {"u": [1000, 1000]}, "parameter_sweep_size": 64},
            sa_config={"mean": True, "sobol_indices": True},
            launcher_config={"scheduler": "slurm", "job_limit": job_limit}))

    available = checks.estimate_memory(sobol(10)).server_rank
    at_once = checks.check_memory(sobol("auto"), available).at_once
    assert at_once == 10
    checks.check_memory(sobol(at_once), available)
    with pytest.raises(ConfigError, match="launcher_config.job_limit"):
        checks.check_memory(sobol(at_once + 1), available)
    with pytest.raises(ConfigError, match="the largest server rank"):
        checks.check_memory(sobol("auto"), checks.estimate_memory(sobol(1)).server_rank - 1)
    # Nothing bounds a study of moments but its own size.
    moments = parse_config(statistics_config(launcher_config={"job_limit": "auto"}))
    assert checks.check_memory(moments, 2**40).at_once == moments.n_simulations


# -- through `melissa run` ----------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "key"), [
    ({"study": {"parameter_sweep_size": "4"}}, "study_options.parameter_sweep_size"),
    ({"study": {"l_bounds": [float("-inf"), 0, 0]}}, "study_options.l_bounds.0"),
    ({"command": "   "}, "client_config.executable_command: is blank"),
    ({"study": {"parameter_sweep_size": 10**12}}, "study_options.parameter_sweep_size"),
    ({"study": {"nb_time_steps": 2**31}}, "study_options.nb_time_steps"),
    ({"study": {"field_shapes": {"u": [10**7, 10**7]}}}, "study_options.field_shapes"),
    ({"command": "./solver.sh"}, "client_config.executable_command: "),
    ({"command": "./build --x"}, "client_config.executable_command: "),
    ({"study": {"field_shapes": {"u": [2, 3]}, "coordinates_file": "grid.nc"}},
     "study_options.coordinates_file: cannot read"),
], ids=["string", "infinity", "blank", "sweep", "steps", "memory", "not-executable", "directory",
        "coordinates"])
def test_melissa_run_refuses_with_status_2(tmp_path: Path, overrides: dict[str, Any],
                                           key: str) -> None:
    (tmp_path / "solver.sh").write_text("#!/bin/sh\n")
    (tmp_path / "build").mkdir()
    done = melissa("run", str(study_config(tmp_path, **overrides)), timeout=60)
    assert done.returncode == 2, done.stderr
    assert key in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()

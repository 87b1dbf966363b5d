# SPDX-License-Identifier: BSD-3-Clause
"""From the server's accumulator states to the values results.nc stores."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import xarray as xr

import melissa
from melissa import stats
from melissa.config import Config, ConfigError, parse_config
from melissa.server.results import create, statistics_of, write_into


def config_asking(sa: dict[str, object]) -> object:
    return parse_config({
        "study_options": {"parameter_sweep_size": 3, "nb_parameters": 2, "l_bounds": [0, 0],
                          "u_bounds": [1, 1], "field_names": ["u"], "nb_time_steps": 1},
        "sa_config": sa, "client_config": {"executable_command": "true"},
    })


@pytest.mark.parametrize(
    ("sa", "kernel", "make"),
    [({"mean": False, "min": True}, "extrema", lambda: stats.Extrema(4)),
     ({"mean": False, "quantiles": [0.5]}, "quantiles", lambda: stats.Quantiles(4, [0.5])),
     ({"mean": False, "threshold_exceedance": [0.0]}, "exceedance",
      lambda: stats.ThresholdExceedance(4, [0.0]))],
    ids=["extrema", "quantiles", "exceedance"],
)
def test_count_comes_from_whatever_statistic_was_asked(sa: dict[str, object], kernel: str,
                                                       make: object) -> None:
    """A study of min only (no moments) still says how many samples each time step had."""
    accumulator = make()  # type: ignore[operator]
    accumulator.update(np.random.default_rng(0).normal(size=(3, 4)))
    state = {k: v for k, v in accumulator.state_dict().items()
             if k not in ("size", "thresholds", "probabilities")}
    values = statistics_of(config_asking(sa), 4, {kernel: state})  # type: ignore[arg-type]
    assert int(values["count"]) == 3


# -- the layout of results.nc ----------------------------------------------------------------

SHAPED_STUDY = {
    "parameter_sweep_size": 3, "nb_parameters": 2, "parameter_names": ["conductivity", "flux"],
    "l_bounds": [0, 0], "u_bounds": [1, 1], "nb_time_steps": 3,
    "field_names": ["temperature", "pressure", "w", "u"],
    # temperature and pressure give y different lengths: theirs is prefixed; x is shared.
    "field_shapes": {"temperature": [5, 7], "pressure": [4, 7], "w": [3, 4, 7]},
    "field_dimensions": {"w": ["level", "row", "x"]},
    "field_units": {"temperature": "K", "pressure": "Pa", "w": "m s-1"},
    "coordinates_file": "grid.nc",
    "time": {"start": 10, "step": 0.5, "units": "s"},
}
SHAPED_SA = {"mean": True, "variance": True, "skewness": True, "min": True,
             "threshold_exceedance": [0.5], "quantiles": [0.25, 0.75], "sobol_indices": True}
SIZES = {"temperature": 35, "pressure": 28, "w": 84, "u": 6}
LEADING = {"threshold_exceedance": 1, "quantiles": 2}  # the Sobol variables: one per parameter
STATUSES = ["completed"] * 10 + ["failed", "dropped"]


def study_config(study: dict[str, Any], sa: dict[str, Any]) -> Config:
    return parse_config({"study_options": study, "sa_config": sa,
                         "client_config": {"executable_command": "true"}})


def write_grid(path: Path, **lengths: int) -> None:
    """A coordinates file: a variable per dimension, 0.1 apart, with units and a long name."""
    with netCDF4.Dataset(path, "w") as ds:
        for name, length in lengths.items():
            ds.createDimension(name, length)
            variable = ds.createVariable(name, "f8", (name,))
            variable[:] = 0.1 * np.arange(length)
            variable.setncatts({"units": "km" if name == "level" else "m",
                                "long_name": f"{name} position"})
        ds.createDimension("n", 2)
        ds.createVariable("unrelated", "f8", ("n",))[:] = 0.0


def split(n: int, ranks: int, rng: np.random.Generator) -> list[int]:
    """Uneven contiguous ranges over n cells, as the server ranks hold them (one may be
    empty)."""
    return [0, *sorted(rng.choice(np.arange(1, n), size=min(ranks, n) - 1, replace=False)), n]


def statistic_names(sa: dict[str, Any]) -> list[str]:
    names = [n for n in ("mean", "variance", "skewness", "min", "threshold_exceedance",
                         "quantiles") if sa.get(n)]
    if sa.get("sobol_indices"):
        names += [f"sobol_{o}{s}" for o in ("first", "total") for s in ("", "_lower", "_upper")]
    return names


def write_results(path: Path, config: Config, raw_sa: dict[str, Any], sizes: dict[str, int],
                  ranks: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """results.nc through results.create and write_into, each of `ranks` ranks writing its own
    uneven flat range of every field, in turn; returns what each variable should hold, flat:
    {variable: (leading..., time, cell)}."""
    study = config.study_options
    parameters = rng.random((len(STATUSES), study.nb_parameters))
    create(path, config, sizes, parameters, STATUSES, {"sa_config": raw_sa}, path.parent)
    steps = study.nb_time_steps
    expected: dict[str, np.ndarray] = {}
    for field, n in sizes.items():
        for name in statistic_names(raw_sa):
            leading = LEADING.get(name, study.nb_parameters if "sobol" in name else 0)
            shape = (leading, steps, n) if leading else (steps, n)
            expected[f"{field}_{name}"] = (rng.integers(0, 9, shape) if "exceedance" in name
                                           else rng.normal(size=shape))
    bounds = {field: split(n, ranks, rng) for field, n in sizes.items()}
    for rank in range(ranks):
        with netCDF4.Dataset(path, "a") as ds:
            for field, edges in bounds.items():
                if rank + 1 >= len(edges):
                    continue
                start, stop = edges[rank], edges[rank + 1]
                for step in range(steps):
                    values: dict[str, Any] = {"count": np.int64(8)}
                    for name in statistic_names(raw_sa):
                        full = expected[f"{field}_{name}"]
                        values[name] = full[..., step, start:stop]
                    write_into(ds, field, step, start, values)
    return expected


@pytest.mark.parametrize("ranks", [1, 2, 3, 7])
def test_shaped_results_follow_cf_and_hold_every_rank_range(tmp_path: Path, ranks: int) -> None:
    config = study_config(SHAPED_STUDY, SHAPED_SA)
    write_grid(tmp_path / "grid.nc", x=7, y=5, level=3)
    path = tmp_path / "results.nc"
    expected = write_results(path, config, SHAPED_SA, SIZES, ranks,
                             np.random.default_rng(ranks))
    with xr.open_dataset(path) as ds:
        space = {"temperature": ("temperature_y", "x"), "pressure": ("pressure_y", "x"),
                 "w": ("level", "row", "x"), "u": ("cell",)}
        for name, flat in expected.items():
            field = name.split("_")[0]
            variable = ds[name]
            assert variable.dims[-len(space[field]) - 1:] == ("time", *space[field]), name
            np.testing.assert_array_equal(variable.values.reshape(flat.shape), flat,
                                          err_msg=name)
        assert {d: ds.sizes[d] for d in ("temperature_y", "pressure_y", "x", "level", "row",
                                         "cell")} == {"temperature_y": 5, "pressure_y": 4,
                                                      "x": 7, "level": 3, "row": 4, "cell": 6}
        assert ds["temperature_sobol_first"].dims == ("parameter", "time", "temperature_y", "x")
        assert ds["w_quantiles"].dims == ("probability", "time", "level", "row", "x")
        assert (ds["temperature_count"].values == 8).all()

        # Coordinates from the file, where a dimension has its name (y was prefixed).
        np.testing.assert_allclose(ds["x"].values, 0.1 * np.arange(7))
        assert ds["x"].attrs == {"units": "m", "long_name": "x position"}
        assert ds["level"].attrs["units"] == "km"
        assert "temperature_y" not in ds.coords and "unrelated" not in ds

        # Units where meaningful, a long name everywhere.
        units = {name: ds[name].attrs.get("units") for name in ds.variables}
        assert units["temperature_mean"] == units["temperature_min"] == "K"
        assert units["temperature_quantiles"] == "K"
        assert units["threshold"] is None  # shared by fields in K, Pa and m s-1
        assert units["temperature_variance"] == "K^2"
        assert units["w_variance"] == "(m s-1)^2"
        assert units["pressure_mean"] == "Pa"
        assert units["u_mean"] is None and units["u_variance"] is None  # u has no units
        for name in ("temperature_skewness", "w_sobol_total_upper", "pressure_count",
                     "u_threshold_exceedance", "probability", "u_sobol_first"):
            assert units[name] == "1", name
        assert not [name for name in ds.variables if "long_name" not in ds[name].attrs]
        assert ds["temperature_sobol_first_lower"].attrs["long_name"] == (
            "lower bound of the 95% confidence interval of the first-order Sobol index of "
            "temperature")

        # Time, parameters, simulations.
        np.testing.assert_allclose(ds["time"].values, [10.0, 10.5, 11.0])
        assert ds["time"].attrs["units"] == "s" and ds["time"].attrs["standard_name"] == "time"
        assert list(ds["parameter"].values) == ["conductivity", "flux"]
        assert ds["parameters"].dims == ("simulation", "parameter")
        assert list(ds["simulation"].values) == list(range(12))
        status = ds["simulation_status"]
        assert list(status.values) == [0] * 10 + [1, 3]
        assert list(status.attrs["flag_values"]) == [0, 1, 2, 3]
        assert status.attrs["flag_meanings"] == "completed failed not_run dropped"

        assert ds.attrs["Conventions"] == "CF-1.10"
        assert ds.attrs["source"] == f"melissa {melissa.__version__}"
        assert ds.attrs["title"] and ds.attrs["history"]
        assert json.loads(ds.attrs["config"]) == {"sa_config": SHAPED_SA}
        assert "simulation_status_codes" not in ds.attrs


def test_a_shaped_map_plots_with_named_axes_and_units(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = study_config(SHAPED_STUDY, SHAPED_SA)
    write_grid(tmp_path / "grid.nc", x=7, level=3)
    expected = write_results(tmp_path / "results.nc", config, SHAPED_SA, SIZES, 3,
                             np.random.default_rng(0))
    with xr.open_dataset(tmp_path / "results.nc") as ds:
        mesh = ds["temperature_mean"].isel(time=-1).plot()
        ax = mesh.axes
        assert ax.get_xlabel() == "x position [m]"
        assert ax.get_ylabel() == "temperature_y"
        # xarray breaks a long label's line before the units.
        label = mesh.colorbar.ax.get_ylabel().split()
        assert label == ["ensemble", "mean", "of", "temperature", "[K]"]
        np.testing.assert_array_equal(np.asarray(mesh.get_array()).reshape(5, 7),
                                      expected["temperature_mean"][-1].reshape(5, 7))
        plt.close("all")


def test_without_shapes_or_time_the_cells_stay_flat(tmp_path: Path) -> None:
    study = {key: value for key, value in SHAPED_STUDY.items()
             if key in ("parameter_sweep_size", "nb_parameters", "l_bounds", "u_bounds",
                        "nb_time_steps")}
    sa = {"mean": True, "variance": True}
    config = study_config({**study, "field_names": ["a", "b", "c"]}, sa)
    expected = write_results(tmp_path / "results.nc", config, sa, {"a": 6, "b": 6, "c": 4}, 2,
                             np.random.default_rng(1))
    with xr.open_dataset(tmp_path / "results.nc") as ds:
        # Today's rule: one cell dimension, unless the fields' sizes differ.
        assert ds["a_mean"].dims == ("time", "a_cell")
        assert ds["c_variance"].dims == ("time", "c_cell")
        for name, flat in expected.items():
            np.testing.assert_array_equal(ds[name].values, flat, err_msg=name)
        assert list(ds["time"].values) == [0, 1, 2]
        assert ds["time"].attrs == {"long_name": "time step", "units": "1", "axis": "T"}
        assert list(ds["parameter"].values) == ["x1", "x2"]
        assert "units" not in ds["a_mean"].attrs


def test_the_solvers_time_sent_as_a_field_is_the_time_coordinate(tmp_path: Path) -> None:
    """study_options.time.field: the ensemble mean of that field at each time step is `time`;
    a time step nothing arrived for stays NaN."""
    study = {key: value for key, value in SHAPED_STUDY.items()
             if key in ("parameter_sweep_size", "nb_parameters", "l_bounds", "u_bounds",
                        "nb_time_steps")}
    config = study_config({**study, "field_names": ["u", "t"],
                           "time": {"field": "t", "units": "days since 2000-01-01"}},
                          {"mean": True})
    path = tmp_path / "results.nc"
    create(path, config, {"u": 4, "t": 1}, np.zeros((12, 2)), STATUSES, {}, tmp_path)
    with netCDF4.Dataset(path, "a") as ds:
        for step, day in ((0, 1.5), (2, 4.25)):
            write_into(ds, "t", step, 0, {"count": np.array(3), "mean": np.array([day])}, "t")
            write_into(ds, "u", step, 0, {"count": np.array(3), "mean": np.ones(4)}, "t")
    with netCDF4.Dataset(path) as ds:
        time = ds["time"]
        np.testing.assert_array_equal(np.ma.filled(time[:], np.nan), [1.5, np.nan, 4.25])
        assert time.units == "days since 2000-01-01" and time.standard_name == "time"
        assert "field t" in time.comment
    with xr.open_dataset(path) as ds:
        assert str(ds["time"].values[2])[:16] == "2000-01-05T06:00"


@pytest.mark.parametrize(("time", "message"), [
    ({"field": "w"}, "time.field 'w' is not in field_names"),
    ({"field": "t", "step": 1.0}, "give either step (and start) or field"),
    ({"units": "s"}, "give either step (and start) or field"),
    ({"field": "t", "start": 0.0}, "start goes with step, not with field"),
])
def test_a_time_axis_comes_from_one_source(time: dict[str, Any], message: str) -> None:
    study = {"parameter_sweep_size": 3, "nb_parameters": 1, "l_bounds": [0], "u_bounds": [1],
             "nb_time_steps": 3, "field_names": ["u", "t"], "time": time}
    with pytest.raises(ConfigError, match=re.escape(message)):
        study_config(study, {"mean": True})


def test_a_time_field_needs_the_mean_and_one_cell() -> None:
    study = {"parameter_sweep_size": 3, "nb_parameters": 1, "l_bounds": [0], "u_bounds": [1],
             "nb_time_steps": 3, "field_names": ["u", "t"], "time": {"field": "t"}}
    with pytest.raises(ConfigError, match="time.field needs sa_config.mean"):
        study_config(study, {"mean": False, "max": True})
    with pytest.raises(ConfigError, match=r"time.field 't' has the shape \[2\]"):
        study_config({**study, "field_shapes": {"t": [2]}}, {"mean": True})


@pytest.mark.parametrize(
    ("study", "grid", "message"),
    [({}, {"x": 6}, "gives x the shape (6,); temperature and pressure and w need 7 values"),
     ({}, None, "cannot read"),
     ({}, {"z": 3}, "no 1-D variable named after a dimension of the fields: cell, level, "
      "pressure_y, row, temperature_y, x"),
     ({"field_dimensions": {"temperature": ["y", "x"], "w": ["level", "row", "x"]},
       "field_shapes": {"temperature": [5, 7], "pressure": [4, 7], "w": [3, 4, 8]}}, {"x": 7},
      "study_options.field_dimensions: x has lengths [7, 8]"),
     ({"field_dimensions": {"w": ["level", "time", "x"]}}, {"x": 7},
      "time is a dimension results.nc names itself")],
    ids=["coordinate-length", "no-file", "no-coordinate", "dimension-clash", "reserved-name"],
)
def test_inconsistent_dimensions_or_coordinates_are_refused(
        tmp_path: Path, study: dict[str, Any], grid: dict[str, int] | None,
        message: str) -> None:
    if grid is not None:
        write_grid(tmp_path / "grid.nc", **grid)
    config = study_config({**SHAPED_STUDY, **study}, SHAPED_SA)
    sizes = {name: int(np.prod(shape)) for name, shape in
             config.study_options.field_shapes.items()} | {"u": 6}
    with pytest.raises(ConfigError, match="study_options") as raised:
        create(tmp_path / "results.nc", config, sizes, np.zeros((12, 2)), STATUSES, {},
               tmp_path)
    assert message in str(raised.value)

# SPDX-License-Identifier: BSD-3-Clause
"""Turning the server ranks' accumulators into OUTPUT_DIR/results.nc.

Each rank holds every statistic for its own range of cells; the file is created by rank 0 with
every variable, then each rank in turn writes its range, so that no rank ever holds more than
its own share.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import numpy.typing as npt

from melissa import stats
from melissa.config import Config

Array = npt.NDArray[Any]

# Simulation outcomes stored in results.nc. "dropped": a C run of a Sobol group replaced by a
# redrawn one because another member failed for good (its A and B runs count as any other).
STATUS_CODES = {"completed": 0, "failed": 1, "not_run": 2, "dropped": 3}


def _variables(config: Config) -> Iterator[tuple[str, tuple[str, ...], str]]:
    """(statistic, leading dimensions, dtype) of every per-field variable the config asks for."""
    sa = config.sa_config
    assert sa is not None
    for name in ("mean", "variance", "skewness", "kurtosis"):
        if getattr(sa, name):
            yield name, (), "f8"
    if sa.min:
        yield "min", (), "f8"
    if sa.max:
        yield "max", (), "f8"
    if sa.threshold_exceedance:
        yield "threshold_exceedance", ("threshold",), "i8"
    if sa.quantiles:
        yield "quantiles", ("probability",), "f8"
    if sa.sobol_indices:
        for name in ("sobol_first", "sobol_total"):
            for suffix in ("", "_lower", "_upper"):
                yield name + suffix, ("parameter",), "f8"


def statistics_of(config: Config, size: int, states: dict[str, dict[str, Array]],
                  level: float = 0.95) -> dict[str, Array]:
    """Every asked statistic of one (field, time step) on `size` cells, from the C++ states."""
    sa = config.sa_config
    assert sa is not None
    # Samples behind the statistics: every kernel but Sobol's counts the same (with Sobol
    # indices, the A and B runs); Sobol's counts groups, and stands alone only without others.
    counted = next(k for k in ("moments", "extrema", "exceedance", "quantiles", "sobol")
                   if k in states)
    out: dict[str, Array] = {"count": np.asarray(states[counted]["count"])}
    if "moments" in states:
        moments = stats.Moments(size, sa.moments_order)
        moments.load_state_dict({"size": size, "order": sa.moments_order, **states["moments"]})
        for name in ("mean", "variance", "skewness", "kurtosis"):
            if getattr(sa, name):
                out[name] = getattr(moments, name)()
    if "extrema" in states:
        extrema = stats.Extrema(size)
        extrema.load_state_dict({"size": size, **states["extrema"]})
        if sa.min:
            out["min"] = extrema.min()
        if sa.max:
            out["max"] = extrema.max()
    if "exceedance" in states:
        counts = states["exceedance"]["counts"]
        out["threshold_exceedance"] = counts.astype(np.int64)
    if "quantiles" in states:
        quantiles = stats.Quantiles(size, sa.quantiles)
        quantiles.load_state_dict({"size": size, "probabilities": sa.quantiles,
                                   **states["quantiles"]})
        out["quantiles"] = quantiles.quantiles()
    if "sobol" in states:
        p = config.study_options.nb_parameters
        sobol = stats.Sobol(size, p)
        sobol.load_state_dict({"size": size, "n_params": p, **states["sobol"]})
        bounds = sobol.confidence_intervals(level)
        out.update(sobol_first=sobol.first_order(), sobol_total=sobol.total_order(),
                   sobol_first_lower=bounds.first_lower, sobol_first_upper=bounds.first_upper,
                   sobol_total_lower=bounds.total_lower, sobol_total_upper=bounds.total_upper)
    return out


def cell_dimension(field: str, sizes: dict[str, int]) -> str:
    """'cell' when every field has as many cells, else one dimension per field."""
    return "cell" if len(set(sizes.values())) <= 1 else f"{field}_cell"


def create(path: Path, config: Config, sizes: dict[str, int], parameters: Array | list[Any],
           statuses: list[str], raw_config: dict[str, Any]) -> None:
    """Rank 0: the file with every dimension and variable, filled with NaN (nothing received)."""
    sa = config.sa_config
    assert sa is not None
    study = config.study_options
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.title = "melissa sensitivity-analysis study"
        ds.config = json.dumps(raw_config)
        ds.simulation_status_codes = json.dumps(STATUS_CODES)
        ds.createDimension("time", study.nb_time_steps)
        ds.createVariable("time", "i4", ("time",))[:] = np.arange(study.nb_time_steps)
        ds.createDimension("simulation", len(statuses))
        ds.createDimension("parameter", study.nb_parameters)
        ds.createVariable("parameter", str, ("parameter",))[:] = np.array(
            [f"x{k + 1}" for k in range(study.nb_parameters)], dtype=object)
        ds.createVariable("parameters", "f8", ("simulation", "parameter"))[:] = parameters
        ds.createVariable("simulation_status", "i1", ("simulation",))[:] = [
            STATUS_CODES[s] for s in statuses]
        if sa.threshold_exceedance:
            ds.createDimension("threshold", len(sa.threshold_exceedance))
            ds.createVariable("threshold", "f8", ("threshold",))[:] = sa.threshold_exceedance
        if sa.quantiles:
            ds.createDimension("probability", len(sa.quantiles))
            ds.createVariable("probability", "f8", ("probability",))[:] = sa.quantiles
        for field, size in sizes.items():
            cell = cell_dimension(field, sizes)
            if cell not in ds.dimensions:
                ds.createDimension(cell, size)
            # Integers stay integers in xarray without a fill value; nothing received is 0.
            count = ds.createVariable(f"{field}_count", "i8", ("time",), fill_value=False)
            count[:] = 0
            count.long_name = f"samples behind each time step's statistics of {field}"
            for name, leading, dtype in _variables(config):
                variable = ds.createVariable(f"{field}_{name}", dtype, (*leading, "time", cell),
                                             fill_value=False if dtype == "i8" else np.nan)
                if dtype == "i8":
                    variable[:] = -1  # a time step nothing arrived for


def write_into(ds: netCDF4.Dataset, field: str, time_step: int, offset: int,
               values: dict[str, Array]) -> None:
    """Writes one rank's cells of one (field, time step) into an open results file."""
    for name, array in values.items():
        if name == "count":
            ds[f"{field}_count"][time_step] = int(array)
            continue
        variable = ds[f"{field}_{name}"]
        end = offset + array.shape[-1]
        if array.ndim == 1:
            variable[time_step, offset:end] = array
        else:
            variable[:, time_step, offset:end] = array

# SPDX-License-Identifier: BSD-3-Clause
"""Turning the server ranks' accumulators into OUTPUT_DIR/results.nc.

Each rank holds every statistic for its own range of cells; the file is created by rank 0 with
every variable, then each rank in turn writes its range, so that no rank ever holds more than
its own share.

The file follows the CF conventions: a field of study_options.field_shapes has its own named
dimensions (with coordinates from study_options.coordinates_file), units come from field_units,
and time from study_options.time, so that xarray labels and plots it without help.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import numpy.typing as npt

import melissa
from melissa import stats
from melissa.config import Config, ConfigError, StudyOptions

Array = npt.NDArray[Any]

# Simulation outcomes stored in results.nc. "dropped": a C run of a Sobol group replaced by a
# redrawn one because another member failed for good (its A and B runs count as any other).
STATUS_CODES = {"completed": 0, "failed": 1, "not_run": 2, "dropped": 3}

# The level of the Sobol indices' confidence intervals.
CONFIDENCE = 0.95

# Dimensions of a shaped field when field_dimensions does not name them, by number of dimensions.
DEFAULT_DIMENSIONS = {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x")}
# Names results.nc uses for its own dimensions.
RESERVED_DIMENSIONS = frozenset({"time", "simulation", "parameter", "probability", "threshold"})

# How a statistic's units follow its field's: the same, squared, or none (a number).
SAME, SQUARED, NUMBER = "same", "squared", "number"


@dataclass(frozen=True)
class Statistic:
    name: str  # the variable is {field}_{name}
    leading: tuple[str, ...]  # dimensions before time
    dtype: str
    long_name: str  # "{long_name} of {field}"
    scaling: str  # how its units follow the field's: SAME, SQUARED or NUMBER


def _variables(config: Config) -> Iterator[Statistic]:
    """Every per-field variable the config asks for."""
    sa = config.sa_config
    assert sa is not None
    moments = {"mean": ("mean", SAME), "variance": ("variance (ddof=1)", SQUARED),
               "skewness": ("skewness", NUMBER), "kurtosis": ("excess kurtosis", NUMBER),
               "min": ("minimum", SAME), "max": ("maximum", SAME)}
    for name, (long_name, scaling) in moments.items():
        if getattr(sa, name):
            yield Statistic(name, (), "f8", f"ensemble {long_name}", scaling)
    if sa.threshold_exceedance:
        yield Statistic("threshold_exceedance", ("threshold",), "i8",
                        "number of samples above each threshold", NUMBER)
    if sa.quantiles:
        yield Statistic("quantiles", ("probability",), "f8", "ensemble quantiles", SAME)
    if sa.sobol_indices:
        for order in ("first", "total"):
            index = f"{order}-order Sobol index"
            interval = f"{CONFIDENCE:.0%} confidence interval of the {index}"
            for suffix, long_name in (("", index), ("_lower", f"lower bound of the {interval}"),
                                      ("_upper", f"upper bound of the {interval}")):
                yield Statistic(f"sobol_{order}{suffix}", ("parameter",), "f8", long_name,
                                NUMBER)


def _units(scaling: str, units: str | None) -> str | None:
    """A statistic's units (UDUNITS) from its field's; None where the field has none."""
    if scaling == NUMBER:
        return "1"
    if units is None or scaling == SAME or units == "1":
        return units
    # UDUNITS raises a name with ^; anything else is grouped first: "m2^2" would not parse,
    # "(m s-1)^2" does.
    return f"{units}^2" if re.fullmatch(r"[^\W\d]+", units) else f"({units})^2"


def statistics_of(config: Config, size: int, states: dict[str, dict[str, Array]],
                  level: float = CONFIDENCE) -> dict[str, Array]:
    """Every asked statistic of one (field, time step) on `size` cells, from the C++ states."""
    sa = config.sa_config
    assert sa is not None
    # Samples behind the statistics: every kernel but Sobol's counts the same (with Sobol
    # indices, the A and B runs); Sobol's counts groups, and stands alone only without others.
    # A field with covariance pairs only, the first kernel of a pair: the pair's count.
    counted = next((k for k in ("moments", "extrema", "exceedance", "quantiles", "sobol",
                                *states) if k in states), None)
    if counted is None:
        return {}  # a field asked for nothing of its own: only the other of covariance pairs
    out: dict[str, Array] = {"count": np.asarray(states[counted]["count"])}
    out.update(_covariances_of(config, size, states))
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


def _covariances_of(config: Config, size: int,
                    states: dict[str, dict[str, Array]]) -> dict[str, Array]:
    """{other}_covariance and {other}_correlation of each covariance pair of a field, from the
    states the server names covariance:<index of the pair in sa_config.covariance>."""
    sa = config.sa_config
    assert sa is not None
    out: dict[str, Array] = {}
    for index, (_, other) in enumerate(sa.covariance):
        state = states.get(f"covariance:{index}")
        if state is not None:
            covariance = stats.Covariance(size)
            covariance.load_state_dict({"size": size, **state})
            out[f"{other}_covariance"] = covariance.covariance(ddof=1)
            out[f"{other}_correlation"] = covariance.correlation()
    return out


def _create_covariances(ds: netCDF4.Dataset, config: Config, field: str,
                        dimensions: tuple[str, ...]) -> None:
    """The variables of the covariance pairs whose first is `field`, on its cells."""
    sa = config.sa_config
    assert sa is not None
    units = config.study_options.field_units
    for first, other in sa.covariance:
        if first != field:
            continue
        a, b = units.get(field), units.get(other)  # a parameter has none
        if a is None or b is None:
            product = None
        elif a == b:
            product = _units(SQUARED, a)
        else:
            product = " ".join(u if u.isidentifier() else f"({u})" for u in (a, b))
        for name, long_name, unit in (
                ("covariance", "sample covariance (ddof=1)", product),
                ("correlation", "Pearson correlation", "1")):
            _variable(ds, f"{field}_{other}_{name}", "f8", ("time", *dimensions), None,
                      fill_value=np.nan, units=unit,
                      long_name=f"{long_name} over the ensemble of {field} and {other}, cell by "
                                "cell")


def cell_dimension(field: str, sizes: dict[str, int]) -> str:
    """A field without a shape: 'cell' when every such field has as many cells, else one
    dimension per field."""
    return "cell" if len(set(sizes.values())) <= 1 else f"{field}_cell"


@dataclass(frozen=True)
class Layout:
    """Where a field's cells lie in results.nc: its dimensions, slowest first, and their
    lengths (a product equal to its cells, which are in C order)."""
    dimensions: tuple[str, ...]
    shape: tuple[int, ...]


def layouts(study: StudyOptions, sizes: dict[str, int]) -> dict[str, Layout]:
    """Each field's dimensions: those of field_shapes, named by field_dimensions or by default
    (x; y, x; z, y, x); a field without a shape has one flat dimension of its cells. Fields
    share a dimension where they give a name the same length; a default name that fields give
    different lengths is prefixed with each field's name (temperature_x)."""
    flat = {field: size for field, size in sizes.items() if field not in study.field_shapes}
    out = {field: Layout((cell_dimension(field, flat),), (size,)) for field, size in flat.items()}
    shaped = {field: tuple(study.field_shapes[field]) for field in sizes
              if field in study.field_shapes}
    named = {field: tuple(study.field_dimensions.get(field)
                          or DEFAULT_DIMENSIONS.get(len(shape))
                          or (f"dim{k}" for k in range(len(shape))))
             for field, shape in shaped.items()}
    lengths: dict[str, set[int]] = {}
    for field, shape in shaped.items():
        for name, length in zip(named[field], shape, strict=True):
            lengths.setdefault(name, set()).add(length)
    for field, shape in shaped.items():
        if math.prod(shape) != sizes[field]:
            raise ValueError(f"{field} has {sizes[field]} cells, its field_shapes {list(shape)} "
                             f"makes {math.prod(shape)}")
        chosen = field in study.field_dimensions
        dimensions = tuple(name if chosen or len(lengths[name]) == 1 else f"{field}_{name}"
                           for name in named[field])
        out[field] = Layout(dimensions, shape)
    problems = [f"{name} has lengths {sorted(lengths[name])}" for name in
                {n for field in study.field_dimensions if field in shaped for n in named[field]}
                if len(lengths[name]) > 1]
    problems += [f"{name} is a dimension results.nc names itself" for name in
                 {n for dims in named.values() for n in dims} & RESERVED_DIMENSIONS]
    if problems:
        raise ConfigError("study_options.field_dimensions: " + "; ".join(sorted(problems)))
    return out


def read_coordinates(study: StudyOptions, config_dir: Path,
                     fields: dict[str, Layout]) -> dict[str, tuple[Array, dict[str, Any]]]:
    """The coordinates coordinates_file gives the fields' dimensions: {dimension: (values,
    attributes)}. ConfigError if it cannot be read, gives none of them, or gives one a length
    other than the field's."""
    if study.coordinates_file is None:
        return {}
    where = "study_options.coordinates_file"
    path = config_dir / study.coordinates_file
    lengths: dict[str, tuple[int, list[str]]] = {}
    for field, layout in fields.items():
        for name, length in zip(layout.dimensions, layout.shape, strict=True):
            lengths.setdefault(name, (length, []))[1].append(field)
    try:
        ds = netCDF4.Dataset(path)
    except OSError as error:
        raise ConfigError(f"{where}: cannot read {path}: {error}") from None
    with ds:
        found = {}
        for name, (length, users) in lengths.items():
            variable = ds.variables.get(name)
            if variable is None:
                continue
            if variable.dimensions != (variable.dimensions[0],) or len(variable) != length:
                raise ConfigError(f"{where}: {path} gives {name} the shape {variable.shape}; "
                                  f"{' and '.join(users)} need {length} values")
            attributes = {key: variable.getncattr(key) for key in variable.ncattrs()
                          if key in ("units", "long_name", "standard_name", "axis",
                                     "calendar", "positive")}
            found[name] = (np.asarray(variable[:]), attributes)
    if not found:
        raise ConfigError(f"{where}: {path} has no 1-D variable named after a dimension of the "
                          f"fields: {', '.join(sorted(lengths))}")
    return found


def create(path: Path, config: Config, sizes: dict[str, int], parameters: Array | list[Any],
           statuses: list[str], raw_config: dict[str, Any], config_dir: Path,
           attributes: dict[str, Any] | None = None) -> None:
    """Rank 0: the file with every dimension and variable, filled with NaN (nothing received).
    `config_dir`: where a relative coordinates_file lies; `attributes`: more global ones."""
    sa = config.sa_config
    assert sa is not None
    study = config.study_options
    fields = layouts(study, sizes)
    coordinates = read_coordinates(study, config_dir, fields)
    with netCDF4.Dataset(path, "w", format="NETCDF4") as ds:
        ds.setncatts({
            "Conventions": "CF-1.10",
            "title": f"melissa study: ensemble statistics of {', '.join(sizes) or 'no field'}",
            "source": f"melissa {melissa.__version__}",
            "history": f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ} written by the statistics "
                       f"server of melissa {melissa.__version__}",
            "config": json.dumps(raw_config),
            **(attributes or {}),
        })
        ds.createDimension("time", study.nb_time_steps)
        steps = np.arange(study.nb_time_steps)
        if study.time is None:
            _variable(ds, "time", "i4", ("time",), steps, long_name="time step", units="1",
                      axis="T")
        else:
            axis = study.time
            # The solver's time is written with its field's statistics (write_into).
            _variable(ds, "time", "f8", ("time",),
                      None if axis.step is None else axis.start + axis.step * steps,
                      fill_value=np.nan, long_name="time", standard_name="time",
                      units=axis.units, axis="T",
                      comment=None if axis.field is None else
                      f"the ensemble mean of the solver's time, field {axis.field}")
        ds.createDimension("simulation", len(statuses))
        _variable(ds, "simulation", "i8", ("simulation",), np.arange(len(statuses)),
                  long_name="simulation id", units="1")
        ds.createDimension("parameter", study.nb_parameters)
        _variable(ds, "parameter", str, ("parameter",), np.array(study.names, dtype=object),
                  long_name="parameter name")
        _variable(ds, "parameters", "f8", ("simulation", "parameter"), parameters,
                  long_name="parameter values of each simulation (its command's arguments)")
        codes = np.array(list(STATUS_CODES.values()), dtype="i1")
        _variable(ds, "simulation_status", "i1", ("simulation",),
                  [STATUS_CODES[s] for s in statuses], long_name="outcome of each simulation",
                  flag_values=codes, flag_meanings=" ".join(STATUS_CODES))
        if sa.threshold_exceedance:
            ds.createDimension("threshold", len(sa.threshold_exceedance))
            # Units where every field shares them.
            shared = {study.field_units.get(field) for field in sizes}
            _variable(ds, "threshold", "f8", ("threshold",), sa.threshold_exceedance,
                      long_name="threshold of threshold_exceedance",
                      units=shared.pop() if len(shared) == 1 else None)
        if sa.quantiles:
            ds.createDimension("probability", len(sa.quantiles))
            _variable(ds, "probability", "f8", ("probability",), sa.quantiles,
                      long_name="probability of each quantile", units="1")
        for layout in fields.values():
            for name, length in zip(layout.dimensions, layout.shape, strict=True):
                if name not in ds.dimensions:
                    ds.createDimension(name, length)
                    if name in coordinates:
                        values, attributes = coordinates[name]
                        _variable(ds, name, values.dtype, (name,), values, **attributes)
        for field, layout in fields.items():
            units = study.field_units.get(field)
            # Integers stay integers in xarray without a fill value; nothing received is 0.
            _variable(ds, f"{field}_count", "i8", ("time",), 0, fill_value=False,
                      long_name=f"samples behind each time step's statistics of {field}",
                      units="1")
            for statistic in _variables(config):
                integer = statistic.dtype == "i8"
                _variable(ds, f"{field}_{statistic.name}", statistic.dtype,
                          (*statistic.leading, "time", *layout.dimensions),
                          -1 if integer else None,  # -1: a time step nothing arrived for
                          fill_value=False if integer else np.nan,
                          long_name=f"{statistic.long_name} of {field}",
                          units=_units(statistic.scaling, units))
            _create_covariances(ds, config, field, layout.dimensions)


def _variable(ds: netCDF4.Dataset, name: str, dtype: Any, dimensions: tuple[str, ...],
              values: Any, fill_value: Any = None, **attributes: Any) -> None:
    """A variable with its values (None: left to its fill value) and attributes (None: left
    out)."""
    variable = ds.createVariable(name, dtype, dimensions, fill_value=fill_value)
    variable.setncatts({key: value for key, value in attributes.items() if value is not None})
    if values is not None:
        variable[:] = values


def _boxes(shape: tuple[int, ...], start: int,
           stop: int) -> Iterator[tuple[tuple[slice, ...], int, int]]:
    """The flat cells [start, stop) of an array of `shape` in C order as a few boxes: (the
    box's slices, its first flat cell, the flat cell after its last). A range that starts or
    ends mid-row has its partial rows apart."""
    if start >= stop:
        return
    if len(shape) == 1:
        yield (slice(start, stop),), start, stop
        return
    row = math.prod(shape[1:])
    first = start // row
    if first == (stop - 1) // row:
        for box, a, b in _boxes(shape[1:], start - first * row, stop - first * row):
            yield (slice(first, first + 1), *box), a + first * row, b + first * row
        return
    whole = slice(-(-start // row), stop // row)
    yield from _boxes(shape, start, whole.start * row)
    if whole.start < whole.stop:
        yield ((whole, *(slice(0, n) for n in shape[1:])), whole.start * row,
               whole.stop * row)
    yield from _boxes(shape, whole.stop * row, stop)


def write_into(ds: netCDF4.Dataset, field: str, time_step: int, offset: int,
               values: dict[str, Array], time_field: str | None = None) -> None:
    """Writes one rank's cells, [offset, offset + cells) of the field's flat cells, of one
    (field, time step) into an open results file; the field `time_field` (study_options.time.
    field) gives the time coordinate its mean as well."""
    if field == time_field and "mean" in values:
        ds["time"][time_step] = values["mean"][0]
    for name, array in values.items():
        if name == "count":
            ds[f"{field}_count"][time_step] = int(array)
            continue
        variable = ds[f"{field}_{name}"]
        time = variable.dimensions.index("time")
        leading = (slice(None),) * time
        for box, start, stop in _boxes(variable.shape[time + 1:], offset,
                                       offset + array.shape[-1]):
            cells = array[..., start - offset:stop - offset]
            where = (*leading, time_step, *box)
            variable[where] = cells.reshape(*cells.shape[:-1], *(s.stop - s.start for s in box))

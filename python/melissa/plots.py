# SPDX-License-Identifier: BSD-3-Clause
"""`melissa plot OUTPUT_DIR`: PNG figures of a study, in OUTPUT_DIR/plots.

A statistics study, for each field of results.nc:

- `FIELD.png`: over time, at chosen cells or at the one where the ensemble varies most at the
  last time step (off the grid's edges, where boundary conditions set the values, and where the
  values change over time): the mean with a band of one standard deviation, the minimum and
  maximum, the quantiles; then one panel per parameter with its first- and total-order Sobol
  indices and their confidence intervals.
- `FIELD_maps.png` (a field of two dimensions): mean and standard deviation maps at the chosen
  time steps (the last by default).
- `FIELD_sobol_stepN.png` (a field of two dimensions): the first- and total-order Sobol index
  maps of every parameter at time step N, on one colour scale.

A training study: the loss curves of metrics.jsonl (`loss.png`), and held-out simulated fields
beside the surrogate's predictions and their difference (`predictions.png`), as maps for a field
of two dimensions."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on compute nodes or CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import Colormap, ListedColormap, Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from melissa.config import StudyOptions  # noqa: E402
from melissa.server.results import CONFIDENCE  # noqa: E402

# A cell: its flat index, or its index along each named dimension ({"y": 10, "x": 10}).
Cell = int | dict[str, int]

DPI = 110
# Cells whose mean changes over time less than this share of the most changing cell's count as
# flat: nothing to see in their time series.
FLAT = 0.01


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _fields(ds: xr.Dataset) -> list[str]:
    return [str(name)[: -len("_count")] for name in ds.data_vars if str(name).endswith("_count")]


def _statistic(ds: xr.Dataset, field: str) -> xr.DataArray:
    """Any of the field's statistics (they all share its spatial dimensions)."""
    return next(ds[name] for name in ds.data_vars
                if str(name).startswith(f"{field}_") and not str(name).endswith("_count"))


def _space(ds: xr.Dataset, field: str) -> tuple[str, ...]:
    """The field's spatial dimensions, slowest first."""
    dims = [str(d) for d in _statistic(ds, field).dims]
    return tuple(dims[dims.index("time") + 1:])


def _label(da: xr.DataArray, fallback: str) -> str:
    """'long name [units]', as xarray labels an axis."""
    name = da.attrs.get("long_name", fallback)
    units = da.attrs.get("units")
    return f"{name} [{units}]" if units else name


def _when(ds: xr.Dataset, step: int) -> str:
    time = ds["time"]
    value = time.values[step]
    if time.attrs.get("long_name") == "time step":
        return f"time step {value}"
    units = time.attrs.get("units", "")
    shown = np.datetime_as_string(value, unit="s") if np.issubdtype(
        time.dtype, np.datetime64) else f"{value:.4g} {units}".strip()
    return f"t = {shown} (step {step})"


def resolve_steps(ds: xr.Dataset, steps: Sequence[int] | None) -> list[int]:
    """Time step indices (negative from the end) as non-negative ones; the last by default."""
    n = ds.sizes["time"]
    out: list[int] = []
    for step in steps or [-1]:
        if not -n <= step < n:
            raise ValueError(f"time step {step} out of range: results.nc has {n} "
                             f"(0 to {n - 1}, or -1 for the last)")
        if step % n not in out:
            out.append(step % n)
    return out


def resolve_cell(ds: xr.Dataset, field: str, cell: Cell) -> dict[str, int]:
    """A cell as its index along each of the field's dimensions."""
    space = _space(ds, field)
    shape = tuple(ds.sizes[d] for d in space)
    if isinstance(cell, int):
        if not 0 <= cell < math.prod(shape):
            raise ValueError(f"cell {cell} out of range: {field} has {math.prod(shape)} cells")
        return {d: int(k) for d, k in zip(space, np.unravel_index(cell, shape), strict=True)}
    # A dimension prefixed with the field's name (two fields of different shapes) may be given
    # without it.
    named = {(d if d in space else f"{field}_{d}"): k for d, k in cell.items()}
    if set(named) != set(space):
        raise ValueError(f"{field} has the dimensions {', '.join(space)}: give an index along "
                         f"each (got {', '.join(cell)}); --fields picks the fields to plot")
    for d, k in named.items():
        if not 0 <= k < ds.sizes[d]:
            raise ValueError(f"{d}={k} out of range: {field} has {ds.sizes[d]} along {d}")
    return {d: named[d] for d in space}


def focus_cell(ds: xr.Dataset, field: str) -> dict[str, int]:
    """The cell where the ensemble varies most at the last time step (by variance, else total
    Sobol indices, else mean), among those off the grid's edges that change over time."""
    space = _space(ds, field)
    name = next(f"{field}_{s}" for s in ("variance", "sobol_total", "mean", "max")
                if f"{field}_{s}" in ds)
    last = ds[name].isel(time=-1)
    if "parameter" in last.dims:
        last = last.sum("parameter")
    score = np.nan_to_num(np.asarray(last.transpose(*space), dtype=float), nan=-np.inf)
    over_time = ds[f"{field}_mean"] if f"{field}_mean" in ds else ds[name]
    if "parameter" in over_time.dims:
        over_time = over_time.sum("parameter")
    change = np.asarray((over_time.max("time") - over_time.min("time")).transpose(*space),
                        dtype=float)
    moving = np.nan_to_num(change) > FLAT * np.nanmax(change, initial=0.0)
    inside = np.zeros(score.shape, dtype=bool)
    inside[tuple(slice(1, -1) if n >= 3 else slice(None) for n in score.shape)] = True
    for keep in (moving & inside, moving):
        if keep.any():
            score = np.where(keep, score, -np.inf)
            break
    return {d: int(k) for d, k in zip(space, np.unravel_index(np.argmax(score), score.shape),
                                      strict=True)}


def _describe(ds: xr.Dataset, cell: dict[str, int]) -> str:
    parts = []
    for d, k in cell.items():
        if d in ds.coords:
            units = ds[d].attrs.get("units", "")
            parts.append(f"{d}={k} ({float(ds[d].values[k]):.3g} {units})".replace(" )", ")"))
        else:
            parts.append(f"{d}={k}")
    return ", ".join(parts)


def series_figure(ds: xr.Dataset, field: str, cells: list[dict[str, int]], why: str) -> Figure:
    """The field's statistics over time at each cell (a column each); `why`: how the cells
    were chosen, for the title."""
    time = ds["time"]
    panels = [p for p, present in (("moments", f"{field}_mean" in ds),
                                   ("quantiles", f"{field}_quantiles" in ds)) if present]
    sobol = f"{field}_sobol_first" in ds
    parameters = [str(p) for p in ds["parameter"].values] if sobol else []
    rows = len(panels) + len(parameters)
    fig, axes = plt.subplots(rows, len(cells), figsize=(1 + 4.6 * len(cells), 0.8 + 2.3 * rows),
                             squeeze=False, sharex=True, layout="constrained")
    field_label = _label(ds[f"{field}_mean"].assign_attrs(long_name=field), field) \
        if f"{field}_mean" in ds else field
    for column, cell in enumerate(cells):
        at = ds.isel(cell)
        for ax, panel in zip(axes[:, column], panels, strict=False):
            if panel == "moments":
                mean = at[f"{field}_mean"].values
                line, = ax.plot(time, mean, label="mean")
                if f"{field}_variance" in ds:
                    std = np.sqrt(at[f"{field}_variance"].values)
                    ax.fill_between(time, mean - std, mean + std, color=line.get_color(),
                                    alpha=0.2, lw=0, label="mean ± std")
                for name, style in (("min", ":"), ("max", "-.")):
                    if f"{field}_{name}" in ds:
                        ax.plot(time, at[f"{field}_{name}"].values, style, color="0.4", lw=1,
                                label=name)
                ax.plot(time, ds[f"{field}_mean"].mean(_space(ds, field)).values, "--",
                        color="0.6", lw=1, label="mean over cells")
            else:
                quantiles = at[f"{field}_quantiles"]
                for k, p in enumerate(ds["probability"].values):
                    ax.plot(time, quantiles.isel(probability=k).values, label=f"q{p:g}")
            ax.set_ylabel(field_label if panel == "moments" else f"quantiles of {field}",
                          fontsize="small")
        for ax, k in zip(axes[len(panels):, column], range(len(parameters)), strict=True):
            # One scale for every parameter: which one matters shows at a glance.
            if k:
                ax.sharey(axes[len(panels), column])
            for order, color in (("first", "C0"), ("total", "C3")):
                name = f"{field}_sobol_{order}"
                ax.plot(time, at[name].isel(parameter=k).values, color=color, lw=1.2,
                        label=f"{order} order")
                ax.fill_between(time, at[f"{name}_lower"].isel(parameter=k).values,
                                at[f"{name}_upper"].isel(parameter=k).values, color=color,
                                alpha=0.15, lw=0, label=f"{CONFIDENCE:.0%} interval")
            # Reference lines, not limits: estimates below 0 or above 1 stay in sight.
            for level in (0, 1):
                ax.axhline(level, color="0.5", lw=0.6, zorder=0)
            ax.set_ylabel(f"Sobol: {parameters[k]}", fontsize="small")
        axes[0, column].set_title(_describe(ds, cell), fontsize="small")
        axes[-1, column].set_xlabel(_label(time, "time"))
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize="small")
    # A legend for each kind of panel: the Sobol panels share theirs.
    for row in range(min(rows, len(panels) + 1)):
        axes[row, 0].legend(fontsize="x-small", loc="best", ncols=2 if row == len(panels) else 1)
    fig.suptitle(f"{field} over time {why}")
    return fig


def _map(ax: Axes, da: xr.DataArray, **style: Any) -> Any:
    """A 2-D map with its coordinates (or indices) on the axes, square cells where both axes
    share units."""
    mesh = da.plot.pcolormesh(ax=ax, add_colorbar=False, **style)
    units = {da[d].attrs.get("units") if d in da.coords else None for d in da.dims}
    if len(units) == 1:
        ax.set_aspect("equal")
    return mesh


def _limits(arrays: Sequence[xr.DataArray]) -> tuple[float, float]:
    values = np.concatenate([np.asarray(a, dtype=float).ravel() for a in arrays])
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)


def maps_figure(ds: xr.Dataset, field: str, steps: list[int]) -> Figure:
    """Mean (top row) and standard deviation (bottom row) maps, a column per step, a colour
    scale per row."""
    rows = []
    if f"{field}_mean" in ds:
        rows.append((ds[f"{field}_mean"], "mean", "viridis"))
    if f"{field}_variance" in ds:
        units = ds[f"{field}_mean"].attrs.get("units") if f"{field}_mean" in ds else None
        std = (ds[f"{field}_variance"] ** 0.5).assign_attrs(
            long_name=f"ensemble standard deviation of {field}",
            **({"units": units} if units else {}))
        rows.append((std, "standard deviation", "magma"))
    fig, axes = plt.subplots(len(rows), len(steps), squeeze=False, layout="constrained",
                             sharex=True, sharey=True,
                             figsize=(1.6 + 3.4 * len(steps), 0.7 + 3.2 * len(rows)))
    for row, (da, what, cmap) in enumerate(rows):
        maps = [da.isel(time=step) for step in steps]
        vmin, vmax = _limits(maps)
        for column, (step, m) in enumerate(zip(steps, maps, strict=True)):
            ax = axes[row, column]
            mesh = _map(ax, m, cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_title(_when(ds, step), fontsize="small")
            ax.tick_params(labelsize="x-small")
            if column:
                ax.set_ylabel("")
            if row < len(rows) - 1:
                ax.set_xlabel("")
        fig.colorbar(mesh, ax=axes[row, :], label=_label(da.assign_attrs(long_name=what), what),
                     shrink=0.9)
    fig.suptitle(f"{field}: ensemble mean and standard deviation")
    return fig


def _diverging(low: float, high: float) -> tuple[Colormap, Normalize]:
    """A linear scale over [low, high] (0 included) whose colours are white at 0, red above and
    blue below with the same intensity for the same magnitude: negative estimates stand out as
    much as they are negative, and positive ones get the whole red half."""
    low, high = min(low, 0.0), max(high, 0.0)
    reach = max(-low, high) or 1.0
    full = plt.get_cmap("RdBu_r")
    cmap = ListedColormap(full(np.linspace(0.5 + 0.5 * low / reach, 0.5 + 0.5 * high / reach,
                                           256)))
    return cmap, Normalize(low, high if high > low else low + 1.0)


def sobol_figure(ds: xr.Dataset, field: str, step: int) -> Figure:
    """First- (top row) and total-order (bottom row) Sobol index maps, one column per
    parameter, on one colour scale."""
    parameters = [str(p) for p in ds["parameter"].values]
    orders = ("first", "total")
    maps = {order: ds[f"{field}_sobol_{order}"].isel(time=step) for order in orders}
    cmap, norm = _diverging(*_limits(list(maps.values())))
    fig, axes = plt.subplots(2, len(parameters), squeeze=False, layout="constrained",
                             figsize=(1.4 + 2.9 * len(parameters), 6.2), sharex=True,
                             sharey=True)
    for row, order in enumerate(orders):
        for column, name in enumerate(parameters):
            ax = axes[row, column]
            mesh = _map(ax, maps[order].isel(parameter=column), cmap=cmap, norm=norm)
            # Undefined indices (NaN) are not drawn: grey, not the white of 0.
            ax.set_facecolor("0.8")
            ax.set_title(f"{order} order: {name}", fontsize="small")
            ax.tick_params(labelsize="x-small")
            if column:
                ax.set_ylabel("")
            if row == 0:
                ax.set_xlabel("")
    fig.colorbar(mesh, ax=axes, label="Sobol index (grey: undefined, the cell does not vary)",
                 shrink=0.9)
    fig.suptitle(f"{field}: Sobol indices at {_when(ds, step)}")
    return fig


def losses_figure(metrics: Path) -> Figure:
    """Training and validation losses of metrics.jsonl over the batches."""
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for key, label in (("train_loss", "training"), ("validation_loss", "validation")):
        points = [(m["batches"], m[key]) for m in lines if m.get(key) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=label)
    ax.set_xlabel("batches")
    ax.set_ylabel("loss (standardised MSE)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _study(output_dir: Path) -> tuple[StudyOptions, Path] | None:
    """The study's options and its config's directory, from OUTPUT_DIR/.melissa/study.json."""
    from melissa.config import parse_config
    from melissa.protocol import StudyDescription

    description = StudyDescription.read(output_dir / ".melissa" / "study.json")
    if description is None:
        return None
    return parse_config(description.config).study_options, Path(description.config_dir)


def _templates(output_dir: Path, cells: int) -> list[xr.DataArray]:
    """The fields of a prediction's `cells` values, each a DataArray of its shape (dimensions
    and coordinates as in results.nc, units), from the study's config; a single flat one where
    the config does not say how the values split."""
    from melissa.server import results

    flat = [xr.DataArray(np.zeros(cells), dims="cell",
                         attrs={"long_name": "every field, one after the other"})]
    found = _study(output_dir)
    if found is None:
        return flat
    study, config_dir = found
    sizes = dict(zip(study.field_names, study.field_sizes, strict=True))
    unknown = [name for name, size in sizes.items() if not size]
    if len(unknown) > 1:
        return flat
    if unknown:
        sizes[unknown[0]] = cells - sum(sizes.values())
    if sum(sizes.values()) != cells or min(sizes.values()) <= 0:
        return flat
    layouts = results.layouts(study, sizes)
    coordinates = results.read_coordinates(study, config_dir, layouts)
    out = []
    for name, layout in layouts.items():
        coords = {d: xr.Variable(d, *coordinates[d]) for d in layout.dimensions
                  if d in coordinates}
        units = {"units": study.field_units[name]} if name in study.field_units else {}
        out.append(xr.DataArray(np.zeros(layout.shape), dims=layout.dimensions, coords=coords,
                                name=name, attrs={"long_name": name, **units}))
    return out


def predictions_figure(predictions: Path, output_dir: Path) -> Figure:
    """Each held-out sample (a row): the simulated field, the predicted one, their difference;
    maps for a field of two dimensions, lines otherwise."""
    with np.load(predictions) as data:
        sims, steps = data["simulation"], data["time_step"]
        simulated, predicted = data["simulated"], data["predicted"]
    fields = _templates(output_dir, simulated.shape[1])
    found = _study(output_dir)
    axis = found[0].time if found else None
    rows = [(k, field) for k in range(len(sims)) for field in fields]
    maps = any(field.ndim == 2 for field in fields)
    fig = plt.figure(figsize=(11.5 if maps else 10, (3.4 if maps else 2.4) * len(rows)),
                     layout="constrained")
    for sub, (k, template) in zip(fig.subfigures(len(rows), 1, squeeze=False)[:, 0], rows,
                                  strict=True):
        first = sum(f.size for f in fields[:fields.index(template)])
        cut = slice(first, first + template.size)
        truth = template.copy(data=simulated[k, cut].reshape(template.shape))
        guess = template.copy(data=predicted[k, cut].reshape(template.shape))
        error = (guess - truth).assign_attrs(template.attrs, long_name="predicted - simulated")
        when = f"time step {steps[k]}" + (
            f" (t = {axis.start + axis.step * steps[k]:.4g} {axis.units})" if axis else "")
        sub.suptitle(f"{template.name or 'fields'}: held-out simulation {sims[k]}, {when}",
                     fontsize="medium")
        if template.ndim == 2:
            axes = sub.subplots(1, 3, sharex=True, sharey=True)
            vmin, vmax = _limits([truth, guess])
            for ax, da, what in ((axes[0], truth, "simulated"), (axes[1], guess, "predicted")):
                mesh = _map(ax, da, cmap="viridis", vmin=vmin, vmax=vmax)
                ax.set_title(what, fontsize="small")
            sub.colorbar(mesh, ax=axes[:2], label=_label(template, "value"), shrink=0.9)
            reach = float(np.nanmax(np.abs(error.values), initial=0.0)) or 1.0
            mesh = _map(axes[2], error, cmap="RdBu_r", vmin=-reach, vmax=reach)
            axes[2].set_title("difference", fontsize="small")
            sub.colorbar(mesh, ax=axes[2], label=_label(error, "difference"), shrink=0.9)
            for ax in axes[1:]:
                ax.set_ylabel("")
        else:
            axes = sub.subplots(1, 2, sharex=True)
            axes[0].plot(truth.values.ravel(), label="simulated")
            axes[0].plot(guess.values.ravel(), "--", label="predicted")
            axes[0].set_ylabel(_label(template, "value"), fontsize="small")
            axes[0].legend(fontsize="x-small")
            axes[1].plot(error.values.ravel(), color="C3")
            axes[1].axhline(0, color="0.5", lw=0.6)
            axes[1].set_ylabel(_label(error, "difference"), fontsize="small")
            for ax in axes:
                ax.set_xlabel(str(template.dims[0]), fontsize="small")
                ax.grid(alpha=0.3)
    return fig


def plot_statistics(ds: xr.Dataset, plots: Path, fields: Sequence[str] | None,
                    steps: Sequence[int] | None, cells: Sequence[Cell] | None) -> list[Path]:
    """The figures of each field of results.nc (every field by default)."""
    present = _fields(ds)
    missing = [f for f in fields or [] if f not in present]
    if missing:
        raise ValueError(f"no field {', '.join(missing)} in results.nc: it has "
                         f"{', '.join(present) or 'none'}")
    chosen_steps = resolve_steps(ds, steps)
    # Every option checked before the first figure.
    at = {field: [resolve_cell(ds, field, cell) for cell in cells] if cells
          else [focus_cell(ds, field)] for field in fields or present}
    why = "at the chosen cells" if cells else "where the ensemble varies most at the end"
    figures = []
    for field in at:
        figures.append(_save(series_figure(ds, field, at[field], why), plots / f"{field}.png"))
        if len(_space(ds, field)) != 2:
            continue
        if f"{field}_mean" in ds or f"{field}_variance" in ds:
            figures.append(_save(maps_figure(ds, field, chosen_steps),
                                 plots / f"{field}_maps.png"))
        if f"{field}_sobol_first" in ds:
            figures += [_save(sobol_figure(ds, field, step),
                              plots / f"{field}_sobol_step{step}.png") for step in chosen_steps]
    return figures


def plot_study(output_dir: str | Path, fields: Sequence[str] | None = None,
               steps: Sequence[int] | None = None,
               cells: Sequence[Cell] | None = None) -> list[Path]:
    """Writes the study's figures into OUTPUT_DIR/plots; returns their paths. `steps`: time
    step indices of the maps (negative from the end; default the last); `cells`: where the time
    series are drawn (default: where the ensemble varies most). ValueError for a field, step or
    cell results.nc does not have."""
    output_dir = Path(output_dir)
    results, metrics = output_dir / "results.nc", output_dir / "metrics.jsonl"
    predictions = output_dir / "predictions.npz"
    if not results.exists() and not metrics.exists():
        raise FileNotFoundError(f"neither {results} nor {metrics} exists: run the study first")
    plots = output_dir / "plots"
    plots.mkdir(exist_ok=True)
    figures = []
    if results.exists():
        with xr.open_dataset(results) as ds:
            figures += plot_statistics(ds, plots, fields, steps, cells)
    if metrics.exists():
        figures.append(_save(losses_figure(metrics), plots / "loss.png"))
    if predictions.exists():
        figures.append(_save(predictions_figure(predictions, output_dir),
                             plots / "predictions.png"))
    return figures

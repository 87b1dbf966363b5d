# SPDX-License-Identifier: BSD-3-Clause
"""`melissa plot OUTPUT_DIR`: PNG figures of a study, in OUTPUT_DIR/plots.

A statistics study: one figure per field of results.nc, over time at the cell where the ensemble
varies most at the last time step (the cell a sensitivity analysis is usually after), and
averaged over cells. A training study: the loss curves of metrics.jsonl, and held-out simulated
fields beside the surrogate's predictions (predictions.npz)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on compute nodes or CI

import json  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402


def _focus_cell(ds: xr.Dataset, field: str) -> int:
    for name in (f"{field}_variance", f"{field}_sobol_total", f"{field}_mean"):
        if name in ds:
            last = ds[name].isel(time=-1)
            if "parameter" in last.dims:
                last = last.sum("parameter")
            values = np.nan_to_num(np.asarray(last, dtype=float), nan=-np.inf)
            return int(np.argmax(values))
    return 0


def _first_statistic(ds: xr.Dataset, field: str) -> str:
    return next(str(name)[len(field) + 1:] for name in ds.data_vars
                if str(name).startswith(f"{field}_") and not str(name).endswith("_count"))


def _fields(ds: xr.Dataset) -> list[str]:
    return [str(name)[: -len("_count")] for name in ds.data_vars if str(name).endswith("_count")]


def _cell_dimension(ds: xr.Dataset, variable: str) -> str:
    return next(str(d) for d in ds[variable].dims if str(d).endswith("cell"))


def plot_field(ds: xr.Dataset, field: str, path: Path) -> Path:
    cell = _focus_cell(ds, field)
    cells = _cell_dimension(ds, f"{field}_{_first_statistic(ds, field)}")
    at = {cells: cell}
    time = ds["time"].values
    panels = []
    if f"{field}_mean" in ds:
        panels.append("moments")
    if f"{field}_quantiles" in ds:
        panels.append("quantiles")
    if f"{field}_sobol_first" in ds:
        panels.extend(["sobol_first", "sobol_total"])
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 3.2 * len(panels)), squeeze=False,
                             sharex=True)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        if panel == "moments":
            mean = ds[f"{field}_mean"].isel(at).values
            ax.plot(time, mean, label=f"mean, cell {cell}")
            if f"{field}_variance" in ds:
                std = np.sqrt(ds[f"{field}_variance"].isel(at).values)
                ax.fill_between(time, mean - std, mean + std, alpha=0.3, label="mean ± std")
            ax.plot(time, ds[f"{field}_mean"].mean(_cell_dimension(ds, f"{field}_mean")).values,
                    "--",
                    label="mean over cells")
            for name in ("min", "max"):
                if f"{field}_{name}" in ds:
                    ax.plot(time, ds[f"{field}_{name}"].isel(at).values, ":", label=name)
            ax.set_ylabel(field)
        elif panel == "quantiles":
            quantiles = ds[f"{field}_quantiles"].isel(at)
            probabilities = ds["probability"].values
            for k, p in enumerate(probabilities):
                ax.plot(time, quantiles.isel(probability=k).values, label=f"q{p:g}")
            order = np.argsort(probabilities)
            if len(order) >= 2:
                ax.fill_between(time, quantiles.isel(probability=int(order[0])).values,
                                quantiles.isel(probability=int(order[-1])).values, alpha=0.15)
            ax.set_ylabel(f"{field} quantiles")
        else:
            kind = "first" if panel == "sobol_first" else "total"
            index = ds[f"{field}_sobol_{kind}"].isel(at)
            lower = ds[f"{field}_sobol_{kind}_lower"].isel(at)
            upper = ds[f"{field}_sobol_{kind}_upper"].isel(at)
            for k, name in enumerate(ds["parameter"].values):
                line, = ax.plot(time, index.isel(parameter=k).values, label=str(name))
                ax.fill_between(time, lower.isel(parameter=k).values,
                                upper.isel(parameter=k).values, color=line.get_color(),
                                alpha=0.2)
            ax.set_ylabel(f"{kind}-order Sobol")
            ax.set_ylim(-0.05, 1.05)
        ax.legend(fontsize="small", loc="best")
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("time step")
    fig.suptitle(f"{field}: cell {cell} (largest spread at the last time step)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_losses(metrics: Path, path: Path) -> Path:
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("train_loss", "training"), ("validation_loss", "validation")):
        points = [(m["batches"], m[key]) for m in lines if m.get(key) is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=label)
    ax.set_xlabel("batches")
    ax.set_ylabel("loss (standardised MSE)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_predictions(predictions: Path, path: Path) -> Path:
    with np.load(predictions) as data:
        sims, steps = data["simulation"], data["time_step"]
        simulated, predicted = data["simulated"], data["predicted"]
    n = len(sims)
    fig, axes = plt.subplots(n, 1, figsize=(8, 2.4 * n), squeeze=False, sharex=True)
    for k, ax in enumerate(axes[:, 0]):
        ax.plot(simulated[k], label="simulated")
        ax.plot(predicted[k], "--", label="predicted")
        ax.set_title(f"held-out simulation {sims[k]}, time step {steps[k]}", fontsize="small")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize="small")
    axes[-1, 0].set_xlabel("cell (every field, one after the other)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_study(output_dir: str | Path) -> list[Path]:
    """Writes the study's figures into OUTPUT_DIR/plots; returns their paths."""
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
            figures += [plot_field(ds, field, plots / f"{field}.png") for field in _fields(ds)]
    if metrics.exists():
        figures.append(plot_losses(metrics, plots / "loss.png"))
    if predictions.exists():
        figures.append(plot_predictions(predictions, plots / "predictions.png"))
    return figures

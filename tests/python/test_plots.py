# SPDX-License-Identifier: BSD-3-Clause
"""`melissa plot`: the figures it writes, the cell it picks, and no estimate hidden by limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import netCDF4
import numpy as np
import pytest
import xarray as xr

from melissa import plots
from melissa.cli import main
from melissa.config import parse_config
from melissa.protocol import StudyDescription
from melissa.server.results import create, write_into

STEPS = 6
PARAMETERS = ["left", "right", "source"]
# Where the ensemble varies most off the edges, at the last step; -0.4 and 1.3: the Sobol
# estimates there, out of [0, 1] as small samples make them.
PEAK = {"temperature": (6, 3), "rod": (11,)}
NEGATIVE, ABOVE_ONE = -0.4, 1.3


def study(fields: dict[str, list[int]], sa: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "study_options": {
            "parameter_sweep_size": 2, "nb_parameters": len(PARAMETERS),
            "parameter_names": PARAMETERS, "l_bounds": [0, 0, 0], "u_bounds": [1, 1, 1],
            "field_names": list(fields), "field_shapes": fields, "nb_time_steps": STEPS,
            "field_units": {name: "K" for name in fields},
            "time": {"start": 0.0, "step": 0.25, "units": "s"},
        },
        "sa_config": sa or {"mean": True, "variance": True, "max": True,
                            "quantiles": [0.1, 0.9], "sobol_indices": True},
        "client_config": {"executable_command": "true"},
    }


def dirichlet_statistics(shape: tuple[int, ...], peak: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Statistics of a field whose edge cells hold a boundary value: constant in time and the
    largest variance of all, the trap of a naive choice. Inside, the mean rises over time and
    the variance peaks at `peak`. {statistic: (leading..., time, cell)}."""
    n = int(np.prod(shape))
    edge = np.zeros(shape, dtype=bool)
    for axis, length in enumerate(shape):
        edge[(slice(None),) * axis + (0,)] = edge[(slice(None),) * axis + (length - 1,)] = True
    edge = edge.ravel()
    grid = np.indices(shape).reshape(len(shape), n)
    distance = np.sqrt(((grid - np.array(peak)[:, None]) ** 2).sum(axis=0))
    t = np.arange(STEPS)[:, None]
    mean = np.where(edge, 100.0, 20.0 * t * (1 + 0.1 * distance))
    variance = np.where(edge, 1000.0, 500.0 * t / (STEPS - 1) / (1 + distance))
    rng = np.random.default_rng(0)
    first = rng.uniform(0.0, 0.6, (len(PARAMETERS), STEPS, n))
    total = first + 0.2
    at = np.ravel_multi_index(peak, shape)
    first[0, :, at] = np.linspace(0.5, NEGATIVE, STEPS)
    total[1, :, at] = np.linspace(0.8, ABOVE_ONE, STEPS)
    return {"mean": mean, "variance": variance, "max": mean + 3 * np.sqrt(variance),
            "quantiles": np.stack([mean - np.sqrt(variance), mean + np.sqrt(variance)]),
            "sobol_first": first, "sobol_first_lower": first - 0.2,
            "sobol_first_upper": first + 0.2, "sobol_total": total,
            "sobol_total_lower": total - 0.3, "sobol_total_upper": total + 0.3}


@pytest.fixture(scope="module")
def output_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A statistics study's OUTPUT_DIR: a 9 x 11 field and a rod of 15 cells, written by two
    ranks as the server writes them."""
    out = tmp_path_factory.mktemp("study")
    shapes = {"temperature": [9, 11], "rod": [15]}
    raw = study(shapes)
    config = parse_config(raw)
    sizes = {name: int(np.prod(shape)) for name, shape in shapes.items()}
    create(out / "results.nc", config, sizes, np.zeros((10, 3)), ["completed"] * 10, raw, out)
    with netCDF4.Dataset(out / "results.nc", "a") as ds:
        for name, shape in shapes.items():
            values = dirichlet_statistics(tuple(shape), PEAK[name])
            half = sizes[name] // 2 + 1  # the second rank starts mid-row
            for start, stop in ((0, half), (half, sizes[name])):
                for step in range(STEPS):
                    write_into(ds, name, step, start, {"count": np.int64(10)} | {
                        k: v[..., step, start:stop] for k, v in values.items()})
    return out


def plotted(capsys: pytest.CaptureFixture[str], *args: str) -> set[str]:
    assert main(["plot", *args]) == 0
    names = {Path(line).name for line in capsys.readouterr().out.split()}
    for name in names:
        assert (Path(args[0]) / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    return names


def test_default_figures(output_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Maps for the 2-D field at the last step; a time series only for the rod."""
    assert plotted(capsys, str(output_dir)) == {
        "temperature.png", "temperature_maps.png", f"temperature_sobol_step{STEPS - 1}.png",
        "rod.png"}


def test_options_pick_fields_steps_and_cells(output_dir: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert plotted(capsys, str(output_dir), "--fields", "temperature", "--steps", "1,-1,5",
                   "--cells", "5,60", "--at", "y=4,x=5") == {
        "temperature.png", "temperature_maps.png", "temperature_sobol_step1.png",
        f"temperature_sobol_step{STEPS - 1}.png"}
    assert plotted(capsys, str(output_dir), "--fields", "rod", "--at", "x=3") == {"rod.png"}


@pytest.mark.parametrize(("args", "message"), [
    (["--steps", "6"], "time step 6 out of range: results.nc has 6"),
    (["--fields", "pressure"], "no field pressure in results.nc: it has temperature, rod"),
    (["--at", "y=4,x=5"], "rod has the dimensions rod_x: give an index along each (got y, x)"),
    (["--cells", "99"], "cell 99 out of range: temperature has 99 cells"),
    (["--fields", "temperature", "--at", "y=9,x=0"], "y=9 out of range"),
], ids=["step", "field", "dimensions", "cell", "index"])
def test_bad_options_are_refused(output_dir: Path, capsys: pytest.CaptureFixture[str],
                                 args: list[str], message: str) -> None:
    assert main(["plot", str(output_dir), *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("field", ["temperature", "rod"])
def test_auto_cell_varies_most_off_the_flat_edges(output_dir: Path, field: str) -> None:
    with xr.open_dataset(output_dir / "results.nc") as ds:
        variance = ds[f"{field}_variance"].isel(time=-1).values
        # Where the variance is largest overall: a Dirichlet edge, flat over time.
        naive = np.unravel_index(np.argmax(variance), variance.shape)
        assert 0 in naive or any(k == n - 1 for k, n in zip(naive, variance.shape, strict=True))
        assert np.ptp(ds[f"{field}_mean"].values[(slice(None), *naive)]) == 0
        chosen = plots.focus_cell(ds, field)
    assert tuple(chosen.values()) == PEAK[field]


def test_sobol_panels_show_estimates_out_of_0_1(output_dir: Path) -> None:
    with xr.open_dataset(output_dir / "results.nc") as ds:
        fig = plots.series_figure(ds, "temperature", [plots.focus_cell(ds, "temperature")],
                                  "at the peak")
        panels = {ax.get_ylabel(): ax for ax in fig.axes}
        low, high = panels["Sobol: left"].get_ylim()
        assert low < NEGATIVE - 0.2 and high > ABOVE_ONE + 0.3, (low, high)  # the bands too
        maps = plots.sobol_figure(ds, "temperature", STEPS - 1)
        norm = maps.axes[0].collections[0].norm
        assert norm.vmin <= NEGATIVE and norm.vmax >= ABOVE_ONE
        # White at 0, blue below, red above.
        cmap = maps.axes[0].collections[0].cmap
        assert min(cmap(norm(0.0))[:3]) > 0.9
        red, _, blue, _ = cmap(norm(NEGATIVE))
        assert blue > red
        red, _, blue, _ = cmap(norm(ABOVE_ONE))
        assert red > blue


def test_predictions_are_maps_in_the_fields_shape(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    raw = study({"temperature": [4, 5]}) | {"dl_config": {}}
    del raw["sa_config"]
    (tmp_path / ".melissa").mkdir()
    StudyDescription(config=raw, token="0" * 16, parameters=[], config_dir=str(tmp_path),
                     resume=False, bind_address="").write(tmp_path / ".melissa" / "study.json")
    rng = np.random.default_rng(3)
    simulated = rng.normal(size=(2, 20))
    predicted = simulated + 0.1 * rng.normal(size=(2, 20))
    np.savez(tmp_path / "predictions.npz", simulation=np.array([0, 0]),
             time_step=np.array([1, 4]), simulated=simulated, predicted=predicted)
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(
        {"batches": 10 * k, "train_loss": 1.0 / k, "validation_loss": 2.0 / k})
        for k in range(1, 4)))
    assert plotted(capsys, str(tmp_path)) == {"loss.png", "predictions.png"}
    fig = plots.predictions_figure(tmp_path / "predictions.npz", tmp_path)
    maps = [c.get_array() for ax in fig.axes for c in ax.collections
            if ax.get_title() in ("simulated", "predicted", "difference")]
    assert len(maps) == 6  # simulated, predicted, difference, for each sample
    np.testing.assert_allclose(np.asarray(maps[0]).reshape(4, 5), simulated[0].reshape(4, 5))
    np.testing.assert_allclose(np.asarray(maps[5]).reshape(4, 5),
                               (predicted[1] - simulated[1]).reshape(4, 5))
    titles = [sub._suptitle.get_text() for sub in fig.subfigs]  # noqa: SLF001
    assert titles[1] == "temperature: held-out simulation 0, time step 4 (t = 1 s)"

# SPDX-License-Identifier: BSD-3-Clause
"""The surrogate a training study trained, loaded to predict fields without running the solver.

    from melissa import surrogate

    heat = surrogate.load("build/demo/heat-surrogate")      # OUTPUT_DIR, or OUTPUT_DIR/model.pt
    fields = heat.predict([50, 200, 300, 400, 500], time_steps=[0, 39])
    fields["temperature"].shape                             # (1, 2, 21, 21), in the solver's units

The model is rebuilt by the study's own server class (dl_config.server_class, imported as the
training server imports it, or the default TrainingServer), and its predictions go through that
class's hooks: make_tensors turns (parameters, time steps) into inputs, predict turns outputs back
into the fields' units. Needs PyTorch (melissa's `train` extra); runs on the CPU unless told
otherwise, and does not initialise MPI.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from melissa.config import Config, parse_config
from melissa.server.training import TrainingServer, load_server_class
from melissa.study_files import StudyFiles

__all__ = ["Surrogate", "load"]

Parameters = npt.ArrayLike | Mapping[str, npt.ArrayLike]


class Surrogate:
    """A trained model with what it needs to map parameters to fields: see predict."""

    def __init__(self, saved: dict[str, Any], device: torch.device,
                 config_dir: Path | None = None) -> None:
        missing = [key for key in ("sample_cells", "field_sizes", "config_dir", "metrics")
                   if key not in saved]
        if missing:
            raise ValueError(f"this model.pt lacks {', '.join(missing)}: it was written by an "
                             "older melissa; train it again to load it")
        self.config: Config = parse_config(saved["config"])
        assert self.config.dl_config is not None
        study = self.config.study_options
        self.parameter_names: list[str] = study.names
        self.field_names: list[str] = study.field_names
        self.nb_time_steps: int = study.nb_time_steps
        self.device = device
        # The final validation's figures (metrics.jsonl's last line): losses in the units of the
        # server's loss, standardised values for the default one.
        self.metrics: dict[str, Any] = saved["metrics"]
        self.validation_loss: float | None = self.metrics.get("validation_loss")
        cells = int(saved["sample_cells"])
        self.field_sizes: list[int] = list(saved["field_sizes"])
        if sum(self.field_sizes) != cells or 0 in self.field_sizes:
            raise ValueError(f"model.pt does not say how its {cells} outputs split into the "
                             f"fields {self.field_names} (sizes {self.field_sizes}): declare "
                             "study_options.field_shapes")
        # Declared shapes; a field without one stays flat.
        self.field_shapes: dict[str, tuple[int, ...]] = {
            name: tuple(study.field_shapes.get(name, [size]))
            for name, size in zip(self.field_names, self.field_sizes, strict=True)}
        cls = load_server_class(self.config.dl_config.server_class,
                                config_dir or Path(saved["config_dir"]))
        self.server: TrainingServer = cls(self.config, device)
        self.server.load_state(saved["server"])
        self.model = self.server.build_model(study.nb_parameters + 1, cells)
        self.model.load_state_dict(saved["model"])
        self.model.to(device).eval()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name} {shape}" for name, shape in self.field_shapes.items())
        return (f"Surrogate(parameters {self.parameter_names}, fields {fields}, "
                f"{self.nb_time_steps} time steps, validation loss {self.validation_loss})")

    def predict(self, parameters: Parameters,
                time_steps: int | Iterable[int] | None = None) -> dict[str, np.ndarray]:
        """Every field at each of `time_steps` (default: all) for each set of parameters.

        parameters: in the solver's units, an array (n, nb_parameters), or one set
            (nb_parameters,) which counts as n = 1; or a dict {parameter name: value or n
            values} naming every parameter (study_options.parameter_names, default x1, x2, ...).
        time_steps: an int or a sequence of ints, each in [0, nb_time_steps).

        Returns {field name: float32 array (n, len(time_steps), *field shape)} in the fields'
        own units (the targets' standardisation undone); a field without a declared shape in
        study_options.field_shapes has the shape (cells,). ValueError on parameters or time
        steps the study does not have.
        """
        sets = self._parameter_sets(parameters)
        steps = self._time_steps(time_steps)
        n, count = len(sets), len(steps)
        # Every (parameter set, time step) pair, one row each, as the training server's
        # batches hold them; the zero values are the targets, which a prediction ignores.
        inputs, _ = self.server.make_tensors(
            np.repeat(sets, count, axis=0), np.tile(steps, n),
            np.zeros((n * count, sum(self.field_sizes)), np.float32))
        flat = self.server.predict(self.model, inputs)
        fields, first = {}, 0
        for name, size in zip(self.field_names, self.field_sizes, strict=True):
            fields[name] = flat[:, first:first + size].reshape(n, count,
                                                               *self.field_shapes[name])
            first += size
        return fields

    def _parameter_sets(self, parameters: Parameters) -> np.ndarray:
        expected = len(self.parameter_names)
        if isinstance(parameters, Mapping):
            unknown = sorted(set(parameters) - set(self.parameter_names))
            missing = [name for name in self.parameter_names if name not in parameters]
            if unknown or missing:
                raise ValueError(f"parameters: the study's are {self.parameter_names}"
                                 + (f"; {unknown} unknown" if unknown else "")
                                 + (f"; {missing} missing" if missing else ""))
            try:
                columns = np.broadcast_arrays(*(np.asarray(parameters[name], dtype=np.float64)
                                                for name in self.parameter_names))
            except ValueError:
                raise ValueError("parameters: each name's values must be one value or n "
                                 "values, the same n for every name") from None
            if columns[0].ndim > 1:
                raise ValueError("parameters: each name's values must be one value or n values")
            sets = np.stack(columns, axis=-1)
        else:
            try:
                sets = np.asarray(parameters, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError("parameters must be an array of numbers (n, "
                                 f"{expected}), or a dict of them by name") from None
        given = sets.shape
        if sets.ndim == 1:
            sets = sets[None, :]
        if sets.ndim != 2 or sets.shape[1] != expected:
            raise ValueError(f"parameters must have the shape (n, {expected}) or ({expected},) "
                             f"for the study's {expected} parameters {self.parameter_names}, "
                             f"got {given}")
        if not np.isfinite(sets).all():
            raise ValueError("parameters must be finite numbers")
        # The precision the training server gets them in.
        return sets.astype(np.float32)

    def _time_steps(self, time_steps: int | Iterable[int] | None) -> np.ndarray:
        if time_steps is None:
            return np.arange(self.nb_time_steps, dtype=np.uint32)
        steps = np.asarray(list(time_steps) if isinstance(time_steps, Iterable)
                           else time_steps).reshape(-1)
        if steps.size and not np.issubdtype(steps.dtype, np.integer):
            raise ValueError(f"time_steps must be whole numbers, got {steps.dtype} values")
        bad = steps[(steps < 0) | (steps >= self.nb_time_steps)]
        if bad.size:
            raise ValueError(f"time step {bad[0]} is out of range: the study has "
                             f"{self.nb_time_steps} (0 to {self.nb_time_steps - 1})")
        return steps.astype(np.uint32)


def load(path: str | Path, *, device: str | torch.device = "cpu",
         config_dir: str | Path | None = None) -> Surrogate:
    """The surrogate of a training study: `path` is its OUTPUT_DIR or OUTPUT_DIR/model.pt.

    device: where the model runs ("cpu", "cuda", "cuda:1", ...).
    config_dir: where a user's dl_config.server_class module lies, if no longer beside the
        config file the study ran from (nor on PYTHONPATH).
    """
    file = Path(path)
    if file.is_dir():
        file = StudyFiles(file).model
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist: the model of a training study is "
                                "OUTPUT_DIR/model.pt, written when the study ends")
    where = torch.device(device)
    # Tensors, numbers, strings, lists and dicts only: a model file cannot run code.
    saved = torch.load(file, map_location=where, weights_only=True)
    return Surrogate(saved, where, None if config_dir is None else Path(config_dir))

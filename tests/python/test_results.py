# SPDX-License-Identifier: BSD-3-Clause
"""From the server's accumulator states to the values results.nc stores."""

from __future__ import annotations

import numpy as np
import pytest

from melissa import stats
from melissa.config import parse_config
from melissa.server.results import statistics_of


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

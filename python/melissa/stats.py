# SPDX-License-Identifier: BSD-3-Clause
"""Iterative per-cell statistics of an ensemble of fields.

Every accumulator holds O(1) float64 state per cell (the moments' shift: float32). ``update``
takes one field of shape ``(size,)`` or a batch of shape ``(k, size)`` (Sobol: one group
``(n_params + 2, size)`` or a batch ``(k, n_params + 2, size)``), in float32 or float64 (integers
and booleans are read as float64); the GIL is released while the C++ kernel runs.
``merge`` adds another accumulator of the same cells as if its fields had been given to ``update``,
so that threads, server ranks and checkpoints combine (equal to sequential updating, to rounding).
``state_dict()`` / ``load_state_dict()`` save and restore the exact state, and every accumulator
pickles.

Errors: a field of the wrong shape or a group with the wrong number of fields raises ValueError,
another dtype (float16, complex, object ...) raises TypeError; the state is left untouched.

NaN is not skipped: a NaN value makes that cell's moments, extrema, quantiles and covariance NaN
from then on, and never counts as exceeding a threshold; in a Sobol group it makes NaN the indices
that use its field (y_A: every total order; y_B: every first order; y_Ck: both indices of
parameter k). Statistics asked for before any update are NaN.

One accumulator must not be updated from two threads at once: give each thread its own and merge.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, ClassVar, NamedTuple

import numpy as np
import numpy.typing as npt

from melissa import _core

__all__ = [
    "Covariance",
    "Extrema",
    "Moments",
    "Quantiles",
    "Sobol",
    "SobolIntervals",
    "ThresholdExceedance",
    "get_num_threads",
    "set_num_threads",
]

set_num_threads = _core.set_num_threads
get_num_threads = _core.get_num_threads


class _Checkpointable:
    """state_dict(), load_state_dict() and pickling, over the C++ state's numpy views."""

    # Constructor arguments, stored in the state so that a state can rebuild its accumulator.
    _config: ClassVar[tuple[str, ...]] = ("size",)

    def state_dict(self) -> dict[str, Any]:
        """A copy of the whole state (numpy arrays and the constructor's arguments)."""
        state: dict[str, Any] = {name: _config_value(getattr(self, name)) for name in self._config}
        state.update({name: np.array(view) for name, view in self._state().items()})  # type: ignore[attr-defined]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replaces this accumulator's state by `state`, checked whole before anything changes."""
        kind = type(self).__name__
        for name in self._config:
            if name not in state:
                raise ValueError(f"{kind}.load_state_dict: the state has no {name!r}")
            if not np.array_equal(_config_value(getattr(self, name)), state[name]):
                raise ValueError(
                    f"{kind}.load_state_dict: the state was saved with {name}={state[name]!r}, "
                    f"this accumulator has {name}={getattr(self, name)!r}"
                )
        views: dict[str, np.ndarray] = self._state()  # type: ignore[attr-defined]
        values = {}
        for name, view in views.items():
            if name not in state:
                raise ValueError(f"{kind}.load_state_dict: the state has no {name!r}")
            value = np.asarray(state[name])
            if value.shape != view.shape or not _fits(value, view.dtype):
                raise ValueError(
                    f"{kind}.load_state_dict: {name!r} must be {view.dtype} of shape {view.shape}, "
                    f"got {value.dtype} of shape {value.shape}"
                )
            values[name] = value
        for name, value in values.items():
            views[name][...] = value

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore, (type(self), self.state_dict()))

    def __repr__(self) -> str:
        config = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._config)
        return f"{type(self).__name__}({config}, count={self.count})"  # type: ignore[attr-defined]


def _fits(value: np.ndarray, dtype: np.dtype) -> bool:
    """Whether `value` can be stored in a state array of `dtype` without losing anything."""
    if dtype.kind == "u" and value.dtype.kind in "iu":
        # Counts that went through JSON or int64 arrays come back signed.
        return bool(np.all(value >= 0))
    if dtype.kind == "f" and value.dtype.kind == "f" and value.dtype.itemsize > dtype.itemsize:
        # A float32 shift that went through JSON or a float64 array comes back float64.
        return bool(np.array_equal(value.astype(dtype), value, equal_nan=True))
    return np.can_cast(value.dtype, dtype, "same_kind")


def _config_value(value: Any) -> Any:
    return np.asarray(value, dtype=np.float64) if isinstance(value, list) else value


def _restore(cls: type[_Checkpointable], state: dict[str, Any]) -> _Checkpointable:
    accumulator = cls(**{name: state[name] for name in cls._config})
    accumulator.load_state_dict(state)
    return accumulator


class Moments(_Checkpointable, _core.Moments):
    """Mean and central moments up to `order` (1 to 4) of every cell.

    Welford's update and Pebay's pairwise merge, on each cell's values minus a shift, the first
    value the cell saw rounded to float32 (the state's ``shift``, 0 beyond float32's range, none
    at order 1, whose mean needs none; ``mean()`` adds it back): accurate whatever the data's
    offset, within a small factor of a two-pass computation in float64 (on 1e9 plus unit noise as
    on the noise alone), where the textbook sum-of-squares formula keeps no digit.
    ``variance(ddof=1)`` is the sample variance (``ddof=0``: population). ``skewness()`` is the
    biased sample skewness and ``kurtosis()`` the biased *excess* (Fisher) kurtosis: they match
    ``scipy.stats.skew`` and ``scipy.stats.kurtosis`` with their defaults (Pearson's kurtosis is
    ``kurtosis() + 3``). Both are NaN where a cell's variance is 0.
    """

    _config = ("size", "order")


class Extrema(_Checkpointable, _core.Extrema):
    """Running minimum and maximum of every cell: ``min()``, ``max()``."""


class ThresholdExceedance(_Checkpointable, _core.ThresholdExceedance):
    """For each threshold t, how many values of each cell were strictly greater than t.

    ``counts()`` has shape ``(len(thresholds), size)``.
    """

    _config = ("size", "thresholds")


class Quantiles(_Checkpointable, _core.Quantiles):
    """Quantiles of every cell for a list of probabilities, with O(1) memory per cell.

    Robbins-Monro stochastic approximation: after the n-th value x of a cell, the iterate q of
    probability p moves by ``q -= gamma_n * (1{x <= q} - p)`` with the step
    ``gamma_n = 3 * sigma_n / n**0.6``, where sigma_n is the cell's running standard deviation;
    ``quantiles()`` returns the running average of the iterates (Polyak-Ruppert), shape
    ``(len(probabilities), size)``. The first value starts every iterate. The estimate depends on
    the order of the values, so there is no merge. Accuracy measured against the exact empirical
    quantiles is in the README.
    """

    _config = ("size", "probabilities")


class Covariance(_Checkpointable, _core.Covariance):
    """Covariance and Pearson correlation of two fields, cell by cell: ``update(x, y)``.

    ``covariance(ddof=1)`` is the sample covariance (``ddof=0``: population).
    """


class SobolIntervals(NamedTuple):
    """Confidence bounds of the Sobol indices, each of shape (n_params, size)."""

    first_lower: npt.NDArray[np.float64]
    first_upper: npt.NDArray[np.float64]
    total_lower: npt.NDArray[np.float64]
    total_upper: npt.NDArray[np.float64]


class Sobol(_Checkpointable, _core.Sobol):
    """First- and total-order Sobol indices of every cell by the Martinez estimator.

    A pick-freeze group is n_params + 2 fields in this order: y_A, y_B, y_C1 ... y_Cp, where C_k
    equals A except for parameter k, which is taken from B. Then, per cell,
    ``first_order()[k] = corr(y_B, y_Ck)`` and ``total_order()[k] = 1 - corr(y_A, y_Ck)``, both of
    shape (n_params, size); ``count`` is the number of groups.
    """

    _config = ("size", "n_params")

    def confidence_intervals(self, level: float = 0.95) -> SobolIntervals:
        """Asymptotic confidence intervals that hold for outputs of any distribution.

        The variance of a sample correlation r of n pairs (x, y) is, by the delta method,
        V(rho) / n with ``V(rho) = a - b rho + c rho**2 / 4`` where, from the central moments
        mu_ij of the pair (standardized by mu_20 and mu_02), a = mu_22, b = mu_31 + mu_13 and
        c = mu_40 + mu_04 + 2 mu_22; for normal outputs V(rho) = (1 - rho**2)**2. The interval
        holds every rho that this variance does not reject, with n - 3 for n as Fisher's z has::

            (r - rho)**2 <= q**2 V(rho) / (n - 3),   q the normal quantile of (1 + level) / 2

        (a score interval, like Wilson's for a proportion): the roots of a quadratic in rho,
        clipped to [-1, 1], and all of [-1, 1] where it does not bound rho (too few groups for
        the moments measured). The first order takes r = corr(y_B, y_Ck), the total order
        1 minus the bounds of r = corr(y_A, y_Ck). Why this rule: at 128 groups its 95%
        intervals held every index of the Ishigami and g-functions at least 93.8% of the time,
        where intervals around r or Fisher's z with the variance at r held the worst 91.4% and
        92.8%, and Fisher's z with 1 / sqrt(n - 3), the rule before, 79% (bench/RESULTS.md).
        NaN until 4 groups have been seen.
        """
        if not 0.0 < level < 1.0:
            raise ValueError(f"Sobol.confidence_intervals: level must lie in (0, 1), got {level}")
        state = self._state()  # type: ignore[attr-defined]
        q = NormalDist().inv_cdf(0.5 + level / 2.0)
        first_lower, first_upper = _correlation_interval(state, "b", self.count, q)
        lower, upper = _correlation_interval(state, "a", self.count, q)
        return SobolIntervals(
            first_lower=first_lower,
            first_upper=first_upper,
            total_lower=1.0 - upper,
            total_upper=1.0 - lower,
        )


def _correlation_interval(
    state: dict[str, np.ndarray], x: str, n: int, quantile: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Bounds of corr(y_x, y_Ck) for x = "a" or "b" (Sobol.confidence_intervals), each (p, size)."""
    if n < 4:
        nan = np.full(state["mean_c"].shape, math.nan)
        return nan, nan.copy()
    m20, m02 = state[f"m2_{x}"], state["m2_c"]
    m22 = state[f"m22_{x}c"]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = state[f"comoment_{x}c"] / np.sqrt(m20 * m02)
        a = n * m22 / (m20 * m02)
        b = n * (state[f"m31_{x}c"] / (m20 * np.sqrt(m20 * m02))
                 + state[f"m13_{x}c"] / (m02 * np.sqrt(m20 * m02)))
        c = n * (state[f"m4_{x}"] / m20**2 + state["m4_c"] / m02**2) + 2.0 * a
        k = quantile**2 / (n - 3)
        # (r - rho)**2 - k V(rho) = alpha rho**2 - 2 beta rho + r**2 - k a. Its reduced
        # discriminant is written k V(r) + k**2 (b**2 - a c) / 4, which does not lose r**2 to
        # cancellation; V(rho) is the mean of squares (x y - rho (x**2 + y**2) / 2)**2 over the
        # standardized pairs, so V(r) >= 0 and b**2 <= a c: it is negative by rounding only.
        alpha = 1.0 - k * c / 4.0
        beta = r - k * b / 2.0
        discriminant = k * (a - b * r + c * r * r / 4.0) + k * k * (b * b - a * c) / 4.0
        root = np.sqrt(np.maximum(discriminant, 0.0))
        unbounded = alpha <= 0.0  # False where NaN: NaN stays
        lower = np.where(unbounded, -1.0, np.clip((beta - root) / alpha, -1.0, 1.0))
        upper = np.where(unbounded, 1.0, np.clip((beta + root) / alpha, -1.0, 1.0))
    return lower, upper

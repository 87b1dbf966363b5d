# SPDX-License-Identifier: BSD-3-Clause
"""Moments as accurate as a two-pass computation whatever the data's offset (temperatures in
kelvin, pressures in pascal): each cell accumulates its values minus a shift, its first value
rounded to float32, and the shift survives merges and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from stats_helpers import Array

from melissa import stats

N, SIZE = 4000, 16
STATISTICS = ("mean", "variance", "skewness", "kurtosis")

pytestmark = pytest.mark.skipif(
    np.finfo(np.longdouble).precision < 18, reason="the reference needs a wider long double"
)


def fields(rng: np.random.Generator, offset: float, dtype: str = "float64") -> Array:
    """N fields at `offset`, skewed (a gamma law of shape 4: skewness 1, excess kurtosis 1.5) so
    that relative errors of skewness and kurtosis mean something; of unit spread, or in float32
    of 4096 times float32's resolution at the offset where that is more, so that the values
    still differ (at 1e9 float32 holds multiples of 64)."""
    spread = max(1.0, 4096 * float(np.spacing(np.float32(offset))))
    return (offset + spread * rng.gamma(4.0, 0.5, (N, SIZE))).astype(dtype)


def reference(x: Array) -> dict[str, Array]:
    """Two-pass statistics in long double of the values minus each cell's first value: the
    subtraction is exact and the deviations small, so that the reference's own error (~1e-19) is
    far below the float64 errors measured against it."""
    first = x[0].astype(np.longdouble)
    shifted = x.astype(np.longdouble) - first
    mean = shifted.mean(axis=0)
    d = shifted - mean
    m2, m3, m4 = ((d**k).sum(axis=0) for k in (2, 3, 4))
    n = len(x)
    return {
        "mean": first + mean,
        "variance": m2 / (n - 1),
        "skewness": np.sqrt(np.longdouble(n)) * m3 / m2**1.5,
        "kurtosis": n * m4 / m2**2 - 3,
    }


def two_pass(x: Array) -> dict[str, Array]:
    """What numpy and scipy compute in float64, in two passes over the values themselves."""
    return {
        "mean": np.mean(x, axis=0),
        "variance": np.var(x, axis=0, ddof=1),
        "skewness": scipy.stats.skew(x, axis=0),
        "kurtosis": scipy.stats.kurtosis(x, axis=0),
    }


def worst_errors(got: dict[str, Array], expected: dict[str, Array]) -> dict[str, float]:
    """The largest relative error over cells of each statistic."""
    return {
        name: float(np.max(np.abs(got[name] - expected[name]) / np.abs(expected[name])))
        for name in STATISTICS
    }


def accumulated(x: Array, how: str) -> stats.Moments:
    half = len(x) // 2
    moments = stats.Moments(x.shape[1])
    if how == "one update":
        moments.update(x)
    elif how == "field by field":
        for field in x:
            moments.update(field)
    elif how == "merged halves":
        moments.update(x[:half])
        other = stats.Moments(x.shape[1])
        other.update(x[half:])
        assert not np.array_equal(moments.state_dict()["shift"], other.state_dict()["shift"])
        moments.merge(other)
    elif how == "restored half-way":
        moments.update(x[:half])
        restored = stats.Moments(x.shape[1])
        restored.load_state_dict(moments.state_dict())
        restored.update(x[half:])
        return restored
    return moments


@pytest.mark.parametrize("how", ["one update", "field by field", "merged halves",
                                 "restored half-way"])
@pytest.mark.parametrize("offset", [0.0, 1e6, 1e9])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_moments_as_accurate_as_two_pass_at_any_offset(
    rng: np.random.Generator, dtype: str, offset: float, how: str
) -> None:
    x = fields(rng, offset, dtype)
    expected = reference(x)
    moments = accumulated(x, how)
    ours = worst_errors({name: getattr(moments, name)() for name in STATISTICS}, expected)
    theirs = worst_errors(two_pass(x.astype(np.float64)), expected)
    for name in STATISTICS:
        # A small factor of the two-pass error; the floor for where that error happens to be 0.
        assert ours[name] <= max(10 * theirs[name], 1e-14), (name, ours, theirs)
        # Without the shift, Welford's running mean of values near 1e9 rounds to 1.2e-7 at every
        # step: the variance kept 1e-7 and the skewness and kurtosis some 3e-6 relative.
        assert ours[name] < 1e-12, (name, ours)


@pytest.mark.parametrize("offset", [0.0, 1e6, 1e9])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_order_1_keeps_no_shift_and_its_mean_as_accurate(
    rng: np.random.Generator, dtype: str, offset: float
) -> None:
    # Welford's mean rounds to the offset's resolution at each step, which numpy's two-pass
    # mean does too: a shift gains it nothing.
    x = fields(rng, offset, dtype)
    moments = stats.Moments(SIZE, order=1)
    moments.update(x[: N // 2])
    other = stats.Moments(SIZE, order=1)
    other.update(x[N // 2:])
    moments.merge(other)
    assert "shift" not in moments.state_dict()
    exact = reference(x)["mean"]
    ours, theirs = (float(np.max(np.abs(mean - exact) / np.abs(exact)))
                    for mean in (moments.mean(), np.mean(x.astype(np.float64), axis=0)))
    assert ours <= max(10 * theirs, 1e-14), (ours, theirs)


def test_the_shift_is_the_first_field_and_a_merge_keeps_its_own(rng: np.random.Generator) -> None:
    x = fields(rng, 1e9)
    left, right = stats.Moments(SIZE), stats.Moments(SIZE)
    left.update(x[:10])
    right.update(x[10:20])
    first, other = x[0].astype(np.float32), x[10].astype(np.float32)
    np.testing.assert_array_equal(left.state_dict()["shift"], first, strict=True)
    np.testing.assert_array_equal(right.state_dict()["shift"], other, strict=True)
    left.merge(right)
    np.testing.assert_array_equal(left.state_dict()["shift"], first, strict=True)
    empty = stats.Moments(SIZE)
    empty.merge(right)
    np.testing.assert_array_equal(empty.state_dict()["shift"], other, strict=True)


def test_a_float64_shift_is_taken_only_if_float32_holds_it(rng: np.random.Generator) -> None:
    # A state that went through JSON or float64 arrays: its shift is taken back exactly, but a
    # shift float32 would round (another melissa's, of the values themselves) would move the mean.
    x = fields(rng, 1e9)
    moments = stats.Moments(SIZE)
    moments.update(x)
    state = moments.state_dict()
    restored = stats.Moments(SIZE)
    restored.load_state_dict(state | {"shift": state["shift"].astype(np.float64)})
    np.testing.assert_array_equal(restored.mean(), moments.mean(), strict=True)
    with pytest.raises(ValueError, match="'shift' must be float32"):
        restored.load_state_dict(state | {"shift": x[0]})


@pytest.mark.parametrize("offset", [4e38, -1e60])
def test_beyond_float32s_range_a_cell_takes_no_shift(rng: np.random.Generator,
                                                      offset: float) -> None:
    # Such a first value as float32 would be an infinite shift, and every moment NaN. Without a
    # shift, the moments are those of the textbook update at offset / spread = 100.
    x = offset * (1 + 0.01 * rng.gamma(4.0, 0.5, (N, SIZE)))
    moments = accumulated(x, "restored half-way")
    assert not np.any(moments.state_dict()["shift"])
    expected = reference(x)
    ours = worst_errors({name: getattr(moments, name)() for name in STATISTICS}, expected)
    theirs = worst_errors(two_pass(x), expected)
    for name in STATISTICS:
        assert ours[name] <= max(10 * theirs[name], 1e-12), (name, ours, theirs)


def test_values_of_1e300_keep_their_mean_and_variance(rng: np.random.Generator) -> None:
    # A fill value in half the cells, whose variance is 0, varying values in the others, whose
    # variance overflows float64 (numpy's too). Their shift is 0, and their first value, taken as
    # a Welford step from 0, would multiply 1e300 squared by 0: NaN.
    x = np.full((N, SIZE), 1e300)
    x[:, SIZE // 2:] *= 1 + 1e-3 * rng.standard_normal((N, SIZE - SIZE // 2))
    moments = stats.Moments(SIZE, order=2)
    moments.update(x)
    exact = x.astype(np.longdouble).mean(axis=0)
    np.testing.assert_allclose(moments.mean(), exact.astype(np.float64), rtol=1e-14)
    assert np.all(moments.variance()[: SIZE // 2] == 0)

# SPDX-License-Identifier: BSD-3-Clause
"""Property tests of melissa.stats: whatever the data, merging the states of any split of it
equals updating with all of it, a batch equals its fields one by one, and the order of the fields
matters only to rounding."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stats_helpers import (
    CASES,
    MERGEABLE_CASES,
    THRESHOLDS,
    Array,
    Case,
    assert_states_identical,
    case_params,
    exceedance_reference,
)

from melissa import stats

# Few, small examples keep the suite fast; derandomize makes every run try the same examples, as
# the fixed seeds do for the other tests.
PROPERTY_SETTINGS = settings(max_examples=40, deadline=None, derandomize=True)

# Which power of the data's scale each floating state array carries (a mean: 1, a sum of squared
# deviations: 2 ...), to size the rounding tolerance. Arrays not listed must match exactly: counts,
# extrema and configuration. A new state array fails loudly here until it is given a degree.
STATE_DEGREES = {
    "mean": 1, "m2": 2, "m3": 3, "m4": 4,
    "mean_x": 1, "mean_y": 1, "m2_x": 2, "m2_y": 2, "comoment": 2,
    "mean_a": 1, "mean_b": 1, "mean_c": 1, "m2_a": 2, "m2_b": 2, "m2_c": 2,
    "m3_a": 3, "m3_b": 3, "m3_c": 3, "m4_a": 4, "m4_b": 4, "m4_c": 4,
    "comoment_bc": 2, "comoment_ac": 2,
    "m21_bc": 3, "m12_bc": 3, "m22_bc": 4, "m31_bc": 4, "m13_bc": 4,
    "m21_ac": 3, "m12_ac": 3, "m22_ac": 4, "m31_ac": 4, "m13_ac": 4,
}  # fmt: skip
EXACT_STATE = {"size", "order", "thresholds", "n_params", "count", "counts", "min", "max"}


def unshifted(state: Mapping[str, Any]) -> Mapping[str, Any]:
    """A Moments state with its shift added back to its mean: the shift is the first value seen,
    which another order of the fields or a merge changes, leaving the statistics alone."""
    if "shift" not in state:
        return state
    rest = {name: value for name, value in state.items() if name != "shift"}
    return rest | {"mean": state["shift"] + state["mean"]}


def assert_states_close(got: Mapping[str, Any], expected: Mapping[str, Any], data: Array) -> None:
    """Equal up to float64 rounding. Rounding errors grow at most like n * eps * scale**degree (the
    sum of each step's error, a step's terms being at most scale**degree), so the absolute
    tolerance is 1e-10 * (n + 1) * scale**degree (some 5e5 eps per step of margin): a wrong formula
    is off by O(1) relative. The 1e-280 floor covers states that underflow."""
    got, expected = unshifted(got), unshifted(expected)
    assert got.keys() == expected.keys()
    n = len(data)
    scale = 2.0 * float(np.max(np.abs(data), initial=0.0))  # bounds every |value - mean|
    for name in expected:
        if name in EXACT_STATE:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name, strict=True)
            continue
        atol = 1e-10 * (n + 1) * scale ** STATE_DEGREES[name] + 1e-280
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-9, atol=atol, err_msg=name)


@st.composite
def observations(draw: st.DrawFn, case: Case, max_n: int = 12) -> Array:
    """(n, *observation_shape) of finite values of magnitude at most 1e3, float32 or float64."""
    size = draw(st.integers(1, 4))
    n = draw(st.integers(0, max_n))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    width = 32 if dtype is np.float32 else 64
    elements = st.floats(-1e3, 1e3, width=width, allow_nan=False, allow_infinity=False)
    return draw(hnp.arrays(dtype, (n, *case.observation_shape(size)), elements=elements))


def split(data: Array, cuts: list[int]) -> list[Array]:
    return np.split(data, sorted(cuts))


def size_of(data: Array) -> int:
    return data.shape[-1]


@pytest.mark.parametrize("case", case_params(MERGEABLE_CASES))
@PROPERTY_SETTINGS
@given(draw=st.data())
def test_merge_equals_sequential_update(case: Case, draw: st.DataObject) -> None:
    data = draw.draw(observations(case), label="data")
    cuts = draw.draw(st.lists(st.integers(0, len(data)), max_size=3), label="cuts")
    chunks = split(data, cuts)  # empty chunks included: empty states must merge too
    order = draw.draw(st.permutations(range(len(chunks))), label="merge order")

    sequential = case.make(size_of(data))
    case.update_one_by_one(sequential, data)

    parts = []
    for chunk in chunks:
        part = case.make(size_of(data))
        if len(chunk):
            case.update(part, chunk)
        parts.append(part)
    merged = parts[order[0]]
    for index in order[1:]:
        merged.merge(parts[index])

    assert merged.count == len(data)
    assert_states_close(merged.state_dict(), sequential.state_dict(), data)


@pytest.mark.parametrize("case", case_params(CASES))
@PROPERTY_SETTINGS
@given(draw=st.data())
def test_batches_equal_fields_one_by_one(case: Case, draw: st.DataObject) -> None:
    """Exactly: a batch applies the same per-cell steps, in the same order, as single updates; it
    only walks memory differently."""
    data = draw.draw(observations(case), label="data")
    cuts = draw.draw(st.lists(st.integers(0, len(data)), max_size=3), label="cuts")

    one_by_one = case.make(size_of(data))
    case.update_one_by_one(one_by_one, data)
    batched = case.make(size_of(data))
    for chunk in split(data, cuts):
        if len(chunk):
            case.update(batched, chunk)

    assert batched.count == len(data)
    assert_states_identical(batched.state_dict(), one_by_one.state_dict())


@pytest.mark.parametrize("case", case_params(MERGEABLE_CASES))  # quantiles depend on the order
@PROPERTY_SETTINGS
@given(draw=st.data())
def test_order_of_fields_matters_only_to_rounding(case: Case, draw: st.DataObject) -> None:
    data = draw.draw(observations(case), label="data")
    order = draw.draw(st.permutations(range(len(data))), label="order")

    in_order = case.make(size_of(data))
    case.update(in_order, data)
    shuffled = case.make(size_of(data))
    case.update(shuffled, data[np.asarray(order, dtype=np.intp)])

    assert_states_close(shuffled.state_dict(), in_order.state_dict(), data)


@PROPERTY_SETTINGS
@given(draw=st.data())
def test_extrema_and_exceedance_match_numpy_exactly(draw: st.DataObject) -> None:
    """No rounding is involved: any data, ties with the thresholds and signed zeros included."""
    case = next(case for case in CASES if case.id == "Extrema")
    data = draw.draw(observations(case).filter(len), label="data")
    extrema = stats.Extrema(size_of(data))
    extrema.update(data)
    np.testing.assert_array_equal(extrema.min(), data.min(axis=0).astype(np.float64))
    np.testing.assert_array_equal(extrema.max(), data.max(axis=0).astype(np.float64))

    thresholds = THRESHOLDS + draw.draw(
        st.lists(st.sampled_from(data.ravel().tolist()), max_size=2)
    )
    exceedance = stats.ThresholdExceedance(size_of(data), thresholds)
    exceedance.update(data)
    np.testing.assert_array_equal(exceedance.counts(), exceedance_reference(data, thresholds))

# SPDX-License-Identifier: BSD-3-Clause
"""Throughput of the melissa.stats kernels, side by side with the baselines, in one run.

For every kernel it times melissa's update of one float64 field, of a batch of fields and of one
float32 field, on 1 thread and on all cores, next to (a) numpy implementations of the same update:
a fair one (in place, block by block, on as many threads as melissa) and a naive one (array
expressions, 1 thread), (b) the iterative-stats package and (c) OpenTURNS' iterative algorithms,
and (d) the memory bandwidth of STREAM-like numpy loops, surveyed once and, for the in-place add
that bounds the kernels, timed again within every kernel's rounds. Every ratio compares equal
thread counts. It prints markdown to paste into bench/RESULTS.md, which explains the columns.

    python bench/bench_stats.py            # full run: 10^6 cells, then 8 * 10^6 cells
    python bench/bench_stats.py --quick    # smoke test, a few seconds
    python bench/bench_stats.py --sweep-blocks 16384 65536 131072   # the fair baseline's block

The machine may be shared and noisy, so every measurement round times all implementations of a
kernel one after the other, a ratio is the median over rounds of the ratio within a round, and
each table says how much CPU other processes took while it was measured.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.metadata
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from melissa import stats as ms

Array = npt.NDArray[Any]
Args = tuple[Any, ...]
Pool = Array | list[Any]  # input fields: a (rows, size) array, or a list of ot.Point


# Any, not ModuleType | None: the factories below only use a module after checking it is there.
def _optional_import(name: str) -> Any:
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        return None


ot = _optional_import("openturns")
its_moments = _optional_import("iterative_stats.iterative_moments")
its_extrema = _optional_import("iterative_stats.iterative_extrema")
its_threshold = _optional_import("iterative_stats.iterative_threshold")
its_quantile = _optional_import("iterative_stats.iterative_quantile")
its_covariance = _optional_import("iterative_stats.iterative_covariance")
its_martinez = _optional_import("iterative_stats.sensitivity.sensitivity_martinez")
# iterative_stats.utils.logger calls logging.basicConfig(level=DEBUG) on import, after which every
# increment of its means and variances writes the array to stderr; a user would silence that.
logging.getLogger().setLevel(logging.WARNING)

THRESHOLDS = (-1.0, 0.0, 1.0, 2.0)  # the fields are standard normal
PROBABILITIES = (0.05, 0.5, 0.95)
N_PARAMS = 4
POOL_ROWS = 24  # distinct input fields, cycled so that inputs stream from memory, not from L3
BATCH = 16  # fields per batched update (Sobol: POOL_ROWS // (N_PARAMS + 2) groups)
OT_ROWS = 4  # OpenTURNS points are copies of pool rows; a few keep memory use down


# --------------------------------------------------------------------------------------------
# (a) naive numpy baselines: the same updates and the same state as the C++ kernels, written as
# array expressions, as many numpy users write them (in place where natural, full-size
# temporaries elsewhere). state() uses the names of melissa's state_dict() so the correctness
# check compares them array by array.
# --------------------------------------------------------------------------------------------


class NumpyMoments:
    """Welford's update and Pebay's higher-order terms around the first field in float32 (none at
    order 1), as moments.cpp keeps it."""

    def __init__(self, size: int, order: int) -> None:
        self.order, self.count = order, 0
        self.shift = np.zeros(size if order >= 2 else 0, dtype=np.float32)
        self.mean, self.m2, self.m3, self.m4 = (np.zeros(size) for _ in range(4))

    def update(self, x: Array) -> None:
        if self.count == 0 and self.order >= 2:
            self.shift[...] = x
        self.count += 1
        n = float(self.count)
        shifted = np.subtract(x, self.shift, dtype=float) if self.order >= 2 else x
        delta = shifted - self.mean
        delta_n = delta * (1.0 / n)
        self.mean += delta_n
        term = delta * delta_n * (n - 1.0)
        if self.order >= 4:
            delta_n2 = delta_n * delta_n
            self.m4 += (
                term * delta_n2 * (n * n - 3.0 * n + 3.0)
                + 6.0 * delta_n2 * self.m2
                - 4.0 * delta_n * self.m3
            )
        if self.order >= 3:
            self.m3 += term * delta_n * (n - 2.0) - 3.0 * delta_n * self.m2
        self.m2 += term

    def state(self) -> dict[str, Array]:
        moments = {"mean": self.mean, "m2": self.m2, "m3": self.m3, "m4": self.m4}
        kept = dict(list(moments.items())[: self.order])
        return {"shift": self.shift, **kept} if self.order >= 2 else kept


class NumpyExtrema:
    def __init__(self, size: int) -> None:
        self.min, self.max = np.full(size, np.inf), np.full(size, -np.inf)

    def update(self, x: Array) -> None:
        np.minimum(self.min, x, out=self.min)
        np.maximum(self.max, x, out=self.max)

    def state(self) -> dict[str, Array]:
        return {"min": self.min, "max": self.max}


class NumpyThresholdExceedance:
    def __init__(self, size: int, thresholds: Sequence[float]) -> None:
        self.thresholds = thresholds
        self.counts = np.zeros((len(thresholds), size), dtype=np.uint64)

    def update(self, x: Array) -> None:
        for threshold, counts in zip(self.thresholds, self.counts, strict=True):
            counts += x > threshold

    def state(self) -> dict[str, Array]:
        return {"counts": self.counts}


class NumpyQuantiles:
    """Robbins-Monro step scaled by the running standard deviation, Polyak-Ruppert average."""

    def __init__(self, size: int, probabilities: Sequence[float]) -> None:
        self.probabilities, self.count = probabilities, 0
        self.mean, self.m2 = np.zeros(size), np.zeros(size)
        self.iterate = np.zeros((len(probabilities), size))
        self.average = np.zeros((len(probabilities), size))

    def update(self, x: Array) -> None:
        self.count += 1
        n = float(self.count)
        inv = 1.0 / n
        delta = x - self.mean
        self.mean += delta * inv
        self.m2 += delta * (x - self.mean)
        if self.count == 1:
            self.iterate[...] = x
            self.average[...] = x
            return
        # gamma_n = 3 sigma_n / n^0.6 (Quantiles.kStepScale and kStepExponent in stats.hpp).
        step = 3.0 / n**0.6 * np.sqrt(self.m2 * inv)
        for p, iterate, average in zip(self.probabilities, self.iterate, self.average, strict=True):
            iterate -= step * ((x <= iterate) - p)
            average += (iterate - average) * inv

    def state(self) -> dict[str, Array]:
        return {"mean": self.mean, "m2": self.m2, "iterate": self.iterate, "average": self.average}


class NumpyCovariance:
    """Bivariate Welford update."""

    def __init__(self, size: int) -> None:
        self.count = 0
        self.mean_x, self.mean_y, self.m2_x, self.m2_y, self.comoment = (
            np.zeros(size) for _ in range(5)
        )

    def update(self, x: Array, y: Array) -> None:
        self.count += 1
        inv = 1.0 / self.count
        dx, dy = x - self.mean_x, y - self.mean_y
        self.mean_x += dx * inv
        self.mean_y += dy * inv
        ey = y - self.mean_y
        self.m2_x += dx * (x - self.mean_x)
        self.m2_y += dy * ey
        self.comoment += dx * ey

    def state(self) -> dict[str, Array]:
        return {
            "mean_x": self.mean_x,
            "mean_y": self.mean_y,
            "m2_x": self.m2_x,
            "m2_y": self.m2_y,
            "comoment": self.comoment,
        }


class NumpySobol:
    """Martinez estimator with the sums of its confidence intervals: Pebay's update, written out
    for one value as the C++ kernel does, of the means and central sums up to order 4 of y_A, y_B
    and y_Ck, and of the mixed sums of (y_B, y_Ck) and (y_A, y_Ck)."""

    VARIABLE = ("mean", "m2", "m3", "m4")
    PAIR = ("comoment", "m21", "m12", "m22", "m31", "m13")

    def __init__(self, size: int, n_params: int) -> None:
        self.count = 0
        self.a, self.b = ({name: np.zeros(size) for name in self.VARIABLE} for _ in range(2))
        self.c = {name: np.zeros((n_params, size)) for name in self.VARIABLE}
        self.bc, self.ac = (
            {name: np.zeros((n_params, size)) for name in self.PAIR} for _ in range(2)
        )

    def update(self, group: Array) -> None:
        before = float(self.count)
        self.count += 1
        n = before + 1.0
        k2 = before * n
        k3, k4 = k2 * (n - 2.0), k2 * (n * n - 3.0 * n + 3.0)
        # The moves of the means; the pairs need every variable's sums from before this group.
        moves = [(values - v["mean"]) / n for values, v in ((group[0], self.a), (group[1], self.b),
                                                             (group[2:], self.c))]  # fmt: skip
        dy = moves[2]
        for pair, x, dx in ((self.ac, self.a, moves[0]), (self.bc, self.b, moves[1])):
            dxy, dx2, dy2 = dx * dy, dx * dx, dy * dy
            m11, m21, m12 = pair["comoment"].copy(), pair["m21"].copy(), pair["m12"].copy()
            m20, m02 = x["m2"], self.c["m2"]
            pair["m22"] += (dy2 * m20 + dx2 * m02 + 4.0 * dxy * m11 - 2.0 * (dy * m21 + dx * m12)
                            + k4 * dxy * dxy)  # fmt: skip
            pair["m31"] += (3.0 * (dxy * m20 + dx2 * m11 - dx * m21) - dy * x["m3"]
                            + k4 * dxy * dx2)  # fmt: skip
            pair["m13"] += (3.0 * (dxy * m02 + dy2 * m11 - dy * m12) - dx * self.c["m3"]
                            + k4 * dxy * dy2)  # fmt: skip
            pair["m21"] += -dy * m20 - 2.0 * dx * m11 + k3 * dxy * dx
            pair["m12"] += -dx * m02 - 2.0 * dy * m11 + k3 * dxy * dy
            pair["comoment"] += k2 * dxy
        for v, d in zip((self.a, self.b, self.c), moves, strict=True):
            d2 = d * d
            v["mean"] += d
            v["m4"] += d * (6.0 * d * v["m2"] - 4.0 * v["m3"]) + k4 * d2 * d2
            v["m3"] += -3.0 * d * v["m2"] + k3 * d2 * d
            v["m2"] += k2 * d2

    def state(self) -> dict[str, Array]:
        state = {}
        for suffix, sums in (("_a", self.a), ("_b", self.b), ("_c", self.c), ("_bc", self.bc),
                             ("_ac", self.ac)):  # fmt: skip
            state.update({name + suffix: value for name, value in sums.items()})
        return state


# --------------------------------------------------------------------------------------------
# (a') fair numpy baselines: the same updates, states and formulas as (a), written as numpy at
# its best. Every ufunc writes into preallocated scratch (out=), so no full-size temporary goes
# through memory, and the cells go by blocks small enough that a block's state and scratch stay
# in cache across the ufuncs of its update: memory then sees the state and the input about once
# per update, as with melissa's kernels. On several threads each thread takes a share of the
# blocks (numpy releases the GIL inside ufuncs), so that a ratio compares equal thread counts.
# --------------------------------------------------------------------------------------------

# Cells per block (see Blocks); Sobol's blocks hold 10 times as many arrays per cell.
BLOCK, SOBOL_BLOCK = 1 << 17, 1 << 14
CHECK_BLOCK = 96  # in the correctness check: 1,000 cells make 11 blocks, the last one short
BlockStep = Callable[[Array, slice], None]  # (the thread's scratch cut to the block, its cells)


class Blocks:
    """Runs a block step over cells [0, size) in blocks of `block` cells, on `threads` threads.

    Smaller blocks pay more often for numpy's call overhead (about 0.4 us per ufunc here) and,
    on several threads, for a GIL hand-off per ufunc; larger ones let a block's arrays leave the
    cache between two ufuncs of its update. The sweep in bench/RESULTS.md chose BLOCK and
    SOBOL_BLOCK: 11 to 14 MiB of arrays per block, under half the 32 MiB L3.
    """

    def __init__(
        self, size: int, threads: int, scratch_rows: int, block: int, dtype: Any = float
    ) -> None:
        # A small field still gives every thread a block.
        self.block = block = max(1, min(block, -(-size // threads)))
        # Contiguous shares of whole blocks, which the prefetchers like; the calling thread takes
        # the first share itself, as melissa's pool does, so that one thread costs no hand-off.
        n_blocks = -(-size // block)
        cuts = [min(t * n_blocks // threads * block, size) for t in range(threads)] + [size]
        self.shares = list(zip(cuts[:-1], cuts[1:], strict=True))
        self.scratch = [np.empty((scratch_rows, block), dtype) for _ in range(threads)]
        self.pool = ThreadPoolExecutor(threads - 1) if threads > 1 else None

    def run(self, step: BlockStep) -> None:
        helpers = []
        if self.pool is not None:
            helpers = [self.pool.submit(self._share, step, t) for t in range(1, len(self.shares))]
        self._share(step, 0)
        for helper in helpers:
            helper.result()

    def _share(self, step: BlockStep, thread: int) -> None:
        lo, hi = self.shares[thread]
        scratch = self.scratch[thread]
        for start in range(lo, hi, self.block):
            stop = min(start + self.block, hi)
            step(scratch[:, : stop - start], slice(start, stop))


class Blocked:
    """The fair baselines' blocks on each thread count, all over the one state, as melissa's
    rows share one accumulator: set_threads is their set_num_threads."""

    blocks: Blocks

    def _blocked(self, size: int, scratch_rows: int, block: int, dtype: Any = float) -> None:
        self._on = functools.cache(lambda t: Blocks(size, t, scratch_rows, block, dtype))
        self.set_threads(1)

    def set_threads(self, threads: int) -> None:
        self.blocks = self._on(threads)


def _add_product(total: Array, a: Any, b: Any, tmp: Array) -> None:
    """total += a * b through tmp (which may be a, if a is not needed after)."""
    np.multiply(a, b, out=tmp)
    np.add(total, tmp, out=total)


def _subtract_product(total: Array, a: Any, b: Any, tmp: Array) -> None:
    """total -= a * b through tmp (which may be a, if a is not needed after)."""
    np.multiply(a, b, out=tmp)
    np.subtract(total, tmp, out=total)


class FairMoments(NumpyMoments, Blocked):
    def __init__(self, size: int, order: int, block: int | None = None) -> None:
        super().__init__(size, order)
        self._blocked(size, 5, block or BLOCK)

    def update(self, x: Array) -> None:
        first = self.count == 0
        self.count += 1
        n = float(self.count)
        factors = (1.0 / n, n - 1.0, n - 2.0, n * n - 3.0 * n + 3.0)
        self.blocks.run(functools.partial(self._step, x, first, factors))

    def _step(
        self, x: Array, first: bool, factors: tuple[float, ...], scratch: Array, cells: slice
    ) -> None:
        inv, before, c3, c4 = factors
        x, shift, mean, m2 = x[cells], self.shift[cells], self.mean[cells], self.m2[cells]
        delta, delta_n, u, w, tmp = scratch
        if self.order < 2:
            np.subtract(x, mean, out=delta)
        else:
            if first:
                np.copyto(shift, x)
            np.subtract(x, shift, out=delta, dtype=float)
            np.subtract(delta, mean, out=delta)
        np.multiply(delta, inv, out=delta_n)
        np.add(mean, delta_n, out=mean)
        if self.order < 2:
            return
        term = delta
        np.multiply(delta, delta_n, out=term)
        np.multiply(term, before, out=term)
        if self.order >= 3:
            # m4 += delta_n (term delta_n c4 + 6 u - 4 m3) and m3 += term delta_n c3 - 3 u,
            # with u = delta_n m2 taken before m2 moves.
            np.multiply(delta_n, m2, out=u)
            np.multiply(term, delta_n, out=w)
        np.add(m2, term, out=m2)
        if self.order >= 4:
            m3, m4, v = self.m3[cells], self.m4[cells], term
            np.multiply(w, c4, out=v)
            _add_product(v, u, 6.0, tmp)
            _subtract_product(v, m3, 4.0, tmp)
            _add_product(m4, v, delta_n, v)
        if self.order >= 3:
            m3 = self.m3[cells]
            np.multiply(w, c3, out=w)
            _subtract_product(w, u, 3.0, u)
            np.add(m3, w, out=m3)


class FairExtrema(NumpyExtrema, Blocked):
    def __init__(self, size: int, block: int | None = None) -> None:
        super().__init__(size)
        self._blocked(size, 0, block or BLOCK)

    def update(self, x: Array) -> None:
        self.blocks.run(functools.partial(self._step, x))

    def _step(self, x: Array, scratch: Array, cells: slice) -> None:
        low, high = self.min[cells], self.max[cells]
        np.minimum(low, x[cells], out=low)
        np.maximum(high, x[cells], out=high)


class FairThresholdExceedance(NumpyThresholdExceedance, Blocked):
    def __init__(self, size: int, thresholds: Sequence[float], block: int | None = None) -> None:
        super().__init__(size, thresholds)
        self._blocked(size, 1, block or BLOCK, np.uint64)

    def update(self, x: Array) -> None:
        self.blocks.run(functools.partial(self._step, x))

    def _step(self, x: Array, scratch: Array, cells: slice) -> None:
        x, above = x[cells], scratch[0]
        for threshold, counts in zip(self.thresholds, self.counts[:, cells], strict=True):
            np.greater(x, threshold, out=above)
            np.add(counts, above, out=counts)


class FairQuantiles(NumpyQuantiles, Blocked):
    def __init__(self, size: int, probabilities: Sequence[float], block: int | None = None) -> None:
        super().__init__(size, probabilities)
        self._blocked(size, 3, block or BLOCK)

    def update(self, x: Array) -> None:
        self.count += 1
        n = float(self.count)
        factors = (1.0 / n, 3.0 / n**0.6)
        self.blocks.run(functools.partial(self._step, x, self.count == 1, factors))

    def _step(
        self, x: Array, first: bool, factors: tuple[float, float], scratch: Array, cells: slice
    ) -> None:
        inv, gain = factors
        x, mean, m2 = x[cells], self.mean[cells], self.m2[cells]
        iterates, averages = self.iterate[:, cells], self.average[:, cells]
        delta, step, tmp = scratch
        np.subtract(x, mean, out=delta)
        _add_product(mean, delta, inv, tmp)
        np.subtract(x, mean, out=tmp)
        _add_product(m2, delta, tmp, tmp)
        if first:
            np.copyto(iterates, x)
            np.copyto(averages, x)
            return
        np.multiply(m2, inv, out=step)
        np.sqrt(step, out=step)
        np.multiply(step, gain, out=step)
        for p, iterate, average in zip(self.probabilities, iterates, averages, strict=True):
            np.less_equal(x, iterate, out=tmp)
            np.subtract(tmp, p, out=tmp)
            _subtract_product(iterate, step, tmp, tmp)
            np.subtract(iterate, average, out=tmp)
            _add_product(average, tmp, inv, tmp)


class FairCovariance(NumpyCovariance, Blocked):
    def __init__(self, size: int, block: int | None = None) -> None:
        super().__init__(size)
        self._blocked(size, 3, block or BLOCK)

    def update(self, x: Array, y: Array) -> None:
        self.count += 1
        self.blocks.run(functools.partial(self._step, x, y, 1.0 / self.count))

    def _step(self, x: Array, y: Array, inv: float, scratch: Array, cells: slice) -> None:
        x, y = x[cells], y[cells]
        mean_x, mean_y, m2_x, m2_y, comoment = (
            s[cells] for s in (self.mean_x, self.mean_y, self.m2_x, self.m2_y, self.comoment)
        )
        dx, dy, tmp = scratch
        np.subtract(x, mean_x, out=dx)
        np.subtract(y, mean_y, out=dy)
        _add_product(mean_x, dx, inv, tmp)
        _add_product(mean_y, dy, inv, tmp)
        np.subtract(x, mean_x, out=tmp)
        _add_product(m2_x, dx, tmp, tmp)
        ey = tmp
        np.subtract(y, mean_y, out=ey)
        _add_product(comoment, dx, ey, dx)
        _add_product(m2_y, dy, ey, dy)


class FairSobol(NumpySobol, Blocked):
    """NumpySobol's update on blocks of every y_Ck at once (rows of n_params)."""

    def __init__(self, size: int, n_params: int, block: int | None = None) -> None:
        super().__init__(size, n_params)
        self.n_params = n_params
        # 7 arrays of n_params rows (moves of y_C and products), 4 single rows (moves of y_A, y_B
        # and their squares).
        self._blocked(size, 7 * n_params + 4, block or SOBOL_BLOCK)

    def update(self, group: Array) -> None:
        before = float(self.count)
        self.count += 1
        n = before + 1.0
        k2 = before * n
        factors = (1.0 / n, k2, k2 * (n - 2.0), k2 * (n * n - 3.0 * n + 3.0))
        self.blocks.run(functools.partial(self._step, group, factors))

    def _step(self, group: Array, factors: tuple[float, ...], scratch: Array, cells: slice) -> None:
        inv, k2, k3, k4 = factors
        p = self.n_params
        dy, dy2, dxy, kd, u, w, tmp = (scratch[i * p : (i + 1) * p] for i in range(7))
        dxa, dxb, dxa2, dxb2 = scratch[7 * p :]
        a, b = ({name: s[cells] for name, s in v.items()} for v in (self.a, self.b))
        c, bc, ac = (
            {name: s[:, cells] for name, s in v.items()} for v in (self.c, self.bc, self.ac)
        )
        # The moves of the means; the pairs need every variable's sums from before this group.
        moves = ((dxa, group[0, cells], a), (dxb, group[1, cells], b), (dy, group[2:, cells], c))
        for d, values, v in moves:
            np.subtract(values, v["mean"], out=d)
            np.multiply(d, inv, out=d)
        np.multiply(dy, dy, out=dy2)
        for pair, x, dx, dx2 in ((bc, b, dxb, dxb2), (ac, a, dxa, dxa2)):
            np.multiply(dx, dx, out=dx2)
            np.multiply(dy, dx, out=dxy)
            np.multiply(dxy, k4, out=kd)
            sums = (x["m2"], x["m3"], c["m2"], c["m3"])
            self._pair(pair, sums, (dx, dx2, dy, dy2, dxy, kd), (u, w, tmp), k2, k3)
        for v, d, d2 in ((a, dxa, dxa2), (b, dxb, dxb2), (c, dy, dy2)):
            rows = (u, w, tmp) if d.ndim == 2 else (u[0], w[0], tmp[0])
            self._variable(v, d, d2, rows, k2, k3, k4)

    @staticmethod
    def _pair(
        pair: dict[str, Array],
        sums: tuple[Array, ...],
        moves: tuple[Array, ...],
        scratch: tuple[Array, ...],
        k2: float,
        k3: float,
    ) -> None:
        """The mixed sums after the pair joins them, from the variables' sums before it."""
        m20, m30, m02, m03 = sums
        dx, dx2, dy, dy2, dxy, kd = moves
        u, w, tmp = scratch
        m11, m21, m12 = pair["comoment"], pair["m21"], pair["m12"]
        # m22 += dy2 m20 + dx2 m02 + 4 dxy m11 - 2 (dy m21 + dx m12) + kd dxy
        np.multiply(dy, m21, out=u)
        _add_product(u, dx, m12, tmp)
        np.multiply(u, -2.0, out=u)
        _add_product(u, dy2, m20, tmp)
        _add_product(u, m02, dx2, tmp)
        np.multiply(dxy, m11, out=w)
        _add_product(u, w, 4.0, w)
        _add_product(u, kd, dxy, tmp)
        np.add(pair["m22"], u, out=pair["m22"])
        # m31 += 3 (dxy m20 + dx2 m11 - dx m21) - dy m30 + kd dx2, and m13 the other way round
        for total, along, along2, across, m_along, m_across, m_other in (
            (pair["m31"], dx, dx2, dy, m20, m30, m21),
            (pair["m13"], dy, dy2, dx, m02, m03, m12),
        ):
            np.multiply(dxy, m_along, out=u)
            _add_product(u, m11, along2, tmp)
            _subtract_product(u, along, m_other, tmp)
            np.multiply(u, 3.0, out=u)
            _subtract_product(u, across, m_across, tmp)
            _add_product(u, kd, along2, tmp)
            np.add(total, u, out=total)
        # m21 += k3 dxy dx - dy m20 - 2 dx m11, and m12 the other way round; both read m11
        # before it moves.
        np.multiply(m11, 2.0, out=w)
        for total, along, across, m_across in ((m21, dx, dy, m20), (m12, dy, dx, m02)):
            np.multiply(dxy, along, out=u)
            np.multiply(u, k3, out=u)
            _subtract_product(u, across, m_across, tmp)
            _subtract_product(u, along, w, tmp)
            np.add(total, u, out=total)
        _add_product(m11, dxy, k2, u)

    @staticmethod
    def _variable(
        v: dict[str, Array],
        d: Array,
        d2: Array,
        scratch: tuple[Array, ...],
        k2: float,
        k3: float,
        k4: float,
    ) -> None:
        """A variable's sums after its value joins them (d: the move of its mean, d2 = d d)."""
        u, w, tmp = scratch
        mean, m2, m3, m4 = v["mean"], v["m2"], v["m3"], v["m4"]
        np.add(mean, d, out=mean)
        np.multiply(d, m2, out=u)  # the old m2's share of m3 and m4
        # m4 += d (6 u - 4 m3) + k4 d2 d2; m3 += k3 d2 d - 3 u; m2 += k2 d2
        np.multiply(u, 6.0, out=w)
        _subtract_product(w, m3, 4.0, tmp)
        np.multiply(w, d, out=w)
        np.multiply(d2, d2, out=tmp)
        _add_product(w, tmp, k4, tmp)
        np.add(m4, w, out=m4)
        np.multiply(d2, d, out=w)
        np.multiply(w, k3, out=w)
        _subtract_product(w, u, 3.0, u)
        np.add(m3, w, out=m3)
        _add_product(m2, d2, k2, d2)


# --------------------------------------------------------------------------------------------
# (b, c) iterative-stats and OpenTURNS behind one update(*args) interface.
# --------------------------------------------------------------------------------------------


class Increments:
    """update(*args) calls increment(*args) of each object (one object per threshold etc.)."""

    def __init__(self, *objects: Any) -> None:
        self.objects = objects

    def update(self, *args: Any) -> None:
        # iterative-stats divides by zero variances on the first updates; that is its business.
        with np.errstate(divide="ignore", invalid="ignore"):
            for obj in self.objects:
                obj.increment(*args)


class ItsQuantiles(Increments):
    def update(self, x: Array) -> None:
        # IterativeQuantile keeps the first field it is given as its state and then updates it in
        # place, which would overwrite our input pool: give it a copy of that one.
        first = self.objects[0].iteration == 0
        super().update(x.copy() if first else x)


# --------------------------------------------------------------------------------------------
# Kernels: what each one keeps and moves, how to build every implementation, and which inputs.
# --------------------------------------------------------------------------------------------


def one_field(pool: Pool, i: int) -> Args:
    return (pool[i % len(pool)],)


def field_pair(pool: Pool, i: int) -> Args:
    row = i % (len(pool) - 1)
    return (pool[row], pool[row + 1])


def one_group(pool: Pool, i: int) -> Args:
    width = N_PARAMS + 2
    row = (i * width) % (len(pool) - width + 1)
    return (pool[row : row + width],)


def field_batch(pool: Array) -> tuple[Args, int]:
    return (pool[:BATCH],), BATCH


def pair_batch(pool: Array) -> tuple[Args, int]:
    return (pool[:BATCH], pool[POOL_ROWS - BATCH : POOL_ROWS]), BATCH


def group_batch(pool: Array) -> tuple[Args, int]:
    width = N_PARAMS + 2
    groups = POOL_ROWS // width
    return (pool[: groups * width].reshape(groups, width, -1),), groups


Check = Callable[[Any, Any], list[tuple[Array, Array]] | None]


@dataclass(frozen=True)
class Kernel:
    name: str
    state_bytes: int  # per cell, from the state layout in include/melissa/stats.hpp
    fields_per_update: int  # input fields read by one update (Sobol: one group)
    unit: str  # what one update is
    melissa: Callable[[int], Any]
    numpy_naive: Callable[[int], Any]
    numpy_fair: Callable[[int, int | None], Any]  # (size, cells per block or the default)
    iterative_stats: Callable[[int], Any] | None  # None: no equivalent
    openturns: Callable[[int], Any] | None
    args: Callable[[Pool, int], Args]
    batch: Callable[[Array], tuple[Args, int]]
    # (theirs, ours) pairs that must agree after the same updates; None: a different estimator.
    check_its: Check | None = None
    check_ot: Check | None = None
    # melissa's methods that derive the statistics from the state, compared with the fair
    # baseline's state loaded into a melissa accumulator.
    derived: tuple[str, ...] = ()
    read_only_bytes: int = 0  # per cell, state an update reads but never writes (Moments' shift)

    def bytes_per_call(self, size: int, n_updates: int, itemsize: int) -> int:
        """Input read once, state read and written once per call (a batch passes over it once)."""
        return size * (
            n_updates * self.fields_per_update * itemsize
            + 2 * self.state_bytes
            + self.read_only_bytes
        )


def _moments_its(order: int) -> Check:
    def check(adapter: Increments, acc: ms.Moments) -> list[tuple[Array, Array]]:
        theirs, state = adapter.objects[0], acc.state_dict()
        return [
            (getattr(theirs, f"m{k}"), acc.mean() if k == 1 else state[f"m{k}"])
            for k in range(1, order + 1)
        ]

    return check


def _moments_ot(order: int) -> Check:
    def check(adapter: Increments, acc: ms.Moments) -> list[tuple[Array, Array]]:
        theirs, n = adapter.objects[0], float(acc.count)
        pairs = [
            (np.array(theirs.getMean()), acc.mean()),
            (np.array(theirs.getVariance()), acc.variance(ddof=1)),
        ]
        if order >= 4:
            # OpenTURNS gives the bias-corrected skewness and Pearson kurtosis (scipy bias=False).
            skew = acc.skewness() * np.sqrt(n * (n - 1.0)) / (n - 2.0)
            kurt = ((n + 1.0) * acc.kurtosis() + 6.0) * (n - 1.0) / ((n - 2.0) * (n - 3.0)) + 3.0
            pairs += [
                (np.array(theirs.getSkewness()), skew),
                (np.array(theirs.getKurtosis()), kurt),
            ]
        return pairs

    return check


def _extrema_its(adapter: Increments, acc: ms.Extrema) -> list[tuple[Array, Array]]:
    return [(adapter.objects[0].get_min(), acc.min()), (adapter.objects[0].get_max(), acc.max())]


def _extrema_ot(adapter: Increments, acc: ms.Extrema) -> list[tuple[Array, Array]]:
    theirs = adapter.objects[0]
    return [(np.array(theirs.getMin()), acc.min()), (np.array(theirs.getMax()), acc.max())]


def _threshold_its(adapter: Increments, acc: ms.ThresholdExceedance) -> list[tuple[Array, Array]]:
    return [(obj.state, counts) for obj, counts in zip(adapter.objects, acc.counts(), strict=True)]


def _threshold_ot(adapter: Increments, acc: ms.ThresholdExceedance) -> list[tuple[Array, Array]]:
    return [
        (np.array(obj.getThresholdExceedance()), counts)
        for obj, counts in zip(adapter.objects, acc.counts(), strict=True)
    ]


def _covariance_its(adapter: Increments, acc: ms.Covariance) -> list[tuple[Array, Array]]:
    return [(adapter.objects[0].getCovariance(), acc.covariance(ddof=1))]


def _sobol_its(adapter: Increments, acc: ms.Sobol) -> list[tuple[Array, Array]]:
    theirs = adapter.objects[0]
    return [
        (theirs.getFirstOrderIndices().T, acc.first_order()),
        (theirs.getTotalOrderIndices().T, acc.total_order()),
    ]


def moments_kernel(order: int, its_ok: bool, ot_ok: bool) -> Kernel:
    return Kernel(
        f"Moments(order={order})",
        state_bytes=order * 8,
        read_only_bytes=4 if order >= 2 else 0,
        fields_per_update=1,
        unit="fields",
        melissa=lambda n: ms.Moments(n, order),
        numpy_naive=lambda n: NumpyMoments(n, order),
        numpy_fair=lambda n, b: FairMoments(n, order, b),
        iterative_stats=(lambda n: Increments(its_moments.IterativeMoments(max_order=order, dim=n)))
        if its_ok
        else None,
        openturns=(lambda n: Increments(ot.IterativeMoments(order, n))) if ot_ok else None,
        args=one_field,
        batch=field_batch,
        check_its=_moments_its(order),
        check_ot=_moments_ot(order),
        derived=("mean", "variance", "skewness", "kurtosis")[:order],
    )


def make_kernels() -> list[Kernel]:
    its_ok, ot_ok = its_moments is not None, ot is not None
    n_thr, n_prob, group = len(THRESHOLDS), len(PROBABILITIES), N_PARAMS + 2
    return [
        moments_kernel(4, its_ok, ot_ok),
        moments_kernel(2, its_ok, ot_ok),
        Kernel(
            "Extrema",
            state_bytes=2 * 8,
            fields_per_update=1,
            unit="fields",
            melissa=ms.Extrema,
            numpy_naive=NumpyExtrema,
            numpy_fair=FairExtrema,
            iterative_stats=(lambda n: Increments(its_extrema.IterativeExtrema(n)))
            if its_ok
            else None,
            openturns=(lambda n: Increments(ot.IterativeExtrema(n))) if ot_ok else None,
            args=one_field,
            batch=field_batch,
            check_its=_extrema_its,
            check_ot=_extrema_ot,
            derived=("min", "max"),
        ),
        Kernel(
            f"ThresholdExceedance({n_thr} thresholds)",
            state_bytes=n_thr * 8,
            fields_per_update=1,
            unit="fields",
            melissa=lambda n: ms.ThresholdExceedance(n, list(THRESHOLDS)),
            numpy_naive=lambda n: NumpyThresholdExceedance(n, THRESHOLDS),
            numpy_fair=lambda n, b: FairThresholdExceedance(n, THRESHOLDS, b),
            # IterativeThreshold counts min <= x <= max; max=inf makes it x >= t (its max=None
            # path raises AttributeError in 0.1.2).
            iterative_stats=(
                lambda n: Increments(
                    *(
                        its_threshold.IterativeThreshold(n, min_threshold=t, max_threshold=np.inf)
                        for t in THRESHOLDS
                    )
                )
            )
            if its_ok
            else None,
            openturns=(
                lambda n: Increments(
                    *(ot.IterativeThresholdExceedance(n, ot.Greater(), t) for t in THRESHOLDS)
                )
            )
            if ot_ok
            else None,
            args=one_field,
            batch=field_batch,
            check_its=_threshold_its,
            check_ot=_threshold_ot,
            derived=("counts",),
        ),
        Kernel(
            f"Quantiles({n_prob} probabilities)",
            state_bytes=(2 + 2 * n_prob) * 8,
            fields_per_update=1,
            unit="fields",
            melissa=lambda n: ms.Quantiles(n, list(PROBABILITIES)),
            numpy_naive=lambda n: NumpyQuantiles(n, PROBABILITIES),
            numpy_fair=lambda n, b: FairQuantiles(n, PROBABILITIES, b),
            # Also Robbins-Monro, but its step comes from the running range and it does not
            # average: the same work per update, not the same numbers.
            iterative_stats=(
                lambda n: ItsQuantiles(
                    *(
                        its_quantile.IterativeQuantile(n, alpha=p, max_it=1000)
                        for p in PROBABILITIES
                    )
                )
            )
            if its_ok
            else None,
            openturns=None,
            args=one_field,
            batch=field_batch,
            derived=("quantiles",),
        ),
        Kernel(
            "Covariance",
            state_bytes=5 * 8,
            fields_per_update=2,
            unit="pairs",
            melissa=ms.Covariance,
            numpy_naive=NumpyCovariance,
            numpy_fair=FairCovariance,
            iterative_stats=(lambda n: Increments(its_covariance.IterativeCovariance(n)))
            if its_ok
            else None,
            openturns=None,
            args=field_pair,
            batch=pair_batch,
            check_its=_covariance_its,
            derived=("covariance", "correlation"),
        ),
        Kernel(
            f"Sobol(n_params={N_PARAMS})",
            state_bytes=(8 + 16 * N_PARAMS) * 8,
            fields_per_update=group,
            unit="groups",
            melissa=lambda n: ms.Sobol(n, N_PARAMS),
            numpy_naive=lambda n: NumpySobol(n, N_PARAMS),
            numpy_fair=lambda n, b: FairSobol(n, N_PARAMS, b),
            iterative_stats=(
                lambda n: Increments(
                    its_martinez.IterativeSensitivityMartinez(nb_parms=N_PARAMS, dim=n)
                )
            )
            if its_ok
            else None,
            openturns=None,
            args=one_group,
            batch=group_batch,
            check_its=_sobol_its,
            derived=("first_order", "total_order", "confidence_intervals"),
        ),
    ]


# --------------------------------------------------------------------------------------------
# Correctness: the numpy baselines must compute what melissa computes, or the ratios mean nothing.
# --------------------------------------------------------------------------------------------


def _max_rel_diff(theirs: Array, ours: Array) -> float:
    theirs, ours = np.asarray(theirs, dtype=np.float64), np.asarray(ours, dtype=np.float64)
    scale = np.maximum(np.abs(ours), 1e-300)
    return float(np.max(np.abs(theirs - ours) / scale))


def _agreement(pairs: list[tuple[Array, Array]] | None, tolerance: float) -> str:
    if pairs is None:
        return "different estimator: timing only"
    worst = max(_max_rel_diff(theirs, ours) for theirs, ours in pairs)
    cells = sum(int(np.sum(~np.isclose(t, o, rtol=tolerance, atol=0))) for t, o in pairs)
    if cells == 0:
        return f"agrees (max rel. diff {worst:.0e})"
    total = sum(np.size(o) for _, o in pairs)
    return f"DIFFERS in {cells} of {total} values (max rel. diff {worst:.1e})"


def check_correctness(
    kernels: list[Kernel], size: int, n_updates: int, threads: int
) -> list[list[str]]:
    """Feeds the same fields to every implementation; asserts that numpy matches melissa.

    The fair baseline runs on `threads` threads in blocks of CHECK_BLOCK cells, so that the
    check goes through several blocks per thread and a last block cut short.
    """
    rng = np.random.default_rng(1)
    pool = rng.standard_normal((POOL_ROWS, size))
    rows = []
    for kernel in kernels:
        acc, naive = kernel.melissa(size), kernel.numpy_naive(size)
        fair = kernel.numpy_fair(size, CHECK_BLOCK)
        fair.set_threads(threads)
        its = kernel.iterative_stats(size) if kernel.iterative_stats else None
        ots = kernel.openturns(size) if kernel.openturns else None
        points = [ot.Point(row) for row in pool] if ots is not None else []
        for i in range(n_updates):
            args = kernel.args(pool, i)
            for impl in (acc, naive, fair):
                impl.update(*args)
            if its is not None:
                its.update(*args)
            if ots is not None:
                ots.update(*kernel.args(points, i))
        ours = acc.state_dict()
        # A quantile iterate that lands within rounding of a value may step the other way once.
        allowed = 1e-3 if isinstance(naive, NumpyQuantiles) else 0.0
        cells = []
        for baseline, what in ((naive, "numpy naive"), (fair, "numpy fair")):
            # Rounding differs (FMA in the C++ kernels, association in the fair baseline), and a
            # sum near 0 has few correct digits relative to itself: hence atol.
            for name, value in baseline.state().items():
                _assert_close(value, ours[name], 1e-9, 1e-12, allowed, f"{what}, {kernel.name}")
            worst = max(_max_rel_diff(v, ours[k]) for k, v in baseline.state().items())
            cells.append(f"same state (max rel. diff {worst:.0e})")
        # The statistics a user reads, from the fair baseline's state: to 1e-12 of each value, or
        # of the largest value for those near 0 (a skewness of 1e-4 from sums of order 1).
        twin = kernel.melissa(size)
        twin.load_state_dict({**ours, **fair.state()})
        worst = 0.0
        for method in kernel.derived:
            theirs, mine = (np.asarray(getattr(a, method)(), dtype=float) for a in (twin, acc))
            scale = float(np.nanmax(np.abs(mine)))
            _assert_close(theirs, mine, 1e-12, 1e-12 * scale, allowed, f"{kernel.name}.{method}")
            worst = max(worst, float(np.nanmax(np.abs(theirs - mine))) / scale)
        cells[1] += f"; {', '.join(kernel.derived)} to {worst:.0e} of the largest"
        rows.append(
            [
                kernel.name,
                *cells,
                _check_cell(its, kernel.check_its, acc, its_moments),
                _check_cell(ots, kernel.check_ot, acc, ot),
            ]
        )
    return rows


def _assert_close(
    theirs: Array, ours: Array, rtol: float, atol: float, allowed: float, what: str
) -> None:
    """At most a fraction `allowed` of the values differ by more than atol + rtol |ours|."""
    same = np.isclose(theirs, ours, rtol=rtol, atol=atol, equal_nan=True)
    assert np.sum(~same) <= allowed * same.size, (
        f"{what} differs from melissa: {np.sum(~same)} of {same.size} values beyond "
        f"rtol {rtol:g}, atol {atol:g}"
    )


def _check_cell(theirs: Any, check: Check | None, acc: Any, module: Any) -> str:
    if theirs is None:
        return "not installed" if module is None else "n/a"
    return _agreement(check(theirs, acc) if check else None, tolerance=1e-6)


# --------------------------------------------------------------------------------------------
# (d) memory bandwidth, STREAM-like, in this process.
# --------------------------------------------------------------------------------------------


class Stream:
    """STREAM-like loops in numpy over arrays far larger than L3, on one or several threads.

    Bytes are counted as STREAM does: what the loop reads and writes, not the write-allocate
    read of a line that is only written, which copy and triad pay. "a += b" only writes what it
    has just read, as the statistics kernels do with their state, so it is their bound.
    """

    TRIAD_CHUNK = 1 << 15  # the triad's temporary stays in L2, so memory sees only a, b and c

    def __init__(self, n: int, max_threads: int) -> None:
        self.n = n
        self.a, self.b, self.c = np.zeros(n), np.ones(n), np.full(n, 2.0)
        self.pool = ThreadPoolExecutor(max_threads)
        # (name, loop over [lo, hi), bytes per element)
        self.tests: tuple[tuple[str, Callable[[int, int], None], int], ...] = (
            ("copy a = b", self.copy, 16),
            ("triad a = b + 3c", self.triad, 24),
            ("in place a += b", self.add_in_place, 24),
        )

    def copy(self, lo: int, hi: int) -> None:
        np.copyto(self.a[lo:hi], self.b[lo:hi])

    def triad(self, lo: int, hi: int) -> None:
        tmp = np.empty(self.TRIAD_CHUNK)
        for start in range(lo, hi, self.TRIAD_CHUNK):
            end = min(start + self.TRIAD_CHUNK, hi)
            np.multiply(self.c[start:end], 3.0, out=tmp[: end - start])
            np.add(self.b[start:end], tmp[: end - start], out=self.a[start:end])

    def add_in_place(self, lo: int, hi: int) -> None:
        np.add(self.a[lo:hi], self.b[lo:hi], out=self.a[lo:hi])

    def run(self, loop: Callable[[int, int], None], threads: int) -> None:
        """One pass of `loop`; numpy releases the GIL in ufuncs, so each thread streams a slice."""
        bounds = [(t * self.n // threads, (t + 1) * self.n // threads) for t in range(threads)]
        list(self.pool.map(loop, *zip(*bounds, strict=True)))

    def survey(self, thread_counts: Sequence[int], repeats: int) -> list[list[str]]:
        """Best GB/s of every test on every thread count, as table rows."""
        rows = []
        for name, loop, bytes_per_element in self.tests:
            for threads in thread_counts:
                best = 0.0
                for _ in range(repeats):
                    start = time.perf_counter()
                    self.run(loop, threads)
                    elapsed = time.perf_counter() - start
                    best = max(best, bytes_per_element * self.n / elapsed / 1e9)
                rows.append([name, str(threads), f"{best:.1f}"])
        return rows


# --------------------------------------------------------------------------------------------
# Timing.
# --------------------------------------------------------------------------------------------


@dataclass
class Impl:
    label: str
    family: str  # "melissa", a family of BASELINES, or "bound"
    update: Callable[..., None]
    args: Callable[[int], Args]  # the arguments of call number i
    updates_per_call: int
    bytes_per_call: int
    threads: int  # melissa's and the fair numpy baseline's; the other baselines run on one
    set_threads: Callable[[int], None] | None = None  # called with `threads` before timing
    rates: list[float] = field(default_factory=list)  # updates/s, one per round
    calls: int = 0  # calls so far: the next call takes the next fields of the pool

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    def gbs(self, rate: float) -> float:
        """GB/s at `rate` updates/s."""
        return rate * self.bytes_per_call / self.updates_per_call / 1e9

    @property
    def spread(self) -> float:
        """(slowest - fastest round) / median: how much the noise moved this row."""
        return (max(self.rates) - min(self.rates)) / self.rate


def time_call(impl: Impl, min_time: float) -> float:
    """Updates/s of impl, calling it (at least once) until min_time seconds have passed."""
    if impl.set_threads is not None:
        impl.set_threads(impl.threads)
    calls, start = 0, time.perf_counter()
    while True:
        impl.update(*impl.args(impl.calls))
        impl.calls += 1
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_time:
            return calls * impl.updates_per_call / elapsed


def measure(impls: list[Impl], repeats: int, min_time: float) -> None:
    """Warm-up, then `repeats` rounds that each time every implementation once, in turn."""
    for impl in impls:
        time_call(impl, 0.0)
    for round_ in range(repeats):
        # Each round starts one implementation later, so none always follows the same neighbour
        # (a helper thread still waking up, a cache left warm or cold).
        for k in range(len(impls)):
            impl = impls[(round_ + k) % len(impls)]
            impl.rates.append(time_call(impl, min_time))


def paired_ratio(ours: Impl, theirs: Impl) -> float:
    """Median over rounds of the ratio within a round: noise that hits both cancels."""
    return statistics.median(a / b for a, b in zip(ours.rates, theirs.rates, strict=True))


def fraction_of_bound(impl: Impl, impls: list[Impl]) -> float:
    """GB/s over the bandwidth measured in the same rounds on as many threads (paired median)."""
    bound = next(i for i in impls if i.family == "bound" and i.threads == impl.threads)
    pairs = zip(impl.rates, bound.rates, strict=True)
    return statistics.median(impl.gbs(a) / bound.gbs(b) for a, b in pairs)


def build_impls(
    kernel: Kernel,
    size: int,
    pools: dict[str, Any],
    thread_counts: Sequence[int],
    block: int | None,
    with_slow: bool,
    stream: Stream,
) -> list[Impl]:
    """melissa's rows on each thread count, the baselines, and the bandwidth bound measured in
    the same rounds (it moved by half between runs on a shared machine); one state each, which
    the rows of one implementation on several thread counts share."""
    impls: list[Impl] = []

    def add(label: str, family: str, update: Callable[..., None], pool: Pool, threads: int = 1,
            batch: tuple[Args, int] | None = None,
            set_threads: Callable[[int], None] | None = None) -> None:  # fmt: skip
        itemsize = pool.itemsize if isinstance(pool, np.ndarray) else 8
        if batch is None:
            args, n_updates = (lambda i: kernel.args(pool, i)), 1
        else:
            args, n_updates = (lambda i: batch[0]), batch[1]
        bytes_per_call = kernel.bytes_per_call(size, n_updates, itemsize)
        impls.append(
            Impl(label, family, update, args, n_updates, bytes_per_call, threads, set_threads)
        )

    acc, f64, f32 = kernel.melissa(size), pools["f64"], pools["f32"]
    batch, on = kernel.batch(f64), ms.set_num_threads
    for t in thread_counts:
        add(f"melissa f64, 1 field, {_threads(t)}", "melissa", acc.update, f64, t, set_threads=on)
        label = f"melissa f64, batch of {batch[1]}, {_threads(t)}"
        add(label, "melissa", acc.update, f64, t, batch, on)
        add(f"melissa f32, 1 field, {_threads(t)}", "melissa", acc.update, f32, t, set_threads=on)
    fair = kernel.numpy_fair(size, block)
    for t in thread_counts:
        fair.set_threads(t)
        label = f"numpy fair (in place, blocks of {fair.blocks.block:,}), {_threads(t)}"
        add(label, "numpy fair", fair.update, f64, t, set_threads=fair.set_threads)
    add("numpy naive (vectorized), 1 thread", "numpy naive", kernel.numpy_naive(size).update, f64)
    if with_slow and kernel.iterative_stats is not None:
        version = _version("iterative-stats")
        add(
            f"iterative-stats {version}",
            "iterative-stats",
            kernel.iterative_stats(size).update,
            f64,
        )
    if with_slow and kernel.openturns is not None:
        label = f"OpenTURNS {_version('openturns')} (ot.Point input)"
        add(label, "OpenTURNS", kernel.openturns(size).update, pools["ot"])
    for t in thread_counts:
        run = functools.partial(stream.run, stream.add_in_place, t)
        impls.append(
            Impl(
                f"bound: numpy a += b, {_threads(t)}",
                "bound",
                run,
                lambda i: (),
                1,
                24 * stream.n,
                t,
            )
        )
    return impls


# --------------------------------------------------------------------------------------------
# Output.
# --------------------------------------------------------------------------------------------


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(f"{c!s:<{w}}" for c, w in zip(cells, widths, strict=True)) + " |"

    print(line(headers))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print(line(row))
    print()


def _threads(n: int) -> str:
    return f"{n} thread{'s' if n > 1 else ''}"


def _si(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


# All but the fair numpy baseline run on 1 thread, so only melissa's 1-thread rows have a ratio.
BASELINES = ("numpy fair", "numpy naive", "iterative-stats", "OpenTURNS")


def _absent(family: str) -> str:
    module = {"iterative-stats": its_moments, "OpenTURNS": ot}.get(family, np)
    return "not installed" if module is None else "n/a"


def _baseline(impls: list[Impl], family: str, threads: int) -> Impl | None:
    return next((i for i in impls if i.family == family and i.threads == threads), None)


def _ratio(ours: Impl, impls: list[Impl], family: str) -> str:
    """melissa's row over the baseline on as many threads; blank where it has no such row."""
    theirs = _baseline(impls, family, ours.threads)
    if theirs is not None:
        return f"{paired_ratio(ours, theirs):.1f}"
    return "" if any(i.family == family for i in impls) else _absent(family)


def kernel_table(kernel: Kernel, impls: list[Impl], with_slow: bool) -> None:
    baselines = BASELINES if with_slow else BASELINES[:2]
    headers = ["implementation", f"{kernel.unit}/s", "spread", "GB/s", "of bound"] + [
        f"x {name}" for name in baselines
    ]
    rows = []
    for impl in impls:
        ratios = [
            _ratio(impl, impls, name) if impl.family == "melissa" else "" for name in baselines
        ]
        rate = "" if impl.family == "bound" else _si(impl.rate)
        rows.append(
            [impl.label, rate, f"{impl.spread:.0%}", f"{impl.gbs(impl.rate):.1f}"]
            + [f"{fraction_of_bound(impl, impls):.2f}"]
            + ratios
        )
    per_update = kernel.bytes_per_call(1, 1, 8)
    print(f"#### {kernel.name}\n")
    print(
        f"One update moves {per_update} B/cell in float64 ({kernel.fields_per_update * 8} read "
        f"from the input, {kernel.state_bytes} of state read and written back"
        + (f", {kernel.read_only_bytes} read only" if kernel.read_only_bytes else "")
        + "); a batch passes over the state once.\n"
    )
    print_table(headers, rows)


def _melissa(impls: list[Impl], label_part: str) -> Impl:
    return next(i for i in impls if i.family == "melissa" and label_part in i.label)


def thread_table(results: dict[str, list[Impl]], thread_counts: Sequence[int]) -> None:
    low, high = min(thread_counts), max(thread_counts)
    if low == high:
        return
    print(f"#### {high} threads over {low} (paired medians)\n")
    kinds = ("f64, 1 field", "f64, batch", "f32, 1 field")
    headers = (
        ["kernel"]
        + [f"{what.replace(',', '')}: {high} threads / {low}" for what in kinds]
        + [f"numpy fair: {high} threads / {low}"]
    )
    rows = []
    for name, impls in results.items():
        row = [name]
        for what in kinds:
            rows_of = {i.threads: i for i in impls if i.family == "melissa" and what in i.label}
            row.append(f"{paired_ratio(rows_of[high], rows_of[low]):.2f}")
        fair_low, fair_high = (_baseline(impls, "numpy fair", t) for t in (low, high))
        row.append(f"{paired_ratio(fair_high, fair_low):.2f}" if fair_low and fair_high else "")
        rows.append(row)
    print_table(headers, rows)


def target_lines(results: dict[str, list[Impl]], thread_counts: Sequence[int]) -> list[str]:
    """The goals, each checked on as many threads as the baseline can use (the most it has)."""
    targets = [
        ("Moments(order=4)", "numpy fair", 4.0),
        ("Moments(order=4)", "iterative-stats", 10.0),
        (f"Sobol(n_params={N_PARAMS})", "numpy fair", 4.0),
    ]
    lines = []
    for kernel, family, goal in targets:
        if kernel not in results:  # not asked for (--kernels)
            continue
        impls = results[kernel]
        what = f"{kernel} >= {goal:g}x {family} (melissa f64, 1 field, same threads)"
        ratios = {}
        for t in thread_counts:
            theirs = _baseline(impls, family, t)
            if theirs is not None:
                ours = _melissa(impls, f"f64, 1 field, {_threads(t)}")
                ratios[t] = paired_ratio(ours, theirs)
        if not ratios:
            lines.append(f"- {what}: not measured ({_absent(family)})")
            continue
        verdict = "met" if ratios[max(ratios)] >= goal else "NOT met"
        detail = ", ".join(
            f"{r:.1f}x on {_threads(t)}" for t, r in sorted(ratios.items(), reverse=True)
        )
        naive = _baseline(impls, "numpy naive", 1)
        if family == "numpy fair" and naive is not None and 1 in thread_counts:
            ours = _melissa(impls, f"f64, 1 field, {_threads(1)}")
            detail += f"; numpy naive: {paired_ratio(ours, naive):.1f}x on 1 thread"
        lines.append(f"- {what}: **{verdict}** ({detail})")
    return lines


def summary_table(
    results: dict[str, list[Impl]],
    large: dict[str, list[Impl]] | None,
    threads: int,
) -> None:
    """One line per kernel: melissa's single float64 field on `threads` against every baseline
    that runs on as many threads."""
    label = f"f64, 1 field, {_threads(threads)}"
    families = BASELINES if threads == 1 else BASELINES[:1]
    headers = ["kernel", "updates/s"] + [f"x {name}" for name in families] + ["of bound"]
    if large is not None:
        headers += ["of bound, large", "x numpy fair, large"]
    rows = []
    for name, impls in results.items():
        ours = _melissa(impls, label)
        row = [name, _si(ours.rate)] + [_ratio(ours, impls, family) for family in families]
        row.append(f"{fraction_of_bound(ours, impls):.2f}")
        if large is not None and name in large:
            big = _melissa(large[name], label)
            row += [
                f"{fraction_of_bound(big, large[name]):.2f}",
                _ratio(big, large[name], "numpy fair"),
            ]
        elif large is not None:
            row += ["left out", "left out"]
        rows.append(row)
    print_table(headers, rows)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _melissa_version() -> str:
    """The distribution that provides the melissa package and its version, whatever its name."""
    names = importlib.metadata.packages_distributions().get("melissa", [])
    return f"{names[0]} {_version(names[0])}" if names else "melissa not installed"


def _cpu() -> str:
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    return (
        f"{info.get('model name', '?')} (family {info.get('cpu family', '?')}, "
        f"model {info.get('model', '?')})"
    )


def _l3() -> str:
    try:
        with open("/sys/devices/system/cpu/cpu0/cache/index3/size") as f:
            size = f.read().strip()  # e.g. "32768K"
    except OSError:
        return "?"
    return f"{int(size[:-1]) // 1024} MiB" if size.endswith("K") and size[:-1].isdigit() else size


class CpuMonitor:
    """How much CPU other processes (and other guests, through the hypervisor) took meanwhile.

    Contention matters more than the usual noise here: a 2-thread update on 2 cores shares them
    with whatever else runs, so its figures say little when other processes were busy.
    """

    def __init__(self) -> None:
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, list[int]]:
        try:
            with open("/proc/stat") as f:  # cpu user nice system idle iowait irq softirq steal
                jiffies = [int(v) for v in f.readline().split()[1:9]]
        except (OSError, ValueError):
            jiffies = []
        return time.process_time(), jiffies

    def report(self) -> str:
        (own0, j0), (own1, j1) = self.start, self._sample()
        if len(j0) < 8 or len(j1) < 8:
            return "CPU use of other processes unknown"
        tick = os.sysconf("SC_CLK_TCK")
        delta = [(b - a) / tick for a, b in zip(j0, j1, strict=True)]
        capacity = max(sum(delta), 1e-9)  # all CPUs, idle included
        busy = capacity - delta[3] - delta[4] - delta[7]
        others = max(busy - (own1 - own0), 0.0)
        return (
            f"other processes used {others / capacity:.0%} of the CPUs, "
            f"the hypervisor stole {delta[7] / capacity:.0%}"
        )


def _loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def _built() -> str:
    """When the installed melissa extension was built: the library may be rebuilt between runs."""
    from melissa import _core

    stamp = datetime.datetime.fromtimestamp(os.path.getmtime(_core.__file__)).astimezone()
    return stamp.isoformat(timespec="minutes")


def header(args: argparse.Namespace) -> None:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print("## melissa.stats kernel benchmark\n")
    print(f"- date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(
        f"- machine: {_cpu()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), "
        f"L3 {_l3()}, {memory:.0f} GiB RAM, {platform.system()} {platform.release()}"
    )
    print(
        f"- software: Python {platform.python_version()}, numpy {np.__version__}, "
        f"{_melissa_version()} (extension built {_built()}), "
        f"iterative-stats {_version('iterative-stats')}, openturns {_version('openturns')}"
    )
    print(f"- command: `{shlex.join(sys.orig_argv)}`")
    print(
        f"- settings: cells {args.cells:,}"
        + (f" and {args.large_cells:,}" if args.large_cells else "")
        + f", {args.repeats} rounds of at least {args.min_time} s per implementation, "
        f"melissa on " + " and ".join(_threads(t) for t in args.threads)
    )
    print(f"- load average at start: {_loadavg()}\n")


# --------------------------------------------------------------------------------------------


def block_sweep(kernels: list[Kernel], args: argparse.Namespace) -> None:
    """melissa's single float64 field over the fair baseline in blocks of each size, all timed
    in the same rounds: how BLOCK and SOBOL_BLOCK were chosen."""
    pool = np.random.default_rng(0).standard_normal((POOL_ROWS, args.cells))
    print(f"### Block size of the fair numpy baseline ({args.cells:,} cells)\n")
    print(
        "melissa's speed over the fair baseline's on as many threads (paired medians over "
        f"{args.repeats} rounds); the smallest ratio marks numpy's best block.\n"
    )
    monitor, rows = CpuMonitor(), []
    for kernel in kernels:
        started, impls = time.perf_counter(), []
        args_of = functools.partial(kernel.args, pool)
        melissa = kernel.melissa(args.cells)
        fairs = {block: kernel.numpy_fair(args.cells, block) for block in args.sweep_blocks}
        for t in args.threads:
            impls.append(
                Impl("melissa", "melissa", melissa.update, args_of, 1, 0, t, ms.set_num_threads)
            )
            for block, fair in fairs.items():
                impls.append(
                    Impl(str(block), "numpy fair", fair.update, args_of, 1, 0, t, fair.set_threads)
                )
        measure(impls, args.repeats, args.min_time)
        for t in args.threads:
            ours, *fair_rows = (i for i in impls if i.threads == t)
            rows.append([kernel.name, str(t)] + [f"{paired_ratio(ours, f):.2f}" for f in fair_rows])
        print(f"{kernel.name}: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    headers = ["kernel", "threads"] + [f"blocks of {b:,}" for b in args.sweep_blocks]
    print_table(headers, rows)
    print(f"While this table was measured, {monitor.report()}.\n")


def run_size(
    kernels: list[Kernel],
    size: int,
    args: argparse.Namespace,
    stream: Stream,
    with_slow: bool,
) -> dict[str, list[Impl]]:
    rng = np.random.default_rng(0)
    f64 = rng.standard_normal((POOL_ROWS, size))
    pools: dict[str, Any] = {"f64": f64, "f32": f64.astype(np.float32)}
    if with_slow and ot is not None:
        pools["ot"] = [ot.Point(row) for row in f64[:OT_ROWS]]
    results = {}
    for kernel in kernels:
        # melissa's state, the two numpy baselines' and the naive one's temporaries: Sobol's
        # states take 4.6 GB each at 8 * 10^6 cells, and a machine without swap kills a process
        # (perhaps someone else's) when they do not fit.
        need, available = 4 * size * (kernel.state_bytes + kernel.read_only_bytes), _available()
        if need > 0.7 * available:
            print(
                f"#### {kernel.name}\n\nLeft out: its states would take about {need / 1e9:.0f} "
                f"GB, and {available / 1e9:.0f} GB of memory were available.\n"
            )
            continue
        impls = build_impls(kernel, size, pools, args.threads, args.block, with_slow, stream)
        started, monitor = time.perf_counter(), CpuMonitor()
        measure(impls, args.repeats, args.min_time)
        kernel_table(kernel, impls, with_slow)
        print(f"While this table was measured, {monitor.report()}.\n")
        print(
            f"[{size:,} cells] {kernel.name}: {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
        )
        for impl in impls:  # the summaries need the rates only: let the states go
            impl.update, impl.set_threads = _measured, None
        results[kernel.name] = impls
    return results


def _measured(*args: Any) -> None:
    raise RuntimeError("this implementation was measured and its state released")


def _available() -> int:
    """Bytes of memory available to a new process (Linux's estimate), or all of it elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cells",
        type=int,
        default=1_000_000,
        help="cells per field for the full comparison (default 10^6)",
    )
    parser.add_argument(
        "--large-cells",
        type=int,
        default=8_000_000,
        help="a second size, state far above L3, melissa and numpy only "
        "(default 8*10^6; 0 skips it)",
    )
    parser.add_argument("--repeats", type=int, default=7, help="measurement rounds (default 7)")
    parser.add_argument(
        "--min-time",
        type=float,
        default=0.05,
        help="seconds each implementation is timed for in a round (default 0.05); "
        "slow ones are called once",
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=sorted({1, len(os.sched_getaffinity(0))}),
        help="melissa thread counts to compare (default: 1 and all cores)",
    )
    parser.add_argument(
        "--stream-elements",
        type=int,
        default=1 << 25,
        help="float64 elements per bandwidth array (default 2^25: 256 MiB)",
    )
    parser.add_argument(
        "--kernels",
        nargs="+",
        metavar="PREFIX",
        help="only the kernels whose name starts with one of these (case-insensitive), "
        "e.g. moments sobol",
    )
    parser.add_argument(
        "--block",
        type=int,
        help=f"cells per block of the fair numpy baselines (default {BLOCK:,}; Sobol "
        f"{SOBOL_BLOCK:,})",
    )
    parser.add_argument(
        "--sweep-blocks",
        type=int,
        nargs="+",
        metavar="CELLS",
        help="instead of the benchmark: melissa over the fair numpy baseline in blocks of each "
        "of these sizes, at --cells cells",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: 10^5 cells, one round, no second size"
    )
    args = parser.parse_args()
    if args.quick:
        args.cells, args.large_cells, args.repeats, args.min_time = 100_000, 0, 1, 0.005
        args.stream_elements = 1 << 22
    args.threads = sorted(set(args.threads))
    if args.sweep_blocks:
        args.large_cells = 0  # the sweep times one size

    header(args)
    whole_run, started = CpuMonitor(), time.perf_counter()
    kernels = make_kernels()
    if args.kernels:
        prefixes = tuple(prefix.lower() for prefix in args.kernels)
        kernels = [k for k in kernels if k.name.lower().startswith(prefixes)]
    if args.sweep_blocks:
        block_sweep(kernels, args)
        return

    print("### Correctness\n")
    print(
        "The same 20 updates of 1,000 cells go to every implementation before any timing. Both "
        "numpy baselines must match melissa's state, and the statistics that melissa derives "
        "from the fair baseline's state (loaded into an accumulator) must match its own to "
        "1e-12 of each value, or of the largest value for values near 0 (asserted; the fair "
        f"baseline here in blocks of {CHECK_BLOCK} cells on {_threads(max(args.threads))}).\n"
    )
    print_table(
        ["kernel", "numpy naive", "numpy fair", "iterative-stats", "OpenTURNS"],
        check_correctness(kernels, 1000, 20, max(args.threads)),
    )

    print("### Memory bandwidth\n")
    stream = Stream(args.stream_elements, max(args.threads))
    repeats = max(args.repeats, 3)
    print(
        f"numpy, 3 arrays of {args.stream_elements:,} float64 "
        f"({args.stream_elements * 8 / 2**20:.0f} MiB each), best of {repeats}; bytes read + "
        f"written, counted as STREAM does (no write-allocate).\n"
    )
    print_table(["test", "threads", "GB/s"], stream.survey(args.threads, repeats))
    print(
        "'of bound' in the tables below: the row's GB/s over that of 'in place a += b' on as "
        "many threads, timed in the same rounds as the row (rows 'bound: ...').\n"
    )

    print(f"### {args.cells:,} cells\n")
    print(
        "updates/s and ratios: median over rounds (ratios paired within a round). GB/s: the "
        "bytes the update must move x updates/s. 'x numpy fair' etc.: melissa's speed over the "
        "baseline's on as many threads. The fair numpy baseline updates in place, block by "
        "block, on 1 thread and on as many as melissa; numpy naive (array expressions with "
        "full-size temporaries), iterative-stats and OpenTURNS run on one thread, so only "
        "melissa's 1-thread rows have a ratio against them.\n"
    )
    results = run_size(kernels, args.cells, args, stream, with_slow=True)
    thread_table(results, args.threads)

    large = None
    if args.large_cells:
        print(f"### {args.large_cells:,} cells (state well above the {_l3()} L3)\n")
        print(
            "iterative-stats and OpenTURNS are left out at this size: they take seconds per "
            "update.\n"
        )
        large = run_size(kernels, args.large_cells, args, stream, with_slow=False)
        thread_table(large, args.threads)

    for threads in args.threads:
        print(f"### Summary: melissa, one float64 field, {_threads(threads)}\n")
        print(
            f"At {args.cells:,} cells"
            + (f"; 'large': {args.large_cells:,} cells" if large is not None else "")
            + ", against the baselines that ran on as many threads.\n"
        )
        summary_table(results, large, threads)

    print(f"### Targets ({args.cells:,} cells; verdict on the most threads the baseline ran on)\n")
    print("\n".join(target_lines(results, args.threads)))
    print(
        f"\n- run time {time.perf_counter() - started:.0f} s; load average at end: {_loadavg()}; "
        f"during the run {whole_run.report()}"
    )


if __name__ == "__main__":
    main()

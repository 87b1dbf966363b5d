# SPDX-License-Identifier: BSD-3-Clause
"""How far a Sobol study's indices can be read: the widths of their 95 % confidence intervals.

Each statistics-server rank sums up the intervals of its own cells, over every (field, time
step), parameter, first and total order (`rank_metrics`, passed on in its progress file); the
launcher adds the ranks' sums up exactly (`Figures.combine`), shows them, stops drawing groups
once they meet `sa_config.sobol_ci_target`, and reports them at the end (`Summary`).

The rule: at least `sobol_ci_quantile` of the intervals (those defined: a cell whose output
never varies has none) are no wider than `sobol_ci_target`, in figures of at least MIN_GROUPS
groups.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from melissa import stats
from melissa.protocol import RankProgress

LEVEL = 0.95  # of results.nc's bounds, and of the intervals measured here

# No stop on figures of fewer groups. A width is estimated from the same groups as its index
# (from their fourth moments), and a few groups that happen to agree narrow every cell's
# interval at once: a field's cells share their groups. In simulated studies (200 each, the
# Ishigami function and linear models) stopping at the first check allowed, with plain
# delta-method intervals the share of intervals holding the true index at the stop rose with the
# minimum, for Ishigami from 79 % (a minimum of 4) to 86 % (16) and 89 % (32), and a minimum of 4
# let 5 % of the studies of a small index stop at 4 groups. melissa.stats' score intervals,
# which span all of [-1, 1] while the moments cannot bound an index, held 95 % whatever the
# minimum; a loose target (1.5) still stopped 15 % of the linear studies before 16 groups. 32 is
# where the gain levels off: a safety net whatever the intervals, costing nothing with a target
# worth having (0.3 takes about 150 groups). (config.py's sobol_ci_target says 32 too.)
MIN_GROUPS = 32

# A median width above this: most intervals span half the range of an index, which is then no
# more than a guess.
TOO_WIDE = 0.5

# Widths are counted in log-spaced bins, BINS_PER_DECADE a decade (a quantile read to about
# 2 %), from SMALLEST (below: the first bin) to LARGEST (from there: the last): a rank's summary
# is a few hundred numbers, whatever number of cells it holds. An index's interval lies within
# one of a correlation, [-1, 1]: 2 wide at most, and that wide where nothing bounds it yet.
BINS_PER_DECADE = 50
SMALLEST, LARGEST = 2e-4, 2.0
N_BINS = 2 + math.ceil(math.log10(LARGEST / SMALLEST) * BINS_PER_DECADE)

# A rank recomputes its figures at most every MIN_INTERVAL seconds (its progress file's pace),
# and spends at most 1 / DUTY of its time on them while data flows in.
MIN_INTERVAL = 1.0
DUTY = 10.0

Histogram = npt.NDArray[np.int64]


def complete_groups(simulations: Iterable[int], group_size: int) -> int:
    """How many Sobol groups have all of their members among `simulations` (distinct ids)."""
    ids = np.fromiter(simulations, np.int64)
    return int(np.count_nonzero(np.bincount(ids // group_size) == group_size))


def _histogram(widths: npt.NDArray[np.float64]) -> Histogram:
    clipped = np.clip(widths, SMALLEST / 2, LARGEST * 2)
    bins = np.floor((np.log10(clipped) - math.log10(SMALLEST)) * BINS_PER_DECADE).astype(np.int64)
    return np.bincount(np.clip(bins + 1, 0, N_BINS - 1), minlength=N_BINS)


def _sparse(histogram: Histogram) -> list[list[int]]:
    return [[int(b), int(histogram[b])] for b in np.flatnonzero(histogram)]


def _dense(pairs: Sequence[Sequence[int]]) -> Histogram:
    histogram = np.zeros(N_BINS, np.int64)
    for b, count in pairs:
        histogram[b] += count
    return histogram


def rank_metrics(states: Iterable[tuple[int, int, dict[str, Any]]], n_params: int,
                 last_step: int, target: float | None, groups: int) -> dict[str, Any]:
    """A server rank's summary of its intervals, from the (time step, cells, kernel states) of
    each (field, time step) of its consumer: every one of them holds at least `groups`
    groups."""
    every, last = np.zeros(N_BINS, np.int64), np.zeros(N_BINS, np.int64)
    intervals = undefined = wider = 0
    for step, cells, kernels in states:
        if "sobol" not in kernels:
            continue
        sobol = stats.Sobol(cells, n_params)
        sobol.load_state_dict({"size": cells, "n_params": n_params, **kernels["sobol"]})
        bounds = sobol.confidence_intervals(LEVEL)
        widths = np.concatenate([(bounds.first_upper - bounds.first_lower).ravel(),
                                 (bounds.total_upper - bounds.total_lower).ravel()])
        defined = widths[~np.isnan(widths)]
        intervals += defined.size
        undefined += widths.size - defined.size
        if target is not None:
            wider += int(np.count_nonzero(defined > target))
        histogram = _histogram(defined)
        every += histogram
        if step == last_step:
            last += histogram
    return {"groups": groups, "intervals": intervals, "undefined": undefined,
            "wider": wider if target is not None else None, "every": _sparse(every),
            "last": _sparse(last)}


def quantile(histogram: Histogram, q: float) -> float:
    """The q-quantile of the widths a histogram counts, read within its bin on a log scale;
    NaN if it counts none."""
    total = int(histogram.sum())
    if total == 0:
        return math.nan
    cumulative = np.cumsum(histogram)
    rank = q * total
    b = int(np.searchsorted(cumulative, rank))
    if b == 0:
        return SMALLEST
    if b >= N_BINS - 1:
        return LARGEST
    inside = (rank - cumulative[b - 1]) / histogram[b]
    return float(SMALLEST * 10 ** ((b - 1 + inside) / BINS_PER_DECADE))


@dataclass(frozen=True)
class Figures:
    """The intervals over every server rank."""

    groups: int  # every interval holds at least these groups
    intervals: int  # defined ones, over every cell, time step, parameter, first and total order
    undefined: int
    wider: int | None  # than the target, when there is one
    every: Histogram  # widths of every interval
    last: Histogram  # widths at the last time step
    interval: float  # seconds, at most, until every rank sends newer figures

    @classmethod
    def combine(cls, metrics: Sequence[dict[str, Any] | None]) -> Figures | None:
        """The ranks' summaries added up; None until every rank has sent one."""
        if not metrics or any(m is None or "intervals" not in m for m in metrics):
            return None
        ranks = [m for m in metrics if m is not None]
        wider = [m["wider"] for m in ranks]
        return cls(groups=min(m["groups"] for m in ranks),
                   intervals=sum(m["intervals"] for m in ranks),
                   undefined=sum(m["undefined"] for m in ranks),
                   wider=None if None in wider else sum(wider),
                   every=sum((_dense(m["every"]) for m in ranks), np.zeros(N_BINS, np.int64)),
                   last=sum((_dense(m["last"]) for m in ranks), np.zeros(N_BINS, np.int64)),
                   interval=max(m["interval"] for m in ranks))

    def share_met(self) -> float:
        """The share of the intervals no wider than the target."""
        if self.wider is None or self.intervals == 0:
            return math.nan
        return 1.0 - self.wider / self.intervals

    def meets(self, share: float) -> bool:
        """Whether the rule lets the study stop on these figures."""
        return self.groups >= MIN_GROUPS and self.share_met() >= share

    def too_wide(self) -> bool:
        return quantile(self.every, 0.5) > TOO_WIDE

    def describe(self, target: float | None, share: float) -> str:
        """One line for the progress display."""
        if self.intervals == 0:
            return f"Sobol CIs: none yet ({self.groups} groups)"
        text = (f"Sobol CI widths ({self.groups} groups): last step median "
                f"{quantile(self.last, 0.5):.2g}, p95 {quantile(self.last, 0.95):.2g}; ")
        if target is None:
            return text + f"all steps p95 {quantile(self.every, 0.95):.2g}"
        return text + (f"{self.share_met():.0%} <= target {target:g} (needs {share:.0%}"
                       + (f" and {MIN_GROUPS} groups)" if self.groups < MIN_GROUPS else ")"))


class Convergence:
    """The launcher's view of the intervals: the latest figures of every rank, and when they
    met the target."""

    def __init__(self, target: float | None, share: float) -> None:
        self.target, self.share = target, share
        self.figures: Figures | None = None
        self.met_at: int | None = None  # the groups of the figures that met the target
        self.text = ""

    def update(self, ranks: Sequence[RankProgress | None]) -> None:
        """Takes the ranks' latest progress files (None: a rank not heard from yet)."""
        figures = Figures.combine([p.metrics if p is not None else None for p in ranks])
        if figures is not None:
            self.figures = figures
            self.text = figures.describe(self.target, self.share)

    def newly_met(self) -> bool:
        """Whether the figures meet the target now, for the first time."""
        if (self.target is None or self.met_at is not None or self.figures is None
                or not self.figures.meets(self.share)):
            return False
        self.met_at = self.figures.groups
        return True


@dataclass(frozen=True)
class Summary:
    """What a Sobol study's indices rest on, for the end of `melissa run`."""

    groups: int  # whole groups: those behind the indices
    planned: int  # parameter_sweep_size
    target: float | None
    share: float
    met_at: int | None  # groups when the target was met; None: it was not (or there is none)
    figures: Figures | None  # the last ones the server sent

    @property
    def stop(self) -> str:
        """Why no more groups ran: "target" (met), or "sweep" (parameter_sweep_size ran)."""
        return "target" if self.met_at is not None else "sweep"

    def lines(self) -> list[str]:
        if self.met_at is not None:
            head = (f"Sobol indices from {self.groups} groups of at most {self.planned} "
                    f"(parameter_sweep_size): stopped on sobol_ci_target {self.target:g}, met "
                    f"by {self.share:.0%} of the intervals at {self.met_at} groups; groups "
                    f"already running then were completed, the others never started (not_run "
                    f"in results.nc).")
        else:
            head = (f"Sobol indices from {self.groups} groups: every group of "
                    f"parameter_sweep_size {self.planned} ran"
                    + (f"; sobol_ci_target {self.target:g} not met." if self.target is not None
                       else "."))
        figures = self.figures
        if figures is None or figures.intervals == 0:
            return [head, "  The server sent no interval widths (fewer than 4 groups, or "
                    "outputs that never vary)."]
        lines = [head, f"  95 % confidence intervals of the indices, their widths: at the last "
                 f"time step median {quantile(figures.last, 0.5):.2g}, 95th percentile "
                 f"{quantile(figures.last, 0.95):.2g}; over every cell, time step, parameter "
                 f"and order median {quantile(figures.every, 0.5):.2g}, "
                 f"{self.share:.0%} within about {quantile(figures.every, self.share):.2g}."]
        if self.target is not None:
            lines.append(f"  {figures.share_met():.1%} of the intervals are no wider than "
                         f"sobol_ci_target {self.target:g} (the rule asks {self.share:.0%} "
                         f"of figures of at least {MIN_GROUPS} groups).")
        if figures.undefined:
            lines.append(f"  {figures.undefined} of {figures.intervals + figures.undefined} "
                         "intervals are undefined (cells whose output never varied).")
        if figures.groups < self.groups:
            lines.append(f"  (The server's last figures hold {figures.groups} of the "
                         f"{self.groups} groups.)")
        warning = self.warning()
        if warning:
            lines.append(warning)
        return lines

    def warning(self) -> str | None:
        """A warning when the intervals are too wide to read the indices."""
        if self.figures is None or self.figures.intervals == 0 or not self.figures.too_wide():
            return None
        return (f"Warning: the Sobol indices are too uncertain to read: the median width of "
                f"their 95 % intervals is {quantile(self.figures.every, 0.5):.2g}, above "
                f"{TOO_WIDE:g}. Run more groups (study_options.parameter_sweep_size), or set "
                f"sa_config.sobol_ci_target and a large parameter_sweep_size: the launcher then "
                f"stops once the intervals are narrow enough.")

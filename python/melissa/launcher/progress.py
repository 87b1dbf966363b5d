# SPDX-License-Identifier: BSD-3-Clause
"""The launcher's progress: a live display on a terminal, plain log lines elsewhere."""

from __future__ import annotations

import logging
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

log = logging.getLogger("melissa.progress")

# Seconds between progress lines when no terminal shows a live display.
LINE_INTERVAL = 10.0


class Progress:
    """Simulations done, running and failed, the rate and the time left."""

    def __init__(self, total: int, *, interactive: bool) -> None:
        self.total = total
        self.interactive = interactive
        self.start = time.monotonic()
        self._last_line = 0.0
        self._display: RichProgress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Progress:
        self.start = time.monotonic()
        if self.interactive:
            self._display = RichProgress(
                TextColumn("simulations"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                console=Console(stderr=True), transient=False)
            self._display.__enter__()
            self._task = self._display.add_task("study", total=self.total, detail="")
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        if self._display is not None:
            self._display.__exit__(kind, error, trace)
            self._display = None

    def describe(self, done: int, running: int, failed: int, server: str = "") -> str:
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = self.total - done - failed
        eta = f"{left / rate:.0f} s" if rate > 0 else "?"
        return (f"done {done}/{self.total}, running {running}, failed {failed}, "
                f"{rate * 60:.1f}/min, ETA {eta}" + (f"; {server}" if server else ""))

    def update(self, done: int, running: int, failed: int, server: str = "") -> None:
        """`server`: what the server's figures say (losses, interval widths), shown after."""
        if self._display is not None and self._task is not None:
            self._display.update(self._task, total=self.total, completed=done + failed,
                                 detail=self.describe(done, running, failed, server))
            return
        now = time.monotonic()
        if now - self._last_line >= LINE_INTERVAL or done + failed == self.total:
            self._last_line = now
            log.info("%s", self.describe(done, running, failed, server))

# SPDX-License-Identifier: BSD-3-Clause
"""What both servers do besides their work: tell the launcher what they receive, and notice
when the launcher says the study is over."""

from __future__ import annotations

import logging
import time
from typing import Any

from melissa import _core
from melissa.study_files import StudyFiles, read_json, write_json

log = logging.getLogger("melissa.server")

PROGRESS_INTERVAL = 1.0  # seconds between progress files: the launcher's view of the data flow


class Watch:
    """A server rank's link to the launcher, polled from its main loop."""

    def __init__(self, files: StudyFiles, rank: int, receiver: _core.Receiver,
                 shutdown_timeout: float) -> None:
        self.files, self.rank, self.receiver = files, rank, receiver
        self.shutdown_timeout = shutdown_timeout
        self._last_progress = 0.0
        self._stop_seen: float | None = None

    def report_progress(self) -> None:
        """Rewrites this rank's progress file, at most every PROGRESS_INTERVAL seconds."""
        now = time.monotonic()
        if now - self._last_progress < PROGRESS_INTERVAL:
            return
        self._last_progress = now
        finished = set(self.receiver.finished_simulations())
        counters = self.receiver.counters()
        # Only simulations still in flight: the file stays small however large the study.
        received = {str(sim): c["messages"] for sim, c in counters["simulations"].items()
                    if sim not in finished}
        write_json(self.files.progress(self.rank),
                   {"finished": len(finished), "received": received,
                    "dropped": counters["dropped"]})

    def study_over(self) -> dict[str, Any] | None:
        """The launcher's stop file once every simulation it lists as completed has all of its
        data here (or the shutdown timeout has passed); None before."""
        stop = read_json(self.files.stop)
        if stop is None:
            return None
        now = time.monotonic()
        self._stop_seen = self._stop_seen or now
        missing = set(stop["completed"]) - set(self.receiver.finished_simulations())
        if not missing:
            return dict(stop)
        if now - self._stop_seen > self.shutdown_timeout:
            log.error("simulations %s completed but their data never fully arrived here; what "
                      "did arrive is used", sorted(missing))
            return dict(stop)
        return None

# SPDX-License-Identifier: BSD-3-Clause
"""The files through which the launcher and the server of one study talk, all under
OUTPUT_DIR/.melissa/, and the study's output layout. Small JSON files written atomically: a
shared file system is all the two need, on a laptop as on a cluster."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class StudyFiles:
    def __init__(self, output_dir: str | Path) -> None:
        self.output_dir = Path(output_dir)
        self.private = self.output_dir / ".melissa"
        self.logs = self.output_dir / "logs"

    @property
    def launcher(self) -> Path:
        """The launcher's heartbeat, and the lock that keeps a second one out."""
        return self.private / "launcher.json"

    @property
    def study(self) -> Path:
        """Written by the launcher before the server starts: config, token, parameters."""
        return self.private / "study.json"

    @property
    def server(self) -> Path:
        """Written by server rank 0 once it takes connections: its address."""
        return self.private / "server.json"

    def progress(self, rank: int) -> Path:
        """Rewritten by each server rank every second: what it has received, per simulation."""
        return self.private / f"progress-{rank}.json"

    @property
    def stop(self) -> Path:
        """Written by the launcher once no simulation runs: which ones completed."""
        return self.private / "stop.json"

    @property
    def drawn_parameters(self) -> Path:
        """DrawnParameters: simulations drawn while the study runs, for the servers."""
        return self.private / "parameters.json"

    def losses(self, rank: int) -> Path:
        """SimulationLosses of a training server rank, for an active sampler."""
        return self.private / f"losses-{rank}.json"

    @property
    def sampler(self) -> Path:
        """The launcher's sampler state: what `--resume` draws on from."""
        return self.private / "sampler.json"

    @property
    def parameters(self) -> Path:
        """Every simulation's parameters, status and origin (training studies)."""
        return self.output_dir / "parameters.csv"

    @property
    def results(self) -> Path:
        return self.output_dir / "results.nc"

    @property
    def model(self) -> Path:
        """The trained surrogate of a deep-learning study."""
        return self.output_dir / "model.pt"

    @property
    def predictions(self) -> Path:
        """Held-out fields beside the final model's predictions, for plots."""
        return self.output_dir / "predictions.npz"

    @property
    def metrics(self) -> Path:
        return self.output_dir / "metrics.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.output_dir / "checkpoints" / "training.pt"

    def buffer_checkpoint(self, rank: int) -> Path:
        """A training server rank's replay buffer, beside training.pt."""
        return self.output_dir / "checkpoints" / f"buffer-{rank}.state"

    def statistics_checkpoint(self, rank: int) -> Path:
        """A statistics server rank's accumulators and what it has received."""
        return self.output_dir / "checkpoints" / f"statistics-{rank}.ckpt"

    @property
    def checkpoints(self) -> Path:
        return self.output_dir / "checkpoints"

    def server_log(self, rank: int) -> Path:
        return self.logs / f"server-{rank}.log"

    def simulation_log(self, simulation_id: int, stream: str) -> Path:
        return self.logs / "simulations" / f"simulation-{simulation_id}.{stream}"

    def create(self) -> None:
        for directory in (self.private, self.logs / "simulations"):
            directory.mkdir(parents=True, exist_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Writes then renames, so that a reader never sees half a file."""
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.",
                                     delete=False) as tmp:
        json.dump(data, tmp)
    os.replace(tmp.name, path)


@contextmanager
def durable_file(path: Path) -> Iterator[IO[bytes]]:
    """A fresh temporary file beside `path` to write to, synced then renamed over `path` when
    the block ends: the previous version stays whole until the new one is, even if the machine
    stops, and two writers never share a temporary file. On failure (a full disk, say) the
    temporary file is removed and the error raised: nothing half-written is left behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.",
                                     delete=False) as tmp:
        try:
            yield tmp
            tmp.flush()
            os.fsync(tmp.fileno())
        except BaseException:
            tmp.close()
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself
    finally:
        os.close(directory)


def write_durably(path: Path, data: bytes) -> None:
    """`data` into `path`, through durable_file."""
    with durable_file(path) as file:
        file.write(data)


def read_json(path: Path) -> Any | None:
    """The file's content, or None while it does not exist."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None

# SPDX-License-Identifier: BSD-3-Clause
"""What the launcher says of a training study's losses: live on the progress display (from the
server ranks' progress files, RankProgress.metrics) and in the summary (from metrics.jsonl)."""

from __future__ import annotations

import json
from pathlib import Path

from melissa.protocol import RankProgress


def live_losses(ranks: list[RankProgress | None]) -> str:
    """Rank 0's figures, e.g. "batch 1200, training loss 0.0123, validation loss 0.0150": the
    ranks train one model in lockstep, and the validation loss is theirs together. The losses
    are those of the last validation (every nb_batches_update batches); empty before training."""
    metrics = ranks[0].metrics if ranks and ranks[0] is not None else {}
    if not metrics.get("batches"):
        return ""
    parts = [f"batch {metrics['batches']}"]
    for key, name in (("train_loss", "training"), ("validation_loss", "validation")):
        if metrics.get(key) is not None:
            parts.append(f"{name} loss {metrics[key]:.3g}")
    return ", ".join(parts)


def final_losses(metrics: Path) -> dict[str, float]:
    """The last validation and training losses metrics.jsonl holds ({"validation": ..,
    "training": ..}, either left out where none was computed)."""
    if not metrics.exists():
        return {}
    losses: dict[str, float] = {}
    for line in reversed(metrics.read_text().splitlines()):
        if not line.strip():
            continue
        figures = json.loads(line)
        for key, name in (("validation_loss", "validation"), ("train_loss", "training")):
            if name not in losses and figures.get(key) is not None:
                losses[name] = figures[key]
        if len(losses) == 2:
            break
    return losses

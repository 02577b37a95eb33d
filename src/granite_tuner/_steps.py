"""Optimizer steps per epoch: one computation for the local trainer and the CLI's progress bar.

No torch here, so the CLI can size its progress bar before the trainer is imported.
"""

from __future__ import annotations

import math

__all__ = ["steps_per_epoch"]


def steps_per_epoch(examples: int, batch_size: int, accumulate_steps: int) -> int:
    """Optimizer steps in one epoch: batches (the last one may be short), then one step per
    `accumulate_steps` batches (a last, partial group still steps)."""
    batches = math.ceil(examples / batch_size)
    return math.ceil(batches / accumulate_steps)

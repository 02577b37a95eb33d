"""Steps per epoch: the one computation the trainer and the CLI's progress bar share."""

from __future__ import annotations

import pytest

from granite_tuner._steps import steps_per_epoch


@pytest.mark.parametrize(
    ("examples", "batch_size", "accumulate_steps", "steps"),
    [
        (16, 8, 1, 2),
        (17, 8, 1, 3),  # a short last batch is still a batch
        (17, 8, 2, 2),  # three batches, two accumulated per step: the partial group steps too
        (64, 8, 4, 2),
        (1, 8, 4, 1),
    ],
)
def test_steps_per_epoch(examples: int, batch_size: int, accumulate_steps: int, steps: int) -> None:
    assert steps_per_epoch(examples, batch_size, accumulate_steps) == steps

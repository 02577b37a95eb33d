"""Holding out part of a training set for validation: stratified by label, seeded, repeatable.

A small classification set split at random can leave the validation part lopsided (or without
a label at all), and then "the best epoch" is chosen on a skewed measure. So each label gives
the same share of its examples, rounded so that the whole comes to `round(share * n)`; the
examples drawn depend only on the data, the share and the seed, never on the process (no
global random state, no hash randomisation), and every label keeps at least one example for
training.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TypeVar

from granite_tuner.data import Example
from granite_tuner.errors import ConfigurationError

__all__ = ["stratified_split"]

_E = TypeVar("_E", bound=Example)


def stratified_split(
    examples: Sequence[_E], share: float, *, seed: int = 0, stratify: bool = True
) -> tuple[list[_E], list[_E]]:
    """(training, validation): `share` of the examples held out, the same share of each label.

    With `stratify=False` (free-text outputs, where every output is its own "label") the
    validation part is a plain seeded random sample. Both parts keep the original order.
    Raises `ConfigurationError` when `share` is not between 0 and 1 or leaves a part empty.
    """
    if not 0 < share < 1:
        raise ConfigurationError(
            f"validation_split={share!r} must be a share between 0 and 1 (e.g. 0.2)."
        )
    total = len(examples)
    wanted = round(share * total)
    if wanted < 1 or wanted >= total:
        raise ConfigurationError(
            f"validation_split={share} of {total} examples leaves "
            f"{'no validation' if wanted < 1 else 'no training'} examples; give more data, "
            "a different share, or validation_data."
        )
    rng = random.Random(f"granite-tuner-split:{seed}")  # noqa: S311  (not crypto)
    groups: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        groups.setdefault(example.output if stratify else "", []).append(index)
    keys = sorted(groups)
    # Largest remainder: each label's exact share, floored, then the leftover places go to the
    # labels with the largest fractions (ties broken by label, so the result is repeatable).
    exact = {key: share * len(groups[key]) for key in keys}
    counts = {key: math.floor(exact[key]) for key in keys}
    by_remainder = sorted(keys, key=lambda key: (-(exact[key] - counts[key]), key))
    for key in by_remainder[: wanted - sum(counts.values())]:
        counts[key] += 1
    held: set[int] = set()
    for key in keys:
        members = list(groups[key])
        rng.shuffle(members)
        take = min(counts[key], len(members) - 1) if len(keys) > 1 else counts[key]
        held.update(members[:take])
    training = [e for i, e in enumerate(examples) if i not in held]
    validation = [e for i, e in enumerate(examples) if i in held]
    return training, validation

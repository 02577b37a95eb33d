"""The example model: `Example`, `LabelledSet`, and what watsonx.ai accepts as a training set.

Why a module of its own: every other part of `granite_tuner.data` (and the backends, the
verbs and the evaluator) speaks in these types, so they sit at the bottom. It imports nothing
from the rest of the package.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from granite_tuner import _html
from granite_tuner.errors import DataProblem

Purpose = Literal["training", "evaluation", "validation"]
DataFormat = Literal["auto", "json", "jsonl", "csv"]


@dataclass(frozen=True)
class TrainingLimits:
    """What watsonx.ai accepts as a prompt-tuning training set (protocol §6)."""

    min_examples: int = 50
    max_examples: int = 10_000
    # "200 MB" read as 200 * 10**6 bytes, the stricter reading: better refused here than there.
    max_file_bytes: int = 200_000_000


TRAINING_LIMITS = TrainingLimits()

_SHOWN = 10  # labels named in a repr
_SHOWN_EXAMPLES = 3  # examples shown in the HTML view


def _shown_labels(counts: dict[str, int]) -> str:
    shown = dict(list(counts.items())[:_SHOWN])
    return repr(shown)[:-1] + (", …}" if len(counts) > _SHOWN else "}")


class Example(BaseModel):
    """One labelled example: the text the model reads and the text it should answer."""

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    input: str
    output: str


class LabelledSet(BaseModel):
    """A checked set of examples, for training or as an evaluation test set.

    Built by `load_examples`; `warnings` holds its non-fatal findings. Iterating yields the
    examples.
    """

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    examples: tuple[Example, ...]
    source: str | None = None
    warnings: tuple[DataProblem, ...] = ()

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:  # type: ignore[override]  # examples, not fields
        return iter(self.examples)

    def label_counts(self) -> dict[str, int]:
        """How many examples have each output, most frequent first."""
        return dict(Counter(example.output for example in self.examples).most_common())

    def to_jsonl(self) -> bytes:
        """The set as UTF-8 JSON Lines, one `{"input", "output"}` object per line (§6)."""
        return "".join(
            json.dumps({"input": e.input, "output": e.output}, ensure_ascii=False) + "\n"
            for e in self.examples
        ).encode("utf-8")

    def __repr__(self) -> str:
        return (
            f"LabelledSet(examples={len(self.examples)}, source={self.source!r}, "
            f"labels={_shown_labels(self.label_counts())}, warnings={len(self.warnings)})"
        )

    def __str__(self) -> str:
        return repr(self)

    def _repr_html_(self) -> str:
        """The data check at a glance, for Jupyter: size, labels, warnings, a few examples."""
        counts = self.label_counts()
        total = len(self.examples) or 1
        labels = _html.grid(
            ["label", "examples", "share"],
            [(label, n, f"{n / total:.0%}") for label, n in list(counts.items())[:_SHOWN]],
        )
        more = len(counts) - _SHOWN
        parts: list[_html.Html | str] = [
            _html.fields([("examples", len(self.examples)), ("source", self.source)]),
            labels,
        ]
        if more > 0:
            parts.append(f"… and {more} more labels")
        if self.warnings:
            parts.append(
                _html.block(
                    f"{len(self.warnings)} warning(s)",
                    _html.grid(
                        ["line", "check", "message"],
                        [(w.line or "", w.code, w.message) for w in self.warnings],
                    ),
                )
            )
        else:
            parts.append("No warnings: the data passed every check.")
        first = [(e.input, e.output) for e in self.examples[:_SHOWN_EXAMPLES]]
        parts.append(_html.block("First examples", _html.grid(["input", "output"], first)))
        return str(_html.block("Labelled set", *parts))

    def content_hash(self) -> str:
        """SHA-256 (hex) of `to_jsonl()`: equal sets give equal hashes, so uploads can be reused."""
        return hashlib.sha256(self.to_jsonl()).hexdigest()

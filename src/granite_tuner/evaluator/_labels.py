"""Labels: the known labels given by the caller, and how answers are parsed into them.

Why a module of its own: the label vocabulary comes from the caller, from the data before the
run, or is learned as a lazy input is read; which parser follows from that choice. Imports
nothing from this package.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeAlias

from granite_tuner.errors import ConfigurationError
from granite_tuner.metrics import LabelParser, TokenLabelParser

#: How answers become labels: a parser, a mapping of words to labels, or None (the default).
LabelParserSpec: TypeAlias = LabelParser | Mapping[str, str] | Callable[[str], str | None] | None


def _check_labels(labels: Sequence[str] | None) -> tuple[str, ...] | None:
    if labels is None:
        return None
    if isinstance(labels, str) or not all(isinstance(label, str) and label for label in labels):
        raise ConfigurationError(
            f"labels={labels!r}: give a list of non-empty strings, e.g. ['0', '1']."
        )
    if not labels:
        raise ConfigurationError("labels=[]: give the known labels, or None to use the data's.")
    return tuple(dict.fromkeys(labels))


def _parsers(
    spec: LabelParserSpec,
    labels: tuple[str, ...] | None,
    known_labels: list[str] | None,
) -> tuple[TokenLabelParser | None, Callable[[str], str | None], bool]:
    """(token parser or None, the parser to call, whether labels are learned as read)."""
    if spec is None or isinstance(spec, Mapping):
        vocabulary = labels if labels is not None else known_labels
        parser = TokenLabelParser(vocabulary or (), aliases=spec)
        return parser, parser, vocabulary is None
    return None, spec, False  # the caller's parser, used as it is

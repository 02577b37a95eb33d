"""Validation rules: the call's arguments, each record, and the set as a whole.

Why a module of its own: what makes an example valid (text fields, numbers read as labels)
and what is worth a warning (duplicates, class imbalance, inputs likely to be truncated) is
the policy part of `load_examples`, kept apart from how records are read. It imports
`_model` and `_report` from this package.
"""

from __future__ import annotations

import json
import math
import numbers
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from granite_tuner.data._model import TRAINING_LIMITS, Example, Purpose
from granite_tuner.data._report import (
    _REPORTED,
    _json_kind,
    _names,
    _plural,
    _Record,
    _Report,
    _verb,
)
from granite_tuner.errors import ConfigurationError

_CHARS_PER_TOKEN = 4  # rough estimate for English text; the real count depends on the tokenizer
_MAX_IMBALANCE_RATIO = 3.0
_MIN_CLASS_SHARE = 0.05
_MAX_LABELS = 10  # IBM's advice for classification


# --- arguments -----------------------------------------------------------------------------------


def _check_arguments(
    purpose: str, max_input_tokens: int | None, fmt: str, input_field: str, output_field: str
) -> None:
    """Mistakes in the call itself (not in the data) are configuration errors."""
    if purpose not in ("training", "evaluation", "validation"):
        raise ConfigurationError(
            f"purpose={purpose!r}: use 'training', 'evaluation' or 'validation'."
        )
    if fmt not in ("auto", "json", "jsonl", "csv"):
        raise ConfigurationError(f"format={fmt!r}: use 'auto', 'json', 'jsonl' or 'csv'.")
    if max_input_tokens is not None and (
        isinstance(max_input_tokens, bool) or not isinstance(max_input_tokens, int)
    ):
        raise ConfigurationError(f"max_input_tokens={max_input_tokens!r}: give a whole number.")
    if max_input_tokens is not None and max_input_tokens < 1:
        raise ConfigurationError(f"max_input_tokens={max_input_tokens!r}: give a number >= 1.")
    if not input_field or not output_field or input_field == output_field:
        raise ConfigurationError(
            f"input_field={input_field!r}, output_field={output_field!r}: "
            "give two different, non-empty names."
        )


# --- per-example checks ------------------------------------------------------------------------


def _check_record(record: _Record, report: _Report, fields: tuple[str, str]) -> Example | None:
    """The record as an Example, or None after reporting what is wrong with it."""
    value = record.value
    if value is _REPORTED:
        return None
    prefix = f"item {record.item}: " if record.item is not None else ""
    if type(value) is not dict and not isinstance(value, Mapping):  # fast path: a dict
        shape = f"{{{json.dumps(fields[0])}: ..., {json.dumps(fields[1])}: ...}}"
        report.error(
            "not_an_object",
            f"{prefix}expected an example object like {shape}, found {_json_kind(value)}.",
            line=record.line,
        )
        return None
    texts: list[str] = []
    for name in fields:
        text = _text_field(value, name, fields)
        if isinstance(text, _Problem):
            report.error(text.code, prefix + text.message, line=record.line, field=name)
        else:
            if not isinstance(value[name], str):
                report.converted.append(record.line)
            texts.append(text)
    if len(value) > len(texts):
        unknown = [str(key) for key in value if key not in fields]
        if unknown:
            report.unknown_keys.update(unknown)
            if report.first_unknown_line is None:
                report.first_unknown_line = record.line
    if len(texts) != len(fields):
        return None
    return Example(input=texts[0], output=texts[1])


@dataclass(frozen=True)
class _Problem:
    code: str
    message: str


def _text_field(mapping: Mapping[Any, Any], name: str, fields: tuple[str, str]) -> str | _Problem:
    """The string under `name` (an unambiguous number converted to one), or what is wrong."""
    if name not in mapping:
        return _Problem("missing_field", _missing_message(mapping, name, fields))
    value = mapping[name]
    if isinstance(value, str):
        if not value.strip():
            return _Problem(
                "empty_value",
                f"{name!r} is {'empty' if not value else 'only whitespace'}; give it text.",
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return _Problem(
                "invalid_text",
                f"{name!r} contains a lone surrogate (an invalid \\ud800-\\udfff escape); "
                "fix the text.",
            )
        return value
    label = _as_label(value)
    if label is not None:
        return label
    return _Problem("wrong_type", _wrong_type_message(name, value))


def _as_label(value: object) -> str | None:
    """An int, or a float with an integral value, as text; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return None


def _missing_message(mapping: Mapping[Any, Any], name: str, fields: tuple[str, str]) -> str:
    keys = [str(k) for k in mapping]
    message = f"{name!r} is missing; every example needs {_names(list(fields))}"
    others = [k for k in keys if k not in fields]
    if keys:
        message += f" (found {', '.join(repr(k) for k in keys)})"
    if len(others) == 1:
        argument = "input_field" if name == fields[0] else "output_field"
        message += f"; if {others[0]!r} is the {name}, pass {argument}={others[0]!r}"
    return message + "."


def _wrong_type_message(name: str, value: object) -> str:
    if value is None:
        return f"{name!r} is null (or an empty cell); give it text."
    if isinstance(value, bool):
        return (
            f"{name!r} is the boolean {json.dumps(value)}; write the label as a string, "
            f'e.g. "{json.dumps(value)}" or "{int(value)}".'
        )
    if isinstance(value, float):
        if math.isnan(value):
            return f"{name!r} is NaN (an empty cell?); give it text."
        return (
            f'{name!r} is the number {value!r}; write it as a string (e.g. "{value!r}") '
            "so the label is exactly the text you mean."
        )
    if isinstance(value, list | tuple):
        return f"{name!r} is a list; give one string (one example per output)."
    if isinstance(value, Mapping):
        return f"{name!r} is an object; give one string."
    return f"{name!r} is a {type(value).__name__}; give it text."


# --- whole-set checks --------------------------------------------------------------------------


def _check_count(count: int, report: _Report, purpose: Purpose) -> None:
    limits = TRAINING_LIMITS
    if purpose != "training":  # evaluation and validation sets have no size limits
        if count == 0:
            report.error(
                "no_examples", f"there are no examples; an {purpose} set needs at least 1."
            )
        return
    bounds = f"prompt tuning on watsonx.ai needs {limits.min_examples:,} to {limits.max_examples:,}"
    if count < limits.min_examples:
        report.error(
            "too_few_examples",
            f"only {_plural(count, 'example')}; {bounds} (100 to 1,000 recommended). Add examples.",
        )
    elif count > limits.max_examples:
        report.error(
            "too_many_examples",
            f"{_plural(count, 'example')}; {bounds}. Keep at most {limits.max_examples:,} "
            "(e.g. a random sample).",
        )


def _warn_duplicates(
    examples: Sequence[Example], lines: Sequence[int | None], report: _Report
) -> None:
    seen: dict[str, dict[str, int]] = {}  # input -> output -> index of its first example
    repeated: list[int | None] = []
    # (index of an example, index of an earlier one with the same input and another output)
    conflicts: list[tuple[int, int]] = []
    conflicting_inputs: set[str] = set()
    for index, example in enumerate(examples):
        outputs = seen.setdefault(example.input, {})
        if example.output in outputs:
            repeated.append(lines[index])
            continue
        if outputs:
            conflicts.append((index, next(iter(outputs.values()))))
            conflicting_inputs.add(example.input)
        outputs[example.output] = index
    if repeated:
        report.warn(
            "duplicate_examples",
            f"{_plural(len(repeated), 'example')} {_verb(len(repeated), 'repeats', 'repeat')} "
            f"an earlier one exactly (at "
            f"{report.places(repeated)}); repeats weigh more in training, so remove them unless "
            "that is intended.",
            line=repeated[0],
        )
    if conflicts:
        index, earlier = conflicts[0]
        first = (
            f"{report.unit} {lines[index]} says {examples[index].output!r} where "
            f"{report.unit} {lines[earlier]} says {examples[earlier].output!r}"
        )
        report.warn(
            "conflicting_duplicates",
            f"{_plural(len(conflicting_inputs), 'input')} "
            f"{_verb(len(conflicting_inputs), 'appears', 'appear')} with different outputs (e.g. "
            f"{first}); the model cannot learn both answers, so these labels are probably wrong. "
            "Fix or remove them.",
            line=lines[index],
        )


def _warn_labels(examples: Sequence[Example], report: _Report) -> None:
    counts = Counter(example.output for example in examples).most_common()
    if not counts:
        return
    shown = ", ".join(f"{label!r}: {n:,}" for label, n in counts[:_MAX_LABELS])
    if len(counts) > _MAX_LABELS:
        shown += f", … ({len(counts) - _MAX_LABELS} more)"
        report.warn(
            "too_many_labels",
            f"{len(counts)} distinct outputs for a classification task; IBM advises at most "
            f"{_MAX_LABELS} labels ({shown}). Merge labels, or use a generation task.",
        )
    if len(counts) == 1:
        report.warn(
            "single_label",
            f"every example has the output {counts[0][0]!r}; a classifier needs at least two "
            "classes.",
        )
        return
    largest, smallest = counts[0][1], counts[-1][1]
    # With more than _MAX_LABELS classes (warned above) even a balanced set can have classes
    # under 5%, so then only the largest/smallest ratio counts.
    too_small = len(counts) <= _MAX_LABELS and smallest / len(examples) < _MIN_CLASS_SHARE
    if largest / smallest > _MAX_IMBALANCE_RATIO or too_small:
        report.warn(
            "class_imbalance",
            f"the classes are imbalanced ({shown}; largest/smallest = {largest / smallest:.1f}); "
            f"the model may learn to answer {counts[0][0]!r} too often. Balance the classes "
            "(more examples of the small ones, or fewer of the large).",
        )


def _warn_long_inputs(
    examples: Sequence[Example], lines: Sequence[int | None], max_input_tokens: int, report: _Report
) -> None:
    limit_chars = max_input_tokens * _CHARS_PER_TOKEN
    long = [index for index, example in enumerate(examples) if len(example.input) > limit_chars]
    if not long:
        return
    longest = max(long, key=lambda index: len(examples[index].input))
    estimate = math.ceil(len(examples[longest].input) / _CHARS_PER_TOKEN)
    report.warn(
        "input_may_be_truncated",
        f"{_plural(len(long), 'input')} {_verb(len(long), 'is', 'are')} probably longer than "
        f"max_input_tokens="
        f"{max_input_tokens} and would be truncated; the longest, at {report.unit} "
        f"{lines[longest]}, is about {estimate:,} tokens (an estimate at ~{_CHARS_PER_TOKEN} "
        "characters per token; the real count depends on the tokenizer). Shorten them or raise "
        "max_input_tokens.",
        line=lines[longest],
    )

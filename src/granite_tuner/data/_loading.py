"""`load_examples` and `aload_examples`: read a source, check it, return a `LabelledSet`.

Why a module of its own: this is the pipeline that ties the others together (open the source
with `_reading`, check each record and the whole set with `_rules`, collect everything in a
`_report._Report`), and the only place that decides the order of those steps. It imports
every other module of this package; none of them imports it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from granite_tuner._secrets import get_logger
from granite_tuner.data._model import DataFormat, Example, LabelledSet, Purpose
from granite_tuner.data._reading import _open
from granite_tuner.data._report import _data_error
from granite_tuner.data._rules import (
    _check_arguments,
    _check_count,
    _check_record,
    _warn_duplicates,
    _warn_labels,
    _warn_long_inputs,
)

if TYPE_CHECKING:
    import pandas as pd

_logger = get_logger("granite_tuner.data")


def load_examples(
    source: str | os.PathLike[str] | Sequence[Mapping[str, Any] | Example] | pd.DataFrame,
    *,
    purpose: Purpose = "training",
    task_id: str | None = None,
    max_input_tokens: int | None = None,
    format: DataFormat = "auto",
    input_field: str = "input",
    output_field: str = "output",
) -> LabelledSet:
    """Read and check labelled examples; raise `InvalidDataError` listing every problem.

    `source` is a path to a `.jsonl`, `.json` (array of objects) or `.csv` file, a sequence of
    mappings, or a pandas DataFrame. `purpose="training"` enforces watsonx.ai's limits
    (`TRAINING_LIMITS`); an evaluation or validation set needs at least one example.
    `task_id="classification"` adds the label checks, `max_input_tokens` a warning for inputs
    likely to be truncated.
    `format` overrides the file suffix; `input_field`/`output_field` name the keys or columns.
    Reads the whole file synchronously: from async code use `aload_examples`.
    """
    _check_arguments(purpose, max_input_tokens, format, input_field, output_field)
    fields = (input_field, output_field)
    report, records = _open(source, purpose, format, fields)
    examples: list[Example] = []
    lines: list[int | None] = []
    count = 0
    for record in records:
        count += 1
        example = _check_record(record, report, fields)
        if example is not None:
            examples.append(example)
            lines.append(record.line)
        if report.full:
            break
    if not report.stopped:
        _check_count(count, report, purpose)
    if report.problems:
        raise _data_error(report, purpose)
    report.finish_record_warnings()
    _warn_duplicates(examples, lines, report)
    if task_id == "classification":
        _warn_labels(examples, report)
    if max_input_tokens is not None:
        _warn_long_inputs(examples, lines, max_input_tokens, report)
    for warning in report.warnings:
        _logger.warning("%s", warning)
    return LabelledSet(
        examples=tuple(examples), source=report.source, warnings=tuple(report.warnings)
    )


async def aload_examples(
    source: str | os.PathLike[str] | Sequence[Mapping[str, Any] | Example] | pd.DataFrame,
    *,
    purpose: Purpose = "training",
    task_id: str | None = None,
    max_input_tokens: int | None = None,
    format: DataFormat = "auto",
    input_field: str = "input",
    output_field: str = "output",
) -> LabelledSet:
    """`load_examples` in a worker thread, so a large file never blocks the event loop."""
    call = functools.partial(
        load_examples,
        source,
        purpose=purpose,
        task_id=task_id,
        max_input_tokens=max_input_tokens,
        format=format,
        input_field=input_field,
        output_field=output_field,
    )
    return await anyio.to_thread.run_sync(call)

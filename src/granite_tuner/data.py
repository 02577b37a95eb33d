"""Labelled example sets: load, check and normalise training and evaluation data.

A prompt-tuning run costs money and hours; a typo in its training file should cost neither.
`load_examples` reads a file (JSONL, JSON array or CSV), a list of dicts or a pandas DataFrame and
checks everything watsonx.ai needs (protocol §6) before anything is uploaded. It either returns a
`LabelledSet` or raises one `InvalidDataError` that lists every problem found (up to a cap), each
with its file, line and field and what to fix. Findings that do not stop a run (duplicates, class
imbalance, inputs likely to be truncated, numbers read as labels, ignored keys) are kept in
`LabelledSet.warnings` and logged on the `granite_tuner.data` logger.

What is uploaded is `LabelledSet.to_jsonl()`, never the original file, so what was checked is
exactly what is sent, whatever format it came in.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import functools
import hashlib
import io
import json
import math
import numbers
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import anyio.to_thread
from pydantic import BaseModel, ConfigDict

from granite_tuner._secrets import get_logger
from granite_tuner.errors import ConfigurationError, DataProblem, InvalidDataError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "TRAINING_LIMITS",
    "DataFormat",
    "Example",
    "LabelledSet",
    "Purpose",
    "TrainingLimits",
    "aload_examples",
    "load_examples",
]

_logger = get_logger(__name__)

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

_MAX_PROBLEMS = 50  # collected before checking stops
_SHOWN_PROBLEMS = 5  # quoted in the error message
_SHOWN_LINES = 3  # line numbers quoted in one aggregated warning
_CHARS_PER_TOKEN = 4  # rough estimate for English text; the real count depends on the tokenizer
_MAX_IMBALANCE_RATIO = 3.0
_MIN_CLASS_SHARE = 0.05
_MAX_LABELS = 10  # IBM's advice for classification
_SUFFIX_FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_LONE_BRACKETS = frozenset({"[", "]", "],", "{", "}", "},"})


class Example(BaseModel):
    """One labelled example: the text the model reads and the text it should answer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    input: str
    output: str


class LabelledSet(BaseModel):
    """A checked set of examples, for training or as an evaluation test set.

    Built by `load_examples`; `warnings` holds its non-fatal findings. Iterating yields the
    examples.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

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

    def content_hash(self) -> str:
        """SHA-256 (hex) of `to_jsonl()`: equal sets give equal hashes, so uploads can be reused."""
        return hashlib.sha256(self.to_jsonl()).hexdigest()


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


# --- collecting problems -----------------------------------------------------------------------


_REPORTED = object()  # a record whose problem its reader has reported already


@dataclass
class _Record:
    """One raw item of a source and where it was found (1-based line, item or row)."""

    line: int | None
    value: object
    item: int | None = None  # 1-based position in a JSON array, named in messages


@dataclass
class _Report:
    """Problems and warnings found while one source is checked."""

    source: str
    unit: str = "line"  # what `DataProblem.line` counts here: "line", "item" or "row"
    problems: list[DataProblem] = dataclasses.field(default_factory=list)
    warnings: list[DataProblem] = dataclasses.field(default_factory=list)
    stopped: bool = False  # a problem made reading further pointless, or the cap was reached
    converted: list[int | None] = dataclasses.field(default_factory=list)
    unknown_keys: Counter[str] = dataclasses.field(default_factory=Counter)
    first_unknown_line: int | None = None

    @property
    def full(self) -> bool:
        return len(self.problems) >= _MAX_PROBLEMS

    def error(
        self, code: str, message: str, *, line: int | None = None, field: str | None = None
    ) -> None:
        if self.full:
            self.stopped = True
            return
        self.problems.append(
            DataProblem(code=code, message=message, source=self.source, line=line, field=field)
        )
        if self.full:
            self.stopped = True

    def fatal(self, code: str, message: str, *, line: int | None = None) -> None:
        """A problem after which the rest of the source cannot be read."""
        self.error(code, message, line=line)
        self.stopped = True

    def warn(
        self, code: str, message: str, *, line: int | None = None, field: str | None = None
    ) -> None:
        self.warnings.append(
            DataProblem(code=code, message=message, source=self.source, line=line, field=field)
        )

    def places(self, lines: Sequence[int | None]) -> str:
        """'lines 3, 8, 12, …' for the first few of `lines`."""
        known = [str(n) for n in dict.fromkeys(lines) if n is not None]
        if not known:
            return ""
        shown = ", ".join(known[:_SHOWN_LINES]) + (", …" if len(known) > _SHOWN_LINES else "")
        return f"{self.unit}{'s' if len(known) > 1 else ''} {shown}"

    def finish_record_warnings(self) -> None:
        """Turn what was counted per record into one warning each."""
        if self.converted:
            self.warn(
                "converted_number",
                f"{_plural(len(self.converted), 'number')} "
                f'{_verb(len(self.converted), "was", "were")} read as text (e.g. 1 -> "1"), '
                f"at {self.places(self.converted)}; write labels as strings to be sure they are "
                "the text you mean.",
                line=self.converted[0],
            )
        if self.unknown_keys:
            names = ", ".join(repr(k) for k in sorted(self.unknown_keys))
            self.warn(
                "unknown_field",
                f"ignored {names}: only the input and output are used "
                f"(first at {self.places([self.first_unknown_line])}).",
                line=self.first_unknown_line,
            )


def _data_error(report: _Report, purpose: Purpose) -> InvalidDataError:
    problems = report.problems
    count = _plural(len(problems), "problem")
    if report.full:
        count = f"at least {count} (checking stopped there)"
    shown = "\n".join(f"  {p}" for p in problems[:_SHOWN_PROBLEMS])
    more = len(problems) - _SHOWN_PROBLEMS
    rest = f"\n  … and {more} more (all are in InvalidDataError.problems)" if more > 0 else ""
    message = (
        f"The {purpose} data {report.source} cannot be used: {count}.\n{shown}{rest}\n"
        f"Fix {'it' if len(problems) == 1 else 'them'} and load the data again; "
        "nothing was uploaded."
    )
    return InvalidDataError(message, problems=tuple(problems))


def _plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _verb(n: int, singular: str, plural: str) -> str:
    return singular if n == 1 else plural


# --- arguments and sources ---------------------------------------------------------------------


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


def _open(
    source: object, purpose: Purpose, fmt: DataFormat, fields: tuple[str, str]
) -> tuple[_Report, Iterable[_Record]]:
    """The report for `source` and its raw records, whatever kind of source it is."""
    if isinstance(source, str | os.PathLike):
        path = Path(os.fspath(source))
        report = _Report(str(source))
        return report, _records_from_file(path, report, purpose, fmt, fields)
    pandas = sys.modules.get("pandas")  # a DataFrame means pandas is imported already
    if pandas is not None and isinstance(source, pandas.DataFrame):
        report = _Report("<DataFrame>", unit="row")
        return report, _records_from_dataframe(source, report, fields)
    if isinstance(source, Mapping):
        raise ConfigurationError(
            "load_examples() got a single mapping; pass a list of examples, e.g. [{...}, {...}]."
        )
    if isinstance(source, Sequence) and not isinstance(source, bytes | bytearray):
        report = _Report("<list>", unit="item")
        return report, _records_from_sequence(source, fields)
    raise ConfigurationError(
        "load_examples() takes a file path, a list of dicts or a pandas DataFrame, "
        f"not {type(source).__name__}."
    )


def _records_from_sequence(items: Sequence[object], fields: tuple[str, str]) -> Iterator[_Record]:
    for index, item in enumerate(items):
        if isinstance(item, Example):
            yield _Record(index + 1, {fields[0]: item.input, fields[1]: item.output})
        else:
            yield _Record(index + 1, item)


def _records_from_dataframe(
    frame: pd.DataFrame, report: _Report, fields: tuple[str, str]
) -> Iterator[_Record]:
    import pandas as pd  # only reached when the caller passed a DataFrame

    columns = [str(column) for column in frame.columns]
    if not _check_columns(columns, report, fields, "DataFrame column", None):
        return
    for position, row in enumerate(frame.to_dict("records")):
        values = {
            str(key): None if _is_scalar_na(pd, value) else value for key, value in row.items()
        }
        yield _Record(position + 1, values)


def _is_scalar_na(pd: Any, value: object) -> bool:
    """NaN, None, pd.NA and NaT (pandas' ways of saying "empty cell")."""
    if isinstance(value, str | list | tuple | dict):
        return False
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def _check_columns(
    columns: Sequence[str], report: _Report, fields: tuple[str, str], what: str, line: int | None
) -> bool:
    """The header of a table names the input and output exactly once each."""
    missing = [name for name in fields if name not in columns]
    doubled = [name for name in fields if columns.count(name) > 1]
    found = ", ".join(repr(c) for c in columns) or "none"
    if missing:
        hint = ""
        if len(columns) == 1 and any(sep in columns[0] for sep in ";\t|"):
            hint = " The header looks like one column: the file must be separated by commas."
        elif not any(name in columns for name in fields):
            hint = (
                " The first row must be a header naming the columns; or pass input_field=/"
                "output_field= to name the columns you have."
            )
        report.fatal(
            "missing_columns",
            f"{what}{'' if len(missing) == 1 else 's'} {_names(missing)} "
            f"{_verb(len(missing), 'is', 'are')} missing: need "
            f"{_names(list(fields))}, found {found}.{hint}",
            line=line,
        )
        return False
    if doubled:
        report.fatal(
            "duplicate_columns",
            f"{what} {_names(doubled)} appears more than once ({found}); keep one.",
            line=line,
        )
        return False
    return True


def _names(names: Sequence[str]) -> str:
    return " and ".join(repr(n) for n in names)


# --- files -------------------------------------------------------------------------------------


def _records_from_file(
    path: Path, report: _Report, purpose: Purpose, fmt: DataFormat, fields: tuple[str, str]
) -> Iterator[_Record]:
    text = _read_text(path, report, purpose)
    if text is None:
        return
    chosen = _choose_format(path, text, fmt, report, fields)
    if chosen == "jsonl":
        yield from _jsonl_records(text, report)
    elif chosen == "json":
        yield from _json_array_records(text, report)
    elif chosen == "csv":
        yield from _csv_records(text, report, fields)


def _read_text(path: Path, report: _Report, purpose: Purpose) -> str | None:
    """The file's text, or None after reporting why it cannot be used."""
    try:
        if not path.exists():
            report.fatal("file_not_found", _not_found_message(path))
            return None
        if not path.is_file():
            report.fatal("not_a_file", _not_a_file_message(path))
            return None
        size = path.stat().st_size
        limit = TRAINING_LIMITS.max_file_bytes
        if purpose == "training" and size > limit:
            report.fatal(
                "file_too_large",
                f"the file is {size:,} bytes; watsonx.ai accepts training files up to "
                f"{limit:,} bytes ({limit / 1e6:g} MB). Use fewer or shorter examples.",
            )
            return None
        data = path.read_bytes()
    except OSError as exc:
        report.fatal("unreadable", f"cannot read the file: {exc.strerror or exc}.")
        return None
    if not data:
        report.fatal("empty_file", "the file is empty (0 bytes); it needs examples.")
        return None
    text = _decode(data, report)
    if text is not None and text.isspace():
        report.fatal("empty_file", "the file contains only whitespace; it needs examples.")
        return None
    return text


def _not_found_message(path: Path) -> str:
    message = f"no such file: {str(path)!r} (looked in {path.absolute().parent})."
    if str(path).lstrip()[:1] in ("[", "{"):
        message += (
            " This looks like JSON text, not a path: pass the path of the file, or "
            "json.loads() the text and pass the list."
        )
    return message


def _not_a_file_message(path: Path) -> str:
    message = f"{str(path)!r} is not a file"
    if path.is_dir():
        candidates = sorted(
            p.name for p in path.iterdir() if p.suffix.lower() in _SUFFIX_FORMATS and p.is_file()
        )
        message += " but a folder; give the path of the data file in it"
        if candidates:
            message += f" (e.g. {', '.join(candidates[:3])})"
    return message + "."


def _decode(data: bytes, report: _Report) -> str | None:
    """UTF-8 text without a BOM, or None after saying which byte is wrong and how to fix it."""
    for bom, name in (
        (codecs.BOM_UTF32_LE, "UTF-32"),
        (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16"),
        (codecs.BOM_UTF16_BE, "UTF-16"),
    ):
        if data.startswith(bom):
            report.fatal(
                "not_utf8",
                f"the file is encoded as {name} (it starts with a {name} byte-order mark); "
                "re-save it as UTF-8 (in Excel: 'CSV UTF-8'; in an editor: encoding 'UTF-8').",
            )
            return None
    skipped = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    nul = data.find(b"\x00", skipped)
    if nul >= 0:
        report.fatal(
            "not_utf8",
            f"the file contains NUL bytes (first at byte offset {nul}): it is probably UTF-16 "
            "or a binary file, not UTF-8 text. Re-save it as UTF-8.",
            line=data.count(b"\n", 0, nul) + 1,
        )
        return None
    try:
        return data[skipped:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + skipped
        line_start = data.rfind(b"\n", 0, offset) + 1
        line_end = data.find(b"\n", offset)
        line_end = len(data) if line_end < 0 else line_end
        near = data[max(line_start, offset - 20) : min(line_end, offset + 10)]
        report.fatal(
            "not_utf8",
            f"byte 0x{data[offset]:02X} at byte offset {offset} is not valid UTF-8 (in "
            f"{near.decode('utf-8', 'backslashreplace').strip()}); the file is probably in another "
            "encoding such as Windows-1252 or Latin-1. Re-save it as UTF-8.",
            line=data.count(b"\n", 0, offset) + 1,
        )
        return None


def _choose_format(
    path: Path, text: str, requested: DataFormat, report: _Report, fields: tuple[str, str]
) -> str | None:
    """The format to parse: as requested, else by suffix checked against the content, else sniffed.

    A `.json` file that holds JSON Lines (or a `.jsonl` file holding one array) is read as what
    it holds, with a warning.
    """
    if requested != "auto":
        return requested
    by_suffix = _SUFFIX_FORMATS.get(path.suffix.lower())
    start = _skip_whitespace(text, 0)
    first = text[start : start + 1]
    if by_suffix == "csv":
        return "csv"
    if by_suffix is not None:
        natural = "[" if by_suffix == "json" else "{"
        if first in ("[", "{") and first != natural:
            held = _json_document_kind(text)
            if held is not None and held != by_suffix:
                described = (
                    "JSON Lines (one object per line)" if held == "jsonl" else "a JSON array"
                )
                report.warn(
                    "format_mismatch",
                    f"the file holds {described}, not what its suffix {path.suffix!r} says; it "
                    f"was read as {held}. Rename it to .{held} to match.",
                )
                return held
        return by_suffix
    if first == "[":
        return "json"
    if first == "{":
        return "jsonl"
    end = text.find("\n")
    header = next(csv.reader([text if end < 0 else text[:end]]), [])
    if all(name in (cell.strip() for cell in header) for name in fields):
        return "csv"
    suffix = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
    report.fatal(
        "unknown_format",
        f"cannot tell the format of this file ({suffix}): it is neither "
        "JSON, JSON Lines nor CSV with a header. Name it .jsonl, .json or .csv, or pass "
        "format='jsonl', 'json' or 'csv'.",
    )
    return None


def _json_document_kind(text: str) -> str | None:
    """'json' when `text` is one JSON document, 'jsonl' when several, None when it is broken."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return "jsonl" if exc.msg == "Extra data" else None
    return "json"


def _jsonl_records(text: str, report: _Report) -> Iterator[_Record]:
    for index, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        number = index + 1
        if line.strip() in _LONE_BRACKETS:
            report.fatal(
                "invalid_json",
                f"a line holding only {line.strip()!r}: in JSON Lines each example is one "
                "complete object on one line, but this looks like pretty-printed JSON or an "
                "array. Write one object per line (or name a JSON array file .json).",
                line=number,
            )
            return
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            report.error(
                "invalid_json",
                f"invalid JSON: {exc.msg} (column {exc.colno}).{_jsonl_hint(line, exc)}",
                line=number,
            )
            if report.full:
                return
            continue
        yield _Record(number, value)


def _jsonl_hint(line: str, exc: json.JSONDecodeError) -> str:
    """A likely cause for the common ways a JSON Lines line goes wrong."""
    stripped = line.strip()
    if "double quotes" in exc.msg and "'" in line:
        return ' JSON needs double quotes (") around keys and strings, not single quotes.'
    if exc.msg == "Extra data":
        if stripped.endswith(","):
            return " Remove the comma at the end of the line."
        return " Put one object per line."
    return ""


def _json_array_records(text: str, report: _Report) -> Iterator[_Record]:
    """Items of a top-level JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder()
    position = _skip_whitespace(text, 0)
    if not text.startswith("[", position):
        _report_not_an_array(text, report)
        return
    line, counted_to = 1, 0
    position = _skip_whitespace(text, position + 1)
    if text.startswith("]", position):
        position = _skip_whitespace(text, position + 1)
        _check_trailing(text, position, report)
        return
    index = 0
    while True:
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            hint = " Remove the comma before ']'." if text.startswith("]", position) else ""
            report.fatal(
                "invalid_json",
                f"invalid JSON in item {index + 1}: {exc.msg} (column {exc.colno}).{hint}",
                line=exc.lineno,
            )
            return
        line += text.count("\n", counted_to, position)
        counted_to = position
        index += 1
        yield _Record(line, value, item=index)
        position = _skip_whitespace(text, end)
        if text.startswith(",", position):
            position = _skip_whitespace(text, position + 1)
        elif text.startswith("]", position):
            _check_trailing(text, _skip_whitespace(text, position + 1), report)
            return
        else:
            at = text.count("\n", 0, position) + 1
            found = "the end of the file" if position >= len(text) else repr(text[position])
            report.fatal(
                "invalid_json",
                f"expected ',' or ']' after item {index}, found {found}; "
                "separate items with commas and close the array with ']'.",
                line=at,
            )
            return


def _report_not_an_array(text: str, report: _Report) -> None:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        report.fatal(
            "invalid_json", f"invalid JSON: {exc.msg} (column {exc.colno}).", line=exc.lineno
        )
        return
    report.fatal(
        "not_a_list",
        f"the top level is {_json_kind(value)}, but a JSON file must hold an array of examples: "
        '[{"input": "...", "output": "..."}, ...] (or use JSON Lines: one object per line).',
        line=1,
    )


def _check_trailing(text: str, position: int, report: _Report) -> None:
    if position < len(text):
        report.fatal(
            "invalid_json",
            f"unexpected text after the closing ']' of the array "
            f"({text[position : position + 20]!r}); remove it.",
            line=text.count("\n", 0, position) + 1,
        )


def _skip_whitespace(text: str, position: int) -> int:
    match = _WHITESPACE.match(text, position)
    return match.end() if match else position


def _csv_records(text: str, report: _Report, fields: tuple[str, str]) -> Iterator[_Record]:
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    previous_end = 0
    try:
        for row in reader:
            start, previous_end = previous_end + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                if not _check_columns(header, report, fields, "column", start):
                    return
                continue
            if len(row) < len(header):
                missing = [name for name in header[len(row) :] if name in fields]
                which = f"; {_names(missing)} {_verb(len(missing), 'is', 'are')} missing"
                report.error(
                    "csv_missing_cell",
                    f"the row has {_plural(len(row), 'cell')} but the header has "
                    f"{len(header)} columns{which if missing else ''}. Fill in every column.",
                    line=start,
                    field=missing[0] if missing else None,
                )
                yield _Record(start, _REPORTED)
            elif len(row) > len(header) and any(cell.strip() for cell in row[len(header) :]):
                report.error(
                    "csv_extra_cell",
                    f"the row has {len(row)} cells but the header has {len(header)} columns; "
                    'put text that contains commas in double quotes ("...").',
                    line=start,
                )
                yield _Record(start, _REPORTED)
            else:
                yield _Record(start, dict(zip(header, row, strict=False)))
            if report.full:
                return
    except csv.Error as exc:
        report.fatal(
            "invalid_csv",
            f"malformed CSV in the row starting here: {exc}. Check its quotes: a quoted cell "
            'must be closed, and a quote inside it written twice ("").',
            line=previous_end + 1,
        )
    if header is None and not report.stopped:
        report.fatal("empty_file", "the CSV file has no header and no rows.")


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


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    kinds: list[tuple[type | tuple[type, ...], str]] = [
        (bool, "a boolean"),
        (str, "a string"),
        ((int, float), "a number"),
        ((list, tuple), "a list"),
        (Mapping, "an object"),
    ]
    for kind, name in kinds:
        if isinstance(value, kind):
            return name
    return f"a {type(value).__name__}"


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

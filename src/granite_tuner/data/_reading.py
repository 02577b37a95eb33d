"""Reading formats: files (JSON Lines, JSON array, CSV), lists and DataFrames into raw records.

Why a module of its own: turning bytes into records, with a precise line and a hint for every
way a file can be malformed, is most of the work and has nothing to do with what a valid
example is (that is `_rules`). It imports `_model` and `_report` from this package.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from granite_tuner.data._model import TRAINING_LIMITS, DataFormat, Example, Purpose
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

if TYPE_CHECKING:
    import pandas as pd


_SUFFIX_FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_LONE_BRACKETS = frozenset({"[", "]", "],", "{", "}", "},"})


# --- sources -------------------------------------------------------------------------------------


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


# --- files ---------------------------------------------------------------------------------------


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

"""Loading and checking labelled examples: every bad input is a typed error saying what to fix."""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import granite_tuner.data as data_module
import granite_tuner.data._loading as loading_module
import granite_tuner.data._reading as reading_module
from granite_tuner import ConfigurationError, DataProblem, InvalidDataError
from granite_tuner.data import (
    TRAINING_LIMITS,
    Example,
    LabelledSet,
    TrainingLimits,
    aload_examples,
    load_examples,
)

Row = dict[str, object]


def rows(n: int = 60, labels: tuple[str, ...] = ("0", "1")) -> list[Row]:
    """`n` distinct, balanced examples."""
    return [{"input": f"review number {i}", "output": labels[i % len(labels)]} for i in range(n)]


def jsonl(items: list[Row]) -> str:
    return "".join(json.dumps(item) + "\n" for item in items)


def jsonl_with(index: int, line: str, n: int = 60) -> str:
    """Good JSONL whose 0-based line `index` is replaced by `line` (file line index + 1)."""
    lines = jsonl(rows(n)).splitlines()
    lines[index] = line
    return "\n".join(lines) + "\n"


def csv_text(n: int = 60, header: str = "input,output") -> str:
    return header + "\n" + "".join(f"review number {i},{i % 2}\n" for i in range(n))


def codes(problems: tuple[DataProblem, ...]) -> set[str]:
    return {p.code for p in problems}


# --- bad inputs --------------------------------------------------------------------------------

MISSING = object()  # do not create the file
FOLDER = object()  # create a folder of that name


@dataclass(frozen=True)
class Bad:
    id: str
    name: str
    content: str | bytes | object
    code: str
    needles: tuple[str, ...]
    line: int | None = None
    purpose: data_module.Purpose = "training"


BAD_CASES = [
    Bad("empty file", "train.jsonl", b"", "empty_file", ("empty",)),
    Bad("whitespace only", "train.jsonl", " \n\n\t \n", "empty_file", ("only whitespace",)),
    Bad("missing file", "missing.jsonl", MISSING, "file_not_found", ("no such file",)),
    Bad("directory", "folder.jsonl", FOLDER, "not_a_file", ("folder",)),
    Bad(
        "invalid json at line 7",
        "train.jsonl",
        jsonl_with(6, '{"input": "x", "output": }'),
        "invalid_json",
        (":7:", "invalid JSON", "column"),
        line=7,
    ),
    Bad(
        "single quotes",
        "train.jsonl",
        jsonl_with(2, "{'input': 'x', 'output': '1'}"),
        "invalid_json",
        ("double quotes",),
        line=3,
    ),
    Bad(
        "two objects on a line",
        "train.jsonl",
        jsonl_with(4, '{"input": "a", "output": "1"}, {"input": "b", "output": "0"}'),
        "invalid_json",
        ("Put one object per line",),
        line=5,
    ),
    Bad(
        "comma at end of line",
        "train.jsonl",
        jsonl_with(4, '{"input": "a", "output": "1"},'),
        "invalid_json",
        ("Remove the comma at the end of the line",),
        line=5,
    ),
    Bad(
        "pretty-printed jsonl",
        "train.jsonl",
        "".join(json.dumps(r, indent=2) + "\n" for r in rows()),
        "invalid_json",
        ("a line holding only '{'", "one complete object on one line"),
        line=1,
    ),
    Bad(
        "non-object line",
        "train.jsonl",
        jsonl_with(2, '["a", "b"]'),
        "not_an_object",
        ("a list", '"input"'),
        line=3,
    ),
    Bad(
        "array of non-objects",
        "train.json",
        "[1, 2, 3]",
        "not_an_object",
        ("item 2: expected an example object", "a number"),
        line=1,
    ),
    Bad(
        "top-level object", "train.json", '{"input": "a", "output": "b"}', "not_a_list", ("array",)
    ),
    Bad(
        "missing input",
        "train.jsonl",
        jsonl_with(4, '{"output": "1"}'),
        "missing_field",
        ("'input' is missing",),
        line=5,
    ),
    Bad(
        "missing output",
        "train.jsonl",
        jsonl_with(4, '{"input": "x"}'),
        "missing_field",
        ("'output' is missing",),
        line=5,
    ),
    Bad(
        "other key name",
        "train.jsonl",
        jsonl_with(0, '{"text": "x", "output": "1"}'),
        "missing_field",
        ("input_field='text'",),
        line=1,
    ),
    Bad(
        "output is a list",
        "train.jsonl",
        jsonl_with(9, '{"input": "x", "output": ["1", "0"]}'),
        "wrong_type",
        ("'output' is a list", "one string"),
        line=10,
    ),
    Bad(
        "output is an object",
        "train.jsonl",
        jsonl_with(9, '{"input": "x", "output": {"label": "1"}}'),
        "wrong_type",
        ("'output' is an object",),
        line=10,
    ),
    Bad(
        "output null",
        "train.jsonl",
        jsonl_with(1, '{"input": "x", "output": null}'),
        "wrong_type",
        ("null", "give it text"),
        line=2,
    ),
    Bad(
        "boolean label",
        "train.jsonl",
        jsonl_with(1, '{"input": "x", "output": true}'),
        "wrong_type",
        ("boolean", '"true"'),
        line=2,
    ),
    Bad(
        "fractional number label",
        "train.jsonl",
        jsonl_with(1, '{"input": "x", "output": 0.5}'),
        "wrong_type",
        ("0.5", "string"),
        line=2,
    ),
    Bad(
        "NaN label",
        "train.jsonl",
        jsonl_with(1, '{"input": "x", "output": NaN}'),
        "wrong_type",
        ("NaN",),
        line=2,
    ),
    Bad(
        "empty input",
        "train.jsonl",
        jsonl_with(3, '{"input": "", "output": "1"}'),
        "empty_value",
        ("'input' is empty",),
        line=4,
    ),
    Bad(
        "whitespace output",
        "train.jsonl",
        jsonl_with(3, '{"input": "x", "output": "  \\n "}'),
        "empty_value",
        ("'output' is only whitespace",),
        line=4,
    ),
    Bad(
        "lone surrogate",
        "train.jsonl",
        jsonl_with(3, '{"input": "bad \\ud800 text", "output": "1"}'),
        "invalid_text",
        ("surrogate",),
        line=4,
    ),
    Bad("too few", "train.jsonl", jsonl(rows(49)), "too_few_examples", ("49", "50", "10,000")),
    Bad("too many", "train.jsonl", jsonl(rows(10_001)), "too_many_examples", ("10,001", "10,000")),
    Bad(
        "latin-1 bytes",
        "train.csv",
        csv_text(3).encode() + "café crème,1\n".encode("latin-1"),
        "not_utf8",
        ("0xE9", "byte offset", "Re-save it as UTF-8"),
        line=5,
    ),
    Bad("utf-16 file", "train.jsonl", jsonl(rows()).encode("utf-16"), "not_utf8", ("UTF-16",)),
    Bad(
        "utf-16 without BOM",
        "train.jsonl",
        jsonl(rows()).encode("utf-16-le"),
        "not_utf8",
        ("NUL bytes",),
    ),
    Bad(
        "bad csv header",
        "train.csv",
        csv_text(header="text,label"),
        "missing_columns",
        ("'input'", "'output'", "found 'text', 'label'"),
        line=1,
    ),
    Bad(
        "semicolon csv",
        "train.csv",
        csv_text(header="input;output").replace(",", ";"),
        "missing_columns",
        ("separated by commas",),
    ),
    Bad(
        "csv duplicate column",
        "train.csv",
        csv_text(header="input,output,output"),
        "duplicate_columns",
        ("more than once",),
    ),
    Bad(
        "csv missing cell",
        "train.csv",
        csv_text() + "a review with no label\n",
        "csv_missing_cell",
        ("'output' is missing",),
        line=62,
    ),
    Bad(
        "csv unquoted comma",
        "train.csv",
        csv_text() + "great dog, happy owner,1\n",
        "csv_extra_cell",
        ("double quotes",),
        line=62,
    ),
    Bad(
        "csv unclosed quote",
        "train.csv",
        csv_text().replace("review number 8,", '"review number 8,'),
        "invalid_csv",
        ("quotes", "unexpected end of data"),
        line=10,
    ),
    Bad(
        "unknown suffix with garbage",
        "train.txt",
        "hello there\nthis is not data\n",
        "unknown_format",
        ("'.txt'", "format="),
    ),
    Bad(
        "json with trailing garbage",
        "train.json",
        json.dumps(rows()) + "\n]}",
        "invalid_json",
        ("after the closing ']'",),
        line=2,
    ),
    Bad(
        "json array not closed",
        "train.json",
        json.dumps(rows())[:-1],
        "invalid_json",
        ("expected ',' or ']'", "end of the file"),
    ),
    Bad(
        "json trailing comma",
        "train.json",
        json.dumps(rows())[:-1] + ",]",
        "invalid_json",
        ("Remove the comma before ']'",),
    ),
    Bad(
        "empty evaluation set",
        "test.json",
        "[]",
        "no_examples",
        ("at least 1",),
        purpose="evaluation",
    ),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[case.id for case in BAD_CASES])
def test_bad_input_is_a_typed_error_that_says_what_to_fix(case: Bad, tmp_path: Path) -> None:
    path = tmp_path / case.name
    if case.content is FOLDER:
        path.mkdir()
    elif isinstance(case.content, bytes):
        path.write_bytes(case.content)
    elif isinstance(case.content, str):
        path.write_text(case.content, encoding="utf-8", newline="")

    with pytest.raises(InvalidDataError) as caught:
        load_examples(path, purpose=case.purpose)

    error = caught.value
    assert isinstance(error, ValueError)
    assert case.code in codes(error.problems), error.problems
    assert all(p.source == str(path) for p in error.problems)
    message = str(error)
    assert str(path) in message
    for needle in case.needles:
        assert needle in message, f"{needle!r} not in {message!r}"
    assert message.endswith("load the data again; nothing was uploaded.")
    if case.line is not None:
        assert any(p.code == case.code and p.line == case.line for p in error.problems)


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reading_module, "TRAINING_LIMITS", TrainingLimits(max_file_bytes=100))
    path = tmp_path / "train.jsonl"
    path.write_text(jsonl(rows()))
    with pytest.raises(InvalidDataError) as caught:
        load_examples(path)
    assert codes(caught.value.problems) == {"file_too_large"}
    assert "100 bytes" in str(caught.value)
    # An evaluation set has no size limit.
    assert len(load_examples(path, purpose="evaluation")) == 60


def test_every_problem_is_collected_not_only_the_first(tmp_path: Path) -> None:
    lines = jsonl(rows()).splitlines()
    lines[2] = "{not json"
    lines[10] = '{"input": "x"}'
    lines[20] = '{"input": "", "output": false}'
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(InvalidDataError) as caught:
        load_examples(path)
    found = [(p.line, p.code, p.field) for p in caught.value.problems]
    assert found == [
        (3, "invalid_json", None),
        (11, "missing_field", "output"),
        (21, "empty_value", "input"),
        (21, "wrong_type", "output"),
    ]
    assert "4 problems" in str(caught.value)


def test_problems_are_capped_and_the_message_shows_the_first_few(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text("not json\n" * 500)
    with pytest.raises(InvalidDataError) as caught:
        load_examples(path)
    assert len(caught.value.problems) == 50
    message = str(caught.value)
    assert "at least 50 problems" in message
    assert f"{path}:5:" in message
    assert f"{path}:6:" not in message
    assert "45 more" in message


def test_dataframe_and_list_sources_get_the_same_checks() -> None:
    frame = pd.DataFrame({"input": ["a", "b", "c"], "output": ["1", None, "0"]})
    with pytest.raises(InvalidDataError) as caught:
        load_examples(frame, purpose="evaluation")
    [problem] = caught.value.problems
    assert (problem.source, problem.line, problem.code) == ("<DataFrame>", 2, "wrong_type")

    with pytest.raises(InvalidDataError) as caught:
        load_examples(pd.DataFrame({"text": ["a"], "label": ["1"]}), purpose="evaluation")
    assert codes(caught.value.problems) == {"missing_columns"}
    assert "'text', 'label'" in str(caught.value)

    items: list[Any] = [{"input": "a", "output": "1"}, {"input": "b"}, "c"]
    with pytest.raises(InvalidDataError) as caught:
        load_examples(items, purpose="evaluation")
    assert [(p.source, p.line, p.code) for p in caught.value.problems] == [
        ("<list>", 2, "missing_field"),
        ("<list>", 3, "not_an_object"),
    ]

    with pytest.raises(InvalidDataError) as caught:
        load_examples(rows(10))
    assert codes(caught.value.problems) == {"too_few_examples"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"input,output", "not bytes"),
        ({"input": "a", "output": "b"}, "single mapping"),
        (42, "not int"),
    ],
)
def test_a_source_of_the_wrong_kind_is_a_configuration_error(source: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        load_examples(source)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"purpose": "testing"},
        {"format": "xml"},
        {"max_input_tokens": 0},
        {"max_input_tokens": True},
        {"input_field": "text", "output_field": "text"},
    ],
)
def test_bad_arguments_are_configuration_errors(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        load_examples(rows(), **kwargs)  # type: ignore[arg-type]


def test_a_path_that_looks_like_json_text_gets_a_hint() -> None:
    with pytest.raises(InvalidDataError, match="looks like JSON text"):
        load_examples('[{"input": "a", "output": "b"}]')


# --- good inputs -------------------------------------------------------------------------------


def test_jsonl_loads_into_a_labelled_set(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(jsonl(rows()) + "\n\n")  # blank lines are fine
    loaded = load_examples(path)
    assert isinstance(loaded, LabelledSet)
    assert len(loaded) == 60
    assert loaded.source == str(path)
    assert loaded.warnings == ()
    assert next(iter(loaded)) == Example(input="review number 0", output="0")
    assert loaded.label_counts() == {"0": 30, "1": 30}


def test_json_array_csv_and_jsonl_give_the_same_set(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text(jsonl(rows()))
    (tmp_path / "a.json").write_text(json.dumps(rows(), indent=2))
    (tmp_path / "a.csv").write_text(csv_text())
    sets = [load_examples(tmp_path / name) for name in ("a.jsonl", "a.json", "a.csv")]
    assert sets[0].examples == sets[1].examples == sets[2].examples
    assert len({s.content_hash() for s in sets}) == 1


def test_json_array_problems_point_at_the_line_of_the_item(tmp_path: Path) -> None:
    items = rows()
    items[3] = {"input": "x"}
    path = tmp_path / "train.json"
    path.write_text(json.dumps(items, indent=2))  # each item takes 4 lines, after "[" on line 1
    with pytest.raises(InvalidDataError) as caught:
        load_examples(path)
    [problem] = caught.value.problems
    assert problem.line == 2 + 3 * 4


def test_csv_quoting_multiline_cells_crlf_and_extra_columns(tmp_path: Path) -> None:
    body = 'id,input,output\r\n1,"dogs, cats, ""birds""",1\r\n2,"two\nlines",0\r\n3,plain,1,\r\n'
    path = tmp_path / "test.csv"
    path.write_bytes(body.encode())
    loaded = load_examples(path, purpose="evaluation")
    assert [e.input for e in loaded] == ['dogs, cats, "birds"', "two\nlines", "plain"]
    assert codes(loaded.warnings) == {"unknown_field"}
    assert "'id'" in loaded.warnings[0].message


def test_a_utf8_bom_is_stripped(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_bytes(csv_text().encode("utf-8-sig"))
    (tmp_path / "a.jsonl").write_bytes(jsonl(rows()).encode("utf-8-sig"))
    assert load_examples(tmp_path / "a.csv").examples[0].input == "review number 0"
    assert load_examples(tmp_path / "a.jsonl").examples[0].input == "review number 0"


def test_non_ascii_text_survives(tmp_path: Path) -> None:
    items = rows()
    items[0] = {"input": "Très bien, 很好 🐕", "output": "1"}
    path = tmp_path / "train.jsonl"
    path.write_text(jsonl(items), encoding="utf-8")
    loaded = load_examples(path)
    assert loaded.examples[0].input == "Très bien, 很好 🐕"
    assert "Très bien, 很好 🐕".encode() in loaded.to_jsonl()


def test_a_json_file_holding_jsonl_is_read_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text(jsonl(rows()))
    loaded = load_examples(path)
    assert len(loaded) == 60
    assert codes(loaded.warnings) == {"format_mismatch"}
    assert "Rename it to .jsonl" in loaded.warnings[0].message


def test_a_jsonl_file_holding_an_array_is_read_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(rows(), indent=1))
    loaded = load_examples(path)
    assert len(loaded) == 60
    assert codes(loaded.warnings) == {"format_mismatch"}


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("train.txt", jsonl(rows())),
        ("train.data", json.dumps(rows())),
        ("train", csv_text()),
    ],
)
def test_an_unknown_suffix_is_sniffed(tmp_path: Path, name: str, content: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    assert len(load_examples(path)) == 60


def test_format_argument_overrides_the_suffix(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    path.write_text(csv_text())
    assert len(load_examples(path, format="csv")) == 60


def test_list_of_dicts_examples_and_custom_field_names() -> None:
    items: list[Row] = [{"prompt": f"q{i}", "answer": f"a{i}"} for i in range(55)]
    loaded = load_examples(items, input_field="prompt", output_field="answer")
    assert loaded.source == "<list>"
    assert loaded.examples[1] == Example(input="q1", output="a1")
    again = load_examples(list(loaded.examples), purpose="evaluation")
    assert again.examples == loaded.examples


def test_dataframe_source_with_integer_labels() -> None:
    frame = pd.DataFrame(
        {"input": [f"text {i}" for i in range(60)], "output": [i % 2 for i in range(60)]}
    )
    loaded = load_examples(frame)
    assert loaded.source == "<DataFrame>"
    assert loaded.label_counts() == {"0": 30, "1": 30}
    assert codes(loaded.warnings) == {"converted_number"}


def test_integer_labels_are_converted_with_a_warning(tmp_path: Path) -> None:
    items: list[Row] = [{"input": f"review {i}", "output": i % 2} for i in range(59)]
    items.append({"input": "review 59", "output": 1.0})
    path = tmp_path / "train.jsonl"
    path.write_text(jsonl(items))
    loaded = load_examples(path)
    assert {e.output for e in loaded} == {"0", "1"}
    assert loaded.examples[-1].output == "1"
    [warning] = loaded.warnings
    assert warning.code == "converted_number"
    assert warning.line == 1
    assert "60 numbers were read as text" in warning.message
    assert "lines 1, 2, 3, …" in warning.message


def test_duplicates_and_conflicts_are_warnings(tmp_path: Path) -> None:
    items = rows()
    items[10] = dict(items[0])  # exact repeat of line 1
    items[11] = dict(items[0])  # again
    items[12] = {"input": items[1]["input"], "output": "0"}  # line 2 says "1"
    path = tmp_path / "train.jsonl"
    path.write_text(jsonl(items))
    loaded = load_examples(path)
    by_code = {w.code: w for w in loaded.warnings}
    assert set(by_code) == {"duplicate_examples", "conflicting_duplicates"}
    assert "2 examples repeat" in by_code["duplicate_examples"].message
    assert "lines 11, 12" in by_code["duplicate_examples"].message
    conflict = by_code["conflicting_duplicates"]
    assert conflict.line == 13
    assert "line 13 says '0' where line 2 says '1'" in conflict.message


def test_class_imbalance_is_a_warning_for_classification_only() -> None:
    items = [{"input": f"r{i}", "output": "1" if i < 4 else "0"} for i in range(80)]
    assert load_examples(items).warnings == ()
    loaded = load_examples(items, task_id="classification")
    [warning] = loaded.warnings
    assert warning.code == "class_imbalance"
    assert "'0': 76, '1': 4" in warning.message


def test_too_many_labels_and_a_single_label_are_warnings() -> None:
    many = load_examples(rows(60, tuple(str(i) for i in range(12))), task_id="classification")
    assert codes(many.warnings) == {"too_many_labels"}
    assert "12 distinct outputs" in many.warnings[0].message
    single = load_examples(rows(60, ("yes",)), task_id="classification")
    assert codes(single.warnings) == {"single_label"}


def test_inputs_longer_than_max_input_tokens_are_a_warning(tmp_path: Path) -> None:
    items = rows()
    items[7] = {"input": "word " * 100, "output": "1"}
    items[8] = {"input": "word " * 20, "output": "0"}
    path = tmp_path / "train.jsonl"
    path.write_text(jsonl(items))
    assert load_examples(path).warnings == ()
    loaded = load_examples(path, max_input_tokens=10)
    [warning] = loaded.warnings
    assert warning.code == "input_may_be_truncated"
    assert warning.line == 8
    assert "2 inputs" in warning.message
    assert "estimate" in warning.message
    assert "about 125 tokens" in warning.message


def test_warnings_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    items = rows()
    items[5]["note"] = "extra"
    with caplog.at_level(logging.WARNING, logger="granite_tuner.data"):
        loaded = load_examples(items)
    assert codes(loaded.warnings) == {"unknown_field"}
    assert [r.name for r in caplog.records] == ["granite_tuner.data"]
    assert "ignored 'note'" in caplog.records[0].getMessage()


def test_evaluation_sets_have_no_training_bounds() -> None:
    assert len(load_examples(rows(1), purpose="evaluation")) == 1
    assert (
        len(load_examples(rows(TRAINING_LIMITS.max_examples + 1), purpose="evaluation")) == 10_001
    )


def test_to_jsonl_round_trips_and_the_hash_is_stable(tmp_path: Path) -> None:
    items = rows()
    items[0] = {"input": 'quote " and newline \n and ünïcode', "output": "1"}
    loaded = load_examples(items)
    payload = loaded.to_jsonl()
    assert payload.endswith(b"\n")
    assert payload.count(b"\n") == 60
    first = json.loads(payload.splitlines()[0])
    assert first == {"input": 'quote " and newline \n and ünïcode', "output": "1"}

    path = tmp_path / "upload.jsonl"
    path.write_bytes(payload)
    reloaded = load_examples(path)
    assert reloaded.examples == loaded.examples
    assert reloaded.content_hash() == loaded.content_hash()
    assert len(loaded.content_hash()) == 64

    changed = load_examples([*items[:-1], {"input": "something else", "output": "1"}])
    assert changed.content_hash() != loaded.content_hash()


def test_labelled_set_is_frozen_and_json_round_trips() -> None:
    loaded = load_examples(rows(3), purpose="evaluation")
    assert LabelledSet.model_validate_json(loaded.model_dump_json()) == loaded
    with pytest.raises(ValueError, match="frozen"):
        loaded.source = "elsewhere"  # type: ignore[misc]


@pytest.mark.anyio
async def test_aload_examples_runs_in_a_worker_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: list[int] = []
    original = loading_module.load_examples

    def recording(*args: Any, **kwargs: Any) -> LabelledSet:
        threads.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(loading_module, "load_examples", recording)
    path = tmp_path / "train.jsonl"
    path.write_text(jsonl(rows()))
    loaded = await aload_examples(path, task_id="classification", max_input_tokens=64)
    assert len(loaded) == 60
    assert threads
    assert threads[0] != threading.get_ident()
    with pytest.raises(InvalidDataError):
        await aload_examples(tmp_path / "missing.jsonl")

"""The validation report: the problems and warnings found while one source is checked.

Why a module of its own: the readers (`_reading`) and the rules (`_rules`) both add to one
`_Report`, and `load_examples` turns it into one `InvalidDataError` that lists every problem.
The small wording helpers shared by their messages live here too. It imports only
`_model` from this package.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from granite_tuner.data._model import Purpose
from granite_tuner.errors import DataProblem, InvalidDataError

_MAX_PROBLEMS = 50  # collected before checking stops
_SHOWN_PROBLEMS = 5  # quoted in the error message
_SHOWN_LINES = 3  # line numbers quoted in one aggregated warning


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


def _names(names: Sequence[str]) -> str:
    return " and ".join(repr(n) for n in names)


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

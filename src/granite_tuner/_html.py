"""Small HTML tables for Jupyter: what results show as (`_repr_html_`).

One place builds the markup so that one place escapes it: every value given to these
functions (names, ids, labels, messages, numbers) is turned into text and passed through
`html.escape`, so a run named `<script>` shows as that text and never runs. Only fragments
these functions built themselves are put together unescaped, by `block`.

Plain inline styles and no scripts: the output renders the same in Jupyter, VS Code and on
GitHub's notebook viewer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

__all__ = ["Html", "block", "fields", "grid"]

_TABLE = '<table style="border-collapse:collapse;margin:0.3em 0">'
_CELL = 'style="text-align:{align};padding:0.15em 0.8em;border-bottom:1px solid #ddd"'


class Html(str):
    """A fragment built here (already escaped); anything else given to `block` is text."""

    __slots__ = ()


def _text(value: object) -> str:
    return escape("" if value is None else str(value))


def _cell(tag: str, value: object, align: str) -> str:
    return f"<{tag} {_CELL.format(align=align)}>{_text(value)}</{tag}>"


def fields(rows: Iterable[tuple[str, object]]) -> Html:
    """A two-column table of name and value; rows whose value is None are left out."""
    body = "".join(
        f"<tr>{_cell('th', name, 'left')}{_cell('td', value, 'left')}</tr>"
        for name, value in rows
        if value is not None
    )
    return Html(f"{_TABLE}{body}</table>")


def grid(header: Sequence[str], rows: Iterable[Sequence[object]]) -> Html:
    """A table with a header row; the first column is left-aligned, the others right."""

    def align(index: int) -> str:
        return "left" if index == 0 else "right"

    head = "".join(_cell("th", name, align(i)) for i, name in enumerate(header))
    body = "".join(
        "<tr>" + "".join(_cell("td", value, align(i)) for i, value in enumerate(row)) + "</tr>"
        for row in rows
    )
    return Html(f"{_TABLE}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def block(title: str, *parts: Html | str) -> Html:
    """A titled block of fragments; a part that is not an `Html` fragment is escaped as text."""
    inner = "".join(
        part if isinstance(part, Html) else f'<p style="margin:0.3em 0">{_text(part)}</p>'
        for part in parts
    )
    return Html(f"<div><strong>{_text(title)}</strong>{inner}</div>")

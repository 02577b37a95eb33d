"""Find the Python blocks of the README and the docs, with the marker that says how to run each.

A block is run by `tests/docs/test_snippets.py` unless an HTML comment on the line just before
its fence (blank lines between are allowed) says otherwise:

- `<!-- docs-test: local -->`: run on the local backend (the tiny test model) instead of the
  fake watsonx.ai;
- `<!-- docs-test: tested-in PATH -->`: what the block shows is exercised by the tests in PATH
  (for example against a running `granite-tuner serve`); the test checks that PATH exists;
- `<!-- docs-test: fragment WHY -->`: an excerpt that cannot run on its own; WHY says why.

The comments render as nothing, on GitHub and on the site.

`docs/tutorial-notebook.md` is left out: it is rendered from `examples/tutorial.ipynb`, whose
cells depend on one another and which `tests/test_notebook.py` runs top to bottom in a real
Jupyter kernel (and checks that the page matches the notebook).
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_PAGE = ROOT / "docs" / "tutorial-notebook.md"
PAGES = (
    ROOT / "README.md",
    *sorted(page for page in (ROOT / "docs").glob("**/*.md") if page != NOTEBOOK_PAGE),
)

_FENCE = re.compile(r"^(?P<indent> *)```python\s*$")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<kind>[\w-]+)\s*(?P<arg>.*?)\s*-->\s*$")
KINDS = ("run", "local", "tested-in", "fragment")


@dataclass(frozen=True)
class Block:
    """One fenced Python block of a page."""

    page: Path
    line: int  # 1-based line of the opening fence
    source: str
    kind: str  # one of KINDS ("run" when no marker)
    arg: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    found = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue

        end = index + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        body = textwrap.dedent("\n".join(lines[index + 1 : end])) + "\n"
        before = index - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = _MARKER.match(lines[before]) if before >= 0 else None
        kind, arg = (marker.group("kind"), marker.group("arg")) if marker else ("run", "")
        if kind not in KINDS:
            raise ValueError(f"{page}:{before + 1}: unknown docs-test marker {kind!r}")
        found.append(Block(page, index + 1, body, kind, arg))
        index = end + 1
    return found


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks_of(page)]

"""Render examples/tutorial.ipynb as a Markdown page of the documentation site.

The site is built with MkDocs alone (no notebook plugin), so the tutorial is shown as its
Markdown cells and its code cells, in order. tests/test_notebook.py checks that the page is
up to date; after editing the notebook, run:

    python scripts/render_notebook.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "examples" / "tutorial.ipynb"
PAGE = ROOT / "docs" / "tutorial-notebook.md"

GENERATED = """<!-- Generated from examples/tutorial.ipynb by scripts/render_notebook.py:
edit the notebook, then run the script. -->

"""
TIP = """!!! tip "Run it yourself"
    This page is the notebook
    [`examples/tutorial.ipynb`](https://github.com/granite-tuner/granite-tuner/blob/main/examples/tutorial.ipynb)
    without its outputs. Open it in Jupyter after `pip install 'granite-tuner[local,notebook]'`
    (or `bash scripts/setup-env.sh`); the test suite runs it top to bottom in a real kernel.

"""


def render(notebook: dict[str, object]) -> str:
    """The notebook's cells as Markdown: text as it is, code in Python blocks; the tip on
    running it goes under the first cell (the title)."""
    parts = [GENERATED]
    cells = notebook["cells"]
    assert isinstance(cells, list)
    for index, cell in enumerate(cells):
        source = "".join(cell["source"]).strip("\n")
        if cell["cell_type"] == "markdown":
            parts.append(source + "\n\n" + (TIP if index == 0 else ""))
        elif cell["cell_type"] == "code":
            parts.append(f"```python\n{source}\n```\n\n")
    return "".join(parts).rstrip("\n") + "\n"


def main() -> int:
    page = render(json.loads(NOTEBOOK.read_text(encoding="utf-8")))
    PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

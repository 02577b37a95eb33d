"""scripts/check_site_links.py finds broken internal links and anchors, and passes good ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.module_files import load_module_file

SCRIPT = Path(__file__).parent.parent / "scripts" / "check_site_links.py"


def load_script() -> Any:
    return load_module_file(SCRIPT, "check_site_links")


def test_broken_files_and_anchors_are_found(tmp_path: Path) -> None:
    (tmp_path / "guide").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="guide/">ok</a> <a href="guide/#setup">ok</a> <a href="#top">ok</a>'
        '<h1 id="top">t</h1> <a href="missing/">bad</a> <a href="guide/#nowhere">bad</a>'
        '<a href="https://example.org/x">external, not fetched</a>'
    )
    (tmp_path / "guide" / "index.html").write_text('<h2 id="setup">s</h2><a href="../">up</a>')
    (tmp_path / "404.html").write_text('<a href="/assets/x.css">root-relative</a>')
    assert load_script().broken_links(tmp_path) == [
        "index.html: missing/ (no such file)",
        "index.html: guide/#nowhere (no anchor #nowhere)",
    ]

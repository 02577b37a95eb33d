"""`granite_tuner.__all__` and the export table in docs/reference/granite_tuner.md agree.

A refactor that drops, renames or moves a public name must change both, on purpose: a name
exported but undocumented, documented but not exported, or listed under a module that does not
define it fails here.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import granite_tuner

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "reference"
#: Importable from `granite_tuner` without being in `__all__` (imported on first use: torch).
LAZY = {"LocalClient"}
#: A table row: | [`module`](page.md) | names |
ROW = re.compile(
    r"^\| \[`(?P<module>granite_tuner[\w.]*)`\]\((?P<page>[\w-]+\.md)\) \| (?P<names>.*) \|$"
)
#: A name in the names column; names inside parentheses are remarks, not exports.
NAME = re.compile(r"`(\w+)`")


def documented_exports() -> dict[str, tuple[str, str]]:
    """Name -> (defining module, reference page) for every row of the export table."""
    exports: dict[str, tuple[str, str]] = {}
    for line in (REFERENCE / "granite_tuner.md").read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match is None:
            continue
        names = re.sub(r"\([^)]*\)", "", match["names"])
        for name in NAME.findall(names):
            assert name not in exports, f"{name} is listed twice in the export table"
            exports[name] = (match["module"], match["page"])
    return exports


def test_every_exported_name_is_documented_and_every_documented_name_exported() -> None:
    documented = set(documented_exports())
    exported = set(granite_tuner.__all__) - {"__version__"}
    assert sorted(exported - documented) == [], "exported but missing from the docs table"
    assert sorted(documented - exported - LAZY) == [], "in the docs table but not exported"
    for name in LAZY:
        assert getattr(granite_tuner, name) is not None


def test_each_documented_name_comes_from_its_module_and_the_page_renders_that_module() -> None:
    for name, (module_name, page) in documented_exports().items():
        module = importlib.import_module(module_name)
        assert getattr(module, name) is getattr(granite_tuner, name), name
        text = (REFERENCE / page).read_text(encoding="utf-8")
        assert f"::: {module_name}\n" in text, f"{page} does not render {module_name}"


def test_version_is_exported_and_mentioned() -> None:
    assert "__version__" in granite_tuner.__all__
    text = (REFERENCE / "granite_tuner.md").read_text(encoding="utf-8")
    assert "`granite_tuner.__version__`" in text

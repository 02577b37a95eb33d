"""Docstrings are Markdown (mkdocstrings renders them so): no Sphinx roles such as :func:`x`."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "granite_tuner"
SPHINX_ROLE = re.compile(r":(func|class|meth|attr|mod|data|exc|obj|ref|py:\w+):`")


def test_no_sphinx_role_is_left_in_the_source() -> None:
    found = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if SPHINX_ROLE.search(line)
    ]
    assert not found, "write `name` (Markdown) instead:\n" + "\n".join(found)


def test_the_check_finds_a_role() -> None:
    assert SPHINX_ROLE.search("see :func:`default_answer`")
    assert not SPHINX_ROLE.search("see `default_answer`")

"""`scripts/capture_cli.py` records the CLI against the fake and writes the docs' SVGs."""

from __future__ import annotations

import os
from pathlib import Path

from tests.module_files import load_module_file

SCRIPT = Path(__file__).parents[2] / "scripts" / "capture_cli.py"


def test_capture_script_writes_one_svg_per_command(tmp_path: Path) -> None:
    module = load_module_file(SCRIPT, "capture_cli")

    written: list[Path] = module.capture_all(tmp_path)

    assert [path.name for path in written] == [
        "cli-tune.svg",
        "cli-deploy.svg",
        "cli-compare.svg",
        "cli-cleanup.svg",
    ]
    for path in written:
        svg = path.read_text(encoding="utf-8")
        assert svg.startswith("<svg")
        assert "granite-tuner" in svg
        assert "capture-only-key" not in svg
    assert "McNemar" in (tmp_path / "cli-compare.svg").read_text(encoding="utf-8")
    assert "WATSONX_URL" not in os.environ  # the script puts the environment back

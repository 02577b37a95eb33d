"""Every example runs, as a user would run it (a subprocess), and writes what it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_watsonx_workflow_on_the_fake(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "watsonx_workflow_on_fake.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "| base (baseline) |" in completed.stdout
    assert "| tuned vs base |" in completed.stdout
    report = json.loads((tmp_path / "comparison.json").read_text())
    assert report["reports"]["tuned"]["metrics"]["accuracy"] == 1.0
    assert (tmp_path / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"

"""Importing the package, building a client and asking the CLI for help load no heavy library.

A client that only tunes and deploys needs none of numpy, scikit-learn, pandas, matplotlib,
torch or IBM's SDK; each loads only when a feature that needs it runs (metrics computed, a
DataFrame, a plot, the local backend). Each check runs in a fresh interpreter, so nothing an
earlier test imported can hide a module-level import.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import granite_tuner

#: Top-level packages that must not be in `sys.modules` after a lean start.
HEAVY = (
    "numpy",
    "scipy",
    "sklearn",
    "pandas",
    "matplotlib",
    "torch",
    "transformers",
    "peft",
    "ibm_watsonx_ai",
)

#: Printed by every script below as its last line: the heavy packages it found loaded.
REPORT = f"""
import json, sys
print(json.dumps(sorted({{name.partition(".")[0] for name in sys.modules}} & set({HEAVY!r}))))
"""

BUILD_CLIENT = """
import anyio
import granite_tuner
from granite_tuner import WatsonxClient

client = WatsonxClient(
    url="https://us-south.ml.cloud.ibm.com", token="not-a-real-token", project_id="p-1"
)
anyio.run(client.aclose)
"""

CLI = """
import contextlib, io, sys
from granite_tuner.cli import main

out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
    code = main({argv!r})
print(code, file=sys.stderr)
print(out.getvalue()[:200], file=sys.stderr)
"""


def heavy_modules_after(script: str) -> tuple[list[str], str]:
    """Run `script` in a fresh interpreter; the heavy packages loaded, and its stderr."""
    src = str(Path(granite_tuner.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    result = subprocess.run(
        [sys.executable, "-c", script + REPORT],
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return loaded, result.stderr


def test_importing_the_package_and_building_a_client_loads_no_heavy_library() -> None:
    loaded, _ = heavy_modules_after(BUILD_CLIENT)
    assert loaded == []


def test_every_public_name_resolves_without_a_heavy_library() -> None:
    script = "import granite_tuner\nfor name in granite_tuner.__all__: getattr(granite_tuner, name)"
    loaded, _ = heavy_modules_after(script)
    assert loaded == []


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["evaluate", "--help"], 0),
        (["tune"], 2),  # a usage error: the training file is missing
        (["tune", "train.jsonl", "--epochs", "many"], 2),
    ],
)
def test_cli_help_and_usage_errors_load_no_heavy_library(argv: list[str], code: int) -> None:
    loaded, stderr = heavy_modules_after(CLI.format(argv=argv))
    assert stderr.splitlines()[0] == str(code), stderr
    assert loaded == []


def test_computing_metrics_still_works_and_is_where_scikit_learn_loads() -> None:
    script = """
from granite_tuner.metrics import compute_metrics
metrics = compute_metrics(["1", "0", "1"], ["1", None, "0"], latencies=[0.1, 0.2])
assert metrics.counts.unparsed == 1 and abs(metrics.accuracy - 1 / 3) < 1e-12, metrics
"""
    loaded, _ = heavy_modules_after(script)
    assert "sklearn" in loaded
    assert "torch" not in loaded


def test_importing_the_package_builds_no_pydantic_validator() -> None:
    # Building a model's validator at class creation cost about a fifth of the import time;
    # with `defer_build=True` in each model's config it is built on the model's first use.
    script = """
import granite_tuner, pydantic, sys

def subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)

ours = [c for c in subclasses(pydantic.BaseModel) if c.__module__.startswith("granite_tuner")]
built = sorted(c.__qualname__ for c in ours if c.__pydantic_complete__)
print(len(ours), built, file=sys.stderr)
assert ours and not built, built
from granite_tuner import Example
assert Example(input="a", output="b").output == "b" and Example.__pydantic_complete__
"""
    heavy_modules_after(script)

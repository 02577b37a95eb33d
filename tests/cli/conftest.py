"""Fixtures for the `granite-tuner` command: a fake watsonx.ai over HTTPS, and a way to run it.

`cli` runs one command in-process (`granite_tuner.cli.main`) and hands back its exit code,
stdout and stderr; `Watsonx` bundles a served fake with the options that point the command at it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from granite_tuner.cli import main
from granite_tuner.testing import FakeWatsonx, ServerHandle
from tests.fakes import TRAINING_JSONL

BASE_MODEL = "ibm/granite-13b-instruct-v2"
API_KEY = "cli-test-api-key-7f3a9"


@dataclass
class Outcome:
    """What one command did."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class RunCli(Protocol):
    def __call__(self, *argv: str) -> Outcome: ...


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """Run `granite-tuner ARGV...` in-process; stdout and stderr are captured apart."""

    def run(*argv: str) -> Outcome:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


@dataclass
class Watsonx:
    """A fake watsonx.ai being served, and the options that point the CLI at it."""

    fake: FakeWatsonx
    server: ServerHandle

    @property
    def options(self) -> list[str]:
        return [
            "--url",
            self.server.url,
            "--iam-url",
            self.server.url + "/identity/token",
            "--project-id",
            self.fake.project_id,
            "--ca-bundle",
            str(self.server.ca_cert_path),
        ]


@pytest.fixture
def fake() -> FakeWatsonx:
    """The fake; a test may change its knobs before `watsonx` serves it."""
    return FakeWatsonx(training_polls=2, metrics_per_epoch=2)


@pytest.fixture
def watsonx(fake: FakeWatsonx, monkeypatch: pytest.MonkeyPatch) -> Iterator[Watsonx]:
    """The fake served over HTTPS, with WATSONX_APIKEY set as a user would set it."""
    monkeypatch.setenv("WATSONX_APIKEY", API_KEY)
    with fake.serve(tls=True) as server:
        yield Watsonx(fake, server)


@pytest.fixture
def training_file(tmp_path: Path) -> Path:
    """60 labelled examples as JSONL (the service wants at least 50)."""
    path = tmp_path / "train.jsonl"
    path.write_bytes(TRAINING_JSONL)
    return path

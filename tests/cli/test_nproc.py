"""`granite-tuner tune --local --nproc N`: a local run trained data-parallel by torchrun."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.conftest import RunCli
from tests.tiny_model import review_examples


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    path = tmp_path / "reviews.jsonl"
    lines = (json.dumps({"input": e.input, "output": e.output}) for e in review_examples(60))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_tune_in_two_processes(
    cli: RunCli, tiny_model_dir: Path, tiny_data: Path, tmp_path: Path
) -> None:
    local = ["--local", "--home", str(tmp_path / "home")]
    tuned = cli(
        "tune",
        str(tiny_data),
        "--model",
        str(tiny_model_dir),
        "--nproc",
        "2",
        "--epochs",
        "2",
        "--num-virtual-tokens",
        "4",
        "--name",
        "tiny-dp",
        "--json",
        *local,
    )
    assert tuned.code == 0, tuned.err
    assert "it trains in 2 processes started by this one" in tuned.err
    run = tuned.json()["run"]
    status = cli("status", "--name", "tiny-dp", "--json", *local)
    assert status.json()["run"]["state"] == "completed"
    assert len(status.json()["run"]["loss_per_epoch"]) == 2
    assert (tmp_path / "home" / "runs" / run["run_id"] / "workers.log").is_file()


def test_nproc_needs_the_local_backend(cli: RunCli, tiny_data: Path) -> None:
    outcome = cli("tune", str(tiny_data), "--nproc", "2", "--base-model", "ibm/granite")
    assert outcome.code == 2
    assert "--nproc" in outcome.err
    assert "--local" in outcome.err


def test_nproc_must_be_one_or_more(cli: RunCli, tiny_data: Path) -> None:
    outcome = cli("tune", str(tiny_data), "--local", "--nproc", "0")
    assert outcome.code == 2
    assert "--nproc" in outcome.err

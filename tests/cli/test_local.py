"""`granite-tuner --local` with the tiny model: tune, status, deploy, evaluate, compare, cleanup,
and `demo` end to end on the shipped data set."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from granite_tuner.backends.local import LocalClient
from tests.cli.conftest import RunCli
from tests.local.test_checkpoints import stopped
from tests.tiny_model import review_examples


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    path = tmp_path / "reviews.jsonl"
    lines = (json.dumps({"input": e.input, "output": e.output}) for e in review_examples(60))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def local(tmp_path: Path) -> list[str]:
    return ["--local", "--home", str(tmp_path / "home")]


def test_tune_status_deploy_evaluate_compare_cleanup(
    cli: RunCli, tiny_model_dir: Path, tiny_data: Path, local: list[str]
) -> None:
    model = str(tiny_model_dir)
    tuned = cli(
        "tune",
        str(tiny_data),
        "--model",
        model,
        "--epochs",
        "2",
        "--learning-rate",
        "0.1",
        "--num-virtual-tokens",
        "4",
        "--name",
        "tiny",
        *local,
    )
    assert tuned.code == 0, tuned.err
    assert "Started local tuning run" in tuned.err
    assert "epoch 2/2: mean loss" in tuned.err
    assert "completed" in tuned.out

    status = cli("status", "--name", "tiny", "--json", *local)
    assert status.code == 0, status.err
    run = status.json()["run"]
    assert run["backend"] == "local"
    assert run["state"] == "completed"
    assert run["base_model"] == model
    assert len(run["loss_per_epoch"]) == 2
    run_id = run["run_id"]

    deployed = cli("deploy", run_id, "--json", *local)
    assert deployed.code == 0, deployed.err
    assert deployed.json()["deployment"]["state"] == "ready"
    assert "live only as long as their process" in deployed.err

    evaluated = cli(
        "evaluate",
        str(tiny_data),
        "--deployment",
        run_id,
        "--max-new-tokens",
        "1",
        "--json",
        *local,
    )
    assert evaluated.code == 0, evaluated.err
    assert evaluated.json()["report"]["metrics"]["counts"]["total"] == 60

    base = cli("evaluate", str(tiny_data), "--model", model, "--max-new-tokens", "1", *local)
    assert base.code == 0, base.err
    assert "60/60" in base.err

    compared = cli(
        "compare", str(tiny_data), "--tuned", run_id, "--max-new-tokens", "1", "--json", *local
    )
    assert compared.code == 0, compared.err
    document = compared.json()
    assert set(document["report"]["reports"]) == {"tuned", "base"}
    assert 0.0 <= document["report"]["comparisons"][0]["p_value"] <= 1.0

    cleaned = cli("cleanup", "--prefix", "tiny", "--yes", "--json", *local)
    assert cleaned.code == 0, cleaned.err
    kinds = sorted(t["kind"] for t in cleaned.json()["deleted"])
    assert kinds == ["data", "run"]
    assert cli("status", run_id, *local).code == 2


@pytest.mark.parametrize(
    ("option", "recorded"),
    [
        ((), ("prefix_tuning", "start")),
        (("--peft-method", "prompt_tuning"), ("prompt_tuning", "end")),
        (
            ("--peft-method", "prompt_tuning", "--soft-prompt-position", "start"),
            ("prompt_tuning", "start"),
        ),
    ],
)
def test_tune_trains_and_places_the_soft_prompt_as_asked(
    cli: RunCli,
    tiny_model_dir: Path,
    tiny_data: Path,
    local: list[str],
    tmp_path: Path,
    option: tuple[str, ...],
    recorded: tuple[str, str],
) -> None:
    tuned = cli(
        "tune", str(tiny_data), "--model", str(tiny_model_dir), "--epochs", "1", "--json",
        *option, *local,
    )  # fmt: skip
    assert tuned.code == 0, tuned.err
    run_id = tuned.json()["run"]["run_id"]
    record = json.loads((tmp_path / "home" / "runs" / run_id / "run.json").read_text())
    method, position = recorded
    assert record["parameters"]["peft_method"] == method
    assert record["parameters"]["soft_prompt_position"] == position


@pytest.mark.parametrize(
    "option", [("--soft-prompt-position", "start"), ("--peft-method", "prompt_tuning")]
)
def test_how_the_soft_prompt_trains_needs_the_local_backend(
    cli: RunCli, tiny_data: Path, option: tuple[str, str]
) -> None:
    outcome = cli("tune", str(tiny_data), *option, "--base-model", "ibm/granite")
    assert outcome.code == 2
    assert option[0] in outcome.err
    assert "--local" in outcome.err


def test_a_position_with_prefix_tuning_is_a_usage_error(
    cli: RunCli, tiny_model_dir: Path, tiny_data: Path, local: list[str]
) -> None:
    outcome = cli(
        "tune", str(tiny_data), "--model", str(tiny_model_dir), "--soft-prompt-position", "end",
        *local,
    )  # fmt: skip
    assert outcome.code == 2
    assert "--peft-method prompt_tuning" in outcome.err


def test_local_deployments_cannot_be_cleaned_up_across_processes(
    cli: RunCli, local: list[str]
) -> None:
    done = cli("cleanup", "--deployment", "d-1", "--yes", *local)
    assert done.code == 2
    assert "Local deployments" in done.err


def test_demo_end_to_end_on_the_tiny_model(
    cli: RunCli, tiny_model_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "demo"

    done = cli(
        "demo",
        "--model",
        str(tiny_model_dir),
        "--epochs",
        "1",
        "--out",
        str(out),
        "--home",
        str(tmp_path / "home"),
        "--json",
    )

    assert done.code == 0, done.err
    document = done.json()
    assert document["command"] == "demo"
    assert document["run"]["state"] == "completed"
    assert document["run"]["name"] == "grooming-reviews-demo"
    assert document["run"]["parameters"]["num_epochs"] == 1
    assert document["run"]["parameters"]["max_input_tokens"] == 32
    assert document["run"]["parameters"]["num_virtual_tokens"] == 16
    assert set(document["accuracy"]) == {"base", "tuned"}
    assert (out / "learning_curve.png").stat().st_size > 0
    saved = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    assert len(saved["reports"]["tuned"]["items"]) == 120  # the shipped test set


def test_demo_shows_progress_and_misses_an_impossible_min_gain(
    cli: RunCli, tiny_model_dir: Path, tmp_path: Path
) -> None:
    done = cli(
        "demo",
        "--model",
        str(tiny_model_dir),
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "demo"),
        "--home",
        str(tmp_path / "home"),
        "--min-gain",
        "101",
    )

    assert done.code == 1
    assert "epoch 1/1: mean loss" in done.err
    assert "240/240" in done.err
    assert "McNemar p" in done.out
    assert "expected at least 101" in done.err


def test_checkpoints_resume_and_deploying_a_checkpoint(
    cli: RunCli, tiny_model_dir: Path, local: list[str], tmp_path: Path
) -> None:
    async def stop_a_run() -> str:
        async with LocalClient(str(tiny_model_dir), home=tmp_path / "home") as client:
            return await stopped(client, tiny_model_dir, epochs=1, num_epochs=3)

    run_id = anyio.run(stop_a_run)

    listed = cli("checkpoints", run_id, "--json", *local)
    assert listed.code == 0, listed.err
    [first] = listed.json()["checkpoints"]
    assert (first["step"], first["epoch"], first["end_of_epoch"]) == (12, 0, True)
    table = cli("checkpoints", run_id, *local)
    assert f"{run_id}:checkpoint-12" in table.out

    resumed = cli("resume", run_id, "--json", *local)
    assert resumed.code == 0, resumed.err
    assert "Attached to local tuning run" in resumed.err
    run = resumed.json()["run"]
    assert run["state"] == "completed"
    assert [p["iteration"] for p in run["metrics"]] == list(range(1, 37))
    best = next(c for c in run["checkpoints"] if c["best"])

    again = cli("resume", run_id, *local)
    assert again.code == 2
    assert "nothing to resume" in again.err

    deployed = cli("deploy", best["model_id"], "--json", *local)
    assert deployed.code == 0, deployed.err
    assert deployed.json()["deployment"]["state"] == "ready"
    gone = cli("deploy", f"{run_id}:checkpoint-5", *local)
    assert gone.code == 1
    assert "no checkpoint at step 5" in gone.err

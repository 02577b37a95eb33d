"""`granite-tuner` against the fake watsonx.ai over HTTPS: every command's happy path, --json."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from rich.console import Console

from granite_tuner.cli._app import build_parser
from granite_tuner.cli._backends import BackendOptions
from granite_tuner.cli._context import CLI_NAME_PREFIX, Context
from granite_tuner.cli._render import Renderer
from granite_tuner.metrics import wilson_interval
from granite_tuner.testing import FakeWatsonx, GenerationCall
from tests.cli.conftest import BASE_MODEL, RunCli, Watsonx

FAST = ("--poll-interval", "0.02")


def tune(cli: RunCli, watsonx: Watsonx, training_file: Path, *extra: str) -> str:
    """Tune to completion; the run id."""
    done = cli(
        "tune",
        str(training_file),
        "--base-model",
        BASE_MODEL,
        "--json",
        *FAST,
        *extra,
        *watsonx.options,
    )
    assert done.code == 0, done.err
    run_id: str = done.json()["run"]["run_id"]
    return run_id


def deploy(cli: RunCli, watsonx: Watsonx, source: str) -> dict[str, str]:
    done = cli("deploy", source, "--json", *FAST, *watsonx.options)
    assert done.code == 0, done.err
    deployment: dict[str, str] = done.json()["deployment"]
    return deployment


def test_tune_shows_progress_run_id_and_summary(
    cli: RunCli, watsonx: Watsonx, training_file: Path
) -> None:
    done = cli(
        "tune",
        str(training_file),
        "--base-model",
        BASE_MODEL,
        "--epochs",
        "3",
        *FAST,
        *watsonx.options,
    )

    assert done.code == 0, done.err
    (run_id,) = watsonx.fake.trainings
    assert f"Started tuning run {run_id}" in done.err
    assert f"granite-tuner attach {run_id}" in done.err
    assert "epoch 3/3: mean loss" in done.err
    assert run_id in done.out
    assert "completed" in done.out
    assert "loss per epoch" in done.out
    assert "cli-test-api-key" not in done.out + done.err


def test_tune_json_is_one_document_with_the_result(
    cli: RunCli, watsonx: Watsonx, training_file: Path, tmp_path: Path
) -> None:
    curve = tmp_path / "curve.png"
    done = cli(
        "tune",
        str(training_file),
        "--base-model",
        BASE_MODEL,
        "--epochs",
        "3",
        "--curve",
        str(curve),
        "--json",
        *FAST,
        *watsonx.options,
    )

    assert done.code == 0, done.err
    document = done.json()  # the whole of stdout is one JSON document
    assert document["ok"] is True
    assert document["command"] == "tune"
    run = document["run"]
    assert run["run_id"] in watsonx.fake.trainings
    assert run["state"] == "completed"
    assert run["succeeded"] is True
    assert run["base_model"] == BASE_MODEL
    assert run["model_id"]
    assert run["data_ref"] in watsonx.fake.assets
    assert run["name"].startswith(CLI_NAME_PREFIX)
    assert len(run["loss_per_epoch"]) == 3
    assert run["final_loss"] == run["loss_per_epoch"][-1]
    assert document["learning_curve"] == str(curve)
    assert curve.stat().st_size > 0


def test_tune_reads_a_parameters_file_that_options_override(
    cli: RunCli, watsonx: Watsonx, training_file: Path, tmp_path: Path
) -> None:
    parameters = tmp_path / "tuning.toml"
    parameters.write_text(
        'num_epochs = 2\nlearning_rate = 0.1\nverbalizer = "Review: {{input}}"\n', encoding="utf-8"
    )

    run_id = tune(
        cli,
        watsonx,
        training_file,
        "--parameters",
        str(parameters),
        "--epochs",
        "4",
        "--name",
        "reviews-pt",
    )

    sent = watsonx.fake.trainings[run_id]
    assert sent.name == "reviews-pt"
    assert sent.prompt_tuning["num_epochs"] == 4  # the option wins
    assert sent.prompt_tuning["learning_rate"] == 0.1
    assert sent.prompt_tuning["verbalizer"] == "Review: {{input}}"


def test_no_wait_prints_the_id_and_attach_waits_for_the_run(
    cli: RunCli, watsonx: Watsonx, fake: FakeWatsonx, training_file: Path
) -> None:
    fake.training_polls = 10**9  # stays running until the test says otherwise
    submitted = cli(
        "tune",
        str(training_file),
        "--base-model",
        BASE_MODEL,
        "--name",
        "later",
        "--no-wait",
        *watsonx.options,
    )
    assert submitted.code == 0, submitted.err
    (run_id,) = fake.trainings
    assert submitted.out.strip() == run_id  # RUN=$(granite-tuner tune ... --no-wait)
    assert fake.trainings[run_id].state in ("queued", "running")

    running = cli("status", run_id, "--json", *watsonx.options)
    assert running.code == 0, running.err
    assert running.json()["run"]["state"] in ("queued", "running")

    fake.training_polls = 1  # the next status read completes it
    attached = cli("attach", "--name", "later", "--json", *FAST, *watsonx.options)
    assert attached.code == 0, attached.err
    document = attached.json()
    assert document["command"] == "attach"
    assert document["run"]["run_id"] == run_id
    assert document["run"]["state"] == "completed"
    assert "Attached to tuning run" in attached.err


def test_status_by_name_shows_the_newest_run(
    cli: RunCli, watsonx: Watsonx, training_file: Path
) -> None:
    run_id = tune(cli, watsonx, training_file, "--name", "reviews-pt")

    by_name = cli("status", "--name", "reviews-pt", *watsonx.options)
    assert by_name.code == 0, by_name.err
    assert run_id in by_name.out
    assert "completed" in by_name.out

    as_json = cli("status", run_id, "--json", *watsonx.options).json()
    assert as_json["ok"] is True
    assert as_json["run"]["run_id"] == run_id
    assert as_json["run"]["loss_per_epoch"]


def test_cancel_stops_a_running_run(
    cli: RunCli, watsonx: Watsonx, fake: FakeWatsonx, training_file: Path
) -> None:
    fake.training_polls = 10**9
    submitted = cli(
        "tune", str(training_file), "--base-model", BASE_MODEL, "--no-wait", *watsonx.options
    )
    run_id = submitted.out.strip()

    canceled = cli("cancel", run_id, "--json", *watsonx.options)

    assert canceled.code == 0, canceled.err
    assert canceled.json()["run"]["state"] == "canceled"
    assert fake.trainings[run_id].state == "canceled"


def test_deploy_a_run_then_evaluate_and_compare(
    cli: RunCli, watsonx: Watsonx, training_file: Path, tmp_path: Path
) -> None:
    # The tuned deployment knows the labels; the base model always answers "1".
    labels = {f"Comment: visit {n}\nSatisfaction:\n": str(n % 2) for n in range(60)}

    def answer(call: GenerationCall) -> str:
        return labels.get(call.input, "?") if call.deployment_id else "1"

    watsonx.fake.answer = answer
    run_id = tune(cli, watsonx, training_file)

    shown = cli("deploy", run_id, *FAST, *watsonx.options)
    assert shown.code == 0, shown.err
    (deployment_id,) = watsonx.fake.deployments
    assert deployment_id in shown.out
    assert "ready" in shown.out
    serving_name = watsonx.fake.deployments[deployment_id].serving_name
    assert serving_name
    assert serving_name in shown.out

    evaluated = cli(
        "evaluate", str(training_file), "--deployment", deployment_id, "--json", *watsonx.options
    )
    assert evaluated.code == 0, evaluated.err
    report = evaluated.json()["report"]
    assert report["target"] == deployment_id
    assert report["metrics"]["accuracy"] == 1.0
    assert report["metrics"]["counts"]["total"] == 60
    assert "items" not in report
    assert evaluated.err == ""  # no progress bars with --json

    base = cli("evaluate", str(training_file), "--model", BASE_MODEL, *watsonx.options)
    assert base.code == 0, base.err
    assert "accuracy" in base.out
    assert "0.500" in base.out
    half = wilson_interval(30, 60)  # 30 of 60 right: the interval is in the table too
    assert "95% CI" in base.out
    assert f"{half.low:.2f}–{half.high:.2f}" in base.out
    assert "60/60" in base.err  # the progress bar: items done,
    assert "items/s" in base.err  # their rate,
    assert "0 errors" in base.err  # and how many failed

    report_path = tmp_path / "comparison.json"
    compared = cli(
        "compare",
        str(training_file),
        "--tuned",
        deployment_id,
        "--min-gain",
        "40",
        "--report",
        str(report_path),
        *watsonx.options,
    )
    assert compared.code == 0, compared.err
    assert "McNemar p" in compared.out
    assert "95% CI" in compared.out
    assert f"{wilson_interval(60, 60).low:.2f}–1.00" in compared.out  # tuned: all right
    assert "tuned vs base" in compared.out
    assert "significant" in compared.out
    assert "120/120" in compared.err
    assert report_path.is_file()

    as_json = cli(
        "compare",
        str(training_file),
        "--tuned",
        deployment_id,
        "--base",
        BASE_MODEL,
        "--json",
        *watsonx.options,
    ).json()
    assert as_json["ok"] is True
    assert as_json["accuracy"] == {"base": 0.5, "tuned": 1.0}
    assert as_json["gain_points"] == pytest.approx(50.0)
    (comparison,) = as_json["report"]["comparisons"]
    assert comparison["target"] == "tuned"
    assert comparison["baseline"] == "base"
    assert comparison["c"] == 30
    assert comparison["p_value"] < 0.001


def test_deploy_a_model_id_and_json(cli: RunCli, watsonx: Watsonx, training_file: Path) -> None:
    run_id = tune(cli, watsonx, training_file)
    model_id = watsonx.fake.trainings[run_id].model_id
    assert model_id is not None

    deployment = deploy(cli, watsonx, model_id)

    assert deployment["state"] == "ready"
    assert deployment["model_id"] == model_id
    assert deployment["id"] in watsonx.fake.deployments
    assert deployment["serving_name"]
    assert (deployment["name"] or "").startswith(CLI_NAME_PREFIX)


def test_compare_below_min_gain_exits_1(cli: RunCli, watsonx: Watsonx, training_file: Path) -> None:
    deployment = deploy(cli, watsonx, tune(cli, watsonx, training_file))

    done = cli(
        "compare",
        str(training_file),
        "--tuned",
        deployment["id"],
        "--min-gain",
        "10",
        "--json",
        *watsonx.options,
    )

    assert done.code == 1
    document = done.json()
    assert document["ok"] is False
    assert document["passed"] is False
    assert "expected at least 10" in done.err


def test_cleanup_shows_asks_and_deletes_only_what_is_named(
    cli: RunCli, watsonx: Watsonx, fake: FakeWatsonx, training_file: Path
) -> None:
    ours = tune(cli, watsonx, training_file)  # named by the CLI
    theirs = tune(cli, watsonx, training_file, "--name", "someone-elses-run")
    deployment = deploy(cli, watsonx, ours)

    dry = cli("cleanup", "--created-by-cli", "--dry-run", "--json", *watsonx.options)
    assert dry.code == 0, dry.err
    planned = {(t["kind"], t["id"]) for t in dry.json()["planned"]}
    our_data = fake.trainings[ours].body["training_data_references"][0]["location"]["id"]
    assert planned == {("deployment", deployment["id"]), ("run", ours), ("data", our_data)}
    assert set(fake.trainings) == {ours, theirs}

    unconfirmed = cli("cleanup", "--created-by-cli", *watsonx.options)  # no terminal, no --yes
    assert unconfirmed.code == 2
    assert "--yes" in unconfirmed.err
    assert set(fake.trainings) == {ours, theirs}
    assert deployment["id"] in fake.deployments

    done = cli(
        "cleanup", "--created-by-cli", "--run", "no-such-run", "--yes", "--json", *watsonx.options
    )
    assert done.code == 0, done.err
    document = done.json()
    assert {(t["kind"], t["id"]) for t in document["deleted"]} == planned
    assert [t["id"] for t in document["missing"]] == ["no-such-run"]
    assert set(fake.trainings) == {theirs}
    assert deployment["id"] not in fake.deployments
    assert our_data not in fake.assets


def test_cleanup_needs_something_named(cli: RunCli, watsonx: Watsonx) -> None:
    assert cli("cleanup", "--yes", *watsonx.options).code == 2
    assert cli("cleanup", "--prefix", "g", "--yes", *watsonx.options).code == 2


@pytest.mark.anyio
async def test_commands_run_on_either_event_loop(
    watsonx: Watsonx, training_file: Path, anyio_backend: str
) -> None:
    """The command handlers are plain anyio code: they run under asyncio and trio alike."""
    args = build_parser().parse_args(
        ["tune", str(training_file), "--base-model", BASE_MODEL, *FAST, *watsonx.options]
    )
    console = Console(record=True, width=100)
    ctx = Context(
        command="tune",
        ui=Renderer(out=console, err=console),
        backend=BackendOptions.from_args(args),
    )
    assert isinstance(args, argparse.Namespace)

    code = await args.handler(ctx, args)

    assert code == 0
    (run_id,) = watsonx.fake.trainings
    assert run_id in console.export_text()


def test_attach_by_id_shows_the_runs_own_name(
    cli: RunCli, watsonx: Watsonx, fake: FakeWatsonx, training_file: Path
) -> None:
    fake.training_polls = 10**9
    submitted = cli(
        "tune", str(training_file), "--base-model", BASE_MODEL, "--name", "reviews-pt",
        "--no-wait", *watsonx.options,
    )  # fmt: skip
    assert submitted.code == 0, submitted.err
    run_id = submitted.out.strip()
    fake.training_polls = 1
    attached = cli("attach", run_id, *FAST, *watsonx.options)
    assert attached.code == 0, attached.err
    assert f"Attached to tuning run {run_id} (reviews-pt)" in " ".join(attached.err.split())


def test_the_cleanup_plan_shows_whole_names_on_a_narrow_terminal() -> None:
    name = "granite-tuner-cli-deployment-20261206-010904-reviews-pt-tuned"
    run_id = "eb1167b3-67a9-4378-bc65-c1e582e2e662"
    for width in (60, 200):
        console = Console(record=True, width=width)
        ui = Renderer(out=console, err=console)
        console.print(ui.objects_table("Will delete", [("deployment", run_id, name, "ready")]))
        shown = console.export_text()
        assert "…" not in shown
        assert run_id in shown
        assert name in shown.replace("\n", "") or name in shown, shown

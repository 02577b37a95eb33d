"""Exit codes scripts rely on: 1 failed, 2 bad input, 3 service error, 4 timeout; --help."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import granite_tuner.cli
from granite_tuner.cli._exit import EXIT_CODE_TABLE, ExitCode
from granite_tuner.testing import FakeWatsonx, Fault
from tests.cli.conftest import API_KEY, BASE_MODEL, RunCli, Watsonx

FAST = ("--poll-interval", "0.02")
COMMANDS = [
    "tune",
    "status",
    "attach",
    "cancel",
    "deploy",
    "evaluate",
    "compare",
    "cleanup",
    "demo",
]


def tune_args(training_file: Path, watsonx: Watsonx, *extra: str) -> list[str]:
    return ["tune", str(training_file), "--base-model", BASE_MODEL, *FAST, *extra, *watsonx.options]


# --- 0: help ------------------------------------------------------------------------------------


def test_help_lists_the_commands_and_the_exit_codes(cli: RunCli) -> None:
    done = cli("--help")
    assert done.code == 0
    for command in COMMANDS:
        assert re.search(rf"^\s+{command}\s", done.out, re.MULTILINE), command
    assert EXIT_CODE_TABLE in done.out
    assert "WATSONX_APIKEY" in done.out


def test_the_package_docstring_has_the_same_exit_codes() -> None:
    assert granite_tuner.cli.__doc__ is not None
    assert EXIT_CODE_TABLE in granite_tuner.cli.__doc__
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4, 130]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_examples(cli: RunCli, command: str) -> None:
    done = cli(command, "--help")
    assert done.code == 0
    assert "examples:" in done.out
    assert f"granite-tuner {command}" in done.out
    assert "--json" in done.out


def test_the_api_key_is_not_an_option(cli: RunCli) -> None:
    for command in COMMANDS:
        assert "--api-key" not in cli(command, "--help").out


# --- 1: the operation failed --------------------------------------------------------------------


def test_a_failed_tuning_run_exits_1_with_the_services_message(
    cli: RunCli, fake: FakeWatsonx, watsonx: Watsonx, training_file: Path
) -> None:
    fake.training_outcome = "failed"
    fake.training_failure_message = "Training failed: out of memory"

    done = cli(*tune_args(training_file, watsonx))

    assert done.code == ExitCode.FAILED
    assert "out of memory" in done.err
    assert "failed" in done.out  # the run's table
    assert "Traceback" not in done.err


def test_a_failed_tuning_run_in_json(
    cli: RunCli, fake: FakeWatsonx, watsonx: Watsonx, training_file: Path
) -> None:
    fake.training_outcome = "failed"

    done = cli(*tune_args(training_file, watsonx, "--json"))

    assert done.code == 1
    document = done.json()
    assert document["ok"] is False
    assert document["command"] == "tune"
    assert document["error"]["type"] == "TuningFailedError"
    assert document["error"]["exit_code"] == 1
    assert document["error"]["run_id"] in fake.trainings
    assert document["run"]["state"] == "failed"


def test_a_failed_deployment_exits_1(
    cli: RunCli, fake: FakeWatsonx, watsonx: Watsonx, training_file: Path
) -> None:
    run_id = cli(*tune_args(training_file, watsonx, "--json")).json()["run"]["run_id"]
    fake.deployment_outcome = "failed"

    done = cli("deploy", run_id, *FAST, *watsonx.options)

    assert done.code == 1
    assert "failed" in done.err


# --- 2: usage and bad input ---------------------------------------------------------------------


def test_too_few_examples_exit_2_naming_the_problem(
    cli: RunCli, watsonx: Watsonx, tmp_path: Path
) -> None:
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps({"input": "a", "output": "1"}) + "\n", encoding="utf-8")

    done = cli(*tune_args(small, watsonx))

    assert done.code == ExitCode.USAGE
    assert "small.jsonl" in done.err
    assert "Traceback" not in done.err
    assert watsonx.fake.count("POST", "/ml/v4/trainings") == 0  # nothing was sent


def test_an_out_of_range_parameter_exits_2(
    cli: RunCli, watsonx: Watsonx, training_file: Path
) -> None:
    done = cli(*tune_args(training_file, watsonx, "--epochs", "99", "--json"))

    assert done.code == 2
    error = done.json()["error"]
    assert error["type"] == "InvalidParametersError"
    assert error["field"] == "num_epochs"
    assert "1 to 50" in error["message"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tune", "{train}", "--base-model", BASE_MODEL, "--local", "--no-wait"], "--no-wait"),
        (["tune", "{train}"], "--base-model is required"),
        (["tune", "{train}", "--base-model", "ibm/no-such-model"], "cannot be prompt-tuned"),
        (["tune", "{train}", "--base-model", BASE_MODEL, "--parameters", "{bad}"], "not valid"),
        (["tune", "{missing}", "--base-model", BASE_MODEL], "missing.jsonl"),
        (["tune", "{train}", "--base-model", BASE_MODEL, "--epochs", "many"], "whole number"),
        (["status", "no-such-run"], "no-such-run"),
        (["status"], "RUN_ID or --name"),
        (["status", "r", "--space-id", "s"], "not both"),
        (["attach", "--name", "nobody"], "nobody"),
        (["evaluate", "{train}"], "--deployment"),
        (["deploy", "x", "--no-such-option"], "unrecognized"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_with_a_message_and_no_traceback(
    cli: RunCli,
    watsonx: Watsonx,
    training_file: Path,
    tmp_path: Path,
    argv: list[str],
    message: str,
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("num_epochs = = 3\n", encoding="utf-8")
    paths = {"train": training_file, "bad": bad, "missing": tmp_path / "missing.jsonl"}
    argv = [part.format(**paths) for part in argv]

    done = cli(*argv, *watsonx.options)

    assert done.code == 2, done.err
    assert message in done.err
    assert "Traceback" not in done.err


def test_missing_settings_exit_2_naming_what_to_set(
    cli: RunCli, monkeypatch: pytest.MonkeyPatch, training_file: Path
) -> None:
    no_url = cli("status", "some-run")
    assert no_url.code == 2
    assert "WATSONX_URL" in no_url.err

    no_scope = cli("status", "some-run", "--url", "https://us-south.ml.cloud.ibm.com")
    assert no_scope.code == 2
    assert "--project-id" in no_scope.err

    # No key in the environment, and no terminal to ask on (pytest's stdin is not one).
    no_key = cli("status", "r", "--url", "https://us-south.ml.cloud.ibm.com", "--project-id", "p")
    assert no_key.code == 2
    assert "WATSONX_APIKEY" in no_key.err


# --- 3: service errors --------------------------------------------------------------------------


def test_a_rejected_api_key_exits_3(
    cli: RunCli, fake: FakeWatsonx, watsonx: Watsonx, training_file: Path
) -> None:
    fake.api_keys = ["a-different-key"]

    done = cli(*tune_args(training_file, watsonx, "--json"))

    assert done.code == ExitCode.SERVICE
    error = done.json()["error"]
    assert error["type"] == "AuthenticationError"
    assert error["exit_code"] == 3
    assert API_KEY not in done.out + done.err


def test_a_server_error_after_the_retries_exits_3(
    cli: RunCli, fake: FakeWatsonx, watsonx: Watsonx, training_file: Path
) -> None:
    fake.faults.add(
        Fault("status", method="GET", path=r"^/ml/v4/trainings/", status=503, times=None)
    )
    fake.faults.add(
        Fault("status", method="GET", path=r"^/ml/v4/deployments/", status=503, times=None)
    )

    done = cli("status", "some-run", "--max-attempts", "2", *watsonx.options)
    assert done.code == 3
    assert "503" in done.err or "unavailable" in done.err.lower()

    done = cli("cleanup", "--deployment", "d-1", "--yes", "--max-attempts", "1", *watsonx.options)
    assert done.code == 3


def test_an_unreachable_service_exits_3(cli: RunCli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATSONX_APIKEY", API_KEY)

    done = cli(
        "status",
        "r",
        "--url",
        "https://127.0.0.1:9",
        "--project-id",
        "p",
        "--iam-url",
        "https://127.0.0.1:9/identity/token",
        "--max-attempts",
        "1",
    )

    assert done.code == 3
    assert "Traceback" not in done.err


# --- 4: timeouts --------------------------------------------------------------------------------


def test_a_tuning_timeout_exits_4_and_the_run_goes_on(
    cli: RunCli, fake: FakeWatsonx, watsonx: Watsonx, training_file: Path
) -> None:
    fake.training_polls = 10**9

    done = cli(*tune_args(training_file, watsonx, "--timeout", "0.3", "--json"))

    assert done.code == ExitCode.TIMEOUT
    error = done.json()["error"]
    assert error["type"] == "TuningTimeoutError"
    (run_id,) = fake.trainings
    assert error["run_id"] == run_id
    assert fake.trainings[run_id].state == "running"


def test_a_deployment_timeout_exits_4(
    cli: RunCli, fake: FakeWatsonx, watsonx: Watsonx, training_file: Path
) -> None:
    run_id = cli(*tune_args(training_file, watsonx, "--json")).json()["run"]["run_id"]
    fake.deployment_polls = 10**9

    done = cli("deploy", run_id, "--timeout", "0.3", *FAST, *watsonx.options)

    assert done.code == 4
    (deployment_id,) = fake.deployments
    assert f"granite-tuner cleanup --deployment {deployment_id}" in done.err


def test_deploy_of_an_unknown_run_is_bad_input_with_one_clean_message(
    cli: RunCli, watsonx: Watsonx
) -> None:
    done = cli("deploy", "no-such-run", *FAST, *watsonx.options)
    assert done.code == ExitCode.USAGE, done.err  # docs/cli.md: 2 for an unknown id
    message = " ".join(done.err.split())
    assert "no-such-run" in message
    assert ".." not in message
    assert message.count("trace") == 1


def test_the_table_in_docs_cli_md_lists_exactly_these_codes() -> None:
    """One row per exit code; each row has its own test above (130: tests/cli/test_interrupt.py)."""
    text = (Path(__file__).parents[2] / "docs" / "cli.md").read_text(encoding="utf-8")
    table = text.split("## Exit codes", 1)[1]
    rows = re.findall(r"^\| (\d+) \|", table, re.MULTILINE)
    assert [int(code) for code in rows] == [int(code) for code in ExitCode]

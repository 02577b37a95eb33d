"""`granite-tuner fake-server`: a user starts it, exports what it prints, and uses the CLI.

Both run as a user runs them, as processes; the only connection between them is the printed
environment.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from granite_tuner.datasets import train_path
from tests.cli.test_interrupt import command, read_lines

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

DEADLINE_SECONDS = 60.0
BASE_MODEL = "ibm/granite-13b-instruct-v2"
VARIABLES = (
    "WATSONX_URL",
    "WATSONX_APIKEY",
    "WATSONX_PROJECT_ID",
    "WATSONX_IAM_URL",
    "WATSONX_CA_BUNDLE",
)


def printed_environment(lines: queue.Queue[str | None]) -> dict[str, str]:
    """The `export NAME=value` lines the server prints, read until the last one came."""
    env: dict[str, str] = {}
    while set(env) != set(VARIABLES):
        line = lines.get(timeout=DEADLINE_SECONDS)
        assert line is not None, "fake-server ended before printing its environment"
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").strip().partition("=")
            env[name] = value
    return env


def test_the_cli_runs_against_the_fake_server_with_only_its_printed_environment(
    tmp_path: Path,
) -> None:
    env_file = tmp_path / "fake.env"
    server = subprocess.Popen(
        [*command(), "fake-server", "--env-file", str(env_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=read_lines, args=(server.stdout, lines), daemon=True).start()
    try:
        printed = printed_environment(lines)
        user_env = {k: v for k, v in os.environ.items() if not k.startswith("WATSONX_")}
        tuned = subprocess.run(
            [*command(), "tune", str(train_path()), "--base-model", BASE_MODEL, "--json"],
            env={**user_env, **printed},
            capture_output=True,
            text=True,
            timeout=DEADLINE_SECONDS,
            check=False,
        )
        assert tuned.returncode == 0, tuned.stderr
        run = json.loads(tuned.stdout)["run"]
        assert run["state"] == "completed"
        assert run["base_model"] == BASE_MODEL
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=DEADLINE_SECONDS) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.stderr is not None
    with server.stderr:
        assert "Traceback" not in server.stderr.read()
    assert env_file.read_text().splitlines() == [
        f"export {name}={printed[name]}" for name in VARIABLES
    ]

"""Ctrl-C: the console script, in a subprocess, waiting on a training that never finishes.

The test waits for what the command prints once the run exists (its id), not for time to pass,
then sends SIGINT and checks the exit code and what the user is told was left running.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from granite_tuner.testing import FakeWatsonx
from tests.cli.conftest import API_KEY, BASE_MODEL, Watsonx

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

DEADLINE_SECONDS = 60.0


def command() -> list[str]:
    """The installed `granite-tuner` script next to this Python, else `python -m`."""
    script = Path(sys.executable).with_name("granite-tuner")
    if script.is_file():
        return [str(script)]
    found = shutil.which("granite-tuner")
    return [found] if found else [sys.executable, "-m", "granite_tuner.cli"]


def read_lines(stream: object, lines: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]  # a text-mode pipe
        lines.put(line)
    lines.put(None)


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_ctrl_c_while_tuning_exits_130_and_names_the_remote_run(
    fake: FakeWatsonx, watsonx: Watsonx, training_file: Path, as_json: bool
) -> None:
    fake.training_polls = 10**9  # the training never finishes
    process = subprocess.Popen(
        [
            *command(),
            "tune",
            str(training_file),
            "--base-model",
            BASE_MODEL,
            "--poll-interval",
            "0.05",
            *(["--json"] if as_json else []),
            *watsonx.options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "WATSONX_APIKEY": API_KEY},
    )
    lines: queue.Queue[str | None] = queue.Queue()
    reader = threading.Thread(target=read_lines, args=(process.stderr, lines), daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while not any("If interrupted" in line for line in seen):
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            assert line is not None, f"the command ended early: {''.join(seen)}"
            seen.append(line)
        (run_id,) = fake.trainings
        assert fake.trainings[run_id].state in ("queued", "running")

        process.send_signal(signal.SIGINT)
        process.wait(timeout=DEADLINE_SECONDS)  # stdout holds one small document at most
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=DEADLINE_SECONDS)
    while (line := lines.get(timeout=DEADLINE_SECONDS)) is not None:
        seen.append(line)
    err = "".join(seen)
    code = process.returncode
    assert process.stdout is not None
    assert process.stderr is not None
    with process.stdout, process.stderr:
        out = process.stdout.read()

    assert code == 130, err
    assert f"Tuning run {run_id} is still running on watsonx.ai" in err
    assert f"granite-tuner attach {run_id}" in err
    assert f"granite-tuner cancel {run_id}" in err
    assert "Traceback" not in err
    assert fake.trainings[run_id].state == "running"  # Ctrl-C leaves the remote run alone
    if as_json:
        document = json.loads(out)
        assert document["ok"] is False
        assert document["error"]["exit_code"] == 130
        (note,) = document["left_running"]
        assert f"granite-tuner attach {run_id}" in note
    else:
        assert out == ""

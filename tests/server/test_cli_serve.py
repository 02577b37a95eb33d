"""`granite-tuner serve` as a process: starts in one line, and SIGTERM lets requests finish."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.server.conftest import RUN_NAMES, Served

LONG = {"input": "the dog", "parameters": {"min_new_tokens": 400, "max_new_tokens": 400}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_sigterm_lets_in_flight_requests_finish(served_home: Served) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "granite_tuner.cli", "serve", f"{RUN_NAMES[0]}=first",
         "--model", served_home.model, "--home", str(served_home.home),
         "--port", str(port), "--insecure-no-auth"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.ConnectError:
                pass
            assert process.poll() is None, process.communicate()[0].decode()
            time.sleep(0.05)
        results: list[httpx.Response] = []

        def ask() -> None:
            path = f"{url}/ml/v1/deployments/first/text/generation?version=2025-01-01"
            results.append(httpx.post(path, json=LONG, timeout=120))

        threads = [threading.Thread(target=ask) for _ in range(2)]
        for thread in threads:
            thread.start()
        while httpx.get(f"{url}/health").json()["in_flight"] < 2:
            time.sleep(0.005)
        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join()
        output = process.communicate(timeout=60)[0].decode()
    finally:
        if process.poll() is None:
            process.kill()
    # uvicorn re-raises the signal once it has shut down cleanly, as a killed process reports it.
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
    assert f"at http://127.0.0.1:{port}" in output  # it printed its URL
    assert [r.status_code for r in results] == [200, 200]
    assert all(r.json()["results"][0]["generated_token_count"] == 400 for r in results)

"""The examples beyond the main workflow: each runs as a user would run it, and does what it says.

- `examples/evaluate_any_callable.py` runs as a script (no backend needed).
- `examples/web_service.py` is driven twice against the fake watsonx.ai: in process through
  its ASGI app (on asyncio and trio), and as a script serving on a real loopback socket, where
  the progress stream must arrive live, line by line, while the job runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio
import httpx
import pytest

from granite_tuner import RateLimiter, WatsonxClient
from granite_tuner.testing import FakeWatsonx, GenerationCall
from tests.module_files import load_module_file

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def load_example(name: str) -> ModuleType:
    """Import an example script as a module (examples/ is not a package)."""
    return load_module_file(EXAMPLES / f"{name}.py", f"example_{name}")


web_service = load_example("web_service")


# --- evaluate_any_callable.py ------------------------------------------------------------------


def test_evaluate_any_callable(tmp_path: Path) -> None:
    script = EXAMPLES / "evaluate_any_callable.py"
    completed = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "--concurrency", "4"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    out = completed.stdout
    assert "| rules (baseline) |" in out
    assert "| remote vs rules |" in out
    assert "remote calls failed and were recorded, not lost" in out

    report = json.loads((tmp_path / "callables.json").read_text())
    rules, remote = report["reports"]["rules"], report["reports"]["remote"]
    assert len(rules["items"]) == len(remote["items"]) == 120
    assert rules["metrics"]["counts"]["failed"] == 0
    failed = [item for item in remote["items"] if item["error_type"] is not None]
    assert failed, "the stand-in remote model fails some calls on purpose"
    assert {item["error_type"] for item in failed} == {"ConnectionError", "TimeoutError"}
    assert remote["metrics"]["counts"]["failed"] == len(failed)
    # The remote model answers in words; the label parser read every answer it gave.
    assert remote["metrics"]["counts"]["unparsed"] == 0
    most = int(out.split("Most remote calls in flight at once: ")[1].split()[0])
    assert 1 <= most <= 4


# --- web_service.py, in process ----------------------------------------------------------------


def keyword_answer(call: GenerationCall) -> str:
    """The fake's models: the base model calls everything satisfied, the tuned one reads."""
    if call.deployment_id is None:
        return "1"
    return "1" if "happy" in call.input else "0"


@pytest.fixture
def fake() -> FakeWatsonx:
    return FakeWatsonx(training_polls=4, rate_limit=20.0, answer=keyword_answer)


@pytest.fixture
def fake_url(fake: FakeWatsonx) -> Iterator[str]:
    with fake.serve() as server:
        yield server.url


def service_on(fake: FakeWatsonx, url: str) -> Any:
    def connect() -> WatsonxClient:
        return WatsonxClient(
            url=url,
            api_key="fake-test-api-key",
            iam_url=url + "/identity/token",
            project_id=fake.project_id,
            rate_limiter=RateLimiter(requests_per_second=20.0),
        )

    return web_service.TuningService(connect, poll_interval=(0.01, 0.05))


async def read_events(http: httpx.AsyncClient, path: str) -> list[dict[str, Any]]:
    async with http.stream("GET", path) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) async for line in response.aiter_lines() if line]


@pytest.mark.anyio
async def test_web_service_classifies_concurrently_tunes_and_streams(
    fake: FakeWatsonx, fake_url: str
) -> None:
    app = web_service.create_app(service_on(fake, fake_url))
    transport = httpx.ASGITransport(app=app)
    reviews = [f"Visit {n}: my dog came home {'happy' if n % 2 else 'matted'}." for n in range(12)]
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://service") as http,
    ):
        # A tuning job and a dozen classifications, all at once, through one shared client.
        answers: dict[int, httpx.Response] = {}
        started: list[httpx.Response] = []

        async def classify(n: int) -> None:
            answers[n] = await http.post("/classify", json={"text": reviews[n]})

        async def tune() -> None:
            started.append(await http.post("/tune", json={}))

        async with anyio.create_task_group() as task_group:
            task_group.start_soon(tune)
            for n in range(len(reviews)):
                task_group.start_soon(classify, n)
        assert all(answers[n].status_code == 200 for n in answers)
        assert [answers[n].json()["label"] for n in range(len(reviews))] == ["1"] * len(reviews)
        assert started[0].status_code == 202
        job = started[0].json()

        events = await read_events(http, job["events"])
        kinds = [event["kind"] for event in events]
        assert kinds[0] == "submitted"
        assert [e["epoch"] for e in events if e["kind"] == "epoch_completed"] == [0, 1, 2, 3, 4]
        finished = next(e for e in events if e["kind"] == "finished")
        assert finished["state"] == "completed"
        assert kinds[-1] == "deployed"
        deployment_id = events[-1]["deployment_id"]
        assert list(fake.deployments) == [deployment_id]

        # The tuned deployment answers; a second reader gets the same finished stream.
        tuned = await http.post(
            "/classify", json={"text": "So happy with the cut!", "deployment_id": deployment_id}
        )
        assert tuned.json()["label"] == "1"
        tuned = await http.post(
            "/classify", json={"text": "Never again.", "deployment_id": deployment_id}
        )
        assert tuned.json()["label"] == "0"
        assert await read_events(http, job["events"]) == events

        # Mistakes are the request's own errors, found before anything is started.
        bad = await http.post("/tune", json={"parameters": {"num_epochs": 500}})
        assert bad.status_code == 422
        assert "num_epochs" in bad.json()["error"]
        few = await http.post("/tune", json={"examples": [{"input": "a", "output": "1"}]})
        assert few.status_code == 422
        assert (await http.post("/classify", json={})).status_code == 422
        server_file = await http.post("/tune", json={"examples": "/etc/passwd"})
        assert server_file.status_code == 422
        missing = await http.post("/classify", json={"text": "hi", "deployment_id": "nope"})
        assert missing.status_code == 404
        assert (await http.get("/runs/no-such-job/events")).status_code == 404

        # A run that fails ends its stream with the error; the service goes on.
        fake.training_outcome = "failed"
        failing = (await http.post("/tune", json={})).json()
        events = await read_events(http, failing["events"])
        assert events[-2]["kind"] == "finished"
        assert events[-2]["state"] == "failed"
        assert events[-1]["kind"] == "error"
        assert events[-1]["error"] == "TuningFailedError"
        assert (await http.post("/classify", json={"text": "ok"})).status_code == 200
        trainings_before_shutdown = len(fake.trainings)

    # Shutting down cancelled the job that held the deployment, which deleted it.
    assert fake.deployments == {}
    assert fake.count("DELETE", r"^/ml/v4/deployments/") == 1
    assert trainings_before_shutdown == 2


# --- web_service.py, as a script on a real socket ----------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """The script serving on loopback from its own fake; stopped with Ctrl+C afterwards."""
    port = free_port()
    log = tmp_path / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "web_service.py"), "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            # Without WATSONX_URL the script serves from its own fake, never a real service.
            env={k: v for k, v in os.environ.items() if not k.startswith("WATSONX_")},
        )
    try:
        yield f"http://127.0.0.1:{port}", process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_web_service_script_streams_progress_live(
    served: tuple[str, subprocess.Popen[bytes], Path],
) -> None:
    url, process, log = served
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        with anyio.fail_after(30):
            while True:  # until the server listens
                try:
                    ready = await http.post("/classify", json={"text": "Lovely groomer."})
                    break
                except httpx.TransportError:
                    assert process.poll() is None, log.read_text()[-2000:]
                    await anyio.sleep(0.2)
        assert ready.status_code == 200
        assert ready.json()["label"] in ("0", "1")

        job = (await http.post("/tune", json={})).json()
        arrivals: list[tuple[float, dict[str, Any]]] = []
        with anyio.fail_after(60):
            async with http.stream("GET", job["events"]) as response:
                async for line in response.aiter_lines():
                    if line:
                        arrivals.append((time.monotonic(), json.loads(line)))
        kinds = [line["kind"] for _, line in arrivals]
        assert kinds[0] == "submitted"
        assert kinds[-1] == "deployed"
        # Live: the first line came while the run was still going, seconds before the last.
        assert arrivals[-1][0] - arrivals[0][0] > 1.0

        # Concurrent requests against the real server, within the fake's rate limit.
        texts = [f"Review {n}: fine." for n in range(8)]
        results: list[int] = []

        async def classify(text: str) -> None:
            response = await http.post("/classify", json={"text": text})
            results.append(response.status_code)

        async with anyio.create_task_group() as task_group:
            for text in texts:
                task_group.start_soon(classify, text)
        assert results == [200] * len(texts)

    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0
    assert "Application shutdown complete" in log.read_text()


def test_the_cli_demo_tunes_with_the_local_example_s_settings() -> None:
    """`granite-tuner demo` and examples/local_workflow.py are one demo: their settings (which
    the measured time and accuracy depend on) are written twice, so they must agree."""
    from granite_tuner.cli._demo import DEMO_EVALUATION, DEMO_PARAMETERS

    local_workflow = load_example("local_workflow")
    assert local_workflow.PARAMETERS == DEMO_PARAMETERS
    assert local_workflow.GENERATION["max_new_tokens"] == DEMO_EVALUATION.max_new_tokens

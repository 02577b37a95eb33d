"""A program that dies mid-wait is not the end of its tuning run: real processes, real SIGKILLs.

watsonx.ai: a child process starts a run on the fake server (served from this test process
over loopback HTTPS) and waits on it; once the fake shows the training and the child has
polled it, the child is killed with SIGKILL. The run is then picked up again — by id in a
second child process, by name, and by `resume=True` — and waited for until it completes. The
service must hold exactly one training and one data asset: a restart never starts a second
paid job.

Local backend: a child process trains the tiny model through `Tuner` and is killed at a
seeded random step. The run folder must be intact (run.json complete, no half-written file
left once the run has been looked at), a fresh client must report the run failed with an
"interrupted" message, `Tuner.attach` must raise `TuningFailedError` for it, and
`resume=True` must start a new run rather than wait for the dead one.

No sleeps stand in for synchronisation: the tests wait on what they can observe (the fake's
state, the child's stdout, run.json) under `anyio.fail_after`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from granite_tuner import RetryPolicy, Tuner, TuningFailedError, TuningResult, WatsonxClient
from granite_tuner.backends.local import LocalClient, RunStore
from granite_tuner.data import LabelledSet
from granite_tuner.testing import FakeWatsonx, ServerHandle
from tests.tiny_model import review_examples

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
API_KEY = "fake-crash-test-api-key-42"
BASE_MODEL = "ibm/granite-13b-instruct-v2"
RUN_NAME = "reviews-crash-resume"
PARAMETERS: dict[str, Any] = {
    "num_epochs": 3,
    "learning_rate": 0.3,
    "batch_size": 8,
    "verbalizer": "{{input}}",
}
FAST_POLL = (0.01, 0.05)
# Child processes import torch or the whole package first: a generous bound, never a pause.
CHILD_TIMEOUT = 90.0

# --- the child programs ---------------------------------------------------------------------

# argv: backend, mode ("start" | "attach"), iam_url, ca_path, train_file, name, parameters
# (JSON), run_id. WATSONX_URL / WATSONX_APIKEY / WATSONX_PROJECT_ID come in the environment.
_WATSONX_CHILD = """
import json, sys
import anyio
from granite_tuner import RetryPolicy, RunSubmitted, Tuner, WatsonxClient

async def main(mode, iam_url, ca_path, train_file, name, parameters, run_id):
    retry = RetryPolicy(initial_backoff=0.01, max_backoff=0.05)
    async with WatsonxClient.from_env(iam_url=iam_url, verify=ca_path, retry=retry) as client:
        def report(event):
            if isinstance(event, RunSubmitted):
                print("SUBMITTED", event.run_id, flush=True)
        options = dict(poll_interval=(0.01, 0.05), on_event=report)
        if mode == "start":
            tuner = Tuner(client, base_model="ibm/granite-13b-instruct-v2",
                          training_data=train_file, parameters=json.loads(parameters),
                          name=name, **options)
        else:
            tuner = Tuner.attach(client, run_id=run_id, **options)
        result = await tuner.run()
        print("RESULT", result.model_dump_json(), flush=True)

anyio.run(main, *sys.argv[2:], backend=sys.argv[1])
"""

# argv: backend, model folder, home, run name. Prints each step the Tuner reports.
_LOCAL_CHILD = """
import sys
import anyio
from granite_tuner import RunSubmitted, StepLogged, Tuner
from granite_tuner.backends.local import LocalClient
from granite_tuner.data import LabelledSet
from tests.tiny_model import review_examples

async def main(model, home, name):
    async with LocalClient(model, home=home) as client:
        def report(event):
            if isinstance(event, RunSubmitted):
                print("SUBMITTED", event.run_id, flush=True)
            elif isinstance(event, StepLogged):
                print("STEP", event.iteration, flush=True)
        tuner = Tuner(
            client, base_model=model, name=name,
            training_data=LabelledSet(examples=tuple(review_examples(60))),
            parameters=dict(num_epochs=50, batch_size=1, learning_rate=0.1,
                            num_virtual_tokens=4, init_method="random"),
            poll_interval=(0.005, 0.02), on_event=report,
        )
        await tuner.run()
        print("FINISHED", flush=True)

anyio.run(main, *sys.argv[2:], backend=sys.argv[1])
"""


class Child:
    """A child Python process whose stdout is read line by line."""

    def __init__(self, process: anyio.abc.Process, stderr_path: Path) -> None:
        assert process.stdout is not None
        self.process = process
        self._stdout = BufferedByteReceiveStream(process.stdout)
        self._stderr_path = stderr_path

    async def line(self, prefix: str, *, timeout: float = CHILD_TIMEOUT) -> str:
        """The rest of the next stdout line that starts with `prefix`."""
        with anyio.fail_after(timeout):
            while True:
                try:
                    raw = await self._stdout.receive_until(b"\n", 1 << 20)
                except (anyio.EndOfStream, anyio.IncompleteRead):
                    await self.process.wait()
                    pytest.fail(
                        f"the child exited ({self.process.returncode}) before printing "
                        f"{prefix!r}; its stderr:\n{self.stderr()}"
                    )
                text = raw.decode()
                if text.startswith(prefix + " ") or text == prefix:
                    return text[len(prefix) :].strip()

    def stderr(self) -> str:
        return self._stderr_path.read_text(errors="replace")[-4000:]

    async def kill(self) -> None:
        """SIGKILL: no handler, no finally block, no atexit runs in the child."""
        self.process.send_signal(signal.SIGKILL)
        with anyio.fail_after(10):
            await self.process.wait()
        assert self.process.returncode == -signal.SIGKILL


@asynccontextmanager
async def child_process(
    script: str, *args: str, env: dict[str, str], stderr_path: Path
) -> AsyncIterator[Child]:
    """Run `python -c script args...` from the repository root; killed on the way out."""
    with stderr_path.open("wb") as stderr:
        process = await anyio.open_process(
            [sys.executable, "-c", script, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            cwd=REPO,
            env=env,
        )
        try:
            yield Child(process, stderr_path)
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    process.kill()
                await process.aclose()


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll `condition` (cheap, synchronous) until it holds; fail with `what` after `timeout`."""
    try:
        with anyio.fail_after(timeout):
            # Polled: the state lives in another thread, process or the kernel, not an Event.
            while True:
                if condition():
                    return
                await anyio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"timed out waiting until {what}")


# --- watsonx.ai ------------------------------------------------------------------------------


@pytest.fixture
def fake() -> FakeWatsonx:
    # The training runs until the test lets it finish (see `let_it_finish`).
    return FakeWatsonx(training_polls=10**9, metrics_per_epoch=2)


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.jsonl"
    rows = [
        {"input": f"Comment: visit {n}, the groomer was {'kind' if n % 2 else 'late'}.\n",
         "output": str(n % 2)}
        for n in range(60)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def child_env(fake: FakeWatsonx, server: ServerHandle) -> dict[str, str]:
    """What a child needs to reach the fake; the rest of the (isolated) environment as is."""
    return {
        **os.environ,
        "WATSONX_URL": server.url,
        "WATSONX_APIKEY": API_KEY,
        "WATSONX_PROJECT_ID": fake.project_id,
    }


def watsonx_args(
    backend: str, server: ServerHandle, train_file: Path, mode: str, run_id: str = ""
) -> list[str]:
    assert server.ca_cert_path is not None
    return [
        backend,
        mode,
        server.url + "/identity/token",
        server.ca_cert_path,
        str(train_file),
        RUN_NAME,
        json.dumps(PARAMETERS),
        run_id,
    ]


def make_client(fake: FakeWatsonx, server: ServerHandle) -> WatsonxClient:
    return WatsonxClient(
        url=server.url,
        api_key=API_KEY,
        iam_url=server.url + "/identity/token",
        project_id=fake.project_id,
        verify=server.ca_cert_path,
        retry=RetryPolicy(initial_backoff=0.01, max_backoff=0.05),
    )


async def start_and_kill(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path, tmp_path: Path, backend: str
) -> str:
    """A child starts a run and waits on it; it is SIGKILLed while waiting. Returns the id."""
    async with child_process(
        _WATSONX_CHILD,
        *watsonx_args(backend, server, train_file, "start"),
        env=child_env(fake, server),
        stderr_path=tmp_path / "starter.err",
    ) as starter:
        run_id = await starter.line("SUBMITTED")
        # Really submitted: the service has it; and really waiting: the child has read it.
        await wait_until(
            lambda: run_id in fake.trainings and fake.trainings[run_id].polls >= 2,
            "the child has created the training and polled it",
        )
        await starter.kill()
    training = fake.trainings[run_id]
    assert training.state == "running"  # the kill ended the program, not the run
    assert training.name == RUN_NAME
    return run_id


def let_it_finish(fake: FakeWatsonx, run_id: str, more_polls: int = 3) -> None:
    """The training completes on the `more_polls`-th status read from now on."""
    fake.training_polls = fake.trainings[run_id].polls + more_polls


def assert_one_run_on_the_service(fake: FakeWatsonx, run_id: str) -> None:
    assert list(fake.trainings) == [run_id]
    assert fake.count("POST", r"^/ml/v4/trainings$") == 1
    assert len(fake.assets) == 1
    assert fake.count("POST", r"^/v2/assets$") == 1
    [asset] = fake.assets.values()
    assert asset.completed
    assert fake.trainings[run_id].state == "completed"


def assert_completed(result: TuningResult, fake: FakeWatsonx, run_id: str) -> None:
    training = fake.trainings[run_id]
    assert result.run_id == run_id
    assert result.state == "completed"
    assert result.succeeded
    assert result.name == RUN_NAME
    assert result.model_id is not None
    assert result.model_id == training.model_id
    assert len(result.loss_per_epoch) == PARAMETERS["num_epochs"]


async def test_a_killed_program_is_resumed_by_run_id_in_a_new_process(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path, tmp_path: Path, anyio_backend: str
) -> None:
    run_id = await start_and_kill(fake, server, train_file, tmp_path, anyio_backend)
    let_it_finish(fake, run_id)

    async with child_process(
        _WATSONX_CHILD,
        *watsonx_args(anyio_backend, server, train_file, "attach", run_id),
        env=child_env(fake, server),
        stderr_path=tmp_path / "resumer.err",
    ) as resumer:
        assert await resumer.line("SUBMITTED") == run_id
        result = TuningResult.model_validate_json(await resumer.line("RESULT"))
        with anyio.fail_after(30):
            assert await resumer.process.wait() == 0

    assert_completed(result, fake, run_id)
    assert result.data_ref is None  # the resumer uploaded nothing
    assert_one_run_on_the_service(fake, run_id)


async def test_a_killed_program_is_resumed_by_name(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path, tmp_path: Path, anyio_backend: str
) -> None:
    run_id = await start_and_kill(fake, server, train_file, tmp_path, anyio_backend)
    let_it_finish(fake, run_id)

    async with make_client(fake, server) as client:
        tuner = Tuner.attach(client, name=RUN_NAME, poll_interval=FAST_POLL)
        result = await tuner.wait()

    assert tuner.run_id == run_id
    assert_completed(result, fake, run_id)
    assert_one_run_on_the_service(fake, run_id)


async def test_resume_true_waits_for_the_killed_programs_run_instead_of_starting_another(
    fake: FakeWatsonx, server: ServerHandle, train_file: Path, tmp_path: Path, anyio_backend: str
) -> None:
    run_id = await start_and_kill(fake, server, train_file, tmp_path, anyio_backend)
    let_it_finish(fake, run_id)

    async with make_client(fake, server) as client:
        # The same call the killed program made, plus resume=True: what a restart runs.
        result = await Tuner(
            client,
            base_model=BASE_MODEL,
            training_data=train_file,
            parameters=PARAMETERS,
            name=RUN_NAME,
            resume=True,
            poll_interval=FAST_POLL,
        ).run()

    assert_completed(result, fake, run_id)
    assert_one_run_on_the_service(fake, run_id)


# --- the local backend -----------------------------------------------------------------------


def run_folder_problems(folder: Path) -> list[str]:
    """What is wrong with a run folder on disk: torn or unreadable files, leftovers."""
    problems: list[str] = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            problems.append(f"temporary leftover {relative}")
        elif path.is_file() and path.suffix == ".json":
            try:
                json.loads(path.read_bytes())
            except ValueError as exc:
                problems.append(f"{relative} is not complete JSON: {exc}")
    names = {path.name for path in folder.iterdir()}
    if "run.json" not in names:
        problems.append("run.json is missing")
    if "adapter" in names and not (folder / "adapter" / "adapter_config.json").is_file():
        problems.append("an adapter folder without its config")
    return problems


@pytest.mark.slow
async def test_a_local_run_killed_mid_training_is_reported_interrupted_and_left_intact(
    tiny_model_dir: Path, tmp_path: Path, anyio_backend: str
) -> None:
    home = tmp_path / "home"
    # Killed at a seeded random step: between two writes of run.json or, rarely, during one.
    kill_at_step = random.Random(f"crash/{anyio_backend}").randint(1, 150)
    name = "doomed-reviews"
    store = RunStore(home)

    async with child_process(
        _LOCAL_CHILD,
        anyio_backend,
        str(tiny_model_dir),
        str(home),
        name,
        env=dict(os.environ),
        stderr_path=tmp_path / "trainer.err",
    ) as trainer:
        run_id = await trainer.line("SUBMITTED")
        while int(await trainer.line("STEP")) < kill_at_step:
            pass
        await trainer.kill()

    # What the killed process last wrote is whole, and says it was running.
    folder = store.run_dir(run_id)
    on_disk = json.loads((folder / "run.json").read_bytes())
    assert on_disk["id"] == run_id
    assert on_disk["state"] == "running"
    assert store.load(run_id).owner.pid == trainer.process.pid
    # A kill that lands inside a write (a few ms of every epoch) leaves that write's temporary
    # file or folder behind; plant both, so the clean-up below is tested on every run.
    (folder / f".run.json.tmp-{'0' * 32}").write_bytes(b'{"id": "' + run_id.encode())
    torn_adapter = folder / f".adapter.tmp-{'1' * 32}"
    torn_adapter.mkdir()
    (torn_adapter / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    assert len(run_folder_problems(folder)) == 3

    async with LocalClient(str(tiny_model_dir), home=home) as client:
        # A new program sees the run as failed, interrupted: never stuck "running".
        [listed] = await client.list_tuning_runs()
        assert listed.id == run_id
        assert listed.state == "failed"
        assert listed.failure_message is not None
        assert "interrupted" in listed.failure_message
        assert [r.id for r in await client.find_tuning_runs(name)] == [run_id]
        assert run_folder_problems(folder) == []

        # Re-attaching reports the failure as a typed error carrying the run as it ended.
        for tuner in (
            Tuner.attach(client, run_id=run_id, poll_interval=FAST_POLL),
            Tuner.attach(client, name=name, poll_interval=FAST_POLL),
        ):
            with anyio.fail_after(30), pytest.raises(TuningFailedError) as failed:
                await tuner.wait()
            assert failed.value.run_id == run_id
            assert failed.value.result is not None
            assert failed.value.result.state == "failed"
            assert "interrupted" in (failed.value.result.failure_message or "")
            assert "interrupted" in str(failed.value)

        # resume=True does not wait for a dead run: it starts a new one, which completes.
        with anyio.fail_after(120):
            restarted = await Tuner(
                client,
                base_model=str(tiny_model_dir),
                training_data=LabelledSet(examples=tuple(review_examples(60))),
                parameters={"num_epochs": 1, "batch_size": 8, "num_virtual_tokens": 4},
                name=name,
                resume=True,
                poll_interval=FAST_POLL,
            ).run()
        assert restarted.run_id != run_id
        assert restarted.state == "completed"
        runs = {run.id: run.state for run in await client.list_tuning_runs()}
        assert runs == {run_id: "failed", restarted.run_id: "completed"}

    # Reading the dead run again (in this process or another) changes nothing on disk.
    assert store.read(run_id).state == "failed"
    assert store.load(run_id).state == "running"
    for run in (run_id, restarted.run_id):
        assert run_folder_problems(store.run_dir(run)) == []
    assert sorted(p.name for p in store.runs_dir.iterdir()) == sorted([run_id, restarted.run_id])

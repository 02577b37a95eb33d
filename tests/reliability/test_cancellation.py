"""Cancelled at a random moment, an operation leaves nothing behind: tasks, connections, files.

Each operation — `Tuner.run()`, `Deployment.create()`, and an evaluation that writes its
report — is cancelled at a point drawn from a seeded RNG, 20 seeds each, on asyncio and on
trio. The point is either a delay into the operation (the fake server's latencies and injected
delays make windows in every phase: uploads, the create calls, polling, generation) or the
moment the Nth HTTP request leaves the client (an httpx request hook cancels the scope); every
fifth evaluation is cancelled from the thread that writes its report. After each cancellation:

- **no task left running**: the set of live tasks is the one from before the operation. On
  asyncio that is `asyncio.all_tasks()`; on trio the whole task tree, walked from
  `trio.lowlevel.current_root_task()` through every nursery. The one kind of new task let
  through is the event loop's own finalizer of an async generator httpcore dropped unclosed
  (see `is_generator_finalizer`), and it too must have ended a moment later;
- **no connection stuck in use**: with the client still open, the httpx pool has no request
  in it and every connection is idle or closed; the sockets this process holds to the server
  are exactly the pool's open connections (a socket the pool forgot would be a leak);
- **no connection left open**: once the client is closed, the pool is empty and no socket of
  this process is connected to the server (read from /proc, not from httpx's own account);
- **the client still works**: a fresh call on the same client succeeds, and the rate limiter
  counts nothing in flight (no lock or limiter slot held by the cancelled work);
- **no partial file**: a report is either absent or complete, and no temporary file is left;
- **the service is left as the API promises**: never two trainings or deployments for one
  call, no half-uploaded data asset; with `cancel_on_exit=True` the training is canceled,
  with `False` it keeps running; with `delete_on_exit=True` the deployment is deleted, with
  `False` it is left for the caller to attach to.

The service's state is read only once the fake has finished with every connection the client
made (their server-side sockets are closed): a request the client gave up on may still be
handled by the server after the cancellation, and that is exactly the case worth seeing.
"""

from __future__ import annotations

import asyncio
import csv
import gc
import io
import random
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import httpcore
import httpx
import pytest

from granite_tuner import (
    ComparisonReport,
    Deployment,
    EvaluationReport,
    Evaluator,
    RateLimiter,
    RetryPolicy,
    Tuner,
    WatsonxClient,
)
from granite_tuner.testing import FakeWatsonx, Fault, ServerHandle
from tests.fakes import completed_model_id, watsonx_client

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not Path("/proc/self/fd").is_dir(), reason="reads the process's sockets from /proc"
    ),
]

SEEDS = range(20)
BASE_MODEL = "ibm/granite-13b-instruct-v2"
QUICK_RETRY = RetryPolicy(initial_backoff=0.01, max_backoff=0.02)
POLL = (0.01, 0.02)
TRAINING_ROWS = [
    {"input": f"Comment: visit {n}, the groomer was {'kind' if n % 2 else 'late'}.\n",
     "output": str(n % 2)}
    for n in range(60)
]  # fmt: skip
TEST_ROWS = TRAINING_ROWS[:30]
# Bounds for what should take milliseconds once the operation is over (not pauses).
SETTLE_TIMEOUT = 10.0

# --- when to cancel --------------------------------------------------------------------------


@dataclass(frozen=True)
class CancelPoint:
    """Cancel `delay` seconds into the operation, or as its `request`-th HTTP request leaves
    (or, with neither, wherever the operation cancels its own scope)."""

    delay: float | None = None
    request: int | None = None

    @classmethod
    def draw(cls, rng: random.Random, *, max_delay: float, max_requests: int) -> CancelPoint:
        if rng.random() < 0.5:
            return cls(delay=rng.uniform(0.0, max_delay))
        return cls(request=rng.randint(1, max_requests))

    @contextmanager
    def armed(self, client: WatsonxClient) -> Iterator[anyio.CancelScope]:
        """A cancel scope that this point cancels; the operation runs inside it."""
        scope = anyio.CancelScope()
        if self.delay is not None:
            scope.deadline = anyio.current_time() + self.delay
        sent = 0

        async def on_request(request: httpx.Request) -> None:
            nonlocal sent
            sent += 1
            if sent == self.request:
                scope.cancel()  # lands at the next checkpoint: sending this very request

        hooks = client._http.event_hooks["request"]
        hooks.append(on_request)
        try:
            with scope:
                yield scope
        finally:
            hooks.remove(on_request)


# --- what is left running --------------------------------------------------------------------


def live_tasks(backend: str) -> set[object]:
    """Every task of the running event loop that has not finished."""
    if backend == "trio":
        import trio

        root = trio.lowlevel.current_root_task()
        assert root is not None
        found: set[object] = set()
        pending = [root]
        while pending:
            task = pending.pop()
            found.add(task)
            for nursery in task.child_nurseries:
                pending.extend(nursery.child_tasks)
        return found
    return set(asyncio.all_tasks())


def is_generator_finalizer(task: object, backend: str) -> bool:
    """Whether `task` is the event loop's own, closing an async generator dropped unfinished.

    httpcore iterates a request body (httpx's `ByteStream.__aiter__`) without closing the
    iterator when the send is cancelled; when the generator is garbage collected, the event
    loop closes it in a task of its own (trio: "close asyncgen ... (abandoned)"; asyncio: a
    task running `agen.aclose()`). That task ends at once and holds nothing of ours.
    """
    if backend == "trio":
        import trio

        return isinstance(task, trio.lowlevel.Task) and task.name.startswith("close asyncgen ")
    assert isinstance(task, asyncio.Task)
    return type(task.get_coro()).__name__ == "async_generator_athrow"


async def assert_no_new_tasks(before: set[object], backend: str) -> None:
    left = live_tasks(backend) - before
    work = {task for task in left if not is_generator_finalizer(task, backend)}
    assert not work, f"tasks left running after the cancellation: {work}"
    # Generator finalizers may still be starting; they too must end (within a tick or two).
    await eventually(lambda: not live_tasks(backend) - before, "no task but the old ones runs")


# --- what is left connected ------------------------------------------------------------------


@dataclass(frozen=True)
class TcpSocket:
    local_port: int
    remote_port: int
    state: str


_TCP_STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


def open_tcp_sockets() -> list[TcpSocket]:
    """The TCP sockets this process holds open (has a file descriptor for), from /proc."""
    inodes: set[str] = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:  # closed while we looked
            continue
        name = str(target)
        if name.startswith("socket:["):
            inodes.add(name[len("socket:[") : -1])
    found: list[TcpSocket] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[9] in inodes:
                found.append(
                    TcpSocket(
                        local_port=int(fields[1].rsplit(":", 1)[1], 16),
                        remote_port=int(fields[2].rsplit(":", 1)[1], 16),
                        state=_TCP_STATES.get(fields[3], fields[3]),
                    )
                )
    return found


def client_sockets(server: ServerHandle) -> list[TcpSocket]:
    """Sockets of this process connected to the server: the client's side of connections."""
    return [s for s in open_tcp_sockets() if s.remote_port == server.port]


def server_sockets(server: ServerHandle) -> list[TcpSocket]:
    """The fake server's accepted connections (it runs in a thread of this process)."""
    return [s for s in open_tcp_sockets() if s.local_port == server.port and s.state != "LISTEN"]


def connection_pool(client: WatsonxClient) -> httpcore.AsyncConnectionPool:
    transport = client._http._transport
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    return transport._pool


async def eventually(
    condition: Callable[[], bool], what: str, state: Callable[[], str] | None = None
) -> None:
    """Wait until `condition` holds (closing a socket can take an event-loop turn or two).

    `state`, if given, describes what was seen last, for the failure message."""
    try:
        with anyio.fail_after(SETTLE_TIMEOUT):
            # Polled: the state lives in another thread, process or the kernel, not an Event.
            while True:
                if condition():
                    return
                await anyio.sleep(0.005)
    except TimeoutError:
        seen = "" if state is None else f" ({state()})"
        pytest.fail(f"never came true: {what}{seen}")


async def assert_no_connection_in_use(client: WatsonxClient, server: ServerHandle) -> None:
    """With the client open: nothing in flight, and no socket outside the pool's knowledge."""
    pool = connection_pool(client)
    assert not pool._requests, f"requests still in the pool: {pool._requests}"
    busy = [c for c in pool.connections if not (c.is_idle() or c.is_closed())]
    assert not busy, f"connections stuck in use: {busy}"

    def sockets_match_pool() -> bool:
        open_connections = [c for c in pool.connections if not c.is_closed()]
        if len(client_sockets(server)) == len(open_connections):
            return True
        # httpcore's trio backend closes a TCP stream whose TLS handshake fails only on
        # `Exception`, so a cancellation (a BaseException on trio) mid-handshake drops the
        # stream unclosed, and only its finalizer closes the socket. Nothing of ours holds
        # it; a collection runs that finalizer. A socket still referenced stays open and fails.
        gc.collect()
        return False

    def seen() -> str:
        return (
            f"client sockets the server sees: {len(client_sockets(server))}; "
            f"pool: {[(c.is_closed(), c.is_idle(), c.has_expired()) for c in pool.connections]}"
        )

    await eventually(
        sockets_match_pool, "the client's sockets are the pool's open connections", seen
    )


async def close_and_settle(client: WatsonxClient, server: ServerHandle) -> None:
    """Close the client; then no socket of it is open, and the server is done with them all."""
    await client.aclose()
    assert connection_pool(client).connections == []

    def no_client_socket() -> bool:
        if not client_sockets(server):
            return True
        gc.collect()  # a socket dropped unclosed by httpcore (see assert_no_connection_in_use)
        return False

    await eventually(no_client_socket, "every client socket is closed")
    # The server closes a connection only after handling everything that came on it.
    await eventually(lambda: not server_sockets(server), "the server is done with every request")


async def assert_client_still_works(client: WatsonxClient) -> None:
    with anyio.fail_after(SETTLE_TIMEOUT):
        models = await client.foundation_models.list(prompt_tunable=True)
    assert BASE_MODEL in [m.model_id for m in models]


def make_client(
    fake: FakeWatsonx, server: ServerHandle, limiter: RateLimiter | None = None
) -> WatsonxClient:
    return watsonx_client(fake, server, retry=QUICK_RETRY, limiter=limiter)


async def cancel_at(
    point: CancelPoint,
    client: WatsonxClient,
    backend: str,
    operation: Callable[[anyio.CancelScope], Awaitable[Any]],
) -> bool:
    """Run `operation` in a scope cancelled at `point`; check that no task is left; say
    whether it was cancelled. The operation gets the scope (to cancel it from a thread)."""
    before = live_tasks(backend)
    with point.armed(client) as scope:
        await operation(scope)
    await assert_no_new_tasks(before, backend)
    return scope.cancelled_caught


# --- Tuner.run() -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
async def test_cancelling_tuner_run_leaves_nothing_behind(seed: int, anyio_backend: str) -> None:
    rng = random.Random(f"tuner/{seed}")
    cancel_on_exit = seed % 2 == 0
    point = CancelPoint.draw(rng, max_delay=0.3, max_requests=12)
    # The training never finishes; the upload and the create take a while: windows to land in.
    fake = FakeWatsonx(training_polls=10**9, seed=seed)
    fake.faults.add(Fault("delay", method="PUT", path=r"^/_fake_cos/", delay=0.04, times=None))
    fake.faults.add(
        Fault("delay", method="POST", path=r"^/ml/v4/trainings$", delay=0.08, times=None)
    )
    with fake.serve(tls=True) as server:
        client = make_client(fake, server)
        tuner = Tuner(
            client,
            base_model=BASE_MODEL,
            training_data=TRAINING_ROWS,
            parameters={"num_epochs": 2},
            name=f"cancelled-{seed}",
            poll_interval=POLL,
            cancel_on_exit=cancel_on_exit,
        )
        cancelled = await cancel_at(point, client, anyio_backend, lambda _: tuner.run())
        assert cancelled, f"{point}: the run never finishes, so it must have been cancelled"
        await assert_no_connection_in_use(client, server)
        await assert_client_still_works(client)
        await close_and_settle(client, server)

        trainings = fake.trainings
        assert fake.count("POST", r"^/ml/v4/trainings$") == len(trainings) <= 1
        for training in trainings.values():
            if cancel_on_exit:
                # Asked to cancel on exit: the run it started is canceled, and it knows which.
                assert training.state == "canceled", point
                assert tuner.run_id == training.id
            else:
                assert training.state in ("queued", "running"), point
                assert tuner.run_id in (None, training.id)
        if tuner.run_id is not None:
            assert tuner.run_id in trainings
        # A data asset is complete, or was never filled in; never half-uploaded.
        assets = fake.assets
        assert len(assets) <= 1
        for asset in assets.values():
            assert asset.completed or not asset.attachments, point


# --- Deployment.create() ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
async def test_cancelling_deployment_create_leaves_nothing_behind(
    seed: int, anyio_backend: str
) -> None:
    rng = random.Random(f"deployment/{seed}")
    delete_on_exit = seed % 2 == 0
    serving_name = f"reviews_{seed}" if seed % 4 < 2 else None
    point = CancelPoint.draw(rng, max_delay=0.2, max_requests=6)
    fake = FakeWatsonx(training_polls=1, deployment_polls=10**9, seed=seed)
    fake.faults.add(
        Fault("delay", method="POST", path=r"^/ml/v4/deployments$", delay=0.08, times=None)
    )
    with fake.serve(tls=True) as server:
        client = make_client(fake, server)
        model_id = await completed_model_id(client, BASE_MODEL)

        async def deploy(scope: anyio.CancelScope) -> None:
            await Deployment.create(
                client,
                model_id,
                name=f"reviews {seed}",
                serving_name=serving_name,
                poll_interval=POLL,
                timeout=None,
                delete_on_exit=delete_on_exit,
            )

        cancelled = await cancel_at(point, client, anyio_backend, deploy)
        assert cancelled, f"{point}: the deployment never gets ready, so it must be cancelled"
        await assert_no_connection_in_use(client, server)
        await assert_client_still_works(client)
        await close_and_settle(client, server)

        deployments = fake.deployments
        created = fake.count("POST", r"^/ml/v4/deployments$")
        assert created <= 1
        assert len(deployments) <= created
        if delete_on_exit:
            assert not deployments, f"{point}: delete_on_exit left {deployments}"
        else:
            # Cancelled while waiting: the deployment is left to attach to, as documented.
            assert len(deployments) == created, point
            assert all(d.state == "initializing" for d in deployments.values())


# --- an evaluation that writes its report ----------------------------------------------------


def check_report_folder(folder: Path, targets: list[str]) -> set[str]:
    """Every file is complete (or absent), nothing temporary is left; the names present."""
    names = {path.name for path in folder.iterdir()}
    assert names <= {"report.json", "items.csv"}, f"unexpected (temporary?) files: {names}"
    if "report.json" in names:
        path = folder / "report.json"
        reports: list[EvaluationReport]
        if len(targets) > 1:
            reports = list(ComparisonReport.from_json(path).reports.values())
        else:
            reports = [EvaluationReport.from_json(path)]
        assert sorted(r.target for r in reports) == sorted(targets)
        assert all(len(r.items) == len(TEST_ROWS) for r in reports)
    if "items.csv" in names:
        assert "report.json" in names  # written second
        text = (folder / "items.csv").read_text(encoding="utf-8")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == len(TEST_ROWS) * len(targets)
        assert text.endswith("\n")
    return names


@pytest.mark.parametrize("seed", SEEDS)
async def test_cancelling_an_evaluation_that_writes_its_report_leaves_nothing_behind(
    seed: int, anyio_backend: str, tmp_path: Path
) -> None:
    rng = random.Random(f"evaluation/{seed}")
    compare = seed % 2 == 0
    targets = ["base", "tuned"] if compare else ["tuned"]
    calls = len(TEST_ROWS) * len(targets)
    # Every fifth seed is cancelled while the report is being written (from the writing
    # thread); the others anywhere from the first request to a little past the last one, so
    # that some finish and write both files.
    while_writing = seed % 5 == 4
    point = (
        CancelPoint()
        if while_writing
        else CancelPoint.draw(rng, max_delay=0.006 * calls, max_requests=calls + calls // 5)
    )
    fake = FakeWatsonx(training_polls=1, deployment_polls=1, generation_latency=0.005, seed=seed)
    # Some answers come slowly, in pieces: cancellations land in the middle of reading a body.
    fake.faults.add(
        Fault(
            "slow_body",
            method="POST",
            path=r"/text/generation$",
            delay=0.005,
            probability=0.2,
            times=None,
        )
    )
    limiter = RateLimiter(requests_per_second=1000, max_concurrency=3)
    folder = tmp_path / "reports"
    folder.mkdir()
    with fake.serve(tls=True) as server:
        client = make_client(fake, server, limiter)
        model_id = await completed_model_id(client, BASE_MODEL)
        tuned = await Deployment.create(client, model_id, poll_interval=POLL)
        evaluator = Evaluator(client, max_concurrency=4)

        async def evaluate_and_write(scope: anyio.CancelScope) -> None:
            report: ComparisonReport | EvaluationReport
            if compare:
                report = await evaluator.compare(TEST_ROWS, base=BASE_MODEL, tuned=tuned)
            else:
                report = await evaluator.evaluate(TEST_ROWS, tuned, name="tuned")

            def write_json() -> None:
                if while_writing:  # the cancellation arrives while the file is written
                    anyio.from_thread.run_sync(scope.cancel)
                report.to_json(folder / "report.json")

            await anyio.to_thread.run_sync(write_json)
            await anyio.to_thread.run_sync(report.to_csv, folder / "items.csv")

        cancelled = await cancel_at(point, client, anyio_backend, evaluate_and_write)
        names = check_report_folder(folder, targets)
        if while_writing:
            assert cancelled
            assert names == {"report.json"}  # finished, complete; the CSV never started
        elif not cancelled:
            assert names == {"report.json", "items.csv"}
        assert limiter.stats.in_flight == 0  # every limiter slot was given back
        await assert_no_connection_in_use(client, server)
        await assert_client_still_works(client)
        with anyio.fail_after(SETTLE_TIMEOUT):
            answer = await tuned.generate(str(TEST_ROWS[0]["input"]))
        assert answer.text.strip() in {"0", "1"}
        await close_and_settle(client, server)
        assert list(fake.deployments) == [tuned.id]  # the evaluation never touches it

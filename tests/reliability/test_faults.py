"""Fault injection: our client against the fake watsonx.ai over real HTTPS sockets on loopback.

Each case puts one kind of fault on the one request that matters for an operation (the create
of a data asset, a training or a deployment; reading a training; a generation) and asserts
exactly what comes out: success after a known number of attempts, or a specific typed error
after the retry budget. For the creates it also asserts, from the fake's request log, the order
of creates (P) and lookups (L) — every resend of a create follows a lookup that found nothing —
and, from the fake's state, that no asset, training or deployment was made twice.

The objects an operation needs are made first by a separate client with no faults in force;
the client under test is fresh, so its first request also exchanges its API key at IAM.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import anyio
import pytest

from granite_tuner import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    GraniteTunerError,
    RateLimitError,
    RetryPolicy,
    ServerError,
    WatsonxClient,
)
from granite_tuner.testing import FakeWatsonx, Fault, ServerHandle
from tests.fakes import TRAINING_JSONL, completed_model_id, watsonx_client

pytestmark = pytest.mark.anyio

BASE_MODEL = "ibm/granite-13b-instruct-v2"
IAM_PATH = "^/identity/token$"

#: Three attempts per request, with backoffs of milliseconds: the budget is spent quickly.
QUICK = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05)
#: Each timed-out attempt costs a whole timeout: two of them are enough to show the budget.
TWO_ATTEMPTS = QUICK.model_copy(update={"max_attempts": 2})
#: Enough attempts and backoff for a delayed create to land while its lookups still run.
PATIENT = RetryPolicy(max_attempts=6, initial_backoff=0.1, max_backoff=0.2, jitter=0)

#: Client read timeout for the timeout cases; the server's delays are longer.
SHORT_TIMEOUT = 0.3
LONG_DELAY = 0.6
#: When every attempt times out, the create's one lookup comes at about 0.3 s: it must still
#: miss the object, which lands at 0.8 s.
LONGER_DELAY = 0.8


# --- the operations ---------------------------------------------------------------------------


@dataclass
class Prepared:
    """What an operation needs, made before any fault is in force."""

    asset_id: str = ""
    training_id: str = ""
    model_id: str = ""


@dataclass(frozen=True)
class Operation:
    """One call that costs money or matters, and the request the faults aim at."""

    name: str
    method: str
    path: str
    kind: str | None  # which of the fake's stores the call adds to ("assets", ...); None: none
    lookup: tuple[str, str] | None  # (method, path) of the lookup a create makes before a resend
    prepare: Callable[[WatsonxClient], Awaitable[Prepared]]
    run: Callable[[WatsonxClient, Prepared], Awaitable[str]]

    @property
    def creates(self) -> bool:
        return self.kind is not None


async def nothing(client: WatsonxClient) -> Prepared:
    return Prepared()


async def an_asset(client: WatsonxClient) -> Prepared:
    asset = await client.assets.upload(TRAINING_JSONL, name="train.jsonl")
    return Prepared(asset_id=asset.id)


async def a_training(client: WatsonxClient) -> Prepared:
    prepared = await an_asset(client)
    training = await client.trainings.create(
        name="t", base_model=BASE_MODEL, task_id="classification", data_asset_id=prepared.asset_id
    )
    prepared.training_id = training.id
    return prepared


async def a_tuned_model(client: WatsonxClient) -> Prepared:
    return Prepared(model_id=await completed_model_id(client, BASE_MODEL))


async def upload_asset(client: WatsonxClient, prepared: Prepared) -> str:
    return (await client.assets.upload(TRAINING_JSONL, name="train.jsonl")).id


async def create_training(client: WatsonxClient, prepared: Prepared) -> str:
    training = await client.trainings.create(
        name="t", base_model=BASE_MODEL, task_id="classification", data_asset_id=prepared.asset_id
    )
    return training.id


async def get_training(client: WatsonxClient, prepared: Prepared) -> str:
    return (await client.trainings.get(prepared.training_id)).id


async def create_deployment(client: WatsonxClient, prepared: Prepared) -> str:
    return (await client.deployments.create(model_id=prepared.model_id, name="d")).id


async def generate(client: WatsonxClient, prepared: Prepared) -> str:
    result = await client.generation.generate("Comment: nice\nSatisfaction:\n", model_id=BASE_MODEL)
    return result.text


OPERATIONS = [
    Operation(
        "asset_upload",
        "POST",
        "^/v2/assets$",
        "assets",
        ("POST", "^/v2/asset_types/data_asset/search$"),
        nothing,
        upload_asset,
    ),
    Operation(
        "training_create",
        "POST",
        "^/ml/v4/trainings$",
        "trainings",
        ("GET", "^/ml/v4/trainings$"),
        an_asset,
        create_training,
    ),
    Operation(
        "training_get", "GET", "^/ml/v4/trainings/[^/]+$", None, None, a_training, get_training
    ),
    Operation(
        "deployment_create",
        "POST",
        "^/ml/v4/deployments$",
        "deployments",
        ("GET", "^/ml/v4/deployments$"),
        a_tuned_model,
        create_deployment,
    ),
    Operation("generation", "POST", "^/ml/v1/text/generation$", None, None, nothing, generate),
]


# --- the faults and what each must lead to ----------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """The outcome of one operation under one fault.

    `sequence` is a regex that the fault-hit request (P) and the create's lookups (L) must
    match, in order; `error` the exact error type, or None for success; `objects` how many
    objects of the operation's kind exist afterwards (creates only).
    """

    sequence: str
    error: type[GraniteTunerError] | None = None
    objects: int = 1


@dataclass(frozen=True)
class FaultCase:
    name: str
    faults: Callable[[Operation], list[Fault]]
    read: Expect  # for training_get and generation
    create: Expect  # for the asset, training and deployment creates
    iam_requests: int = 1  # IAM exchanges the client under test makes
    retry: RetryPolicy = QUICK
    timeout: float | None = None
    status: int | None = None  # the status_code the error must carry
    says: str = ""  # words the error's message must hold


def on_target(template: Fault) -> Callable[[Operation], list[Fault]]:
    """The fault `template`, aimed at the operation's own request."""

    def make(operation: Operation) -> list[Fault]:
        return [dataclasses.replace(template, method=operation.method, path=operation.path)]

    return make


def on_iam(*, times: int | None) -> Callable[[Operation], list[Fault]]:
    """503s from IAM: the API-key exchange fails `times` times (None: for good)."""

    def make(operation: Operation) -> list[Fault]:
        return [Fault(action="status", status=503, method="POST", path=IAM_PATH, times=times)]

    return make


def transient_status(status: int) -> FaultCase:
    return FaultCase(
        f"{status}_twice_then_ok",
        on_target(Fault("status", status=status, times=2)),
        read=Expect("PPP"),
        create=Expect("PLPLP"),  # a 5xx may hide a processed create: look before resending
    )


CASES = [
    FaultCase(
        "429_burst_with_retry_after",
        on_target(Fault("status", status=429, retry_after="0.1", times=2)),
        read=Expect("PPP"),
        create=Expect("PPP"),  # a 429 was never acted on: resent without a lookup
    ),
    FaultCase(
        "429_burst_without_retry_after",
        on_target(Fault("status", status=429, times=2)),
        read=Expect("PPP"),
        create=Expect("PPP"),
    ),
    FaultCase(
        "429_past_the_budget",
        on_target(Fault("status", status=429, retry_after="0.05", times=None)),
        read=Expect("PPP", RateLimitError),
        create=Expect("PPP", RateLimitError, objects=0),
        status=429,
    ),
    *(transient_status(status) for status in (500, 502, 503, 504)),
    FaultCase(
        "503_past_the_budget",
        on_target(Fault("status", status=503, times=None)),
        read=Expect("PPP", ServerError),
        create=Expect("PLPLP", ServerError, objects=0),
        status=503,
    ),
    FaultCase(
        "dropped_before_handling",
        on_target(Fault("drop_before")),
        read=Expect("PP"),
        create=Expect("PLP"),  # the lookup finds nothing, so the create is sent again
    ),
    FaultCase(
        "dropped_after_handling",
        on_target(Fault("drop_after")),
        read=Expect("PP"),
        create=Expect("PL"),  # the lookup finds the object the lost answer was about
    ),
    FaultCase(
        "dropped_every_time",
        on_target(Fault("drop_before", times=None)),
        read=Expect("PPP", APIConnectionError),
        create=Expect("PLPLP", APIConnectionError, objects=0),
    ),
    FaultCase(
        "read_timeout_once",
        on_target(Fault("delay", delay=LONG_DELAY)),
        read=Expect("PP"),
        # The timed-out create lands while the client keeps looking; it is never resent.
        create=Expect("PL+"),
        retry=PATIENT,
        timeout=SHORT_TIMEOUT,
    ),
    FaultCase(
        "read_timeout_every_time",
        on_target(Fault("delay", delay=LONGER_DELAY, times=None)),
        read=Expect("PP", APITimeoutError),
        # The budget ends before the create lands: a timeout error, and one object later.
        create=Expect("PL", APITimeoutError, objects=1),
        retry=TWO_ATTEMPTS,
        timeout=SHORT_TIMEOUT,
        says="may have been processed",
    ),
    FaultCase(
        "slow_body_within_the_timeout",
        on_target(Fault("slow_body", delay=0.05)),
        read=Expect("P"),
        create=Expect("P"),
        timeout=SHORT_TIMEOUT,
    ),
    FaultCase(
        "slow_body_past_the_timeout",
        on_target(Fault("slow_body", delay=LONG_DELAY)),
        read=Expect("PP"),
        create=Expect("PL"),
        timeout=SHORT_TIMEOUT,
    ),
    FaultCase(
        "truncated_json", on_target(Fault("truncated")), read=Expect("PP"), create=Expect("PL")
    ),
    FaultCase(
        "malformed_json", on_target(Fault("malformed")), read=Expect("PP"), create=Expect("PL")
    ),
    FaultCase(
        "token_expires_mid_run",
        on_target(Fault("expire_token")),
        read=Expect("PP"),
        create=Expect("PP"),  # the 401 came before any handling: resent at once, no lookup
        iam_requests=2,
    ),
    FaultCase(
        "token_rejected_even_after_refresh",
        on_target(Fault("expire_token", times=None)),
        read=Expect("PP", AuthenticationError),
        create=Expect("PP", AuthenticationError, objects=0),
        iam_requests=2,
        status=401,
    ),
    FaultCase(
        "iam_outage_then_recovery",
        on_iam(times=2),
        read=Expect("P"),
        create=Expect("P"),
        iam_requests=3,
    ),
    FaultCase(
        "iam_outage_for_good",
        on_iam(times=None),
        read=Expect("", ServerError),
        create=Expect("", ServerError, objects=0),
        iam_requests=3,  # one budget of attempts, not one per attempt of the request
        status=503,
        says="IAM token exchange",
    ),
]


# --- fixtures and helpers ---------------------------------------------------------------------


def client_under_test(fake: FakeWatsonx, server: ServerHandle, case: FaultCase) -> WatsonxClient:
    """A fresh client (no token yet) with the case's retry policy and read timeout."""
    return WatsonxClient(
        url=server.url,
        api_key="fake-test-api-key-123",
        iam_url=server.url + "/identity/token",
        project_id=fake.project_id,
        verify=server.ca_cert_path,
        retry=case.retry,
        timeout=case.timeout,
    )


def objects(fake: FakeWatsonx) -> dict[str, set[str]]:
    return {
        "assets": set(fake.assets),
        "trainings": set(fake.trainings),
        "deployments": set(fake.deployments),
    }


def new_objects(before: Mapping[str, set[str]], fake: FakeWatsonx) -> dict[str, set[str]]:
    return {kind: ids - before[kind] for kind, ids in objects(fake).items()}


def sequence(fake: FakeWatsonx, operation: Operation, since: int) -> str:
    """The operation's own requests (P) and its create's lookups (L) since request `since`."""
    letters = []
    for request in fake.requests[since:]:
        if request.method == operation.method and re.search(operation.path, request.path):
            letters.append("P")
        elif operation.lookup is not None:
            method, path = operation.lookup
            if request.method == method and re.search(path, request.path):
                letters.append("L")
    return "".join(letters)


async def server_finished(fake: FakeWatsonx) -> None:
    """Wait until the fake has handled every request, the delayed ones included (a request
    still in hand has neither a status nor a fault recorded; a dropped one has its fault).

    The fake runs in another thread, so there is no event to wait on: poll, for at most 5 s.
    """
    for _ in range(500):
        if not any(r.status is None and r.fault is None for r in fake.requests):
            return
        await anyio.sleep(0.01)
    raise AssertionError("the fake is still handling a request after 5 s")


# --- the matrix -------------------------------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS, ids=[o.name for o in OPERATIONS])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_fault(
    fake: FakeWatsonx, server: ServerHandle, operation: Operation, case: FaultCase
) -> None:
    async with watsonx_client(fake, server, retry=QUICK) as setup_client:
        prepared = await operation.prepare(setup_client)
    before = objects(fake)
    since = len(fake.requests)
    hits = [fake.faults.add(fault) for fault in case.faults(operation)]
    expect = case.create if operation.creates else case.read

    error: GraniteTunerError | None = None
    result = ""
    async with client_under_test(fake, server, case) as client:
        try:
            result = await operation.run(client, prepared)
        except GraniteTunerError as exc:
            error = exc
    if operation.creates:
        await server_finished(fake)  # a delayed create lands after the client gave up

    if expect.error is None:
        assert error is None, f"expected success, got {error!r}"
    else:
        assert type(error) is expect.error, f"expected {expect.error.__name__}, got {error!r}"
        if case.status is not None:
            assert getattr(error, "status_code", None) == case.status
        assert case.says in str(error)
    assert re.fullmatch(expect.sequence, sequence(fake, operation, since)), (
        f"requests {sequence(fake, operation, since)!r} do not match {expect.sequence!r}"
    )
    iam = [r for r in fake.requests[since:] if r.method == "POST" and re.search(IAM_PATH, r.path)]
    assert len(iam) == case.iam_requests
    assert sum(fault.hits for fault in hits) >= 1

    created = new_objects(before, fake)
    wanted = dict.fromkeys(created, 0)
    if operation.kind is not None:
        wanted[operation.kind] = expect.objects
    assert {kind: len(ids) for kind, ids in created.items()} == wanted
    if operation.kind is not None and expect.error is None:
        assert created[operation.kind] == {result}  # the object returned is the one made
    if operation.name == "asset_upload" and expect.error is None:
        assert fake.assets[result].completed


# --- details the matrix does not show -----------------------------------------------------------


async def test_retry_after_on_a_429_is_waited_out(fake: FakeWatsonx, server: ServerHandle) -> None:
    fake.faults.add(
        Fault(action="status", status=429, retry_after="0.3", path="^/ml/v4/trainings/", times=1)
    )
    async with watsonx_client(fake, server, retry=QUICK) as client:
        training_id = (await a_training(client)).training_id
        await client.trainings.get(training_id)
    first, second = [r for r in fake.requests if r.path == f"/ml/v4/trainings/{training_id}"]
    assert (first.status, second.status) == (429, 200)
    assert second.received_at - first.received_at >= 0.3  # not QUICK's 10 ms backoff


async def test_429s_on_generation_are_reported_to_the_rate_limiter(
    fake: FakeWatsonx, server: ServerHandle
) -> None:
    fake.faults.add(
        Fault(action="status", status=429, retry_after="0.2", path="/text/generation$", times=2)
    )
    async with watsonx_client(fake, server, retry=QUICK) as client:
        await generate(client, Prepared())
        assert client.rate_limiter.stats.rate_limited == 2
    attempts = [r for r in fake.requests if r.path.endswith("/text/generation")]
    assert [r.status for r in attempts] == [429, 429, 200]
    assert attempts[2].received_at - attempts[0].received_at >= 0.4


@dataclass(frozen=True)
class UploadStepCase:
    name: str
    fault: Fault
    error: type[GraniteTunerError] | None
    requests: dict[tuple[str, str], int] = field(default_factory=dict)


UPLOAD_STEPS = [
    UploadStepCase(
        "bytes_put_503_is_retried",
        Fault(action="status", status=503, method="PUT", path="^/_fake_cos/"),
        None,
        {("PUT", "^/_fake_cos/"): 2},
    ),
    UploadStepCase(
        "complete_503_is_retried",
        Fault(action="status", status=503, method="POST", path="/complete$"),
        None,
        {("POST", "/complete$"): 2},
    ),
    UploadStepCase(
        "attachment_503_is_not_resent_blindly",
        Fault(action="status", status=503, method="POST", path="/attachments$"),
        ServerError,
        {("POST", "/attachments$"): 1},
    ),
    UploadStepCase(
        "attachment_answer_lost_is_not_resent_blindly",
        Fault(action="drop_after", method="POST", path="/attachments$"),
        APIConnectionError,
        {("POST", "/attachments$"): 1},
    ),
]


@pytest.mark.parametrize("case", UPLOAD_STEPS, ids=[c.name for c in UPLOAD_STEPS])
async def test_a_fault_on_a_later_upload_step(
    fake: FakeWatsonx, server: ServerHandle, case: UploadStepCase
) -> None:
    """The bytes PUT and the completion may be repeated; the attachment create has no lookup,
    so an ambiguous failure there fails the upload, and the half-made asset is deleted."""
    fake.faults.add(dataclasses.replace(case.fault, hits=0))  # a fresh rule per test
    error: GraniteTunerError | None = None
    async with watsonx_client(fake, server, retry=QUICK) as client:
        try:
            asset_id = await upload_asset(client, Prepared())
        except GraniteTunerError as exc:
            error = exc
    assert fake.count("POST", "^/v2/assets$") == 1
    for (method, path), count in case.requests.items():
        assert fake.count(method, path) == count
    if case.error is None:
        assert error is None
        assert list(fake.assets) == [asset_id]
        assert fake.assets[asset_id].completed
    else:
        assert type(error) is case.error
        assert fake.assets == {}  # cleaned up: nothing half-made is left

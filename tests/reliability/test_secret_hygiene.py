"""Secrets never leak: not into logs, exceptions, reprs, results, events or written reports.

The whole workflow runs on the fake watsonx.ai over HTTPS — upload, `Tuner.run`,
`Deployment.create`, `Evaluator.compare` with its reports written as JSON, CSV and Markdown —
plus calls that fail on purpose (401, 403, 404, 400, a failed run, a refused API key), with
every logger at DEBUG and every record captured. Then every piece of text the program could
show or write is searched for the credentials: the API key (or the static bearer token), and
every bearer token the fake's IAM issued (read back from the `Authorization` headers the fake
recorded). None may appear.

TLS verification is on by default, fails with a typed error, and only `verify=False` turns it
off.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest

from granite_tuner import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    Deployment,
    DeploymentNotFoundError,
    Evaluator,
    GraniteTunerError,
    InvalidParametersError,
    NotFoundError,
    PermissionDeniedError,
    RetryPolicy,
    RunFinished,
    RunSubmitted,
    Tuner,
    TuningEvent,
    TuningFailedError,
    WatsonxClient,
)
from granite_tuner.testing import FakeWatsonx, ServerHandle

pytestmark = pytest.mark.anyio

API_KEY = "SECRET-APIKEY-7f3c9a"
BASE_MODEL = "ibm/granite-13b-instruct-v2"
QUICK = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
FAST_POLL = (0.01, 0.05)
TRAIN_ROWS = [
    {
        "input": f"Comment: visit {n}, the groomer was {('late', 'kind')[n % 2]}.",
        "output": f"{n % 2}",
    }
    for n in range(60)
]
TEST_ROWS = TRAIN_ROWS[:8]
Auth = Literal["api_key", "token"]


class CapturingHandler(logging.Handler):
    """Keeps, for every record, what any handler could show: the formatted text (message with
    its args, `exc_text` and `stack_info`), the raw `msg` and `args`, and the record's fields."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        self.texts: list[str] = []
        self.names: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.names.add(record.name)
        self.texts += [self.format(record), str(record.msg), repr(record.args)]
        self.texts += [record.exc_text or "", repr(vars(record))]


@pytest.fixture
def captured_logs() -> Iterator[CapturingHandler]:
    """Everything at DEBUG: the root logger and every logger that exists, ours and libraries'."""
    handler = CapturingHandler()
    names = ["", "granite_tuner", "httpx", "httpcore", "hpack", "h11", "anyio", "trio", "asyncio"]
    names += list(logging.root.manager.loggerDict)
    saved: list[tuple[logging.Logger, int, bool]] = []
    for name in dict.fromkeys(names):
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.disabled))
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        if name == "" or not logger.propagate:
            logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger, level, disabled in saved:
            logger.setLevel(level)
            logger.disabled = disabled
            logger.removeHandler(handler)


@pytest.fixture
def fake() -> FakeWatsonx:
    return FakeWatsonx(training_polls=3, deployment_polls=1, api_keys=[API_KEY])


@pytest.fixture
def server(fake: FakeWatsonx) -> Iterator[ServerHandle]:
    with fake.serve(tls=True) as handle:
        yield handle


def make_client(
    fake: FakeWatsonx, server: ServerHandle, credentials: dict[str, Any], project_id: str = ""
) -> WatsonxClient:
    return WatsonxClient(
        url=server.url,
        iam_url=server.url + "/identity/token",
        project_id=project_id or fake.project_id,
        verify=server.ca_cert_path,
        retry=QUICK,
        **credentials,
    )


def exception_texts(error: BaseException) -> list[str]:
    """The error as a traceback prints it (chained causes and contexts included), and the
    str, repr and attributes (url, errors, trace, result, ...) of each exception in its chain."""
    texts = ["".join(traceback.format_exception(error))]
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        texts += [str(current), repr(current), repr(vars(current))]
        pending += [current.__cause__, current.__context__]
    return texts


@dataclass
class Outcome:
    """Everything the workflow produced that a user could print, log or keep."""

    texts: list[str]
    errors: list[GraniteTunerError]


async def expect(error_type: type[GraniteTunerError], call: Any, errors: list[Any]) -> None:
    with pytest.raises(error_type) as caught:
        await call
    errors.append(caught.value)


async def run_workflow(
    fake: FakeWatsonx, server: ServerHandle, auth: Auth, folder: Path
) -> Outcome:
    credentials: dict[str, Any] = (
        {"api_key": API_KEY} if auth == "api_key" else {"token": fake.issue_token()}
    )
    texts: list[str] = []
    errors: list[GraniteTunerError] = []
    events: list[TuningEvent] = []
    train_file = folder / "train.jsonl"
    train_file.write_text("".join(json.dumps(row) + "\n" for row in TRAIN_ROWS), "utf-8")

    async with make_client(fake, server, credentials) as client:
        tuner = Tuner(
            client,
            base_model=BASE_MODEL,
            training_data=train_file,
            parameters={"num_epochs": 3, "learning_rate": 0.3, "verbalizer": "{{input}}"},
            name="secret-hygiene",
            poll_interval=FAST_POLL,
            on_event=events.append,
        )
        result = await tuner.run()
        deployment = await Deployment.create(
            client, result, serving_name="secret_hygiene", poll_interval=FAST_POLL
        )
        evaluator = Evaluator(client, max_concurrency=2, parameters={"max_new_tokens": 2})
        report = await evaluator.compare(
            TEST_ROWS,
            tuned=deployment,
            base=BASE_MODEL,
            broken="ibm/no-such-model",  # every item fails: errors go into the reports
            baseline="base",
        )
        assert report.reports["broken"].metrics.counts.failed == len(TEST_ROWS)
        written = [
            report.to_json(folder / "report.json"),
            report.to_csv(folder / "report.csv"),
            folder / "report.md",
            report.reports["tuned"].to_json(folder / "tuned.json"),
            report.reports["broken"].to_csv(folder / "broken.csv"),
            folder / "result.json",
        ]
        (folder / "report.md").write_text(report.to_markdown(), encoding="utf-8")
        (folder / "result.json").write_text(result.model_dump_json(indent=2), encoding="utf-8")
        texts += [path.read_text(encoding="utf-8") for path in written]

        # Calls that fail on purpose, so that exceptions (and their chains) exist.
        await expect(DeploymentNotFoundError, Deployment.attach(client, "no-such-id"), errors)
        await expect(NotFoundError, client.generate("x", model_id="ibm/no-such-model"), errors)
        await expect(
            InvalidParametersError,
            Tuner(client, base_model="ibm/granite-99b", training_data=TRAIN_ROWS).run(),
            errors,
        )
        await expect(
            BadRequestError,
            client.trainings.create(
                name="too-long",
                base_model=BASE_MODEL,
                task_id="classification",
                data_asset_id=result.data_ref or "",
                parameters={"num_epochs": 500},
            ),
            errors,
        )
        fake.training_outcome = "failed"
        await expect(
            TuningFailedError,
            Tuner(
                client,
                base_model=BASE_MODEL,
                training_data=train_file,
                name="doomed",
                poll_interval=FAST_POLL,
                on_event=events.append,
            ).run(),
            errors,
        )
        async with make_client(fake, server, credentials, project_id="not-yours") as stranger:
            await expect(PermissionDeniedError, stranger.trainings.list(), errors)
            texts += [repr(stranger), repr(stranger.auth)]

        await deployment.delete()
        fake.expire_tokens()
        if auth == "api_key":
            await client.trainings.list()  # a new token is fetched without a fuss
            fake.api_keys = ["the-key-was-revoked"]
            fake.expire_tokens()
        await expect(AuthenticationError, client.trainings.list(), errors)

        texts += [repr(client), str(client), repr(client.auth), repr(client.retry)]
        texts += [repr(client.settings), str(client.settings), client.settings.model_dump_json()]
        texts += [repr(tuner), repr(result), str(result), result.model_dump_json()]
        texts += [repr(deployment), repr(deployment.info), deployment.info.model_dump_json()]
        texts += [repr(evaluator), repr(report), report.model_dump_json()]
        texts += [repr(event) for event in events] + [e.model_dump_json() for e in events]
    assert isinstance(events[0], RunSubmitted)
    assert sum(isinstance(e, RunFinished) for e in events) == 2
    for error in errors:
        texts += exception_texts(error)
    return Outcome(texts, errors)


def bearer_tokens(fake: FakeWatsonx) -> set[str]:
    """Every bearer token the client sent: the static one, or every one IAM issued to it."""
    return {
        request.headers["authorization"].split(" ", 1)[1]
        for request in fake.requests
        if request.headers.get("authorization", "").startswith("Bearer ")
    }


@pytest.mark.parametrize("auth", ["api_key", "token"])
async def test_no_secret_reaches_logs_errors_reprs_results_events_or_reports(
    auth: Auth,
    fake: FakeWatsonx,
    server: ServerHandle,
    tmp_path: Path,
    captured_logs: CapturingHandler,
) -> None:
    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        outcome = await run_workflow(fake, server, auth, tmp_path)

    tokens = bearer_tokens(fake)
    if auth == "api_key":
        assert fake.iam_exchanges >= 2  # the first token, and the one after expire_tokens()
        assert len(tokens) >= 2
        secrets = {API_KEY, *tokens}
    else:
        assert fake.iam_exchanges == 0
        assert len(tokens) == 1
        secrets = set(tokens)
    # A token's signature is the part that makes it a credential: look for it on its own too.
    secrets |= {token.rsplit(".", 1)[-1] for token in tokens}

    assert len(outcome.errors) == 7
    assert {"granite_tuner.tuner", "httpx", "httpcore.connection"} <= captured_logs.names
    texts = outcome.texts + captured_logs.texts + [str(w.message) for w in caught_warnings]
    # The search covers what it claims to: the reports, the IAM traffic in the logs, the errors.
    corpus = "\n".join(texts)
    for expected in (
        "McNemar",
        "/identity/token",
        "HTTP Request: POST",
        "BXNIM0415E" if auth == "api_key" else "authentication_token_expired",
        "no-such-id",
        "not-yours",
    ):
        assert expected in corpus
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"a credential leaked into: {text[:300]!r}"


def default_client(
    fake: FakeWatsonx, server: ServerHandle, auth: Auth, verify: object
) -> WatsonxClient:
    """A client that does not know the fake's test CA; `verify` is passed only when given."""
    settings: dict[str, Any] = {"url": server.url, "project_id": fake.project_id, "retry": QUICK}
    settings["iam_url"] = server.url + "/identity/token"
    if auth == "api_key":
        settings["api_key"] = API_KEY
    else:
        settings["token"] = fake.issue_token()
    if verify == "credentials":
        settings = {
            "credentials": SdkLikeCredentials(server.url, settings.pop("api_key", None)),
            **settings,
        }
        settings.pop("url")
    elif verify != "left out":
        settings["verify"] = verify
    return WatsonxClient(**settings)


@dataclass
class SdkLikeCredentials:
    """Shaped like `ibm_watsonx_ai.Credentials` with `verify` left at its default (None)."""

    url: str
    api_key: str | None = None
    verify: bool | None = None


@pytest.mark.parametrize("auth", ["api_key", "token"])
async def test_tls_verification_is_on_by_default_and_fails_with_a_typed_error(
    auth: Auth, fake: FakeWatsonx, server: ServerHandle
) -> None:
    # Switches that other tools read to turn verification off, or to trust nothing, change
    # nothing here (the conftest restores os.environ after the test).
    os.environ.update(
        {
            "WX_CLIENT_VERIFY_REQUESTS": "False",
            "PYTHONHTTPSVERIFY": "0",
            "CURL_CA_BUNDLE": "",
            "REQUESTS_CA_BUNDLE": "",
        }
    )
    for verify in ("left out", None, True, "credentials"):
        async with default_client(fake, server, auth, verify) as client:
            for _ in range(2):  # the first failure does not switch verification off
                with pytest.raises(APIConnectionError) as caught:
                    await client.trainings.list()
                error = caught.value
                assert type(error) is APIConnectionError
                assert "certificate could not be verified" in str(error)
                assert "verify=" in str(error)
                assert error.transient is False
    assert fake.requests == []  # not one request got past the TLS handshake


@pytest.mark.parametrize("auth", ["api_key", "token"])
async def test_only_verify_false_turns_verification_off(
    auth: Auth, fake: FakeWatsonx, server: ServerHandle
) -> None:
    async with default_client(fake, server, auth, False) as client:
        assert await client.trainings.list() == []
    assert fake.count("GET", "^/ml/v4/trainings$") == 1
    # Nothing process-wide was switched off: the next default client verifies again.
    async with default_client(fake, server, auth, "left out") as client:
        with pytest.raises(APIConnectionError, match="certificate could not be verified"):
            await client.trainings.list()
    assert fake.count("GET", "^/ml/v4/trainings$") == 1

"""A small async web service that embeds one granite-tuner client for its whole life.

    POST /classify          {"text": "...", "deployment_id": "..."?}  label one review
    POST /tune              {"examples": [...]?, "parameters": {...}?} 202, tunes in the background
    GET  /runs/{id}/events  the job's progress as NDJSON, one JSON object per line, live

The client is opened once, when the app starts, and closed when it stops: every request
shares its connection pool, its token and its rate limiter, so many concurrent `/classify`
calls stay within the service's limit together. A tuning job runs in a task group that the
app owns (no fire-and-forget tasks): it tunes, deploys the tuned model and keeps it until
the app shuts down, when the job is cancelled and its deployment deleted.

    python examples/web_service.py [--port 8000]

With `WATSONX_URL` and the other `WATSONX_*` settings in the environment it serves from IBM
watsonx.ai; without them, from the bundled fake watsonx.ai on loopback. Then, for example:

    curl -s localhost:8000/classify -d '{"text": "Lovely groomer, my dog came home happy."}'
    curl -s localhost:8000/tune -d '{}'            # -> {"id": "web-...", "events": "/runs/..."}
    curl -sN localhost:8000/runs/web-.../events    # progress, until "deployed"

Needs starlette and uvicorn (`pip install starlette uvicorn`).
"""

from __future__ import annotations

import argparse
import json
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import uvicorn
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from granite_tuner import (
    Deployment,
    DeploymentNotFoundError,
    GraniteTunerError,
    LabelledSet,
    NotFoundError,
    PromptTuningParameters,
    RateLimiter,
    TokenLabelParser,
    Tuner,
    TuningEvent,
    WatsonxClient,
    aload_examples,
)
from granite_tuner.backends.base import ServingBackend, TuningBackend
from granite_tuner.datasets import train_path
from granite_tuner.testing import FakeWatsonx

BASE_MODEL = "ibm/granite-13b-instruct-v2"
PROMPT = "Comment: {text}\nSatisfaction:\n"  # the shape of the shipped training inputs
GENERATION = {"decoding_method": "greedy", "max_new_tokens": 2}
DEFAULT_PARAMETERS: dict[str, Any] = {
    "num_epochs": 5,
    "learning_rate": 0.3,
    "batch_size": 8,
    "max_output_tokens": 2,
    "verbalizer": "{{input}}",
}


class Backend(TuningBackend, ServingBackend, Protocol):
    """What the service needs: `WatsonxClient`, or `LocalClient` for an offline service."""


@dataclass
class Job:
    """One background tuning job and the progress lines it has published so far."""

    id: str
    lines: list[dict[str, Any]] = field(default_factory=list)
    finished: bool = False
    _changed: anyio.Event = field(default_factory=anyio.Event)

    def publish(self, line: dict[str, Any], *, last: bool = False) -> None:
        self.lines.append(line)
        self.finished = self.finished or last
        self._changed.set()  # wake every follower, then arm a new event for the next line
        self._changed = anyio.Event()

    def publish_event(self, event: TuningEvent) -> None:
        self.publish(event.model_dump(mode="json"))

    async def follow(self) -> AsyncIterator[bytes]:
        """Every line from the first, then each new one as it comes, until the job ends."""
        sent = 0
        while True:
            changed = self._changed  # taken before reading, so no line can slip past
            for line in self.lines[sent:]:
                yield json.dumps(line).encode() + b"\n"
            sent = len(self.lines)
            if self.finished:
                return
            await changed.wait()


class TuningService:
    """The app's state: one client, the task group its jobs run in, and the jobs."""

    def __init__(
        self,
        connect: Callable[[], AbstractAsyncContextManager[Backend]],
        *,
        base_model: str = BASE_MODEL,
        poll_interval: tuple[float, float] = (2.0, 60.0),
    ) -> None:
        self.connect = connect
        self.base_model = base_model
        self.poll_interval = poll_interval
        self.jobs: dict[str, Job] = {}
        self.parser = TokenLabelParser(["0", "1"])
        self._client: Backend | None = None
        self._task_group: TaskGroup | None = None

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        async with self.connect() as client, anyio.create_task_group() as task_group:
            self._client, self._task_group = client, task_group
            try:
                yield  # the app serves requests here
            finally:
                self._client = self._task_group = None
                task_group.cancel_scope.cancel()  # stop the jobs; the client closes after them

    @property
    def client(self) -> Backend:
        if self._client is None:
            raise RuntimeError("The app is not running: start it with its lifespan.")
        return self._client

    async def classify(self, request: Request) -> Response:
        body = await _json_object(request)
        text, deployment_id = body.get("text"), body.get("deployment_id")
        if not isinstance(text, str) or not text.strip():
            return _error(422, 'Give the review to classify as "text".')
        if deployment_id is not None and not isinstance(deployment_id, str):
            return _error(422, '"deployment_id" must be a string.')
        try:
            answer = await self.client.generate(
                PROMPT.format(text=text.strip()),
                model_id=None if deployment_id else self.base_model,
                deployment_id=deployment_id or None,
                parameters=GENERATION,
            )
        except (NotFoundError, DeploymentNotFoundError):
            return _error(404, f"There is no deployment {deployment_id!r}.")
        except GraniteTunerError as exc:  # its message is safe to show: secrets are redacted
            return _error(502, str(exc))
        return JSONResponse(
            {"label": self.parser(answer.text), "answer": answer.text, "model": answer.model_id}
        )

    async def tune(self, request: Request) -> Response:
        body = await _json_object(request)
        given_parameters, given_examples = body.get("parameters", {}), body.get("examples")
        if not isinstance(given_parameters, dict):
            return _error(422, '"parameters" must be an object of tuning parameters.')
        if given_examples is not None and not isinstance(given_examples, list):
            # Only data in the request: a path would let callers read the server's files.
            return _error(422, '"examples" must be a list of {"input", "output"} objects.')
        # Check everything now, so that a mistake is this request's 422, not a failed job.
        try:
            parameters = PromptTuningParameters.model_validate(
                {**DEFAULT_PARAMETERS, **given_parameters}
            )
            examples = await aload_examples(
                given_examples or train_path(), task_id="classification"
            )
        except GraniteTunerError as exc:
            return _error(422, str(exc))
        if self._task_group is None:
            return _error(503, "The service is not running.")
        job = Job(id=f"web-{uuid.uuid4().hex[:12]}")
        self.jobs[job.id] = job
        self._task_group.start_soon(self._tune_and_deploy, job, examples, parameters)
        return JSONResponse({"id": job.id, "events": f"/runs/{job.id}/events"}, status_code=202)

    async def events(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["id"])
        if job is None:
            return _error(404, "There is no such job.")
        # Starlette stops the generator when the caller hangs up.
        return StreamingResponse(job.follow(), media_type="application/x-ndjson")

    async def _tune_and_deploy(
        self, job: Job, examples: LabelledSet, parameters: PromptTuningParameters
    ) -> None:
        client = self.client
        try:
            result = await Tuner(
                client,
                base_model=self.base_model,
                training_data=examples,
                parameters=parameters,
                name=job.id,  # a restarted service can re-attach: Tuner.attach(client, name=...)
                poll_interval=self.poll_interval,
                on_event=job.publish_event,
            ).run()
            async with await Deployment.create(
                client, result, delete_on_exit=True, poll_interval=self.poll_interval
            ) as deployment:
                job.publish({"kind": "deployed", "deployment_id": deployment.id}, last=True)
                await anyio.sleep_forever()  # serve until shutdown; leaving deletes it
        except Exception as exc:  # a failed job ends alone; the service goes on
            job.publish(
                {"kind": "error", "error": type(exc).__name__, "message": str(exc)}, last=True
            )
        finally:
            if not job.finished:  # cancelled before it ended: tell the followers
                job.publish({"kind": "stopped", "message": "The service shut down."}, last=True)


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    return body if isinstance(body, dict) else {}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(service: TuningService) -> Starlette:
    return Starlette(
        routes=[
            Route("/classify", service.classify, methods=["POST"]),
            Route("/tune", service.tune, methods=["POST"]),
            Route("/runs/{id}/events", service.events, methods=["GET"]),
        ],
        lifespan=service.lifespan,
    )


def serve(service: TuningService, host: str, port: int) -> None:
    # Open event streams get 5 s to end on shutdown (a tuning job can take hours).
    uvicorn.run(create_app(service), host=host, port=port, timeout_graceful_shutdown=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    arguments = parser.parse_args()
    if os.environ.get("WATSONX_URL"):
        # 2 generations per second: the limit of a free-tier instance; set your plan's.
        limiter = RateLimiter(requests_per_second=2)
        serve(
            TuningService(lambda: WatsonxClient.from_env(rate_limiter=limiter)),
            arguments.host,
            arguments.port,
        )
        return
    fake = FakeWatsonx(training_polls=12, rate_limit=8.0)
    with fake.serve(tls=True) as server:
        print(f"Serving from the fake watsonx.ai at {server.url}")
        service = TuningService(
            lambda: WatsonxClient(
                url=server.url,
                api_key="fake-api-key",
                iam_url=server.url + "/identity/token",
                project_id=fake.project_id,
                verify=server.ca_cert_path,
                rate_limiter=RateLimiter(requests_per_second=8.0),
            ),
            poll_interval=(0.2, 0.5),
        )
        serve(service, arguments.host, arguments.port)


if __name__ == "__main__":
    main()

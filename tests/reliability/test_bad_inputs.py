"""A corpus of malformed inputs: each is refused with a typed error that says what to fix.

One parametrised test runs every case of `CASES` (164 of them, each with an id) against a
fresh `FakeWatsonx` served over HTTPS, and against the local backend with the tiny model. A
case is one bad input — a training or evaluation file, a tuning or generation parameter, a
credential, a URL, a model id, a serving name, a local-backend setting — put into an otherwise
good call of the public API. Each case asserts four things, defined precisely in
`test_a_bad_input_is_refused_with_a_typed_error_that_says_what_to_fix`:

1. the exact error class (`type(error) is expected`, not a subclass or a parent);
2. the message names what to fix (a fragment of it is asserted), and for `InvalidDataError`
   the first `DataProblem` points at the right line and field where the case says so;
3. what reached the service: nothing at all (most cases), only the IAM exchange, only look-ups,
   or only the refused request — and never an upload, a created object or a stored file
   (see `Sends`);
4. no library traceback reaches the user (see `assert_our_own_error`).

Two small tests keep the corpus honest: the good version of every call the cases spoil
succeeds (so a case fails because of its one bad input, not because of the harness), and the
corpus covers every category with distinct ids.
"""

from __future__ import annotations

import json
import os
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import pytest

import granite_tuner
from granite_tuner import (
    APIConnectionError,
    AuthenticationError,
    ConfigurationError,
    Deployment,
    DeploymentFailedError,
    DeploymentNotFoundError,
    Evaluator,
    GraniteTunerError,
    InvalidDataError,
    InvalidParametersError,
    NotFoundError,
    PermissionDeniedError,
    RetryPolicy,
    RunNotFoundError,
    Tuner,
    TuningResult,
    WatsonxClient,
)
from granite_tuner.backends.local import LocalClient
from granite_tuner.testing import FakeModel, FakeWatsonx, ServerHandle
from granite_tuner.testing._models import default_models
from tests.fakes import completed_model_id, watsonx_client
from tests.tiny_model import review_examples

pytestmark = pytest.mark.anyio

API_KEY = "bad-inputs-api-key-0123456789"
BASE_MODEL = "ibm/granite-13b-instruct-v2"
NOT_TUNABLE_MODEL = "ibm/granite-3-8b-instruct"
WITHDRAWN_MODEL = "ibm/granite-20b-multilingual"
QUICK = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.02)
FAST_POLL = (0.01, 0.05)
TUNING: dict[str, Any] = {"num_epochs": 2, "learning_rate": 0.3, "batch_size": 8}
PROMPT = "Comment: the groomer was lovely.\nSatisfaction:\n"
PACKAGE_DIR = Path(granite_tuner.__file__).resolve().parent

Row = dict[str, Any]
TRAIN_ROWS: list[Row] = [
    {
        "input": f"Comment: visit {n}, the groomer was {'kind' if n % 2 else 'late'}.",
        "output": str(n % 2),
    }
    for n in range(60)
]
TINY_ROWS: list[Row] = [{"input": e.input, "output": e.output} for e in review_examples(60)]
TEST_ROWS: list[Row] = TRAIN_ROWS[:6]

# What may reach the fake service while a case runs. In every mode no asset, training or
# deployment may be created, and the local backend's home folder must stay as it was.
#   "nothing": not one request, not even the IAM token exchange;
#   "iam": only the IAM token exchange (the API key itself is what is refused);
#   "lookups": only reads (GET) and the IAM token exchange (the case needs the service's
#              answer to a question, e.g. the list of tunable models, to know it is wrong);
#   "refused": the service is the only judge (an unknown model id given to a generate or a
#              deploy): the one request is sent and refused, and nothing is created.
Sends = Literal["nothing", "iam", "lookups", "refused"]
OMIT: Any = object()  # a setting left out altogether


@dataclass
class Ctx:
    """What a case acts on: the fake and its server, a client for it, folders for files."""

    fake: FakeWatsonx
    server: ServerHandle
    client: WatsonxClient
    files: Path
    home: Path
    tiny_model: Path
    state: dict[str, str] = field(default_factory=dict)

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.files / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path


Act = Callable[[Ctx], Awaitable[object]]


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    act: Act
    error: type[GraniteTunerError]
    fix: str
    sends: Sends = "nothing"
    #: (line, field) of the first `DataProblem`, for `InvalidDataError` cases that name them.
    where: tuple[int | None, str | None] | None = None
    #: Runs before the "before" snapshot is taken (e.g. to create a deployment to collide with).
    setup: Act | None = None


# --- the calls the cases spoil -----------------------------------------------------------------


def jsonl(rows: list[Row]) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


async def tune(ctx: Ctx, **options: Any) -> object:
    """`Tuner(...).run()` on the fake with good settings, except for `options`."""
    settings: dict[str, Any] = {
        "base_model": BASE_MODEL,
        "training_data": TRAIN_ROWS,
        "parameters": TUNING,
        "poll_interval": FAST_POLL,
        "name": "bad-inputs",
    }
    settings.update(options)
    return await Tuner(ctx.client, **settings).run()


def train_on(name: str, content: str | bytes) -> Act:
    """Tune with the training file `name` holding `content`."""
    return lambda ctx: tune(ctx, training_data=ctx.write(name, content))


def tune_with(**parameters: Any) -> Act:
    return lambda ctx: tune(ctx, parameters={**TUNING, **parameters})


async def evaluate(ctx: Ctx, data: object, **options: Any) -> object:
    """Evaluate the base model on the fake with `data`; `options` go to the Evaluator."""
    client = options.pop("client", ctx.client)
    target = options.pop("target", BASE_MODEL)
    evaluator = Evaluator(client, **{"max_concurrency": 2, **options})
    return await evaluator.evaluate(cast(Any, data), target)


def evaluate_file(name: str, content: str | bytes) -> Act:
    return lambda ctx: evaluate(ctx, ctx.write(name, content))


async def compare(ctx: Ctx, targets: dict[str, Any], **options: Any) -> object:
    return await Evaluator(ctx.client).compare(TEST_ROWS, targets, **options)


async def generate(ctx: Ctx, parameters: object = None, **target: str) -> object:
    """One generation on the fake (the base model unless `target` says otherwise)."""
    where = target or {"model_id": BASE_MODEL}
    return await ctx.client.generate(PROMPT, parameters=cast(Any, parameters), **where)


def generate_with(**parameters: Any) -> Act:
    return lambda ctx: generate(ctx, parameters)


async def deploy(ctx: Ctx, source: object = "a-tuned-model", **options: Any) -> object:
    return await Deployment.create(
        ctx.client, cast(Any, source), poll_interval=FAST_POLL, timeout=30, **options
    )


def deploy_as(serving_name: object) -> Act:
    return lambda ctx: deploy(ctx, serving_name=serving_name)


async def connect(ctx: Ctx, **overrides: Any) -> object:
    """Build a client with good settings except `overrides` (OMIT drops one) and list trainings."""
    settings: dict[str, Any] = {
        "url": ctx.server.url,
        "api_key": API_KEY,
        "iam_url": ctx.server.url + "/identity/token",
        "project_id": ctx.fake.project_id,
        "verify": ctx.server.ca_cert_path,
        "retry": QUICK,
    }
    settings.update(overrides)
    async with WatsonxClient(**{k: v for k, v in settings.items() if v is not OMIT}) as client:
        return await client.trainings.list()


def connect_with(**overrides: Any) -> Act:
    return lambda ctx: connect(ctx, **overrides)


def url_case(url: object) -> Act:
    return lambda ctx: connect(ctx, url=url)


@dataclass
class FakeCredentials:
    """Shaped like `ibm_watsonx_ai.Credentials` (the client reads it attribute by attribute)."""

    url: str
    username: str | None = None
    password: str | None = None


async def connect_from_env(ctx: Ctx, **variables: str) -> object:
    os.environ.update(variables)  # the conftest restores os.environ after each test
    async with WatsonxClient.from_env(
        iam_url=ctx.server.url + "/identity/token", verify=ctx.server.ca_cert_path, retry=QUICK
    ) as client:
        return await client.trainings.list()


async def local_tune(
    ctx: Ctx,
    *,
    model: object = None,
    base_model: str | None = None,
    home: Path | None = None,
    parameters: dict[str, Any] | None = None,
    device: str = "cpu",
) -> object:
    """Tune the tiny model locally with good settings, except for what is given."""
    name = str(ctx.tiny_model) if model is None else model
    client = LocalClient(cast(str, name), home=home or ctx.home, device=device)
    async with client:
        return await Tuner(
            client,
            base_model=base_model or client.model_name,
            training_data=TINY_ROWS,
            parameters=parameters or {"num_epochs": 1, "batch_size": 16, "num_virtual_tokens": 4},
            poll_interval=FAST_POLL,
            timeout=60,
        ).run()


async def local_serve(ctx: Ctx, act: Callable[[LocalClient], Awaitable[object]]) -> object:
    async with LocalClient(str(ctx.tiny_model), home=ctx.home, device="cpu") as client:
        return await act(client)


async def local_generate(ctx: Ctx, prompt: object = PROMPT, **options: Any) -> object:
    async def call(client: LocalClient) -> object:
        where = {k: v for k, v in options.items() if k in ("model_id", "deployment_id")}
        if not where:
            where = {"model_id": str(ctx.tiny_model)}
        return await client.generate(
            cast(str, prompt), parameters=options.get("parameters"), **where
        )

    return await local_serve(ctx, call)


async def make_taken_serving_name(ctx: Ctx) -> None:
    model_id = await completed_model_id(ctx.client, BASE_MODEL)
    await ctx.client.deployments.create(model_id=model_id, name="first", serving_name="taken_name")
    ctx.state["model_id"] = model_id


def renamed(**keys: str) -> list[Row]:
    """The training rows under other keys: `renamed(text="input")` has a "text" key."""
    return [{new: row[old] for new, old in keys.items()} for row in TRAIN_ROWS]


def latin1_file() -> bytes:
    return jsonl(TRAIN_ROWS).encode() + '{"input": "café", "output": "1"}\n'.encode("latin-1")


def failed_result() -> TuningResult:
    return TuningResult(run_id="run-1", backend="watsonx", state="failed", failure_message="OOM")


# --- the corpus --------------------------------------------------------------------------------

CASES: list[Case] = [
    # Training files: checked completely before anything is uploaded (so nothing is sent,
    # not even the model-list look-up or the IAM exchange).
    Case("train-latin1", "training file", train_on("t.jsonl", latin1_file()), InvalidDataError,
         "Re-save it as UTF-8", where=(61, None)),
    Case("train-utf16", "training file", train_on("t.jsonl", jsonl(TRAIN_ROWS).encode("utf-16")),
         InvalidDataError, "re-save it as UTF-8"),
    Case("train-binary", "training file", train_on("t.jsonl", b"PK\x03\x04\x00\x00binary"),
         InvalidDataError, "Re-save it as UTF-8"),
    Case("train-not-json", "training file", train_on("t.jsonl", "input output\n" * 60),
         InvalidDataError, "invalid JSON", where=(1, None)),
    Case("train-single-quotes", "training file",
         train_on("t.jsonl", jsonl(TRAIN_ROWS[:2]) + "{'input': 'x', 'output': '1'}\n"
                  + jsonl(TRAIN_ROWS[2:])),
         InvalidDataError, "double quotes", where=(3, None)),
    Case("train-trailing-commas", "training file",
         train_on("t.jsonl", jsonl(TRAIN_ROWS).replace("}\n", "},\n")),
         InvalidDataError, "Remove the comma at the end of the line", where=(1, None)),
    Case("train-pretty-printed", "training file",
         train_on("t.jsonl", "\n".join(json.dumps(r, indent=2) for r in TRAIN_ROWS)),
         InvalidDataError, "one object per line", where=(1, None)),
    Case("train-wrong-keys", "training file",
         train_on("t.jsonl", jsonl(renamed(text="input", label="output"))),
         InvalidDataError, "'input' is missing", where=(1, "input")),
    Case("train-renamed-output", "training file",
         train_on("t.jsonl", jsonl(renamed(input="input", label="output"))),
         InvalidDataError, "pass output_field='label'", where=(1, "output")),
    Case("train-output-list", "training file",
         train_on("t.jsonl", jsonl([{"input": "x", "output": ["1"]}, *TRAIN_ROWS])),
         InvalidDataError, "give one string", where=(1, "output")),
    Case("train-output-null", "training file",
         train_on("t.jsonl", jsonl([*TRAIN_ROWS, {"input": "x", "output": None}])),
         InvalidDataError, "give it text", where=(61, "output")),
    Case("train-output-boolean", "training file",
         train_on("t.jsonl", jsonl([{"input": "x", "output": True}, *TRAIN_ROWS])),
         InvalidDataError, "write the label as a string", where=(1, "output")),
    Case("train-output-fraction", "training file",
         train_on("t.jsonl", jsonl([{"input": "x", "output": 0.5}, *TRAIN_ROWS])),
         InvalidDataError, "write it as a string", where=(1, "output")),
    Case("train-input-object", "training file",
         train_on("t.jsonl", jsonl([{"input": {"text": "x"}, "output": "1"}, *TRAIN_ROWS])),
         InvalidDataError, "give one string", where=(1, "input")),
    Case("train-blank-input", "training file",
         train_on("t.jsonl", jsonl([*TRAIN_ROWS[:4], {"input": " ", "output": "1"}, *TRAIN_ROWS])),
         InvalidDataError, "give it text", where=(5, "input")),
    Case("train-line-not-object", "training file",
         train_on("t.jsonl", jsonl(TRAIN_ROWS) + '"just a string"\n'),
         InvalidDataError, "expected an example object", where=(61, None)),
    Case("train-empty-file", "training file", train_on("t.jsonl", ""), InvalidDataError,
         "it needs examples"),
    Case("train-whitespace-file", "training file", train_on("t.jsonl", "\n  \n\t\n"),
         InvalidDataError, "it needs examples"),
    Case("train-too-few", "training file", train_on("t.jsonl", jsonl(TRAIN_ROWS[:49])),
         InvalidDataError, "Add examples"),
    Case("train-too-many", "training file",
         lambda ctx: tune(ctx, training_data=TRAIN_ROWS * 167),
         InvalidDataError, "Keep at most 10,000"),
    Case("train-csv-wrong-columns", "training file",
         train_on("t.csv", "text,label\n" + "".join(f"row {n},{n % 2}\n" for n in range(60))),
         InvalidDataError, "pass input_field=/output_field=", where=(1, None)),
    Case("train-csv-no-header", "training file",
         train_on("t.csv", "".join(f"row {n},{n % 2}\n" for n in range(60))),
         InvalidDataError, "The first row must be a header", where=(1, None)),
    Case("train-csv-semicolons", "training file",
         train_on("t.csv", "input;output\n" + "".join(f"row {n};{n % 2}\n" for n in range(60))),
         InvalidDataError, "must be separated by commas"),
    Case("train-csv-missing-cell", "training file",
         train_on("t.csv", "input,output\nonly an input\n"
                  + "".join(f"row {n},{n % 2}\n" for n in range(60))),
         InvalidDataError, "Fill in every column", where=(2, "output")),
    Case("train-csv-open-quote", "training file",
         train_on("t.csv", "input,output\n" + "".join(f"row {n},{n % 2}\n" for n in range(60))
                  + '"never closed,1\n'),
         InvalidDataError, "Check its quotes"),
    Case("train-csv-header-only", "training file", train_on("t.csv", "input,output\n"),
         InvalidDataError, "Add examples"),
    Case("train-json-object", "training file",
         train_on("t.json", json.dumps({"examples": TRAIN_ROWS})),
         InvalidDataError, "must hold an array of examples"),
    Case("train-json-trailing-comma", "training file",
         train_on("t.json", json.dumps(TRAIN_ROWS)[:-1] + ",]"),
         InvalidDataError, "Remove the comma before ']'"),
    Case("train-unknown-format", "training file",
         train_on("t.txt", "great groomer => 1\n" * 60), InvalidDataError, "pass format="),
    Case("train-missing-file", "training file",
         lambda ctx: tune(ctx, training_data=ctx.files / "no-such-file.jsonl"),
         InvalidDataError, "no such file"),
    Case("train-folder", "training file", lambda ctx: tune(ctx, training_data=ctx.files),
         InvalidDataError, "give the path of the data file in it"),
    Case("train-json-text-as-path", "training file",
         lambda ctx: tune(ctx, training_data=json.dumps(TRAIN_ROWS[:2])),
         InvalidDataError, "json.loads() the text"),
    Case("train-single-mapping", "training file",
         lambda ctx: tune(ctx, training_data=TRAIN_ROWS[0]),
         ConfigurationError, "pass a list of examples"),
    Case("train-number", "training file", lambda ctx: tune(ctx, training_data=42),
         ConfigurationError, "takes a file path, a list of dicts or a pandas DataFrame"),
    Case("train-list-of-strings", "training file",
         lambda ctx: tune(ctx, training_data=[r["input"] for r in TRAIN_ROWS]),
         InvalidDataError, "expected an example object", where=(1, None)),
    Case("train-none", "training file", lambda ctx: tune(ctx, training_data=None),
         ConfigurationError, "training_data is required"),
    # Evaluation files and evaluator settings: refused before the first prompt is sent.
    Case("eval-empty-file", "evaluation file", evaluate_file("e.jsonl", b""),
         InvalidDataError, "it needs examples"),
    Case("eval-no-examples", "evaluation file", lambda ctx: evaluate(ctx, []),
         InvalidDataError, "an evaluation set needs at least 1"),
    Case("eval-wrong-keys", "evaluation file",
         evaluate_file("e.jsonl", jsonl([{"prompt": "x", "answer": "1"}] * 3)),
         InvalidDataError, "'input' is missing", where=(1, "input")),
    Case("eval-not-json", "evaluation file", evaluate_file("e.jsonl", "not json at all\n"),
         InvalidDataError, "invalid JSON", where=(1, None)),
    Case("eval-latin1", "evaluation file",
         evaluate_file("e.jsonl", '{"input": "très bien", "output": "1"}\n'.encode("latin-1")),
         InvalidDataError, "Re-save it as UTF-8", where=(1, None)),
    Case("eval-csv-wrong-columns", "evaluation file",
         evaluate_file("e.csv", "review,score\ngreat,1\n"),
         InvalidDataError, "pass input_field=/output_field="),
    Case("eval-stream-of-strings", "evaluation file",
         lambda ctx: evaluate(ctx, iter(["a review", "another"])),
         InvalidDataError, "Give Example(input=..., output=...) objects"),
    Case("eval-stream-missing-output", "evaluation file",
         lambda ctx: evaluate(ctx, iter([{"input": "a review"}])),
         InvalidDataError, "Give Example(input=..., output=...) objects"),
    Case("eval-data-number", "evaluation file", lambda ctx: evaluate(ctx, 42),
         ConfigurationError, "The evaluation data must be a LabelledSet"),
    Case("eval-zero-concurrency", "evaluation file",
         lambda ctx: evaluate(ctx, TEST_ROWS, max_concurrency=0),
         ConfigurationError, "give a whole number >= 1"),
    Case("eval-empty-labels", "evaluation file", lambda ctx: evaluate(ctx, TEST_ROWS, labels=[]),
         ConfigurationError, "give the known labels"),
    Case("eval-labels-string", "evaluation file",
         lambda ctx: evaluate(ctx, TEST_ROWS, labels="01"),
         ConfigurationError, "give a list of non-empty strings"),
    Case("eval-negative-item-timeout", "evaluation file",
         lambda ctx: evaluate(ctx, TEST_ROWS, item_timeout=-1),
         ConfigurationError, "give a number of seconds > 0"),
    Case("eval-label-parser-number", "evaluation file",
         lambda ctx: evaluate(ctx, TEST_ROWS, label_parser=1),
         ConfigurationError, "label_parser must be a function, a mapping or None"),
    Case("eval-model-without-client", "evaluation file",
         lambda ctx: evaluate(ctx, TEST_ROWS, client=None),
         ConfigurationError, "give the Evaluator a client"),
    Case("eval-target-number", "evaluation file",
         lambda ctx: evaluate(ctx, TEST_ROWS, target=42),
         ConfigurationError, "give an async function"),
    Case("eval-no-targets", "evaluation file", lambda ctx: compare(ctx, {}),
         ConfigurationError, "give at least one"),
    Case("eval-unknown-baseline", "evaluation file",
         lambda ctx: compare(ctx, {"base": BASE_MODEL}, baseline="tuned"),
         ConfigurationError, "is not one of the targets"),
    # Tuning parameters: checked before the data is read, so nothing is sent.
    Case("tune-epochs-zero", "tuning parameters", tune_with(num_epochs=0),
         InvalidParametersError, "num_epochs=0 is out of range: watsonx.ai accepts 1 to 50"),
    Case("tune-epochs-too-many", "tuning parameters", tune_with(num_epochs=51),
         InvalidParametersError, "1 to 50"),
    Case("tune-learning-rate-high", "tuning parameters", tune_with(learning_rate=0.9),
         InvalidParametersError, "learning_rate=0.9 is out of range: watsonx.ai accepts 0.00001"),
    Case("tune-learning-rate-nan", "tuning parameters", tune_with(learning_rate=float("nan")),
         InvalidParametersError, "learning_rate=nan is not a usable number"),
    Case("tune-batch-size-text", "tuning parameters", tune_with(batch_size="8"),
         InvalidParametersError, "batch_size='8' is not an integer"),
    Case("tune-batch-size-17", "tuning parameters", tune_with(batch_size=17),
         InvalidParametersError, "watsonx.ai accepts 1 to 16"),
    Case("tune-epochs-boolean", "tuning parameters", tune_with(num_epochs=True),
         InvalidParametersError, "give a whole number"),
    Case("tune-epochs-fraction", "tuning parameters", tune_with(num_epochs=2.5),
         InvalidParametersError, "give a whole number"),
    Case("tune-accumulate-zero", "tuning parameters", tune_with(accumulate_steps=0),
         InvalidParametersError, "1 to 128"),
    Case("tune-max-output-tokens", "tuning parameters", tune_with(max_output_tokens=129),
         InvalidParametersError, "max_output_tokens=129 is out of range"),
    Case("tune-max-input-tokens", "tuning parameters", tune_with(max_input_tokens=1000),
         InvalidParametersError, "1 to 256"),
    Case("tune-typo-epochs", "tuning parameters", tune_with(num_epoch=3),
         InvalidParametersError, "Did you mean 'num_epochs'?"),
    Case("tune-typo-learning-rate", "tuning parameters", tune_with(learnig_rate=0.1),
         InvalidParametersError, "Did you mean 'learning_rate'?"),
    Case("tune-unknown-name", "tuning parameters", tune_with(dropout=0.1),
         InvalidParametersError, "Known parameters: task_id, num_epochs"),
    Case("tune-unknown-task", "tuning parameters", lambda ctx: tune(ctx, task="translation"),
         InvalidParametersError, "choose one of: 'classification'"),
    Case("tune-task-disagrees", "tuning parameters",
         lambda ctx: tune(ctx, task="generation", parameters={"task_id": "classification"}),
         InvalidParametersError, "give one"),
    Case("tune-init-method-typo", "tuning parameters", tune_with(init_method="txt"),
         InvalidParametersError, "Did you mean 'text'?"),
    Case("tune-text-init-without-text", "tuning parameters", tune_with(init_method="text"),
         InvalidParametersError, "init_method='text' needs init_text"),
    Case("tune-init-text-random", "tuning parameters",
         tune_with(init_method="random", init_text="Is the customer happy?"),
         InvalidParametersError, "set init_method='text' or leave init_text out"),
    Case("tune-verbalizer-placeholder", "tuning parameters", tune_with(verbalizer="Input: Output:"),
         InvalidParametersError, "write e.g. 'Input: {{input}} Output:'"),
    Case("tune-parameters-text", "tuning parameters",
         lambda ctx: tune(ctx, parameters="num_epochs=3"),
         ConfigurationError, "a mapping of its fields"),
    Case("tune-parameters-number", "tuning parameters", lambda ctx: tune(ctx, parameters=20),
         ConfigurationError, "a mapping of its fields"),
    Case("tune-negative-timeout", "tuning parameters", lambda ctx: tune(ctx, timeout=-1),
         ConfigurationError, "timeout must be a positive number of seconds"),
    Case("tune-poll-interval-reversed", "tuning parameters",
         lambda ctx: tune(ctx, poll_interval=(5, 1)),
         ConfigurationError, "0 < first <= largest"),
    # Generation parameters: checked before the prompt is sent.
    Case("gen-temperature", "generation parameters", generate_with(temperature=3.0),
         InvalidParametersError, "temperature=3.0 is out of range: watsonx.ai accepts 0 to 2"),
    Case("gen-typo-max-tokens", "generation parameters", generate_with(max_token=5),
         InvalidParametersError, "Did you mean 'max_new_tokens'?"),
    Case("gen-min-above-max", "generation parameters",
         generate_with(min_new_tokens=10, max_new_tokens=5),
         InvalidParametersError, "lower it or raise max_new_tokens"),
    Case("gen-decoding-beam", "generation parameters", generate_with(decoding_method="beam"),
         InvalidParametersError, "choose one of: 'greedy', 'sample'"),
    Case("gen-seven-stop-sequences", "generation parameters",
         generate_with(stop_sequences=["a", "b", "c", "d", "e", "f", "g"]),
         InvalidParametersError, "stop_sequences="),
    Case("gen-empty-stop-sequence", "generation parameters", generate_with(stop_sequences=[""]),
         InvalidParametersError, "must not contain an empty string"),
    Case("gen-top-p-text", "generation parameters", generate_with(top_p="0.5"),
         InvalidParametersError, "top_p='0.5' is not a usable number"),
    Case("gen-top-k-zero", "generation parameters", generate_with(top_k=0),
         InvalidParametersError, "1 to 100"),
    Case("gen-negative-seed", "generation parameters", generate_with(random_seed=-1),
         InvalidParametersError, "random_seed=-1 is out of range"),
    Case("gen-parameters-list", "generation parameters",
         lambda ctx: generate(ctx, ["temperature", 0.5]),
         ConfigurationError, "a mapping of its fields"),
    Case("gen-model-and-deployment", "generation parameters",
         lambda ctx: generate(ctx, model_id=BASE_MODEL, deployment_id="d-1"),
         ConfigurationError, "exactly one of model_id"),
    Case("gen-evaluator-typo", "generation parameters",
         lambda ctx: evaluate(ctx, TEST_ROWS, parameters={"max_token": 3}),
         InvalidParametersError, "Did you mean 'max_new_tokens'?"),
    # Credentials.
    Case("cred-empty-api-key", "credentials", connect_with(api_key=""),
         ConfigurationError, "api_key must be a non-empty string"),
    Case("cred-blank-api-key", "credentials", connect_with(api_key="   "),
         ConfigurationError, "api_key must be a non-empty string"),
    Case("cred-api-key-number", "credentials", connect_with(api_key=12345678901),
         ConfigurationError, "api_key must be a non-empty string"),
    Case("cred-key-and-token", "credentials", connect_with(token="header.payload.signature"),
         ConfigurationError, "pass one"),
    Case("cred-none", "credentials", connect_with(api_key=OMIT),
         ConfigurationError, "pass api_key= (or set WATSONX_APIKEY)"),
    Case("cred-no-project-or-space", "credentials", connect_with(project_id=OMIT),
         ConfigurationError, "pass project_id= (WATSONX_PROJECT_ID)"),
    Case("cred-project-and-space", "credentials", connect_with(space_id="s-1"),
         ConfigurationError, "Pass either project_id= or space_id=, not both"),
    Case("cred-blank-project", "credentials", connect_with(project_id=" "),
         ConfigurationError, "project_id must be a non-empty string"),
    Case("cred-cloud-pak-password", "credentials",
         connect_with(credentials=FakeCredentials("https://cpd.example", "me", "pw-0123456789"),
                      url=OMIT, api_key=OMIT),
         ConfigurationError, "use an IBM Cloud API key or a bearer token"),
    Case("cred-empty-env-key", "credentials",
         lambda ctx: connect_from_env(ctx, WATSONX_URL=ctx.server.url, WATSONX_APIKEY="",
                                      WATSONX_PROJECT_ID=ctx.fake.project_id),
         ConfigurationError, "set WATSONX_APIKEY"),
    Case("cred-wrong-api-key", "credentials", connect_with(api_key="not-the-right-key-42"),
         AuthenticationError, "Check the key (WATSONX_APIKEY)", sends="iam"),
    Case("cred-token-not-a-jwt", "credentials",
         connect_with(api_key=OMIT, token="definitely-not-a-token"),
         AuthenticationError, "Check the API key or token", sends="lookups"),
    Case("cred-expired-token", "credentials",
         lambda ctx: connect(ctx, api_key=OMIT, token=ctx.fake.issue_token(lifetime=-60)),
         AuthenticationError, "WATSONX_TOKEN", sends="lookups"),
    Case("cred-unknown-project", "credentials", connect_with(project_id="someone-elses"),
         PermissionDeniedError, "(WATSONX_PROJECT_ID / WATSONX_SPACE_ID)", sends="lookups"),
    # URLs.
    Case("url-no-scheme", "urls", url_case("us-south.ml.cloud.ibm.com"),
         ConfigurationError, "must be an absolute URL such as https://"),
    Case("url-plain-http", "urls", url_case("http://us-south.ml.cloud.ibm.com"),
         ConfigurationError, "must use https://"),
    Case("url-garbage", "urls", url_case("not a url at all"),
         ConfigurationError, "must be an absolute URL"),
    Case("url-ftp", "urls", url_case("ftp://us-south.ml.cloud.ibm.com"),
         ConfigurationError, "must be an absolute URL"),
    Case("url-space-in-host", "urls", url_case("https://us south.ml.cloud.ibm.com"),
         ConfigurationError, "must be an absolute URL"),
    Case("url-port-out-of-range", "urls", url_case("https://us-south.ml.cloud.ibm.com:99999"),
         ConfigurationError, "is not a valid URL"),
    Case("url-broken-ipv6", "urls", url_case("https://[::1"), ConfigurationError,
         "is not a valid URL"),
    Case("url-number", "urls", url_case(8443), ConfigurationError, "must be a URL string"),
    Case("url-with-query", "urls", url_case("https://us-south.ml.cloud.ibm.com/?version=1"),
         ConfigurationError, "must not carry a query"),
    Case("url-unknown-region", "urls", url_case("https://us-north.ml.cloud.ibm.com"),
         ConfigurationError, "pass platform_url="),
    Case("url-unknown-aws-region", "urls", url_case("https://eu-west-9.aws.wxai.ibm.com"),
         ConfigurationError, "use one of"),
    Case("url-iam-plain-http", "urls",
         connect_with(iam_url="http://iam.cloud.ibm.com/identity/token"),
         ConfigurationError, "iam_url (WATSONX_IAM_URL) must use https://"),
    Case("url-platform-garbage", "urls", connect_with(platform_url="dataplatform"),
         ConfigurationError, "platform_url must be an absolute URL"),
    Case("url-env-garbage", "urls",
         lambda ctx: connect_from_env(ctx, WATSONX_URL="watsonx please", WATSONX_APIKEY=API_KEY,
                                      WATSONX_PROJECT_ID=ctx.fake.project_id),
         ConfigurationError, "url (WATSONX_URL) must be an absolute URL"),
    Case("url-missing-ca-bundle", "urls", connect_with(verify="/no/such/ca.pem"),
         ConfigurationError, "is not a readable CA bundle"),
    Case("url-http-to-https-server", "urls",
         lambda ctx: connect(ctx, url=ctx.server.url.replace("https://", "http://"),
                             api_key=OMIT, token=ctx.fake.issue_token()),
         APIConnectionError, "use an https:// URL (WATSONX_URL)"),
    Case("url-nothing-listening", "urls",
         connect_with(url="https://127.0.0.1:9", iam_url="https://127.0.0.1:9/identity/token"),
         APIConnectionError, "Check the IAM URL (iam_url=, WATSONX_IAM_URL, --iam-url)"),
    # Model ids: the service's live list decides, so only look-ups are sent.
    Case("model-unknown", "model ids", lambda ctx: tune(ctx, base_model="ibm/granite-99b"),
         InvalidParametersError, "Tunable models: google/flan-t5-xl, ibm/granite-13b-instruct-v2",
         sends="lookups"),
    Case("model-not-tunable", "model ids", lambda ctx: tune(ctx, base_model=NOT_TUNABLE_MODEL),
         InvalidParametersError, "cannot be prompt-tuned here", sends="lookups"),
    Case("model-withdrawn", "model ids", lambda ctx: tune(ctx, base_model=WITHDRAWN_MODEL),
         InvalidParametersError, "cannot be prompt-tuned here", sends="lookups"),
    Case("model-empty", "model ids", lambda ctx: tune(ctx, base_model=""),
         InvalidParametersError, "Tunable models:", sends="lookups"),
    Case("model-none", "model ids", lambda ctx: tune(ctx, base_model=None),
         InvalidParametersError, "base_model is required"),
    Case("model-unknown-generate", "model ids",
         lambda ctx: generate(ctx, model_id="ibm/granite-99b"),
         NotFoundError, "is not supported in this region", sends="refused"),
    Case("model-withdrawn-generate", "model ids",
         lambda ctx: generate(ctx, model_id=WITHDRAWN_MODEL),
         NotFoundError, "is not supported in this region", sends="refused"),
    Case("model-unknown-deploy", "model ids", lambda ctx: deploy(ctx, "no-such-tuned-model"),
         NotFoundError, "Check the id", sends="refused"),
    Case("model-failed-run-deploy", "model ids", lambda ctx: deploy(ctx, failed_result()),
         ConfigurationError, "has no model to deploy"),
    Case("model-empty-deploy", "model ids", lambda ctx: deploy(ctx, ""),
         ConfigurationError, "Deploy a TuningResult or a model id"),
    Case("model-unknown-deployment", "model ids",
         lambda ctx: Deployment.attach(ctx.client, "no-such-deployment"),
         DeploymentNotFoundError, "There is no deployment 'no-such-deployment'", sends="lookups"),
    Case("model-unknown-run", "model ids",
         lambda ctx: Tuner.attach(ctx.client, run_id="no-such-run").run(),
         RunNotFoundError, "There is no tuning run 'no-such-run'", sends="lookups"),
    Case("model-unknown-run-name", "model ids",
         lambda ctx: Tuner.attach(ctx.client, name="never-started").run(),
         RunNotFoundError, "no tuning run named 'never-started'", sends="lookups"),
    # Serving names (backends/base.py check_serving_name): checked before the deploy.
    Case("serving-upper-case", "serving names", deploy_as("Reviews_PT"),
         ConfigurationError, "use 1 to 36 lower-case letters, digits or underscores"),
    Case("serving-dash", "serving names", deploy_as("reviews-pt"),
         ConfigurationError, "lower-case letters, digits or underscores"),
    Case("serving-space", "serving names", deploy_as("reviews pt"),
         ConfigurationError, "lower-case letters, digits or underscores"),
    Case("serving-too-long", "serving names", deploy_as("r" * 37),
         ConfigurationError, "1 to 36"),
    Case("serving-empty", "serving names", deploy_as(""), ConfigurationError, "1 to 36"),
    Case("serving-accented", "serving names", deploy_as("révision"),
         ConfigurationError, "lower-case letters"),
    Case("serving-number", "serving names", deploy_as(42), ConfigurationError,
         "lower-case letters"),
    Case("serving-taken", "serving names",
         lambda ctx: deploy(ctx, ctx.state["model_id"], serving_name="taken_name"),
         ConfigurationError, "is already used by another deployment", sends="lookups",
         setup=make_taken_serving_name),
    # The local backend (the tiny model; its home folder must stay untouched).
    Case("local-empty-model", "local backend", lambda ctx: local_tune(ctx, model=""),
         ConfigurationError, "give a model name, a Hugging Face id or a folder path"),
    Case("local-model-number", "local backend", lambda ctx: local_tune(ctx, model=7),
         ConfigurationError, "give a model name"),
    Case("local-unknown-model", "local backend",
         lambda ctx: local_tune(ctx, model="no-such-org/no-such-model"),
         ConfigurationError, "is not available offline"),
    Case("local-missing-folder", "local backend",
         lambda ctx: local_tune(ctx, model=str(ctx.files / "no-such-model-folder")),
         ConfigurationError, "pass the path of a folder that holds it"),
    Case("local-empty-folder", "local backend",
         lambda ctx: local_tune(ctx, model=str(ctx.files)),
         ConfigurationError, "it has no config.json"),
    Case("local-other-base-model", "local backend",
         lambda ctx: local_tune(ctx, base_model=BASE_MODEL),
         InvalidParametersError, "cannot be prompt-tuned here. Tunable models:"),
    Case("local-home-is-a-file", "local backend",
         lambda ctx: local_tune(ctx, home=ctx.write("home.txt", "not a folder")),
         ConfigurationError, "is a file, not a folder"),
    Case("local-home-under-a-file", "local backend",
         lambda ctx: local_tune(ctx, home=ctx.write("home.txt", "x") / "runs"),
         ConfigurationError, "Pass the path of a folder"),
    Case("local-bad-device", "local backend", lambda ctx: local_tune(ctx, device="warp-drive"),
         ConfigurationError, "use 'cpu', 'cuda' or 'cuda:N'"),
    Case("local-virtual-tokens-zero", "local backend",
         lambda ctx: local_tune(ctx, parameters={"num_epochs": 1, "num_virtual_tokens": 0}),
         InvalidParametersError, "num_virtual_tokens=0 is out of range: allowed 1 to 1000"),
    Case("local-learning-rate-text", "local backend",
         lambda ctx: local_tune(ctx, parameters={"learning_rate": "fast"}),
         InvalidParametersError, "learning_rate='fast' is not a usable number"),
    Case("local-unknown-run", "local backend",
         lambda ctx: local_serve(ctx, lambda c: Tuner.attach(c, run_id="no-such-run").run()),
         RunNotFoundError, "There is no local tuning run 'no-such-run'"),
    Case("local-run-id-path", "local backend",
         lambda ctx: local_serve(ctx, lambda c: Tuner.attach(c, run_id="../../etc").run()),
         RunNotFoundError, "is not a local tuning run id"),
    Case("local-deploy-unknown-run", "local backend",
         lambda ctx: local_serve(
             ctx, lambda c: Deployment.create(c, "no-such-run", poll_interval=FAST_POLL)),
         DeploymentFailedError, "cannot deploy 'no-such-run'"),
    Case("local-bad-serving-name", "local backend",
         lambda ctx: local_serve(
             ctx, lambda c: Deployment.create(c, "some-run", serving_name="Bad-Name")),
         ConfigurationError, "lower-case letters, digits or underscores"),
    Case("local-unknown-deployment", "local backend",
         lambda ctx: local_serve(ctx, lambda c: Deployment.attach(c, "no-such-deployment")),
         DeploymentNotFoundError, "deploy the run again"),
    Case("local-generate-both-targets", "local backend",
         lambda ctx: local_generate(ctx, model_id="m", deployment_id="d"),
         ConfigurationError, "Pass exactly one of model_id"),
    Case("local-generate-prompt-bytes", "local backend",
         lambda ctx: local_generate(ctx, prompt=b"bytes"),
         ConfigurationError, "prompt must be a str, not bytes"),
    Case("local-generate-typo", "local backend",
         lambda ctx: local_generate(ctx, parameters={"temprature": 0.5}),
         InvalidParametersError, "Did you mean 'temperature'?"),
    Case("local-generate-parameters-list", "local backend",
         lambda ctx: local_generate(ctx, parameters=[("temperature", 0.5)]),
         ConfigurationError, "a mapping of its fields"),
    Case("local-generate-unknown-model", "local backend",
         lambda ctx: local_generate(ctx, model_id="no-such-org/no-such-model"),
         ConfigurationError, "is not available offline"),
    Case("local-generate-closed", "local backend",
         lambda ctx: LocalClient(str(ctx.tiny_model), home=ctx.home).generate(
             PROMPT, model_id=str(ctx.tiny_model)),
         ConfigurationError, "`async with LocalClient() as client:`"),
]  # fmt: skip


# --- what each case is checked for -------------------------------------------------------------


def displayed_chain(error: BaseException) -> list[BaseException]:
    """The exceptions a printed traceback shows: `__cause__`, else `__context__` unless
    suppressed (`raise ... from None`), the way Python's own traceback printing follows them."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        if current.__cause__ is not None:
            current = current.__cause__
        elif not current.__suppress_context__:
            current = current.__context__
        else:
            current = None
    return chain


def assert_our_own_error(error: BaseException) -> None:
    """No traceback from deep inside a library reaches the user. Precisely:

    - every exception in the displayed chain (`displayed_chain`) is a `GraniteTunerError`,
      so a printed traceback never shows a raw pydantic `ValidationError`, an httpx, anyio or
      transformers error, a `json.JSONDecodeError` or a `KeyError` as the primary error or as
      "the direct cause of" / "during handling of" it (chaining to library errors is allowed
      only when hidden with `from None`);
    - the error was raised by this package's own code: the innermost frame of its traceback
      is a file of the `granite_tuner` package, not of a library it calls;
    - its text is ours: no pasted traceback, exception-group banner or pydantic error dump.
    """
    for link in displayed_chain(error):
        assert isinstance(link, GraniteTunerError), (
            f"{type(link).__module__}.{type(link).__qualname__} shows in the traceback of "
            f"{type(error).__name__}: {link}"
        )
    frames = traceback.extract_tb(error.__traceback__)
    assert frames, "the error has no traceback"
    raised_in = Path(frames[-1].filename).resolve()
    assert raised_in.is_relative_to(PACKAGE_DIR), f"raised in {raised_in}, not in granite_tuner"
    text = str(error)
    for marker in (
        "Traceback (most recent call last)",
        "unhandled errors in a TaskGroup",
        "validation error for",
        "errors.pydantic.dev",
        "For further information visit",
    ):
        assert marker not in text


def stored_files(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")) if home.is_dir() else []


def created_objects(fake: FakeWatsonx) -> tuple[set[str], set[str], set[str]]:
    return set(fake.assets), set(fake.trainings), set(fake.deployments)


def is_iam(method: str, path: str) -> bool:
    return method == "POST" and path == "/identity/token"


@pytest.fixture
def fake() -> FakeWatsonx:
    retired = FakeModel(
        WITHDRAWN_MODEL,
        lifecycle={
            "available": "2023-09-28",
            "deprecated": "2024-06-01",
            "withdrawn": "2024-09-01",
        },
    )
    return FakeWatsonx(
        training_polls=2,
        deployment_polls=1,
        api_keys=[API_KEY],
        models=[*default_models(), retired],
    )


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CASES])
async def test_a_bad_input_is_refused_with_a_typed_error_that_says_what_to_fix(
    case: Case, fake: FakeWatsonx, server: ServerHandle, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """One bad input, everything else good: the exact typed error, naming what to fix.

    What was sent is compared between a snapshot taken just before the case acts (after its
    `setup`, if any) and one taken after it failed: the fake's request log (`fake.requests`,
    every request that reached it, IAM exchanges included), the ids of its assets, trainings
    and deployments, and the list of files under the local backend's home folder.
    """
    files = tmp_path / "files"
    files.mkdir()
    async with watsonx_client(fake, server, retry=QUICK, api_key=API_KEY) as client:
        ctx = Ctx(fake, server, client, files, tmp_path / "home", tiny_model_dir)
        if case.setup is not None:
            await case.setup(ctx)
        requests_before = len(fake.requests)
        objects_before = created_objects(fake)
        files_before = stored_files(ctx.home)

        with pytest.raises(GraniteTunerError) as caught:
            await case.act(ctx)

    error = caught.value
    assert type(error) is case.error, f"{type(error).__name__}: {error}"
    assert case.fix in str(error)
    if isinstance(error, InvalidDataError):
        assert error.problems, "an InvalidDataError lists its problems"
        if case.where is not None:
            first = error.problems[0]
            assert (first.line, first.field) == case.where, first
    assert_our_own_error(error)

    sent = [(r.method, r.path) for r in fake.requests[requests_before:]]
    if case.sends == "nothing":
        assert sent == []
    elif case.sends == "iam":
        assert sent
        assert all(is_iam(*request) for request in sent), sent
    elif case.sends == "lookups":
        assert any(method == "GET" for method, _ in sent), sent
        assert all(method == "GET" or is_iam(method, path) for method, path in sent), sent
    else:
        assert sent
    assert not any(method == "PUT" for method, _ in sent), "nothing may be uploaded"
    assert created_objects(fake) == objects_before
    assert stored_files(ctx.home) == files_before


# --- keeping the corpus honest -----------------------------------------------------------------


def test_the_corpus_covers_every_category_with_distinct_ids() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    per_category = Counter(case.category for case in CASES)
    assert set(per_category) == {
        "training file",
        "evaluation file",
        "tuning parameters",
        "generation parameters",
        "credentials",
        "urls",
        "model ids",
        "serving names",
        "local backend",
    }
    assert min(per_category.values()) >= 5
    assert len(CASES) >= 40


async def test_the_good_version_of_every_spoiled_call_succeeds(
    fake: FakeWatsonx, server: ServerHandle, tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The helpers the cases spoil work when nothing is spoiled, so each case fails because
    of its one bad input."""
    files = tmp_path / "files"
    files.mkdir()
    async with watsonx_client(fake, server, retry=QUICK, api_key=API_KEY) as client:
        ctx = Ctx(fake, server, client, files, tmp_path / "home", tiny_model_dir)
        result = await tune(ctx, training_data=ctx.write("t.jsonl", jsonl(TRAIN_ROWS)))
        assert isinstance(result, TuningResult)
        assert result.succeeded
        assert await evaluate(ctx, ctx.write("e.jsonl", jsonl(TEST_ROWS)), parameters={})
        assert await compare(ctx, {"base": BASE_MODEL}, baseline="base")
        assert await generate(ctx, {"temperature": 0.5, "max_new_tokens": 3})
        deployment = await deploy(ctx, result, serving_name="good_name_1")
        assert isinstance(deployment, Deployment)
        assert await generate(ctx, {}, deployment_id=deployment.id)
        assert isinstance(await connect(ctx), list)
        assert isinstance(
            await connect_from_env(
                ctx,
                WATSONX_URL=server.url,
                WATSONX_APIKEY=API_KEY,
                WATSONX_PROJECT_ID=fake.project_id,
            ),
            list,
        )
    local = await local_tune(ctx)
    assert isinstance(local, TuningResult)
    assert local.succeeded
    assert await local_generate(ctx, parameters={"max_new_tokens": 2})

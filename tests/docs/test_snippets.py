"""Every Python block of README.md and docs/ runs as written, offline (see `snippets.py`).

A block that is a whole program runs as a script would (`__name__ == "__main__"`), and any
`test_*` functions it defines are then called, on asyncio and trio. A block with a top-level
`await` is a fragment of a session: it runs with the names such a page assumes already made
(`client`, `result`, `deployment`, ...) and the public names of `granite_tuner`.

Watsonx.ai blocks run against the bundled fake over HTTPS, configured by nothing but the
environment that `granite-tuner fake-server` prints, in a folder holding `train.jsonl` and
`test.jsonl` (the shipped data set). Local blocks (marked `local`) run with a model home whose
default model is the tiny test model (`tests/tiny_model.py`), so `LocalClient()` loads it in
place of SmolLM2-135M: the code is what is checked here; SmolLM2 runs the same workflow in
`bash scripts/demo.sh`, which CI runs with `--min-gain 20`.
"""

from __future__ import annotations

import ast
import inspect
import shutil
from collections.abc import Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

import granite_tuner
from granite_tuner import Deployment, Evaluator, Tuner, WatsonxClient, datasets
from granite_tuner.backends.local import DEFAULT_MODEL, LocalClient
from granite_tuner.testing import FakeWatsonx, environment_for
from tests.docs.snippets import ROOT, Block, all_blocks
from tests.tiny_model import review_examples

BLOCKS = all_blocks()
BASE_MODEL = "ibm/granite-13b-instruct-v2"
_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


def compiled(block: Block) -> Any:
    return compile(block.source, block.where, "exec", flags=_FLAGS)


def is_fragment_of_a_session(block: Block) -> bool:
    """True when the block awaits at top level: it needs a running loop and an open client."""
    return bool(compiled(block).co_flags & inspect.CO_COROUTINE)


def ids(blocks: list[Block]) -> list[str]:
    return [block.where for block in blocks]


RUN = [b for b in BLOCKS if b.kind in ("run", "local")]
PROGRAMS = [
    # A whole local workflow (340 examples, 4 epochs, 240 prompts) on the tiny model: 2 to 5 s
    # on an idle 2-core machine, but 45 to 55 s was seen under load from other jobs.
    pytest.param(b, marks=pytest.mark.slow, id=b.where) if b.kind == "local" else b
    for b in RUN
    if not is_fragment_of_a_session(b)
]
SESSIONS = [b for b in RUN if is_fragment_of_a_session(b)]


def local_home(folder: Path, tiny_model: Path) -> Path:
    """A model home whose default model is the tiny test model (see the module docstring)."""
    home = folder / "home"
    shutil.copytree(tiny_model, home / "models" / DEFAULT_MODEL)
    return home


def write_jsonl(path: Path, rows: list[str]) -> None:
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


@contextmanager
def fake_service(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Iterator[FakeWatsonx]:
    """The fake over HTTPS and the environment pointing at it; the folder gets the data files.

    The data are the shipped set, cut short (60 to train, 10 to test): the snippets run as
    written, and a snippet's rate limit of 2 requests per second then takes 10 s, not 2 minutes.
    """
    write_jsonl(folder / "train.jsonl", datasets.train_path().read_text().splitlines()[:60])
    write_jsonl(folder / "test.jsonl", datasets.test_path().read_text().splitlines()[:10])
    fake = FakeWatsonx(training_polls=1)
    with fake.serve(tls=True) as server:
        for name, value in environment_for(fake, server).items():
            monkeypatch.setenv(name, value)
        yield fake


@pytest.fixture
def folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The working folder of a snippet, with its own model home."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRANITE_TUNER_HOME", str(tmp_path / "home"))
    return tmp_path


def run_defined_tests(namespace: dict[str, Any]) -> list[str]:
    """Call the `test_*` functions a block defined (async ones on asyncio and on trio)."""
    called = []
    for name, value in list(namespace.items()):
        if not name.startswith("test_") or not inspect.isfunction(value):
            continue
        if inspect.iscoroutinefunction(value):
            for backend in ("asyncio", "trio"):
                anyio.run(value, backend=backend)
        else:
            value()
        called.append(name)
    return called


@pytest.mark.parametrize("block", PROGRAMS, ids=lambda b: b.where)
def test_program_runs(
    block: Block, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    with ExitStack() as stack:
        if block.kind == "local":
            local_home(folder, request.getfixturevalue("tiny_model_dir"))
        else:
            stack.enter_context(fake_service(monkeypatch, folder))
        exec(compiled(block), namespace)
        run_defined_tests(namespace)


async def watsonx_session(stack: AsyncExitStack) -> dict[str, Any]:
    """What a watsonx.ai page assumes: an open client, a tuned result, a deployment."""
    client = await stack.enter_async_context(WatsonxClient.from_env())
    result = await Tuner(
        client,
        base_model=BASE_MODEL,
        training_data="train.jsonl",
        name="reviews-pt",
        poll_interval=(0.01, 0.05),
    ).run()
    deployment = await stack.enter_async_context(
        await Deployment.create(client, result, poll_interval=(0.01, 0.05), delete_on_exit=True)
    )
    return {
        "client": client,
        "result": result,
        "run_id": result.run_id,
        "base_model": BASE_MODEL,
        "base_id": BASE_MODEL,
        "deployment": deployment,
        "deployment_id": deployment.id,
        "test_set": "test.jsonl",
        "evaluator": Evaluator(client, parameters={"max_new_tokens": 2}),
    }


async def local_session(stack: AsyncExitStack, model: Path, folder: Path) -> dict[str, Any]:
    """What a local page assumes: a `LocalClient` open, and `train.jsonl`."""
    write_jsonl(
        folder / "train.jsonl", [example.model_dump_json() for example in review_examples(60)]
    )
    local_home(folder, model)
    client = await stack.enter_async_context(LocalClient())
    return {"client": client, "base_model": client.model_name}


@pytest.mark.anyio
@pytest.mark.parametrize("block", SESSIONS, ids=ids(SESSIONS))
async def test_fragment_runs_in_its_session(
    block: Block, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, folder: Path
) -> None:
    namespace: dict[str, Any] = {
        name: getattr(granite_tuner, name) for name in granite_tuner.__all__
    }
    with ExitStack() as services:
        async with AsyncExitStack() as stack:  # closed first: clients before the fake stops
            if block.kind == "local":
                model: Path = request.getfixturevalue("tiny_model_dir")
                namespace.update(await local_session(stack, model, folder))
            else:
                services.enter_context(fake_service(monkeypatch, folder))
                namespace.update(await watsonx_session(stack))
            awaitable = eval(compiled(block), namespace)
            if awaitable is not None:
                await awaitable


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.kind == "tested-in"], ids=lambda b: b.where
)
def test_blocks_said_to_be_tested_elsewhere_name_a_test_file(block: Block) -> None:
    assert (ROOT / block.arg).is_file(), f"{block.where}: {block.arg} does not exist"
    assert block.arg.startswith("tests/")


def test_few_blocks_are_left_unrun() -> None:
    """Markers that skip a block are for what cannot run offline, not for broken snippets."""
    unrun = [b.where for b in BLOCKS if b.kind in ("fragment", "tested-in")]
    assert len(unrun) <= len(BLOCKS) // 4, unrun
    for block in BLOCKS:
        if block.kind == "fragment":
            assert block.arg, f"{block.where}: say why the fragment cannot run"

"""`LocalClient` as a tuning backend on the tiny model, on asyncio and trio."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from granite_tuner import (
    ConfigurationError,
    EpochCompleted,
    RunFinished,
    RunNotFoundError,
    RunSubmitted,
    StepLogged,
    Tuner,
    TuningEvent,
)
from granite_tuner.backends.base import TuningBackend
from granite_tuner.backends.local import DEFAULT_MODEL, LocalClient, RunStore
from granite_tuner.backends.local._adapter import load_soft_prompt
from granite_tuner.data import LabelledSet
from granite_tuner.generation import GenerationParameters
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.runs import TuningRun
from tests.tiny_model import review_examples

pytestmark = pytest.mark.anyio

QUICK = PromptTuningParameters(
    num_epochs=2, batch_size=4, learning_rate=0.1, num_virtual_tokens=4, init_method="random"
)
# Thousands of millisecond steps: long enough to be cancelled in the middle.
LONG = PromptTuningParameters(
    num_epochs=50, batch_size=1, learning_rate=0.1, num_virtual_tokens=4, init_method="random"
)
DATA = LabelledSet(examples=tuple(review_examples(60)))


async def wait_for(
    read: Callable[[], Awaitable[TuningRun]],
    done: Callable[[TuningRun], bool],
    *,
    timeout: float = 60.0,
) -> TuningRun:
    with anyio.fail_after(timeout):
        while True:
            run = await read()
            if done(run):
                return run
            await anyio.sleep(0.005)


async def start(
    client: LocalClient, model: Path, parameters: PromptTuningParameters, name: str = "reviews"
) -> TuningRun:
    ref = await client.upload_training_data(DATA, name=name)
    return await client.start_tuning(
        name=name, base_model=str(model), data_ref=ref, parameters=parameters
    )


async def test_a_run_trains_to_completion_and_is_kept(tiny_model_dir: Path, home: Path) -> None:
    async with LocalClient(str(tiny_model_dir), home=home) as client:
        assert isinstance(client, TuningBackend)
        assert client.backend_name == "local"
        run = await start(client, tiny_model_dir, QUICK)
        assert run.state == "queued"
        assert run.parameters["num_epochs"] == 2
        assert run.parameters["learning_rate"] == 0.1
        assert run.parameters["max_input_tokens"] == 256  # a local default, resolved

        finished = await wait_for(lambda: client.get_tuning_run(run.id), lambda r: r.is_finished)
        assert finished.state == "completed", finished.failure_message
        assert finished.model_id == run.id
        assert finished.started_at is not None
        assert finished.finished_at is not None
        # By default 20 % (12 of 60, stratified) is held out for validation: 48 train, in 12
        # steps of 4, and every epoch is validated.
        assert [m.iteration for m in finished.metrics] == list(range(1, 25))  # 12 steps x 2
        assert {m.epoch for m in finished.metrics} == {0, 1}
        assert [p.epoch for p in finished.validation] == [0, 1]
        assert finished.parameters["validation_split"] == 0.2
        assert finished.best_epoch in (0, 1)
        assert (home / "runs" / run.id / "adapter" / "adapter_model.safetensors").is_file()
        assert [r.id for r in await client.find_tuning_runs("reviews")] == [run.id]

    # a new client (as after a restart) finds it by id and by name, unchanged
    async with LocalClient(str(tiny_model_dir), home=home) as again:
        assert (await again.get_tuning_run(run.id)).model_dump() == finished.model_dump()
        assert [r.id for r in await again.find_tuning_runs("reviews")] == [run.id]
        assert await again.find_tuning_runs("other") == []


async def test_tuner_drives_a_local_run_unchanged(tiny_model_dir: Path, home: Path) -> None:
    events: list[TuningEvent] = []
    async with LocalClient(str(tiny_model_dir), home=home) as client:
        tuner = Tuner(
            client,
            base_model=str(tiny_model_dir),
            training_data=[{"input": e.input, "output": e.output} for e in DATA.examples],
            parameters=QUICK,
            poll_interval=(0.01, 0.05),
            on_event=events.append,
        )
        result = await tuner.run()
    assert result.succeeded
    assert result.backend == "local"
    assert result.model_id == result.run_id
    assert len(result.loss_per_epoch) == 2
    assert result.final_loss == result.loss_per_epoch[-1]
    assert isinstance(events[0], RunSubmitted)
    assert isinstance(events[-1], RunFinished)
    assert events[-1].state == "completed"
    steps = [e for e in events if isinstance(e, StepLogged)]
    assert [e.iteration for e in steps] == [m.iteration for m in result.metrics]
    epochs = [e for e in events if isinstance(e, EpochCompleted)]
    assert [e.epoch for e in epochs] == [0, 1]
    assert all(e.num_epochs == 2 for e in epochs)


async def test_cancel_stops_a_run_within_one_step(tiny_model_dir: Path, home: Path) -> None:
    async with LocalClient(str(tiny_model_dir), home=home) as client:
        run = await start(client, tiny_model_dir, LONG)
        running = await wait_for(lambda: client.get_tuning_run(run.id), lambda r: bool(r.metrics))
        await client.cancel_tuning_run(run.id)
        canceled = await client.get_tuning_run(run.id)
        assert canceled.state == "canceled"
        assert canceled.failure_message == "canceled by request"
        assert len(canceled.metrics) < 3000
        await anyio.sleep(0.05)
        assert (await client.get_tuning_run(run.id)).metrics == canceled.metrics  # stopped
        assert len(canceled.metrics) >= len(running.metrics)
    assert RunStore(home).load(run.id).state == "canceled"


async def test_closing_the_client_cancels_its_runs(tiny_model_dir: Path, home: Path) -> None:
    async with LocalClient(str(tiny_model_dir), home=home) as client:
        run = await start(client, tiny_model_dir, LONG)
        await wait_for(lambda: client.get_tuning_run(run.id), lambda r: bool(r.metrics))
    stored = RunStore(home).read(run.id)
    assert stored.state == "canceled"
    assert stored.message == "client closed"
    assert stored.finished_at is not None


async def test_runs_wait_their_turn_and_can_be_deleted(tiny_model_dir: Path, home: Path) -> None:
    async with LocalClient(str(tiny_model_dir), home=home) as client:
        first = await start(client, tiny_model_dir, LONG, name="first")
        second = await start(client, tiny_model_dir, QUICK, name="second")
        await wait_for(lambda: client.get_tuning_run(first.id), lambda r: bool(r.metrics))
        assert (await client.get_tuning_run(second.id)).state == "queued"

        await client.delete_tuning_run(first.id)
        with pytest.raises(RunNotFoundError):
            await client.get_tuning_run(first.id)
        assert not (home / "runs" / first.id).exists()

        done = await wait_for(lambda: client.get_tuning_run(second.id), lambda r: r.is_finished)
        assert done.state == "completed"
        assert [r.name for r in await client.list_tuning_runs()] == ["second"]


async def test_mistakes_are_reported_before_a_run_exists(tiny_model_dir: Path, home: Path) -> None:
    client = LocalClient(str(tiny_model_dir), home=home)
    with pytest.raises(ConfigurationError, match="async with"):
        await client.start_tuning(
            name="x", base_model=str(tiny_model_dir), data_ref="0" * 64, parameters=QUICK
        )
    async with client:
        with pytest.raises(ConfigurationError, match="upload_training_data"):
            await client.start_tuning(
                name="x", base_model=str(tiny_model_dir), data_ref="0" * 64, parameters=QUICK
            )
        ref = await client.upload_training_data(DATA, name="x")
        with pytest.raises(ConfigurationError, match="not available offline"):
            await client.start_tuning(
                name="x", base_model="nobody/no-such-model", data_ref=ref, parameters=QUICK
            )
        with pytest.raises(RunNotFoundError):
            await client.get_tuning_run("no-such-run")
        assert await client.list_tuning_runs() == []


async def test_tunable_models_are_the_configured_one(tiny_model_dir: Path, home: Path) -> None:
    async with LocalClient(home=home) as client:
        [model] = await client.tunable_models()
        assert model.model_id == DEFAULT_MODEL
        assert model.label is not None
        assert "SmolLM2" in model.label
    async with LocalClient(str(tiny_model_dir), home=home) as client:
        assert [m.model_id for m in await client.tunable_models()] == [str(tiny_model_dir)]


_DOOMED = """
import sys, anyio
from granite_tuner.backends.local import LocalClient
from granite_tuner.data import LabelledSet
from granite_tuner.parameters import PromptTuningParameters
from tests.tiny_model import review_examples

async def main():
    model, home = sys.argv[1], sys.argv[2]
    async with LocalClient(model, home=home) as client:
        data = LabelledSet(examples=tuple(review_examples(60)))
        ref = await client.upload_training_data(data, name="doomed")
        parameters = PromptTuningParameters(num_epochs=50, batch_size=1)
        run = await client.start_tuning(
            name="doomed", base_model=model, data_ref=ref, parameters=parameters
        )
        print(run.id, flush=True)
        await anyio.sleep(600)

anyio.run(main)
"""


def test_a_run_killed_with_its_process_is_reported_interrupted(
    tiny_model_dir: Path, home: Path
) -> None:
    """A real process trains, is killed mid-run; another process's store reports it failed."""
    process = subprocess.Popen(
        [sys.executable, "-c", _DOOMED, str(tiny_model_dir), str(home)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    store = RunStore(home)
    try:
        assert process.stdout is not None
        run_id = process.stdout.readline().strip()
        deadline = time.monotonic() + 60
        while store.load(run_id).state != "running" or not store.load(run_id).metrics:
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()

    assert store.load(run_id).state == "running"  # what the killed process last wrote...
    run = store.read(run_id)  # ...and how it is reported
    assert run.state == "failed"
    assert run.failure_message is not None
    assert "interrupted" in run.failure_message
    assert run.metrics  # what was saved before the crash is kept


async def test_a_client_can_train_and_serve_the_soft_prompt_at_the_end(
    tiny_model_dir: Path, home: Path
) -> None:
    """The run records the position, the adapter says it, and a deployment of the run answers
    as one plain forward pass over `[prompt][soft prompt]` does."""
    import json

    import torch

    from granite_tuner.backends.local._adapter import POSITION_KEY

    async with LocalClient(
        str(tiny_model_dir), home=home, peft_method="prompt_tuning", soft_prompt_position="end"
    ) as client:
        run = await start(client, tiny_model_dir, QUICK)
        assert run.parameters["soft_prompt_position"] == "end"
        finished = await wait_for(lambda: client.get_tuning_run(run.id), lambda r: r.is_finished)
        assert finished.state == "completed", finished.failure_message
        adapter = home / "runs" / run.id / "adapter"
        assert json.loads((adapter / "adapter_config.json").read_text())[POSITION_KEY] == "end"

        deployment = await client.deploy(run.id, name="at-end", serving_name=None)
        assert deployment.is_ready, deployment.failure_message
        prompt = DATA.examples[0].input
        one = GenerationParameters(decoding_method="greedy", max_new_tokens=1)
        answer = await client.generate(prompt, deployment_id=deployment.id, parameters=one)

        loaded = await client.models.get(str(tiny_model_dir))
        soft = load_soft_prompt(adapter, loaded.model)
        ids = loaded.tokenizer(prompt)["input_ids"][-256:]
        embed = loaded.model.get_input_embeddings()
        with torch.no_grad():
            sequence = torch.cat((embed(torch.tensor(ids)), soft))[None]
            token = int(loaded.model(inputs_embeds=sequence).logits[0, -1].argmax())
        assert answer.text == loaded.tokenizer.decode([token], skip_special_tokens=True)


async def test_a_client_trains_a_prefix_by_default_that_peft_loads_and_serves_alike(
    tiny_model_dir: Path, home: Path
) -> None:
    """The default run is prefix tuning: its adapter is PEFT's own, `PeftModel` loads it, and a
    deployment of the run answers as PEFT's forward pass over the prompt does."""
    import torch
    from peft import PeftModel

    async with LocalClient(str(tiny_model_dir), home=home) as client:
        run = await start(client, tiny_model_dir, QUICK)
        assert run.parameters["peft_method"] == "prefix_tuning"
        finished = await wait_for(lambda: client.get_tuning_run(run.id), lambda r: r.is_finished)
        assert finished.state == "completed", finished.failure_message
        adapter = home / "runs" / run.id / "adapter"

        deployment = await client.deploy(run.id, name="prefix", serving_name=None)
        assert deployment.is_ready, deployment.failure_message
        one = GenerationParameters(decoding_method="greedy", max_new_tokens=1)
        loaded = await client.models.get(str(tiny_model_dir))
        reference = PeftModel.from_pretrained(loaded.model, str(adapter))
        assert reference.peft_config["default"].peft_type == "PREFIX_TUNING"
        for example in DATA.examples[:4]:
            answer = await client.generate(
                example.input, deployment_id=deployment.id, parameters=one
            )
            ids = torch.tensor([loaded.tokenizer(example.input)["input_ids"][-256:]])
            with torch.no_grad():
                logits = reference(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
            token = int(logits[0, -1].argmax())
            assert answer.text == loaded.tokenizer.decode([token], skip_special_tokens=True)


def test_a_position_with_prefix_tuning_is_refused_clearly() -> None:
    with pytest.raises(ConfigurationError, match=r"peft_method='prompt_tuning' with it"):
        LocalClient(soft_prompt_position="start")
    with pytest.raises(ConfigurationError, match=r"peft_method='lora'.*'prefix_tuning'"):
        LocalClient(peft_method="lora")  # type: ignore[arg-type]


def test_an_unknown_soft_prompt_position_is_refused_clearly() -> None:
    with pytest.raises(ConfigurationError, match=r"soft_prompt_position='middle'.*'start'"):
        LocalClient(peft_method="prompt_tuning", soft_prompt_position="middle")  # type: ignore[arg-type]

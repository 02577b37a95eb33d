"""Serving a soft prompt trained at the end of the input: `[prompt][soft prompt][answer]`.

The run's recorded `soft_prompt_position` decides where the server puts its soft prompt; such
rows share batches with soft prompts at the start and with the plain base model, and each row
gets the answer it gets alone, which is the answer of plain forward passes over its sequence.
"""

from __future__ import annotations

import shutil

import pytest

from granite_tuner.backends.local._adapter import load_soft_prompt
from granite_tuner.runs import TuningRun
from tests.local.serving_support import (
    BASE,
    GREEDY,
    PROMPTS,
    StandIn,
    Tiny,
    assert_one_batch_answers_as_alone,
    deploy,
    reference_greedy,
    text_of,
)

pytestmark = pytest.mark.anyio


def _add_run(client: StandIn, tiny: Tiny, run_id: str, position: object) -> None:
    """A completed run of run-ok's soft prompt that records `position`."""
    root = tiny.adapter_dir.parent.parent
    shutil.copytree(tiny.adapter_dir, root / run_id / "adapter", dirs_exist_ok=True)
    client.runs[run_id] = TuningRun(
        id=run_id,
        state="completed",
        base_model=BASE,
        parameters={"soft_prompt_position": position},
    )


async def test_a_soft_prompt_at_the_end_follows_the_prompt(client: StandIn, tiny: Tiny) -> None:
    _add_run(client, tiny, "run-end", "end")
    soft_prompt = load_soft_prompt(tiny.adapter_dir, tiny.loaded.model)
    at_end = await deploy(client, "run-end")
    at_start = await deploy(client, "run-ok")
    differs = 0
    for prompt in PROMPTS:
        answer = await client.generate(prompt, deployment_id=at_end, parameters=GREEDY)
        expected = reference_greedy(tiny, prompt, 6, soft_prompt, at_end=True)
        assert answer.text == text_of(tiny, expected)
        start = await client.generate(prompt, deployment_id=at_start, parameters=GREEDY)
        differs += start.text != answer.text
    assert differs  # the same tensor at the other end of the prompt answers otherwise


async def test_rows_at_the_end_share_batches_and_answer_as_alone(
    client: StandIn, tiny: Tiny, generate_calls: list[int]
) -> None:
    _add_run(client, tiny, "run-end", "end")
    targets = [
        {"deployment_id": await deploy(client, "run-end")},
        {"deployment_id": await deploy(client, "run-ok")},
        {"deployment_id": await deploy(client, "run-long")},
        {"model_id": BASE},
    ]
    await assert_one_batch_answers_as_alone(client, targets, generate_calls)


async def test_a_run_that_records_an_unknown_position_is_not_served(
    client: StandIn, tiny: Tiny
) -> None:
    _add_run(client, tiny, "run-middle", "middle")
    info = await client.deploy("run-middle", name="test", serving_name=None)
    assert not info.is_ready
    assert "soft_prompt_position='middle'" in (info.failure_message or "")

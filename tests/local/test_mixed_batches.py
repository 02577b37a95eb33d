"""Batches that mix deployments: different soft prompts (and none) share one forward pass.

Every row must get exactly the answer it gets alone: its own soft prompt in front of its own
tokens, its own truncation, its own seed. The soft prompts of the rig have 4 (run-ok), 7
(run-long) and 2 (run-two) virtual tokens; base-model rows have none.
"""

from __future__ import annotations

import functools
import shutil
from typing import Any

import anyio
import pytest
import torch

from granite_tuner.backends.local._adapter import load_soft_prompt
from granite_tuner.generation import GenerationParameters
from granite_tuner.runs import TuningRun
from tests.local.serving_support import (
    BASE,
    GREEDY,
    PROMPTS,
    StandIn,
    Tiny,
    all_at_once,
    deploy,
    reference_greedy,
    text_of,
)

pytestmark = pytest.mark.anyio

TUNED_RUNS = ("run-ok", "run-long", "run-two")


async def _targets(client: StandIn) -> list[dict[str, Any]]:
    """Keyword arguments of `generate` for each tuned run's deployment, and the base model."""
    targets = [{"deployment_id": await deploy(client, run_id)} for run_id in TUNED_RUNS]
    return [*targets, {"model_id": BASE}]


def _soft_prompts(tiny: Tiny) -> list[torch.Tensor | None]:
    """The soft prompt of each target of `_targets`, in the same order (None: base model)."""
    root = tiny.adapter_dir.parent.parent
    return [
        *(load_soft_prompt(root / run_id / "adapter", tiny.loaded.model) for run_id in TUNED_RUNS),
        None,
    ]


class _Shapes:
    """The (rows, positions) of every forward pass of the tiny model while it is active."""

    def __init__(self, tiny: Tiny) -> None:
        self._model = tiny.loaded.model
        self.seen: list[tuple[int, int]] = []

    def _record(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None:
            self.seen.append((int(embeds.shape[0]), int(embeds.shape[1])))

    def __enter__(self) -> _Shapes:
        # A hook, not a wrapper: `generate` reads the signature of `forward`.
        self._hook = self._model.register_forward_pre_hook(self._record, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self._hook.remove()


async def test_rows_of_different_soft_prompts_answer_as_alone(
    client: StandIn, tiny: Tiny, generate_calls: list[int]
) -> None:
    targets = await _targets(client)
    alone = [
        [await client.generate(p, parameters=GREEDY, **target) for p in PROMPTS]
        for target in targets
    ]
    generate_calls.clear()
    # Rows of 4 targets in turn: their soft prompts (4, 7, 2 and no virtual tokens) are run once
    # per soft prompt through a prefilled cache, as each has 6 rows.
    with _Shapes(tiny) as shapes:
        together = await all_at_once(
            [
                functools.partial(client.generate, p, parameters=GREEDY, **target)
                for p in PROMPTS
                for target in targets
            ]
        )
    assert generate_calls == [len(PROMPTS) * len(targets)]
    assert shapes.seen[0] == (3, 7)  # one left-padded row per soft prompt; the base has none
    assert together == [alone[t][i] for i in range(len(PROMPTS)) for t in range(len(targets))]
    for soft_prompt, answers in zip(_soft_prompts(tiny), alone, strict=True):
        for prompt, answer in zip(PROMPTS, answers, strict=True):
            assert answer.text == text_of(tiny, reference_greedy(tiny, prompt, 6, soft_prompt))


async def test_one_row_per_soft_prompt_answers_as_alone(
    client: StandIn, tiny: Tiny, generate_calls: list[int]
) -> None:
    """Nothing shared, so no prefilled cache: each row is [padding][soft prompt][tokens]."""
    targets = await _targets(client)
    prompts = PROMPTS[: len(targets)]
    alone = [
        await client.generate(p, parameters=GREEDY, **target)
        for p, target in zip(prompts, targets, strict=True)
    ]
    generate_calls.clear()
    with _Shapes(tiny) as shapes:
        together = await all_at_once(
            [
                functools.partial(client.generate, p, parameters=GREEDY, **target)
                for p, target in zip(prompts, targets, strict=True)
            ]
        )
    assert generate_calls == [len(targets)]
    longest = max(
        v + len(p.split()) for v, p in zip((4, 7, 2, 0), prompts, strict=True)
    )  # the word-level tokenizer adds no special tokens
    assert shapes.seen[0] == (len(targets), longest)
    assert together == alone


async def test_each_soft_prompts_shared_start_is_computed_once(client: StandIn, tiny: Tiny) -> None:
    targets = (await _targets(client))[:2]  # run-ok (4 virtual tokens), run-long (7)
    start = "comment : my dog was at the groomer and"
    endings = ["it was great", "bad", "the price was too high . satisfaction :", "never again"]
    prompts = [f"{start} {ending}" for ending in endings]
    alone = [
        await client.generate(p, parameters=GREEDY, **target) for target in targets for p in prompts
    ]
    with _Shapes(tiny) as shapes:
        together = await all_at_once(
            [
                functools.partial(client.generate, p, parameters=GREEDY, **target)
                for target in targets
                for p in prompts
            ]
        )
    shared = len(start.split())
    # One left-padded pass over each soft prompt's shared start (the longer is run-long's),
    # then the whole batch runs only what follows.
    assert shapes.seen[0] == (2, 7 + shared)
    assert shapes.seen[1] == (2 * len(prompts), max(len(e.split()) for e in endings))
    assert together == alone
    for soft_prompt, answers in zip(_soft_prompts(tiny), [alone[:4], alone[4:]], strict=False):
        for prompt, answer in zip(prompts, answers, strict=True):
            assert answer.text == text_of(tiny, reference_greedy(tiny, prompt, 6, soft_prompt))


async def test_requests_over_four_deployments_share_batches(tiny: Tiny) -> None:
    async with StandIn(tiny, window=0.2) as client:
        targets = await _targets(client)
        before = client.serving_stats()
        await all_at_once(
            [
                functools.partial(
                    client.generate, PROMPTS[i % len(PROMPTS)], parameters=GREEDY, **target
                )
                for i in range(4)
                for target in targets
            ]
        )
        stats = client.serving_stats()
    # Grouped by deployment, 16 requests over 4 deployments would make 4 batches of 4.
    assert stats.batches - before.batches == 1
    assert stats.largest_batch == 16


async def test_each_deployment_cuts_its_own_rows(client: StandIn, tiny: Tiny) -> None:
    """A run trained with max_input_tokens=4 and one without share a batch, each cut its way."""
    runs_root = tiny.adapter_dir.parent.parent
    if not (runs_root / "run-short").exists():
        shutil.copytree(tiny.adapter_dir, runs_root / "run-short" / "adapter")
    client.runs["run-short"] = TuningRun(
        id="run-short", state="completed", base_model=BASE, parameters={"max_input_tokens": 4}
    )
    short, full = await deploy(client, "run-short"), await deploy(client, "run-ok")
    prompt = PROMPTS[2]
    tail = " ".join(prompt.split()[-4:])
    expected = [
        await client.generate(tail, deployment_id=full, parameters=GREEDY),
        await client.generate(prompt, deployment_id=full, parameters=GREEDY),
    ]
    together = await all_at_once(
        [
            functools.partial(client.generate, prompt, deployment_id=short, parameters=GREEDY),
            functools.partial(client.generate, prompt, deployment_id=full, parameters=GREEDY),
        ]
    )
    assert client.serving_stats().largest_batch == 2
    assert [a.input_token_count for a in together] == [4, len(prompt.split())]
    assert [a.text for a in together] == [e.text for e in expected]


async def test_seeded_sampling_repeats_per_row_in_a_mixed_batch(
    client: StandIn, generate_calls: list[int]
) -> None:
    targets = await _targets(client)
    sample = {"decoding_method": "sample", "max_new_tokens": 8, "min_new_tokens": 8}
    calls = [
        (PROMPTS[i], {**sample, "random_seed": 10 + i, "temperature": 1.5}, target)
        for i, target in enumerate(targets)
    ]
    alone = [await client.generate(p, parameters=params, **t) for p, params, t in calls]
    generate_calls.clear()
    together = await all_at_once(
        [functools.partial(client.generate, p, parameters=params, **t) for p, params, t in calls]
    )
    assert generate_calls == [len(targets)]
    assert together == alone
    assert [a.seed for a in together] == [10 + i for i in range(len(targets))]


async def test_streamed_rows_of_different_soft_prompts_add_up(client: StandIn) -> None:
    targets = await _targets(client)
    forced = GenerationParameters(decoding_method="greedy", max_new_tokens=8, min_new_tokens=8)
    alone = [await client.generate(PROMPTS[0], parameters=forced, **t) for t in targets]
    streamed: dict[int, list[str]] = {}
    before = client.serving_stats().batches

    async def stream(index: int) -> None:
        pieces = streamed.setdefault(index, [])
        async for event in client.generate_stream(PROMPTS[0], parameters=forced, **targets[index]):
            pieces.append(event.text)

    async with anyio.create_task_group() as group:
        for index in range(len(targets)):
            group.start_soon(stream, index)
    assert client.serving_stats().batches == before + 1
    assert ["".join(streamed[i]) for i in range(len(targets))] == [a.text for a in alone]
    assert len({a.text for a in alone}) > 1  # the soft prompts do make a difference


async def test_an_empty_prompt_behind_a_soft_prompt_answers_as_alone(
    client: StandIn, tiny: Tiny
) -> None:
    """Only the soft prompt is left to read: its last vector is the row's own position."""
    targets = await _targets(client)
    calls = [("", targets[0]), ("", targets[1]), *((p, targets[1]) for p in PROMPTS)]
    calls.append(("", targets[3]))
    alone = [await client.generate(p, parameters=GREEDY, **t) for p, t in calls]
    with _Shapes(tiny) as shapes:
        together = await all_at_once(
            [functools.partial(client.generate, p, parameters=GREEDY, **t) for p, t in calls]
        )
    # run-long's 7 rows share 6 of its 7 vectors: the empty prompt keeps the last as its own.
    assert shapes.seen[0] == (1, 6)
    assert together == alone
    soft_prompt = _soft_prompts(tiny)[0]
    assert alone[0].text == text_of(tiny, reference_greedy(tiny, "", 6, soft_prompt))

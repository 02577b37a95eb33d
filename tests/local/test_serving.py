"""The local server: deployments, micro-batching, decoding settings, failures and cancellation.

Everything runs on a tiny randomly initialised Llama (hidden size 32, 2 layers) with a word-level
tokenizer built here, and a prompt-tuning adapter saved with peft in the test; nothing is
downloaded. The client is a small stand-in: the `ModelServer` part of `LocalClient`, given what
it needs, with a task group of its own.
"""

from __future__ import annotations

import copy
import functools
import shutil
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, cast

import anyio
import pytest
import torch
from peft import PromptTuningConfig, TaskType, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from granite_tuner.backends.base import ServingBackend
from granite_tuner.backends.local._adapter import load_soft_prompt
from granite_tuner.backends.local._models import LoadedModel
from granite_tuner.backends.local._serving import (
    DeploymentNotFoundError,
    GenerationError,
    ModelServer,
)
from granite_tuner.deployment import Deployment
from granite_tuner.errors import (
    ConfigurationError,
    DeploymentFailedError,
    InvalidParametersError,
    RunNotFoundError,
)
from granite_tuner.generation import GenerationParameters, GenerationResult
from granite_tuner.runs import TuningRun

pytestmark = pytest.mark.anyio

BASE = "tiny-llama"
WORDS = [
    word
    for line in (
        "comment satisfaction the dog cat was is great bad lovely awful groomer nail trim bath",
        "haircut price staff late clean dirty happy sad again never always my our very too a",
        "and but : . ! 0 1",
    )
    for word in line.split()
]
PROMPTS = [
    "comment : the groomer was lovely . satisfaction :",
    "bad",
    "comment : my dog came back dirty and sad and the price was too high . satisfaction :",
    "nail trim",
    "the staff is always late but the bath is great !",
    "comment : never again . satisfaction :",
]
GREEDY = GenerationParameters(decoding_method="greedy", max_new_tokens=6)


# --- the tiny model, tokenizer and adapter -------------------------------------------------------


def _tokenizer() -> PreTrainedTokenizerFast:
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # **kwargs, untyped
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )


@dataclass(frozen=True)
class Tiny:
    loaded: LoadedModel
    adapter_dir: Path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    torch.manual_seed(0)
    tokenizer = _tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        # Larger than the usual 0.02, so that attention is not uniform and a soft prompt
        # visibly changes the answers of this untrained model.
        initializer_range=0.3,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    model = LlamaForCausalLM(config)
    model.train(False)  # eval mode
    model.requires_grad_(False)
    # The adapter is made on a copy, so the served model is untouched by peft.
    peft_model = get_peft_model(
        copy.deepcopy(model),
        PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4),
    )
    embedding = cast(torch.nn.Embedding, peft_model.prompt_encoder["default"].embedding)
    with torch.no_grad():
        embedding.weight.copy_(
            torch.randn(embedding.weight.shape, generator=torch.Generator().manual_seed(1))
        )
    adapter_dir = tmp_path_factory.mktemp("runs") / "run-ok" / "adapter"
    peft_model.save_pretrained(str(adapter_dir))
    loaded = LoadedModel(
        name=BASE,
        model=model,
        tokenizer=tokenizer,
        device=torch.device("cpu"),
        dtype=torch.float32,
        source="memory",
    )
    return Tiny(loaded=loaded, adapter_dir=adapter_dir)


Wrapper = Callable[[Callable[..., Any]], Callable[..., Any]]


@contextmanager
def replaced(target: object, name: str, wrap: Wrapper) -> Iterator[None]:
    """`target.<name>` replaced by `wrap(original)` on the instance, restored afterwards."""
    setattr(target, name, wrap(getattr(target, name)))
    try:
        yield
    finally:
        delattr(target, name)


# --- a stand-in for LocalClient ------------------------------------------------------------------


class _Models:
    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded

    async def get(self, name: str) -> LoadedModel:
        if name != self.loaded.name:
            raise ConfigurationError(f"The model {name!r} is not available offline.")
        return self.loaded


class _Store:
    def __init__(self, runs_root: Path) -> None:
        self.runs_root = runs_root

    def adapter_dir(self, run_id: str) -> Path:
        return self.runs_root / run_id / "adapter"

    def run_dir(self, run_id: str) -> Path:
        return self.runs_root / run_id


class StandIn(ModelServer):
    """The `ModelServer` part given what it needs from `LocalClient`, and no more."""

    def __init__(self, tiny: Tiny, *, window: float = 0.05, max_batch: int = 32) -> None:
        self.runs = {
            "run-ok": TuningRun(id="run-ok", state="completed", base_model=BASE),
            "run-busy": TuningRun(id="run-busy", state="running", base_model=BASE),
            "run-empty": TuningRun(id="run-empty", state="completed", base_model=BASE),
        }
        super().__init__(
            models=_Models(tiny.loaded),
            adapters=_Store(tiny.adapter_dir.parent.parent),
            runs=self.get_tuning_run,
            torch_limiter=anyio.CapacityLimiter(1),
            max_batch_size=max_batch,
            batch_window=window,
        )

    @property
    def backend_name(self) -> Literal["local"]:
        return "local"

    async def get_tuning_run(self, run_id: str) -> TuningRun:
        run = self.runs.get(run_id)
        if run is None:
            raise RunNotFoundError(f"There is no local tuning run {run_id!r}.")
        return run

    async def __aenter__(self) -> Self:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        self.open(self._group)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self.close()
        self._group.cancel_scope.cancel()
        return await self._group.__aexit__(exc_type, exc, tb)


@pytest.fixture
async def client(tiny: Tiny) -> AsyncIterator[StandIn]:
    async with StandIn(tiny) as opened:
        yield opened


@pytest.fixture
def generate_calls(tiny: Tiny) -> Iterator[list[int]]:
    """Batch size of every `model.generate` call made while the test runs."""
    sizes: list[int] = []

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        def generate(*args: Any, **kwargs: Any) -> Any:
            sizes.append(int(kwargs["inputs_embeds"].shape[0]))
            return original(*args, **kwargs)

        return generate

    with replaced(tiny.loaded.model, "generate", counting):
        yield sizes


async def _deploy(client: StandIn, run_id: str = "run-ok") -> str:
    info = await client.deploy(run_id, name="test", serving_name=None)
    assert info.is_ready, info.failure_message
    return info.id


async def _all_at_once(
    calls: list[Callable[[], Any]],
) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def one(index: int) -> None:
        results[index] = await calls[index]()

    async with anyio.create_task_group() as group:
        for index in range(len(calls)):
            group.start_soon(one, index)
    return results


def _reference_greedy(
    tiny: Tiny, prompt: str, max_new_tokens: int, soft_prompt: torch.Tensor | None
) -> list[int]:
    """Greedy decoding by full forward passes over the unpadded sequence (no cache, no batch)."""
    model, tokenizer = tiny.loaded.model, tiny.loaded.tokenizer
    ids: list[int] = tokenizer(prompt)["input_ids"]
    new: list[int] = []
    embed = model.get_input_embeddings()
    with torch.no_grad():
        for _ in range(max_new_tokens):
            embeds = embed(torch.tensor([ids + new]))
            if soft_prompt is not None:
                embeds = torch.cat((soft_prompt.unsqueeze(0), embeds), dim=1)
            token = int(model(inputs_embeds=embeds).logits[0, -1].argmax())
            new.append(token)
            if token == tokenizer.eos_token_id:
                break
    return new


def _text(tiny: Tiny, ids: list[int]) -> str:
    text = tiny.loaded.tokenizer.decode(ids, skip_special_tokens=True)
    assert isinstance(text, str)
    return text


# --- the seam ------------------------------------------------------------------------------------


async def test_stand_in_is_a_serving_backend(client: StandIn) -> None:
    assert isinstance(client, ServingBackend)


async def test_generate_needs_an_open_client(tiny: Tiny) -> None:
    closed = StandIn(tiny)
    with pytest.raises(ConfigurationError, match="async with"):
        await closed.generate("bad", model_id=BASE)


async def test_generate_needs_exactly_one_target(client: StandIn) -> None:
    with pytest.raises(ConfigurationError, match="exactly one"):
        await client.generate("bad")
    with pytest.raises(ConfigurationError, match="exactly one"):
        await client.generate("bad", model_id=BASE, deployment_id="x")


async def test_parameters_are_checked_before_queueing(client: StandIn) -> None:
    with pytest.raises(InvalidParametersError):
        await client.generate("bad", model_id=BASE, parameters={"max_new_token": 3})


# --- batching ------------------------------------------------------------------------------------


async def test_batched_answers_equal_one_by_one_answers(
    client: StandIn, tiny: Tiny, generate_calls: list[int]
) -> None:
    tuned = await _deploy(client)
    one_by_one = {
        target: [
            await client.generate(prompt, parameters=GREEDY, **{key: target}) for prompt in PROMPTS
        ]
        for key, target in (("model_id", BASE), ("deployment_id", tuned))
    }
    assert generate_calls == [1] * (2 * len(PROMPTS))
    generate_calls.clear()

    batched = await _all_at_once(
        [
            functools.partial(client.generate, prompt, parameters=GREEDY, **{key: target})
            for key, target in (("model_id", BASE), ("deployment_id", tuned))
            for prompt in PROMPTS
        ]
    )
    # Two deployments: two batches, each with every prompt of its deployment, left-padded.
    assert sorted(generate_calls) == [len(PROMPTS), len(PROMPTS)]
    assert [r.text for r in batched] == [r.text for r in one_by_one[BASE] + one_by_one[tuned]]
    assert batched == one_by_one[BASE] + one_by_one[tuned]


async def test_answers_equal_a_full_recomputation_with_the_soft_prompt(
    client: StandIn, tiny: Tiny
) -> None:
    tuned = await _deploy(client)
    soft_prompt = load_soft_prompt(tiny.adapter_dir, tiny.loaded.model)
    answers = await _all_at_once(
        [
            functools.partial(client.generate, prompt, deployment_id=tuned, parameters=GREEDY)
            for prompt in PROMPTS
        ]
    )
    for prompt, answer in zip(PROMPTS, answers, strict=True):
        expected = _reference_greedy(tiny, prompt, 6, soft_prompt)
        assert answer.text == _text(tiny, expected)
        assert answer.generated_token_count == len(expected)


async def test_a_shared_start_is_computed_once_for_the_batch(client: StandIn, tiny: Tiny) -> None:
    tuned = await _deploy(client)
    soft_prompt = load_soft_prompt(tiny.adapter_dir, tiny.loaded.model)
    start = "comment : my dog was at the groomer and"
    endings = ["it was great", "bad", "the price was too high . satisfaction :", "never again"]
    prompts = [f"{start} {ending}" for ending in endings]
    one_by_one = [await client.generate(p, deployment_id=tuned, parameters=GREEDY) for p in prompts]
    shapes: list[tuple[int, ...]] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        embeds = kwargs.get("inputs_embeds")
        if embeds is not None:
            shapes.append(tuple(embeds.shape[:2]))

    # A hook, not a wrapper: `generate` reads the signature of `forward`.
    hook = tiny.loaded.model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        batched = await _all_at_once(
            [
                functools.partial(client.generate, p, deployment_id=tuned, parameters=GREEDY)
                for p in prompts
            ]
        )
    finally:
        hook.remove()
    shared = len(start.split())
    # The soft prompt and the shared words ran once, for one row; then the batch ran the rest.
    assert shapes[0] == (1, 4 + shared)
    assert shapes[1] == (len(prompts), max(len(e.split()) for e in endings))
    assert batched == one_by_one
    for prompt, answer in zip(prompts, batched, strict=True):
        assert answer.text == _text(tiny, _reference_greedy(tiny, prompt, 6, soft_prompt))


async def test_concurrent_callers_share_forward_passes(
    tiny: Tiny, generate_calls: list[int]
) -> None:
    async with StandIn(tiny, max_batch=5) as client:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(12)]
        await _all_at_once(
            [
                functools.partial(client.generate, prompt, model_id=BASE, parameters=GREEDY)
                for prompt in prompts
            ]
        )
        assert sorted(generate_calls, reverse=True) == [5, 5, 2]
        stats = client.serving_stats()
        assert (stats.batches, stats.prompts, stats.largest_batch) == (3, 12, 5)


async def test_different_settings_are_not_batched_together(
    client: StandIn, generate_calls: list[int]
) -> None:
    short = GenerationParameters(max_new_tokens=2)
    await _all_at_once(
        [
            functools.partial(client.generate, prompt, model_id=BASE, parameters=parameters)
            for prompt in PROMPTS[:3]
            for parameters in (GREEDY, short)
        ]
    )
    assert generate_calls == [3, 3]


# --- decoding settings ---------------------------------------------------------------------------


async def test_base_and_tuned_deployments_answer_differently(client: StandIn) -> None:
    tuned = await _deploy(client)
    base = [await client.generate(p, model_id=BASE, parameters=GREEDY) for p in PROMPTS]
    tuned_answers = [
        await client.generate(p, deployment_id=tuned, parameters=GREEDY) for p in PROMPTS
    ]
    assert [a.text for a in base] != [a.text for a in tuned_answers]


async def test_max_new_tokens_and_min_new_tokens(client: StandIn) -> None:
    exact = GenerationParameters(max_new_tokens=5, min_new_tokens=5)
    answer = await client.generate(PROMPTS[0], model_id=BASE, parameters=exact)
    assert answer.generated_token_count == 5
    assert answer.stop_reason == "max_tokens"
    assert answer.input_token_count == len(PROMPTS[0].split())
    assert len(answer.text.split()) == 5

    nothing = await client.generate(PROMPTS[0], model_id=BASE, parameters={"max_new_tokens": 0})
    assert (nothing.text, nothing.generated_token_count, nothing.stop_reason) == (
        "",
        0,
        "max_tokens",
    )


async def test_default_max_new_tokens_is_20(client: StandIn) -> None:
    answer = await client.generate(PROMPTS[1], model_id=BASE, parameters={"min_new_tokens": 20})
    assert answer.generated_token_count == 20


async def test_eos_ends_an_answer(client: StandIn, tiny: Tiny) -> None:
    # Find prompts that the tiny model ends with EOS, then check the reason and the count.
    answers = [
        await client.generate(p, model_id=BASE, parameters={"max_new_tokens": 20}) for p in PROMPTS
    ]
    ended = [(p, a) for p, a in zip(PROMPTS, answers, strict=True) if a.stop_reason == "eos_token"]
    assert ended, [a.stop_reason for a in answers]
    for prompt, answer in ended:
        expected = _reference_greedy(tiny, prompt, 20, None)
        assert expected[-1] == tiny.loaded.tokenizer.eos_token_id
        assert answer.generated_token_count == len(expected)  # EOS counted, not shown
        assert answer.text == _text(tiny, expected)


async def test_stop_sequences_cut_the_answer(client: StandIn) -> None:
    exact = GenerationParameters(max_new_tokens=8, min_new_tokens=8)
    full = await client.generate(PROMPTS[2], model_id=BASE, parameters=exact)
    words = full.text.split()
    stop = words[2]
    cut_at = full.text.index(stop)

    kept = await client.generate(
        PROMPTS[2],
        model_id=BASE,
        parameters={"max_new_tokens": 8, "stop_sequences": [stop, "never-seen"]},
    )
    assert kept.stop_reason == "stop_sequence"
    assert kept.text == full.text[: cut_at + len(stop)]
    assert kept.generated_token_count is not None
    assert kept.generated_token_count < 8

    dropped = await client.generate(
        PROMPTS[2],
        model_id=BASE,
        parameters={"max_new_tokens": 8, "stop_sequences": [stop], "include_stop_sequence": False},
    )
    assert dropped.text == full.text[:cut_at]
    assert dropped.stop_reason == "stop_sequence"


async def test_stop_sequences_in_a_batch_stop_each_row(client: StandIn) -> None:
    exact = GenerationParameters(max_new_tokens=8, min_new_tokens=8)
    full = [await client.generate(p, model_id=BASE, parameters=exact) for p in PROMPTS]
    stop = full[0].text.split()[1]
    parameters = {"max_new_tokens": 8, "min_new_tokens": 8, "stop_sequences": [stop]}
    batched = await _all_at_once(
        [
            functools.partial(client.generate, p, model_id=BASE, parameters=parameters)
            for p in PROMPTS
        ]
    )
    for whole, answer in zip(full, batched, strict=True):
        if stop in whole.text:
            assert answer.text == whole.text[: whole.text.index(stop) + len(stop)]
            assert answer.stop_reason == "stop_sequence"
        else:
            assert answer.text == whole.text
            assert answer.stop_reason == "max_tokens"


async def test_seeded_sampling_repeats_alone_and_in_a_batch(client: StandIn) -> None:
    tuned = await _deploy(client)
    sample = {"decoding_method": "sample", "max_new_tokens": 8, "min_new_tokens": 8}
    seeded = {**sample, "random_seed": 7, "temperature": 1.5}
    alone = await client.generate(PROMPTS[0], deployment_id=tuned, parameters=seeded)
    again = await client.generate(PROMPTS[0], deployment_id=tuned, parameters=seeded)
    assert alone.text == again.text
    assert alone.seed == 7
    batched = await _all_at_once(
        [
            functools.partial(client.generate, PROMPTS[0], deployment_id=tuned, parameters=seeded),
            *[
                functools.partial(
                    client.generate,
                    prompt,
                    deployment_id=tuned,
                    parameters={**seeded, "random_seed": 100 + i},
                )
                for i, prompt in enumerate(PROMPTS)
            ],
        ]
    )
    assert batched[0].text == alone.text
    others = {
        (
            await client.generate(
                PROMPTS[0], deployment_id=tuned, parameters={**seeded, "random_seed": s}
            )
        ).text
        for s in range(1, 6)
    }
    assert len(others) > 1  # different seeds, different samples

    unseeded = await client.generate(PROMPTS[0], deployment_id=tuned, parameters=sample)
    assert unseeded.seed is not None
    repeat = await client.generate(
        PROMPTS[0], deployment_id=tuned, parameters={**sample, "random_seed": unseeded.seed}
    )
    assert repeat.text == unseeded.text


async def test_top_k_1_sampling_is_greedy(client: StandIn) -> None:
    greedy = await client.generate(PROMPTS[2], model_id=BASE, parameters=GREEDY)
    sampled = await client.generate(
        PROMPTS[2],
        model_id=BASE,
        parameters={"decoding_method": "sample", "top_k": 1, "max_new_tokens": 6},
    )
    assert sampled.text == greedy.text


async def test_repetition_penalty_counts_the_prompt_like_transformers(
    client: StandIn, tiny: Tiny
) -> None:
    model, tokenizer = tiny.loaded.model, tiny.loaded.tokenizer
    for prompt in PROMPTS[:3]:
        answer = await client.generate(
            prompt,
            model_id=BASE,
            parameters={"max_new_tokens": 6, "min_new_tokens": 6, "repetition_penalty": 2.0},
        )
        input_ids = torch.tensor([tokenizer(prompt)["input_ids"]])
        with torch.no_grad():
            expected = model.generate(  # type: ignore[operator]
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=6,
                min_new_tokens=6,
                do_sample=False,
                repetition_penalty=2.0,
                pad_token_id=0,
            )
        assert answer.text == _text(tiny, expected[0, input_ids.shape[1] :].tolist())


async def test_truncate_input_tokens_keeps_the_end(client: StandIn) -> None:
    full = await client.generate(PROMPTS[2], model_id=BASE, parameters=GREEDY)
    short = await client.generate(
        PROMPTS[2], model_id=BASE, parameters={"max_new_tokens": 6, "truncate_input_tokens": 4}
    )
    tail = " ".join(PROMPTS[2].split()[-4:])
    of_tail = await client.generate(tail, model_id=BASE, parameters=GREEDY)
    assert short.input_token_count == 4
    assert full.input_token_count == len(PROMPTS[2].split())
    assert short.text == of_tail.text


async def test_a_tuned_deployment_reads_prompts_cut_as_in_training(
    client: StandIn, tiny: Tiny
) -> None:
    """A run trained with max_input_tokens=4 saw only the last 4 tokens of each input."""
    runs_root = tiny.adapter_dir.parent.parent
    if not (runs_root / "run-short").exists():
        shutil.copytree(tiny.adapter_dir, runs_root / "run-short" / "adapter")
    client.runs["run-short"] = TuningRun(
        id="run-short", state="completed", base_model=BASE, parameters={"max_input_tokens": 4}
    )
    short = await _deploy(client, "run-short")
    full = await _deploy(client, "run-ok")
    tail = " ".join(PROMPTS[2].split()[-4:])

    answer = await client.generate(PROMPTS[2], deployment_id=short, parameters=GREEDY)
    of_tail = await client.generate(tail, deployment_id=full, parameters=GREEDY)
    assert answer.input_token_count == 4
    assert answer.text == of_tail.text
    # A request's own truncate_input_tokens wins over the run's.
    longer = await client.generate(
        PROMPTS[2],
        deployment_id=short,
        parameters=GREEDY.model_copy(update={"truncate_input_tokens": 6}),
    )
    assert longer.input_token_count == 6


async def test_time_limit_stops_a_slow_generation(client: StandIn, tiny: Tiny) -> None:
    def slow(module: Any, args: Any) -> None:
        time.sleep(0.02)

    hook = tiny.loaded.model.register_forward_pre_hook(slow)
    try:
        answer = await client.generate(
            PROMPTS[0],
            model_id=BASE,
            parameters={"max_new_tokens": 50, "min_new_tokens": 50, "time_limit": 50},
        )
    finally:
        hook.remove()
    assert answer.stop_reason == "time_limit"
    assert answer.generated_token_count is not None
    assert 1 <= answer.generated_token_count < 50


# --- failures and cancellation -------------------------------------------------------------------


async def test_callers_leaving_before_their_batch_runs_are_left_out(
    tiny: Tiny, generate_calls: list[int]
) -> None:
    async with StandIn(tiny, window=0.3) as client:
        expected = [await client.generate(p, model_id=BASE, parameters=GREEDY) for p in PROMPTS]
        generate_calls.clear()
        results: dict[int, GenerationResult] = {}
        scopes = {index: anyio.CancelScope() for index in range(len(PROMPTS))}

        async def call(index: int) -> None:
            with scopes[index]:
                results[index] = await client.generate(
                    PROMPTS[index], model_id=BASE, parameters=GREEDY
                )

        async with anyio.create_task_group() as group:
            for index in range(len(PROMPTS)):
                group.start_soon(call, index)
            await anyio.sleep(0.02)  # all queued, the batch window still open
            scopes[1].cancel()
            scopes[2].cancel()
    assert sorted(results) == [0, 3, 4, 5]
    for index, result in results.items():
        assert result == expected[index]
    assert generate_calls == [4]


async def test_callers_leaving_a_running_batch_do_not_break_it(client: StandIn, tiny: Tiny) -> None:
    expected = [await client.generate(p, model_id=BASE, parameters=GREEDY) for p in PROMPTS]
    started, release = threading.Event(), threading.Event()

    def held(original: Callable[..., Any]) -> Callable[..., Any]:
        def generate(*args: Any, **kwargs: Any) -> Any:
            started.set()
            release.wait(10)
            return original(*args, **kwargs)

        return generate

    results: dict[int, GenerationResult] = {}
    try:
        with replaced(tiny.loaded.model, "generate", held):
            async with anyio.create_task_group() as group:
                scopes: dict[int, anyio.CancelScope] = {}

                async def call(index: int) -> None:
                    with scopes.setdefault(index, anyio.CancelScope()):
                        results[index] = await client.generate(
                            PROMPTS[index], model_id=BASE, parameters=GREEDY
                        )

                for index in range(len(PROMPTS)):
                    group.start_soon(call, index)
                await anyio.to_thread.run_sync(started.wait, 10)
                scopes[0].cancel()  # leaves while its batch runs in the worker thread
                scopes[3].cancel()
                await anyio.sleep(0.01)
                release.set()
    finally:
        release.set()
    assert sorted(results) == [1, 2, 4, 5]
    for index, result in results.items():
        assert result == expected[index]


async def test_a_failing_batch_fails_exactly_its_requests(client: StandIn, tiny: Tiny) -> None:
    tuned = await _deploy(client)

    def fails_for_base(original: Callable[..., Any]) -> Callable[..., Any]:
        def generate(*args: Any, **kwargs: Any) -> Any:
            if kwargs["attention_mask"][:, 0].all():
                return original(*args, **kwargs)  # the tuned batch: soft prompt in front
            raise RuntimeError("out of memory (simulated)")

        return generate

    outcomes: dict[tuple[str, int], GenerationResult | BaseException] = {}

    async def call(target: str, index: int) -> None:
        key = {"model_id": BASE} if target == "base" else {"deployment_id": tuned}
        try:
            outcomes[target, index] = await client.generate(
                PROMPTS[index], parameters=GREEDY, **key
            )
        except GenerationError as exc:
            outcomes[target, index] = exc

    with replaced(tiny.loaded.model, "generate", fails_for_base):
        async with anyio.create_task_group() as group:
            for target in ("base", "tuned"):
                for index in (0, 1, 3):
                    group.start_soon(call, target, index)
    for index in (0, 1, 3):
        error = outcomes["base", index]
        assert isinstance(error, GenerationError)
        assert "out of memory (simulated)" in str(error)
        assert isinstance(error.__cause__, RuntimeError)
        assert error.deployment_id is None
        assert isinstance(outcomes["tuned", index], GenerationResult)
    errors = [outcomes["base", index] for index in (0, 1, 3)]
    assert len({id(error) for error in errors}) == 3  # each caller its own error
    # The server goes on.
    after = await client.generate(PROMPTS[0], model_id=BASE, parameters=GREEDY)
    assert after.generated_token_count


async def test_closing_the_client_fails_waiting_callers(tiny: Tiny) -> None:
    started = threading.Event()

    def slow(original: Callable[..., Any]) -> Callable[..., Any]:
        def generate(*args: Any, **kwargs: Any) -> Any:
            started.set()
            time.sleep(0.2)
            return original(*args, **kwargs)

        return generate

    errors: list[BaseException] = []
    with replaced(tiny.loaded.model, "generate", slow):
        async with anyio.create_task_group() as outer:
            client = StandIn(tiny)
            await client.__aenter__()

            async def call(prompt: str) -> None:
                long = {"max_new_tokens": 20, "min_new_tokens": 20}  # no answer ends early
                try:
                    await client.generate(prompt, model_id=BASE, parameters=long)
                except GenerationError as exc:
                    errors.append(exc)

            for prompt in PROMPTS[:3]:
                outer.start_soon(call, prompt)
            await anyio.to_thread.run_sync(started.wait, 10)
            await client.__aexit__(None, None, None)
    assert len(errors) == 3
    assert all("closed" in str(error) for error in errors)
    with pytest.raises(ConfigurationError, match="async with"):
        await client.generate("bad", model_id=BASE)


async def test_a_client_can_serve_again_after_closing(tiny: Tiny) -> None:
    client = StandIn(tiny)
    async with client:
        first = await client.generate(PROMPTS[0], model_id=BASE, parameters=GREEDY)
    async with client:
        again = await client.generate(PROMPTS[0], model_id=BASE, parameters=GREEDY)
    assert first == again


# --- deployments ---------------------------------------------------------------------------------


async def test_deployments_are_listed_newest_first(client: StandIn) -> None:
    assert await client.list_deployments() == []
    await client.generate(PROMPTS[0], model_id=BASE, parameters=GREEDY)  # internal: not listed
    first = await client.deploy("run-ok", name="first", serving_name=None)
    failed = await client.deploy("run-busy", name="failed", serving_name=None)
    third = await client.deploy("run-ok", name="third", serving_name="third_pt")
    assert [d.id for d in await client.list_deployments()] == [third.id, failed.id, first.id]
    await client.delete_deployment(first.id)
    listed = await client.list_deployments()
    assert listed == [third, failed]
    assert listed[1].has_failed


async def test_deploy_get_delete(client: StandIn) -> None:
    info = await client.deploy("run-ok", name="reviews", serving_name="reviews_pt")
    assert (info.state, info.model_id, info.base_model_id) == ("ready", "run-ok", BASE)
    assert info.serving_name == "reviews_pt"
    assert await client.get_deployment(info.id) == info
    assert not await client.serving_name_available("reviews_pt")
    assert await client.serving_name_available("other_name")
    with pytest.raises(ConfigurationError, match="already used"):
        await client.deploy("run-ok", name="again", serving_name="reviews_pt")
    with pytest.raises(ConfigurationError, match="not valid"):
        await client.serving_name_available("Not Valid")

    await client.delete_deployment(info.id)
    assert await client.serving_name_available("reviews_pt")
    with pytest.raises(DeploymentNotFoundError, match="no deployment"):
        await client.get_deployment(info.id)
    with pytest.raises(DeploymentNotFoundError):
        await client.generate("bad", deployment_id=info.id)
    with pytest.raises(DeploymentNotFoundError):
        await client.delete_deployment(info.id)


@pytest.mark.parametrize(
    ("run_id", "message"),
    [
        ("run-missing", "no local tuning run 'run-missing'"),
        ("run-busy", "is running, and only a completed run can be deployed"),
        ("run-empty", "No saved soft prompt"),
    ],
)
async def test_deploying_what_cannot_serve_gives_a_failed_deployment(
    client: StandIn, run_id: str, message: str
) -> None:
    info = await client.deploy(run_id, name="broken", serving_name=None)
    assert info.has_failed
    assert info.failure_message is not None
    assert message in info.failure_message
    with pytest.raises(DeploymentFailedError, match="cannot serve"):
        await client.generate("bad", deployment_id=info.id)

    with pytest.raises(DeploymentFailedError, match=message):
        await Deployment.create(client, run_id, poll_interval=(0.01, 0.01))


async def test_the_deployment_verb_serves_through_the_batcher(client: StandIn) -> None:
    async with await Deployment.create(client, "run-ok", delete_on_exit=True) as deployment:
        answers = await _all_at_once(
            [functools.partial(deployment.generate, p, GREEDY) for p in PROMPTS]
        )
        assert all(isinstance(a, GenerationResult) for a in answers)
        deployment_id = deployment.id
    with pytest.raises(DeploymentNotFoundError):
        await client.get_deployment(deployment_id)


async def test_unknown_base_model_is_a_configuration_error(client: StandIn) -> None:
    with pytest.raises(ConfigurationError, match="not available offline"):
        await client.generate("bad", model_id="no-such-model")


# --- with the real client ------------------------------------------------------------------------


async def test_local_client_serves_through_its_model_server(tiny: Tiny, tmp_path: Path) -> None:
    from granite_tuner.backends.local.client import LocalClient

    folder = tmp_path / "tiny-model"
    tiny.loaded.model.save_pretrained(str(folder))
    tiny.loaded.tokenizer.save_pretrained(str(folder))
    async with StandIn(tiny) as stand_in:
        expected = [await stand_in.generate(p, model_id=BASE, parameters=GREEDY) for p in PROMPTS]
    async with LocalClient(str(folder), home=tmp_path / "home", device="cpu") as client:
        assert isinstance(client, ServingBackend)
        answers = await _all_at_once(
            [
                functools.partial(client.generate, p, model_id=str(folder), parameters=GREEDY)
                for p in PROMPTS
            ]
        )
        assert client.serving_stats().batches == 1
        info = await client.deploy("no-such-run", name="missing", serving_name=None)
        assert info.has_failed
        assert await client.list_deployments() == [info]
    assert [a.text for a in answers] == [e.text for e in expected]


async def test_a_locally_tuned_run_serves_what_it_learned(tiny_model_dir: Path, home: Path) -> None:
    """Train the conftest's tiny model to answer 'yes', deploy the run, ask it."""
    from granite_tuner.backends.local.client import LocalClient
    from granite_tuner.data import LabelledSet
    from granite_tuner.parameters import PromptTuningParameters
    from granite_tuner.validation import ValidationOptions
    from tests.tiny_model import constant_examples, review_examples

    parameters = PromptTuningParameters(
        num_epochs=8, batch_size=4, learning_rate=0.3, num_virtual_tokens=4, init_method="random"
    )
    model = str(tiny_model_dir)
    prompts = [example.input for example in review_examples(12, seed=99)]
    answer = {"max_new_tokens": 1}
    # float32 and no held-out share: the same training on every CPU as before validation came.
    async with LocalClient(model, home=home, precision="float32") as client:
        data = LabelledSet(examples=tuple(constant_examples(64)))
        ref = await client.upload_training_data(data, name="always-yes")
        run = await client.start_tuning(
            name="always-yes",
            base_model=model,
            data_ref=ref,
            parameters=parameters,
            validation=ValidationOptions(split=0.0),
        )
        with anyio.fail_after(60):
            while True:
                run = await client.get_tuning_run(run.id)
                if run.is_finished:
                    break
                await anyio.sleep(0.01)
        assert run.state == "completed", run.failure_message
        assert run.model_id is not None
        async with await Deployment.create(client, run.model_id, delete_on_exit=True) as tuned:
            tuned_answers = await _all_at_once(
                [functools.partial(tuned.generate, p, answer) for p in prompts]
            )
        base_answers = await _all_at_once(
            [
                functools.partial(client.generate, p, model_id=model, parameters=answer)
                for p in prompts
            ]
        )
    assert all(a.text == "yes" for a in tuned_answers), [a.text for a in tuned_answers]
    assert not all(a.text == "yes" for a in base_answers)

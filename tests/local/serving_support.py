"""The local server's test rig: a tiny model, soft prompts of several lengths, a stand-in client.

Everything runs on a tiny randomly initialised Llama (hidden size 32, 2 layers) with a word-level
tokenizer built here, and prompt-tuning adapters saved with peft; nothing is downloaded. The
client is a small stand-in: the `ModelServer` part of `LocalClient`, given what it needs, with a
task group of its own. The fixtures that use it (`tiny`, `client`, `generate_calls`) are in
this folder's conftest.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, cast

import anyio
import torch
from peft import PromptTuningConfig, TaskType, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from granite_tuner.backends.local._models import LoadedModel
from granite_tuner.backends.local._serving import ModelServer
from granite_tuner.errors import ConfigurationError, RunNotFoundError
from granite_tuner.generation import GenerationParameters
from granite_tuner.runs import TuningRun

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
#: Runs with soft prompts of other lengths (virtual tokens) than run-ok's 4.
MORE_RUNS = {"run-long": 7, "run-two": 2}


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


def make_tiny(root: Path) -> Tiny:
    """The tiny model and its adapters (saved under `root`), built the same way every time."""
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
    runs_root = root
    adapter_dir = runs_root / "run-ok" / "adapter"
    _save_adapter(model, adapter_dir, virtual_tokens=4, seed=1)
    # More soft prompts of other lengths, for batches that mix deployments.
    for run_id, virtual_tokens in MORE_RUNS.items():
        _save_adapter(model, runs_root / run_id / "adapter", virtual_tokens, seed=virtual_tokens)
    loaded = LoadedModel(
        name=BASE,
        model=model,
        tokenizer=tokenizer,
        device=torch.device("cpu"),
        dtype=torch.float32,
        source="memory",
    )
    return Tiny(loaded=loaded, adapter_dir=adapter_dir)


def _save_adapter(
    model: LlamaForCausalLM, adapter_dir: Path, virtual_tokens: int, seed: int
) -> None:
    """A prompt-tuning adapter with a random soft prompt, saved by peft as training saves it."""
    # The adapter is made on a copy, so the served model is untouched by peft.
    peft_model = get_peft_model(
        copy.deepcopy(model),
        PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=virtual_tokens),
    )
    embedding = cast(torch.nn.Embedding, peft_model.prompt_encoder["default"].embedding)
    with torch.no_grad():
        embedding.weight.copy_(
            torch.randn(embedding.weight.shape, generator=torch.Generator().manual_seed(seed))
        )
    peft_model.save_pretrained(str(adapter_dir))


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
            **{
                run_id: TuningRun(id=run_id, state="completed", base_model=BASE)
                for run_id in MORE_RUNS
            },
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


async def deploy(client: StandIn, run_id: str = "run-ok") -> str:
    info = await client.deploy(run_id, name="test", serving_name=None)
    assert info.is_ready, info.failure_message
    return info.id


async def all_at_once(
    calls: list[Callable[[], Any]],
) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def one(index: int) -> None:
        results[index] = await calls[index]()

    async with anyio.create_task_group() as group:
        for index in range(len(calls)):
            group.start_soon(one, index)
    return results


async def assert_one_batch_answers_as_alone(
    client: StandIn, targets: list[dict[str, str]], generate_calls: list[int]
) -> None:
    """Every prompt on every target (`deployment_id=` or `model_id=`), sent all at once, runs
    in one `generate` call and gets the answer it gets alone."""
    alone = [
        [await client.generate(p, parameters=GREEDY, **target) for p in PROMPTS]
        for target in targets
    ]
    generate_calls.clear()
    together = await all_at_once(
        [
            functools.partial(client.generate, p, parameters=GREEDY, **target)
            for p in PROMPTS
            for target in targets
        ]
    )
    assert generate_calls == [len(PROMPTS) * len(targets)]  # one batch
    assert together == [alone[t][i] for i in range(len(PROMPTS)) for t in range(len(targets))]


def reference_greedy(
    tiny: Tiny,
    prompt: str,
    max_new_tokens: int,
    soft_prompt: torch.Tensor | None,
    *,
    at_end: bool = False,
) -> list[int]:
    """Greedy decoding by full forward passes over the unpadded sequence (no cache, no batch):
    `[soft prompt][prompt][new tokens]`, or with `at_end` `[prompt][soft prompt][new tokens]`."""
    model, tokenizer = tiny.loaded.model, tiny.loaded.tokenizer
    ids: list[int] = tokenizer(prompt)["input_ids"]
    new: list[int] = []
    embed = model.get_input_embeddings()
    with torch.no_grad():
        for _ in range(max_new_tokens):
            embeds = embed(torch.tensor([ids + new], dtype=torch.long))
            if soft_prompt is not None and at_end:
                prompt_part, new_part = embeds[:, : len(ids)], embeds[:, len(ids) :]
                embeds = torch.cat((prompt_part, soft_prompt.unsqueeze(0), new_part), dim=1)
            elif soft_prompt is not None:
                embeds = torch.cat((soft_prompt.unsqueeze(0), embeds), dim=1)
            token = int(model(inputs_embeds=embeds).logits[0, -1].argmax())
            new.append(token)
            if token == tokenizer.eos_token_id:
                break
    return new


def text_of(tiny: Tiny, ids: list[int]) -> str:
    text = tiny.loaded.tokenizer.decode(ids, skip_special_tokens=True)
    assert isinstance(text, str)
    return text

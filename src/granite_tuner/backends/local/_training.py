"""The training engine of the local backend: PEFT prompt tuning, one optimizer step per call.

Why it is shaped this way:

- Real prompt tuning with `peft`: a `PromptTuningConfig` (text or random init, N virtual
  tokens) whose prompt embedding is the only trainable tensor; the base weights stay frozen and
  the saved adapter is an ordinary PEFT checkpoint that `PeftModel.from_pretrained` loads.
- The loss covers the output tokens only: labels are -100 on the prompt and on padding.
- CPU time is the budget, so no work is wasted: examples are grouped by length and each batch
  is padded only to its longest member; the batch is padded on the left with explicit position
  ids, which puts every target at the right edge, so the model computes vocabulary logits for
  the last `longest target + 1` positions only instead of every position (the language-model
  head is a fifth of a small model's compute); no evaluation passes, no gradients for frozen
  weights.
- `PromptTrainer.step()` runs exactly one optimizer step and returns, so the caller can run
  each step as its own worker-thread call: the event loop stays free, other torch work (serving)
  interleaves between steps, and cancellation (a `threading.Event`, checked before every batch)
  takes effect within one step.
- The same seed gives the same batches, the same random init and therefore the same losses.
"""

from __future__ import annotations

import inspect
import math
import os
import random
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import torch
import torch.nn.functional as F

from granite_tuner._secrets import get_logger
from granite_tuner.backends.local._models import LoadedModel
from granite_tuner.data import Example
from granite_tuner.errors import ConfigurationError
from granite_tuner.parameters import PromptTuningParameters

if TYPE_CHECKING:
    import threading

    from peft import PeftModel
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_INIT_TEXTS",
    "IGNORE_INDEX",
    "Batch",
    "EncodedExample",
    "PromptTrainer",
    "StepResult",
    "TrainingCancelled",
    "TrainingConfig",
    "collate",
    "encode_examples",
    "plan_batches",
]

logger = get_logger("granite_tuner.local")

# PEFT 0.21 reads the model's `is_gradient_checkpointing`, which transformers 5 deprecates with a
# FutureWarning on every wrap; it concerns their code, not the user's, so it is not shown.
warnings.filterwarnings(
    "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
)

_T = TypeVar("_T")

#: Label value that the loss ignores (prompt and padding positions).
IGNORE_INDEX = -100

#: Text that starts the soft prompt when `init_method` is left unset (text init works much
#: better than random init on small models at the default learning rate).
DEFAULT_INIT_TEXTS: dict[str, str] = {
    "classification": "Classify the text and answer with its label only.",
    "question_answering": "Answer the question.",
    "summarization": "Summarize the text.",
    "retrieval_augmented_generation": "Answer the question from the given context.",
    "generation": "Write the answer.",
    "code": "Write the code.",
    "extraction": "Extract the requested information from the text.",
}

# Length grouping: examples are shuffled, cut into chunks of this many batches, and sorted by
# length inside each chunk (as transformers' LengthGroupedSampler does), so batches hold
# examples of similar length while their composition still changes from epoch to epoch.
_MEGABATCH_BATCHES = 50


class TrainingCancelled(Exception):
    """Raised by `PromptTrainer.step()` when its cancel event is set; nothing was applied."""


@dataclass(frozen=True)
class TrainingConfig:
    """Every setting of one local run, defaults resolved (what `run.json` records)."""

    num_epochs: int = 5
    learning_rate: float = 0.03
    batch_size: int = 8
    accumulate_steps: int = 1
    max_input_tokens: int = 256
    max_output_tokens: int = 128
    num_virtual_tokens: int = 20
    init_method: Literal["random", "text"] = "text"
    init_text: str | None = DEFAULT_INIT_TEXTS["classification"]
    verbalizer: str = "{{input}}"
    seed: int = 0

    @classmethod
    def from_parameters(
        cls, parameters: PromptTuningParameters, *, seed: int = 0
    ) -> TrainingConfig:
        """The settings for `parameters`: fields left `None` take the local defaults.

        `init_method` unset means text init with a short description of the task.
        """
        defaults = cls()
        init_method = parameters.init_method or "text"
        init_text: str | None = None
        if init_method == "text":
            init_text = parameters.init_text or DEFAULT_INIT_TEXTS.get(
                parameters.task_id, DEFAULT_INIT_TEXTS["generation"]
            )
        return cls(
            num_epochs=_pick(parameters.num_epochs, defaults.num_epochs),
            learning_rate=_pick(parameters.learning_rate, defaults.learning_rate),
            batch_size=_pick(parameters.batch_size, defaults.batch_size),
            accumulate_steps=_pick(parameters.accumulate_steps, defaults.accumulate_steps),
            max_input_tokens=_pick(parameters.max_input_tokens, defaults.max_input_tokens),
            max_output_tokens=_pick(parameters.max_output_tokens, defaults.max_output_tokens),
            num_virtual_tokens=_pick(parameters.num_virtual_tokens, defaults.num_virtual_tokens),
            init_method=init_method,
            init_text=init_text,
            verbalizer=_pick(parameters.verbalizer, defaults.verbalizer),
            seed=seed,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pick(value: _T | None, default: _T) -> _T:
    return default if value is None else value


# --- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EncodedExample:
    """One example as token ids: the (truncated) prompt, then the target the loss covers."""

    prompt_ids: tuple[int, ...]
    target_ids: tuple[int, ...]

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.target_ids)


def encode_examples(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[Example],
    config: TrainingConfig,
) -> list[EncodedExample]:
    """Token ids of each example: the verbalised input as prompt, the output + EOS as target.

    A prompt longer than `max_input_tokens` keeps its end (the question usually comes last) and
    its leading special tokens (such as BOS); a target is cut to `max_output_tokens`.
    """
    if not examples:
        raise ConfigurationError("The training data has no examples.")
    prompts = [config.verbalizer.replace("{{input}}", example.input) for example in examples]
    outputs = [example.output for example in examples]
    # One batched call each (the Rust tokenizer parallelises it); no truncation or padding
    # options, which would change the shared tokenizer's state under serving's feet.
    prompt_ids: list[list[int]] = tokenizer(prompts, add_special_tokens=True)["input_ids"]
    output_ids: list[list[int]] = tokenizer(outputs, add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    eos = tokenizer.eos_token_id
    encoded: list[EncodedExample] = []
    truncated = 0
    for prompt, output in zip(prompt_ids, output_ids, strict=True):
        if len(prompt) > config.max_input_tokens:
            truncated += 1
            prompt = _keep_end(prompt, config.max_input_tokens, special)
        target = [*output, eos] if isinstance(eos, int) else list(output)
        encoded.append(EncodedExample(tuple(prompt), tuple(target[: config.max_output_tokens])))
    if truncated:
        logger.warning(
            "%d of %d prompts are longer than max_input_tokens=%d and were cut to their last "
            "tokens; raise max_input_tokens if the start matters.",
            truncated,
            len(encoded),
            config.max_input_tokens,
        )
    return encoded


def _keep_end(ids: list[int], limit: int, special: set[int]) -> list[int]:
    """The last `limit` ids, keeping the leading special tokens (BOS) in front."""
    lead = 0
    while lead < len(ids) and ids[lead] in special:
        lead += 1
    lead = min(lead, limit - 1) if limit > 1 else 0
    return ids[:lead] + ids[len(ids) - (limit - lead) :]


def plan_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Indices of the examples in batches of similar length, in a seeded random order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    chunk = batch_size * _MEGABATCH_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        group = sorted(order[start : start + chunk], key=lambda i: lengths[i], reverse=True)
        batches.extend(group[k : k + batch_size] for k in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches


@dataclass(frozen=True)
class Batch:
    """A left-padded batch, as long as its longest example.

    `labels` is -100 on padding and prompt tokens, so the loss covers the targets only; every
    target ends at the right edge and lies in the last `target_width` columns.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    target_width: int

    @property
    def num_target_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


def collate(examples: Sequence[EncodedExample], pad_token_id: int) -> Batch:
    """One batch padded on the left to its longest example (dynamic padding)."""
    width = max(example.length for example in examples)
    target_width = max(len(example.target_ids) for example in examples)
    ids: list[list[int]] = []
    mask: list[list[int]] = []
    labels: list[list[int]] = []
    for example in examples:
        pad = width - example.length
        ids.append([pad_token_id] * pad + [*example.prompt_ids, *example.target_ids])
        mask.append([0] * pad + [1] * example.length)
        labels.append([IGNORE_INDEX] * (pad + len(example.prompt_ids)) + [*example.target_ids])
    return Batch(
        input_ids=torch.tensor(ids, dtype=torch.long),
        attention_mask=torch.tensor(mask, dtype=torch.long),
        labels=torch.tensor(labels, dtype=torch.long),
        target_width=target_width,
    )


# --- training ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """One optimizer step: its number (from 1), its epoch (from 0) and its mean batch loss."""

    iteration: int
    epoch: int
    loss: float
    batches: int
    epoch_finished: bool = False


@dataclass
class _EpochPlan:
    epoch: int
    groups: list[list[list[int]]] = field(default_factory=list)  # steps -> batches -> indices
    next_group: int = 0


class PromptTrainer:
    """Prompt-tunes one base model on one data set; `step()` runs one optimizer step.

    Building it encodes the data and wraps the model with PEFT, so do that in a worker thread
    too. The base model is shared (with serving, with other runs) and is never modified: its
    weights are frozen, it stays in eval mode, and the soft prompt lives in this trainer.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        examples: Sequence[Example],
        config: TrainingConfig,
        *,
        cancel: threading.Event | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = config
        self._cancel = cancel
        _use_all_cpu_cores(loaded.device)
        self.examples = encode_examples(loaded.tokenizer, examples, config)
        self._lengths = [example.length for example in self.examples]
        self.peft_model = _prompt_tuning_model(loaded, config)
        self._trainable = [p for p in self.peft_model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self._trainable, lr=config.learning_rate)
        self._base = loaded.model
        self._embed = loaded.model.get_input_embeddings()
        forward = inspect.signature(type(loaded.model).forward).parameters
        self._logits_to_keep = "logits_to_keep" in forward
        self._position_ids = "position_ids" in forward
        num_batches = math.ceil(len(self.examples) / config.batch_size)
        self.steps_per_epoch = math.ceil(num_batches / config.accumulate_steps)
        self.total_steps = self.steps_per_epoch * config.num_epochs
        # The learning rate falls linearly from `learning_rate` to zero over the run (as
        # transformers' Trainer does by default): large early steps find the task, small late
        # ones settle the soft prompt instead of leaving it wherever the last batch pushed it.
        total = self.total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda done: max(0.0, 1.0 - done / total)
        )
        self.iteration = 0
        self._plan: _EpochPlan | None = None

    @property
    def finished(self) -> bool:
        return self.iteration >= self.total_steps

    def step(self) -> StepResult | None:
        """Run one optimizer step; None when every epoch is done.

        Raises `TrainingCancelled` (before any update of this step) when the cancel event is
        set before one of its batches.
        """
        plan = self._current_plan()
        if plan is None:
            return None
        group = plan.groups[plan.next_group]
        total = 0.0
        for indices in group:
            if self._cancel is not None and self._cancel.is_set():
                self.optimizer.zero_grad(set_to_none=True)
                raise TrainingCancelled
            loss = self.batch_loss(collate([self.examples[i] for i in indices], self._pad_id))
            torch.autograd.backward(loss / len(group))
            total += float(loss.detach())
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        plan.next_group += 1
        self.iteration += 1
        return StepResult(
            iteration=self.iteration,
            epoch=plan.epoch,
            loss=total / len(group),
            batches=len(group),
            epoch_finished=plan.next_group == len(plan.groups),
        )

    def train(self, on_step: Callable[[StepResult], None] | None = None) -> list[StepResult]:
        """Every remaining step, in this thread (scripts and tests; the client steps itself)."""
        results: list[StepResult] = []
        while (result := self.step()) is not None:
            results.append(result)
            if on_step is not None:
                on_step(result)
        return results

    def batch_loss(self, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy over the target tokens of `batch`, with the soft prompt in front."""
        device = self.loaded.device
        input_ids = batch.input_ids.to(device)
        attention_mask = batch.attention_mask.to(device)
        size = input_ids.shape[0]
        virtual = self.config.num_virtual_tokens
        embeds = self._embed(input_ids)
        prompts = self.peft_model.get_prompt(batch_size=size).to(embeds.dtype)
        inputs_embeds = torch.cat((prompts, embeds), dim=1)
        mask = torch.cat(
            (torch.ones(size, virtual, dtype=attention_mask.dtype, device=device), attention_mask),
            dim=1,
        )
        kwargs: dict[str, Any] = {"use_cache": False}
        if self._position_ids:
            # Left padding must not shift the positions: count real tokens only, as an
            # unpadded sequence [soft prompt, prompt, target] would be numbered.
            kwargs["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
        keep = batch.target_width + 1  # the logit before each target token predicts it
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = keep
        output = self._base(inputs_embeds=inputs_embeds, attention_mask=mask, **kwargs)
        logits = output.logits[:, -keep:-1, :]
        labels = batch.labels[:, -batch.target_width :].to(device)
        return F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=IGNORE_INDEX,
        )

    def save(self, directory: Path) -> None:
        """Write the trained soft prompt as a PEFT adapter (safetensors) into `directory`."""
        self.peft_model.save_pretrained(str(directory), safe_serialization=True)

    @property
    def _pad_id(self) -> int:
        return self.loaded.pad_token_id

    def _current_plan(self) -> _EpochPlan | None:
        plan = self._plan
        if plan is not None and plan.next_group < len(plan.groups):
            return plan
        epoch = 0 if plan is None else plan.epoch + 1
        if epoch >= self.config.num_epochs:
            return None
        rng = random.Random(self.config.seed * 1_000_003 + epoch)  # noqa: S311  (not crypto)
        batches = plan_batches(self._lengths, self.config.batch_size, rng)
        steps = self.config.accumulate_steps
        self._plan = _EpochPlan(
            epoch=epoch, groups=[batches[k : k + steps] for k in range(0, len(batches), steps)]
        )
        return self._plan


def _prompt_tuning_model(loaded: LoadedModel, config: TrainingConfig) -> PeftModel:
    """The base model wrapped by PEFT with a fresh soft prompt (the only trainable tensor)."""
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    if config.init_method == "text":
        peft_config = PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=config.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text=config.init_text,
            tokenizer_name_or_path=loaded.source,
            tokenizer_kwargs={"local_files_only": True},
        )
    else:
        peft_config = PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=config.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        )
    model = get_peft_model(loaded.model, peft_config)
    # PEFT may hook the shared model's input embeddings to require grads (for gradient
    # checkpointing); the soft prompt gets its gradient without it, and serving must not pay.
    disable = getattr(loaded.model, "disable_input_require_grads", None)
    if callable(disable):
        disable()
    weight = _soft_prompt(model)
    if config.init_method == "random":
        # Same distribution as PEFT's random init (nn.Embedding: N(0, 1)), from our own seeded
        # generator so that the run repeats and torch's global RNG is left alone.
        generator = torch.Generator().manual_seed(config.seed)
        with torch.no_grad():
            weight.copy_(torch.randn(weight.shape, generator=generator).to(weight))
    weight.requires_grad_(True)
    return model


def _soft_prompt(model: PeftModel) -> torch.Tensor:
    """The trainable soft prompt: the weight of PEFT's prompt embedding."""
    from peft.tuners.prompt_tuning import PromptEmbedding

    encoder = model.prompt_encoder[model.active_adapter]
    assert isinstance(encoder, PromptEmbedding)
    return encoder.embedding.weight


_cpu_threads_set = False


def _use_all_cpu_cores(device: torch.device) -> None:
    """One intra-op thread per CPU core this process may use (torch's default can differ)."""
    global _cpu_threads_set
    if device.type != "cpu" or _cpu_threads_set:
        return
    _cpu_threads_set = True
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    if torch.get_num_threads() != cores:
        torch.set_num_threads(cores)

"""The training engine of the local backend: PEFT prompt or prefix tuning, one optimizer step
per call.

Why it is shaped this way:

- Real prompt tuning with `peft`: a `PromptTuningConfig` (text or random init, N virtual
  tokens) whose prompt embedding is the only trainable tensor; the base weights stay frozen and
  the saved adapter is an ordinary PEFT checkpoint that `PeftModel.from_pretrained` loads.
  With `peft_method="prefix_tuning"` (the default for new runs) it is a `PrefixTuningConfig`
  instead, whose tensor holds the virtual tokens' keys and values at every layer (`_prefix`
  says why); everything else below is the same.
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
- The soft prompt goes where `TrainingConfig.soft_prompt_position` says: at the start (PEFT's
  layout) or at the end of the input, right before the output. At the end nothing in the input
  depends on it, so the input runs once without gradients and its keys and values are kept
  for later epochs (`_PromptCache`): a step then runs only the soft prompt and the output.
"""

from __future__ import annotations

import inspect
import random
import warnings
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import torch
import torch.nn.functional as F

from granite_tuner._secrets import get_logger
from granite_tuner._steps import steps_per_epoch
from granite_tuner.backends.local._adapter import mark_position
from granite_tuner.backends.local._decode_types import PeftMethod, SoftPromptPosition
from granite_tuner.backends.local._models import LoadedModel, cache_argument
from granite_tuner.backends.local._precision import autocast
from granite_tuner.backends.local._prefix import PrefixLayout, prefix_cache, text_prefix
from granite_tuner.backends.local._training_data import (
    IGNORE_INDEX,
    Batch,
    EncodedExample,
    collate,
    encode_examples,
    plan_batches,
)
from granite_tuner.backends.local._validating import ValidationScore, Validator, improved
from granite_tuner.data import Example
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.validation import SelectionMetric

if TYPE_CHECKING:
    import threading

    from peft import PeftModel

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
    "make_validator",
    "plan_batches",
]

logger = get_logger("granite_tuner.local")


_T = TypeVar("_T")

# Defaults (chosen with benchmarks/tuning_defaults.py; see docs/benchmarks.md).
DEFAULT_NUM_EPOCHS = 8
DEFAULT_BATCH_SIZE = 4
DEFAULT_MAX_INPUT_TOKENS = 256
DEFAULT_NUM_VIRTUAL_TOKENS = 8
DEFAULT_EARLY_STOPPING_PATIENCE: int | None = None
DEFAULT_VALIDATION_SPLIT = 0.2
#: Where new runs put the soft prompt: after the input, where a step reads the input once
#: without gradients (`TrainingConfig.soft_prompt_position` says why its own default differs).
DEFAULT_SOFT_PROMPT_POSITION: SoftPromptPosition = "end"
#: What new runs train: keys and values at every layer, which a small model needs to learn
#: a task (`_prefix` says why; `TrainingConfig.peft_method` why its own default differs).
DEFAULT_PEFT_METHOD: PeftMethod = "prefix_tuning"


@dataclass(frozen=True)
class MethodDefaults:
    """What a run of one PEFT method gets for the settings its parameters leave out."""

    learning_rate: float
    num_epochs: int
    num_virtual_tokens: int


#: Defaults by method: a prefix has twenty times the numbers per virtual token of a
#: prompt-tuning soft prompt and learns in fewer epochs at a smaller step; 16 virtual tokens
#: instead of 8 came out of a held-out sweep (docs/benchmarks.md, "Prefix tuning").
DEFAULTS_BY_METHOD: dict[PeftMethod, MethodDefaults] = {
    "prompt_tuning": MethodDefaults(0.03, DEFAULT_NUM_EPOCHS, DEFAULT_NUM_VIRTUAL_TOKENS),
    "prefix_tuning": MethodDefaults(0.01, 5, 16),
}

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


class TrainingCancelled(Exception):
    """Raised by `PromptTrainer.step()` when its cancel event is set; nothing was applied."""


@dataclass(frozen=True)
class TrainingConfig:
    """Every setting of one local run, defaults resolved (what `run.json` records)."""

    num_epochs: int = DEFAULT_NUM_EPOCHS
    learning_rate: float = 0.03
    batch_size: int = DEFAULT_BATCH_SIZE
    accumulate_steps: int = 1
    max_input_tokens: int = DEFAULT_MAX_INPUT_TOKENS
    max_output_tokens: int = 128
    num_virtual_tokens: int = DEFAULT_NUM_VIRTUAL_TOKENS
    init_method: Literal["random", "text"] = "text"
    init_text: str | None = DEFAULT_INIT_TEXTS["classification"]
    verbalizer: str = "{{input}}"
    seed: int = 0
    task_id: str = "classification"
    #: "float32", or "bfloat16" for bf16 autocast (resolved from "auto" by the client).
    precision: Literal["float32", "bfloat16"] = "float32"
    #: Which validation figure picks the kept epoch: "accuracy" (ties: lower loss) or "loss".
    selection_metric: SelectionMetric = "loss"
    #: Stop after this many validations in a row without a better one; None: never.
    early_stopping_patience: int | None = DEFAULT_EARLY_STOPPING_PATIENCE
    #: Share of the training data held out for validation when no validation data is given.
    validation_split: float = DEFAULT_VALIDATION_SPLIT
    #: Share of the planned steps over which the learning rate rises from 0 (then falls to 0).
    warmup_share: float = 0.0
    #: Where the soft prompt goes: "start" (PEFT's layout, [soft prompt][input][output]) or
    #: "end" ([input][soft prompt][output]). Runs recorded before this setting existed were
    #: "start", which is why that stays the value a bare `TrainingConfig` has.
    soft_prompt_position: SoftPromptPosition = "start"
    #: Whether each training batch mixes the labels in the data's proportions (classification;
    #: `plan_batches` says why). Runs recorded before this setting existed did not.
    label_mixed_batches: bool = False
    #: "prompt_tuning" (embeddings at `soft_prompt_position`) or "prefix_tuning" (keys and
    #: values at every layer, in front of the input; `soft_prompt_position` is then "start").
    #: Runs recorded before this setting existed were prompt tuning.
    peft_method: PeftMethod = "prompt_tuning"

    @classmethod
    def from_parameters(
        cls,
        parameters: PromptTuningParameters,
        *,
        seed: int = 0,
        precision: Literal["float32", "bfloat16"] = "float32",
        selection_metric: SelectionMetric | None = None,
        early_stopping_patience: int | None = DEFAULT_EARLY_STOPPING_PATIENCE,
        validation_split: float = DEFAULT_VALIDATION_SPLIT,
        soft_prompt_position: SoftPromptPosition = DEFAULT_SOFT_PROMPT_POSITION,
        peft_method: PeftMethod = DEFAULT_PEFT_METHOD,
    ) -> TrainingConfig:
        """The settings for `parameters`: fields left `None` take the local defaults.

        `init_method` unset means text init with a short description of the task; the kept
        epoch is chosen by accuracy for classification and by loss otherwise, unless
        `selection_metric` says. A prefix goes in front of the input whatever
        `soft_prompt_position` says (it is where prompt tuning's soft prompt goes).
        """
        defaults = cls()
        init_method = parameters.init_method or "text"
        init_text: str | None = None
        if init_method == "text":
            init_text = parameters.init_text or DEFAULT_INIT_TEXTS.get(
                parameters.task_id, DEFAULT_INIT_TEXTS["generation"]
            )
        classification = parameters.task_id == "classification"
        by_method = DEFAULTS_BY_METHOD[peft_method]
        return cls(
            num_epochs=_pick(parameters.num_epochs, by_method.num_epochs),
            learning_rate=_pick(parameters.learning_rate, by_method.learning_rate),
            batch_size=_pick(parameters.batch_size, defaults.batch_size),
            accumulate_steps=_pick(parameters.accumulate_steps, defaults.accumulate_steps),
            max_input_tokens=_pick(parameters.max_input_tokens, defaults.max_input_tokens),
            max_output_tokens=_pick(parameters.max_output_tokens, defaults.max_output_tokens),
            num_virtual_tokens=_pick(parameters.num_virtual_tokens, by_method.num_virtual_tokens),
            init_method=init_method,
            init_text=init_text,
            verbalizer=_pick(parameters.verbalizer, defaults.verbalizer),
            seed=seed,
            task_id=parameters.task_id,
            precision=precision,
            selection_metric=selection_metric or ("accuracy" if classification else "loss"),
            early_stopping_patience=early_stopping_patience,
            validation_split=validation_split,
            soft_prompt_position="start"
            if peft_method == "prefix_tuning"
            else soft_prompt_position,
            label_mixed_batches=classification,
            peft_method=peft_method,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _pick(value: _T | None, default: _T) -> _T:
    return default if value is None else value


# --- training ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """One optimizer step: its number (from 1), its epoch (from 0) and its mean batch loss.

    At the end of an epoch of a run with validation data, `validation` is the score of the soft
    prompt after this step, `best_epoch` the epoch kept so far, and `stopped` the reason when
    early stopping ends the run here.
    """

    iteration: int
    epoch: int
    loss: float
    batches: int
    epoch_finished: bool = False
    validation: ValidationScore | None = None
    best_epoch: int | None = None
    stopped: str | None = None


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

    With `validation` examples, the soft prompt is scored on them after every epoch; the best
    epoch's soft prompt (by `config.selection_metric`) is the one `save()` writes, and
    `config.early_stopping_patience` epochs in a row without a better score end the run.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        examples: Sequence[Example],
        config: TrainingConfig,
        *,
        validation: Sequence[Example] = (),
        cancel: threading.Event | None = None,
    ) -> None:
        self.loaded = loaded
        self.config = config
        self._cancel = cancel
        self.examples = encode_examples(loaded.tokenizer, examples, config)
        self._lengths = [example.length for example in self.examples]
        self._labels = (
            [example.output for example in examples] if config.label_mixed_batches else None
        )
        self.validator = _validator(loaded, examples, validation, config)
        self.peft_model = _prompt_tuning_model(loaded, config)
        self._soft_prompt = _soft_prompt(self.peft_model)
        self._trainable = [p for p in self.peft_model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self._trainable, lr=config.learning_rate)
        self._base = loaded.model
        self._embed = loaded.model.get_input_embeddings()
        forward = inspect.signature(type(loaded.model).forward).parameters
        self._logits_to_keep = "logits_to_keep" in forward
        self._position_ids = "position_ids" in forward
        self._cache_keyword = cache_argument(loaded.model)
        self._prefix_layout = (
            PrefixLayout.of(loaded.model) if config.peft_method == "prefix_tuning" else None
        )
        #: The training prompts' keys and values, for a soft prompt at the end (None: not kept).
        self._prompt_cache = (
            _PromptCache.for_examples(loaded, self.examples)
            if config.soft_prompt_position == "end"
            else None
        )
        self.steps_per_epoch = steps_per_epoch(
            len(self.examples), config.batch_size, config.accumulate_steps
        )
        self.total_steps = self.steps_per_epoch * config.num_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _schedule(self.total_steps, config.warmup_share)
        )
        self.iteration = 0
        self._plan: _EpochPlan | None = None
        #: Validation score after each epoch, in order.
        self.validation_scores: list[ValidationScore] = []
        #: The epoch whose soft prompt is kept (None without validation data).
        self.best_epoch: int | None = None
        self._best_score: ValidationScore | None = None
        self._best_prompt: torch.Tensor | None = None
        #: Why the run stopped early, if it did.
        self.stopped: str | None = None

    @property
    def finished(self) -> bool:
        return self.stopped is not None or self.iteration >= self.total_steps

    def step(self) -> StepResult | None:
        """Run one optimizer step; None when every epoch is done or early stopping struck.

        Raises `TrainingCancelled` (before any update of this step) when the cancel event is
        set before one of its batches.
        """
        plan = None if self.stopped is not None else self._current_plan()
        if plan is None:
            return None
        group = plan.groups[plan.next_group]
        total = self._accumulate(group)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        plan.next_group += 1
        self.iteration += 1
        epoch_finished = plan.next_group == len(plan.groups)
        score = self._validate(plan.epoch) if epoch_finished else None
        return StepResult(
            iteration=self.iteration,
            epoch=plan.epoch,
            loss=total / len(group),
            batches=len(group),
            epoch_finished=epoch_finished,
            validation=score,
            best_epoch=self.best_epoch,
            stopped=self.stopped,
        )

    def _accumulate(self, group: list[list[int]]) -> float:
        """Forward and backward passes over one step's batches (gradients summed into the
        soft prompt's); returns the sum of the batches' mean losses."""
        total = 0.0
        for indices in group:
            if self._cancel is not None and self._cancel.is_set():
                self.optimizer.zero_grad(set_to_none=True)
                raise TrainingCancelled
            with autocast(self.loaded.device, self.config.precision):
                batch = collate([self.examples[i] for i in indices], self._pad_id)
                loss = self.batch_loss(batch, indices)
            torch.autograd.backward(loss / len(group))
            total += float(loss.detach())
        return total

    def train(self, on_step: Callable[[StepResult], None] | None = None) -> list[StepResult]:
        """Every remaining step, in this thread (scripts and tests; the client steps itself)."""
        results: list[StepResult] = []
        while (result := self.step()) is not None:
            results.append(result)
            if on_step is not None:
                on_step(result)
        return results

    def validate(self) -> ValidationScore | None:
        """The current soft prompt's validation score (None without validation data)."""
        if self.validator is None:
            return None
        with autocast(self.loaded.device, self.config.precision):
            return self.validator.score(self.logits)

    def batch_loss(self, batch: Batch, examples: Sequence[int] | None = None) -> torch.Tensor:
        """Mean cross-entropy over the target tokens of `batch`, with the soft prompt in place.

        `examples`: the indices in `self.examples` of the batch's rows, when it is made of
        them, so that a soft prompt at the end can reuse their prompts' keys and values.
        """
        keep = batch.target_width + 1  # the logit before each target token predicts it
        logits = self.logits(batch, keep, examples)[:, :-1, :]
        labels = batch.labels[:, -batch.target_width :].to(self.loaded.device)
        return F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            ignore_index=IGNORE_INDEX,
        )

    def logits(
        self, batch: Batch, keep: int, examples: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Vocabulary logits of the last `keep` positions of `batch`, with the soft prompt in
        place (at the start of each row, or between its prompt and its target, or as keys and
        values in front of each row)."""
        if self._prefix_layout is not None:
            return self._logits_with_prefix(batch, keep, self._prefix_layout)
        if self.config.soft_prompt_position == "end":
            return self._logits_prompt_at_end(batch, keep, examples)
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
            kwargs["position_ids"] = _positions(mask)
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = keep
        output = self._base(inputs_embeds=inputs_embeds, attention_mask=mask, **kwargs)
        logits: torch.Tensor = output.logits[:, -keep:, :]
        return logits

    def _logits_with_prefix(self, batch: Batch, keep: int, layout: PrefixLayout) -> torch.Tensor:
        """`logits` for prefix tuning: every row's pass starts from a KV cache that holds the
        prefix (`_prefix.prefix_cache`), `[prefix][padding][prompt, target]`, with positions
        counted over real entries, so the input is numbered from the prefix's length on."""
        device = self.loaded.device
        input_ids = batch.input_ids.to(device)
        attention_mask = batch.attention_mask.to(device)
        size = input_ids.shape[0]
        cache, prefix_mask = prefix_cache([self._soft_prompt] * size, layout, self.loaded.dtype)
        mask = torch.cat((prefix_mask.to(attention_mask.dtype), attention_mask), dim=1)
        kwargs: dict[str, Any] = {self._cache_keyword: cache, "use_cache": True}
        if self._position_ids:
            kwargs["position_ids"] = _positions(mask)[:, prefix_mask.shape[1] :]
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = keep
        output = self._base(input_ids=input_ids, attention_mask=mask, **kwargs)
        logits: torch.Tensor = output.logits[:, -keep:, :]
        return logits

    def _logits_prompt_at_end(
        self, batch: Batch, keep: int, examples: Sequence[int] | None
    ) -> torch.Tensor:
        """`logits` for rows laid out `[prompt][soft prompt][target]`, in two passes.

        Nothing in a row's prompt depends on the soft prompt that follows it, so the prompts go
        through the model once without gradients, and their keys and values (a KV cache) are
        all the second pass needs: it runs, with gradients, only the soft prompt and the target
        tokens. A step therefore reads a row's prompt once instead of three times (forward and
        backward), which is what makes this layout cheaper to train. Both passes are
        left-padded, `[padding][prompt]` then `[padding][soft prompt][target]`, with positions
        counted over real tokens, so every row is numbered as its unpadded sequence would be.
        With `examples` (training batches), each prompt's keys and values are kept after its
        first pass (`_PromptCache`), so from the second epoch on the first pass is skipped.
        """
        device = self.loaded.device
        ids = batch.input_ids.to(device)
        real = batch.attention_mask.to(device).bool()
        size = ids.shape[0]
        virtual = self.config.num_virtual_tokens
        prompt_width = max(batch.prompt_lengths)
        target_width = batch.target_width
        prompt_ids = torch.full((size, prompt_width), self._pad_id, dtype=ids.dtype, device=device)
        prompt_mask = torch.zeros((size, prompt_width), dtype=torch.long, device=device)
        target_ids = torch.full((size, target_width), self._pad_id, dtype=ids.dtype, device=device)
        tail_mask = torch.zeros((size, virtual + target_width), dtype=torch.long, device=device)
        target_lengths: list[int] = []
        for row, prompt_length in enumerate(batch.prompt_lengths):
            tokens = ids[row][real[row]]
            target = tokens[prompt_length:]
            target_lengths.append(len(target))
            if prompt_length:
                prompt_ids[row, prompt_width - prompt_length :] = tokens[:prompt_length]
                prompt_mask[row, prompt_width - prompt_length :] = 1
            if len(target):
                target_ids[row, target_width - len(target) :] = target
            tail_mask[row, target_width - len(target) :] = 1
        # Second pass, per row: [padding][soft prompt][target], the target at the right edge.
        soft = self.peft_model.get_prompt(batch_size=size)
        target_embeds = self._embed(target_ids)
        tail_embeds = torch.stack(
            [
                torch.cat(
                    (
                        target_embeds[row, : target_width - length],  # padding, masked out
                        soft[row].to(target_embeds.dtype),
                        target_embeds[row, target_width - length :],
                    )
                )
                for row, length in enumerate(target_lengths)
            ]
        )
        mask = torch.cat((prompt_mask, tail_mask), dim=1)
        positions = _positions(mask)
        kwargs: dict[str, Any] = {"use_cache": True}
        if prompt_width:
            kept = self._prompt_cache if examples is not None else None
            cache = None if kept is None or examples is None else kept.batch(examples, prompt_width)
            if cache is None:
                with torch.no_grad():
                    first = self._base(
                        input_ids=prompt_ids,
                        attention_mask=prompt_mask,
                        position_ids=positions[:, :prompt_width],
                        use_cache=True,
                        **({"logits_to_keep": 1} if self._logits_to_keep else {}),
                    )
                cache = getattr(first, self._cache_keyword)  # the output names it alike
                if (
                    kept is not None
                    and examples is not None
                    and not kept.keep(examples, batch.prompt_lengths, cache)
                ):
                    self._prompt_cache = None  # this model's cache cannot be cut per row
            kwargs[self._cache_keyword] = cache
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = keep
        output = self._base(
            inputs_embeds=tail_embeds,
            attention_mask=mask,
            position_ids=positions[:, prompt_width:],
            **kwargs,
        )
        logits: torch.Tensor = output.logits[:, -keep:, :]
        return logits

    def restore_best(self) -> None:
        """Put the best epoch's soft prompt back in place (nothing to do without validation)."""
        if self._best_prompt is not None:
            with torch.no_grad():
                self._soft_prompt.copy_(self._best_prompt)

    def save(self, directory: Path) -> None:
        """Write the kept soft prompt (the best epoch's, with validation) as a PEFT adapter."""
        self.restore_best()
        self.peft_model.save_pretrained(str(directory), safe_serialization=True)
        mark_position(directory, self.config.soft_prompt_position)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed trainer needs to go on exactly as this one would (a checkpoint).

        Copies, not views: training may go on while the copy is written. Holds only tensors,
        numbers, strings, lists and dicts, so `torch.load(weights_only=True)` reads it back.
        """
        plan = self._plan
        best = self._best_score
        return {
            "iteration": self.iteration,
            "soft_prompt": self._soft_prompt.detach().clone(),
            "optimizer": _copied(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(),
            "plan": None
            if plan is None
            else {"epoch": plan.epoch, "groups": plan.groups, "next_group": plan.next_group},
            "validation_scores": [[s.loss, s.accuracy] for s in self.validation_scores],
            "best_epoch": self.best_epoch,
            "best_score": None if best is None else [best.loss, best.accuracy],
            "best_prompt": None if self._best_prompt is None else self._best_prompt.clone(),
            "stopped": self.stopped,
            # The trainer draws from none of these (its batch order has its own seeded
            # generator), but a resumed process starts where this one was, in case a model does.
            "torch_rng": torch.get_rng_state(),
            "python_rng": _python_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put this freshly built trainer where the one that wrote `state` was."""
        with torch.no_grad():
            self._soft_prompt.copy_(state["soft_prompt"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.iteration = int(state["iteration"])
        plan = state["plan"]
        self._plan = (
            None
            if plan is None
            else _EpochPlan(
                epoch=int(plan["epoch"]),
                groups=[[list(batch) for batch in group] for group in plan["groups"]],
                next_group=int(plan["next_group"]),
            )
        )
        self.validation_scores = [
            ValidationScore(loss, acc) for loss, acc in state["validation_scores"]
        ]
        self.best_epoch = state["best_epoch"]
        best = state["best_score"]
        self._best_score = None if best is None else ValidationScore(best[0], best[1])
        prompt = state["best_prompt"]
        self._best_prompt = None if prompt is None else prompt.to(self._soft_prompt)
        self.stopped = state["stopped"]
        torch.set_rng_state(state["torch_rng"])
        random.setstate(_python_rng_tuple(state["python_rng"]))

    @property
    def soft_prompt(self) -> torch.Tensor:
        """The soft prompt as it is now (not the best epoch's): what a checkpoint deploys."""
        return self._soft_prompt

    @property
    def stop_reason(self) -> str:
        """Why training ended (or will end): early stopping, or every epoch done."""
        if self.stopped is not None:
            return self.stopped
        return f"trained all {self.config.num_epochs} epochs"

    def _validate(self, epoch: int) -> ValidationScore | None:
        """Score the epoch's soft prompt; keep it if best; decide on early stopping."""
        score = self.validate()
        if score is None:
            return None
        self.validation_scores.append(score)
        if improved(score, self._best_score, self.config.selection_metric):
            self._best_score = score
            self.best_epoch = epoch
            self._best_prompt = self._soft_prompt.detach().clone()
            return score
        patience = self.config.early_stopping_patience
        assert self.best_epoch is not None
        if patience is not None and epoch - self.best_epoch >= patience:
            self.stopped = (
                f"early stopping: validation {self.config.selection_metric} did not improve "
                f"for {patience} epoch{'s' if patience != 1 else ''} after epoch "
                f"{self.best_epoch + 1}"
            )
        return score

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
        batches = plan_batches(self._lengths, self.config.batch_size, rng, self._labels)
        steps = self.config.accumulate_steps
        self._plan = _EpochPlan(
            epoch=epoch, groups=[batches[k : k + steps] for k in range(0, len(batches), steps)]
        )
        return self._plan


class _PromptCache:
    """The keys and values of each training prompt, kept after its first pass.

    With the soft prompt at the end, a prompt's keys and values never change (the base model is
    frozen and nothing before them is trained), so every epoch after the first reuses them.
    They are kept only while the whole training set's fit in `_PROMPT_CACHE_BYTES`, and only
    for models whose cache is a plain list of per-layer key and value tensors (a
    `DynamicCache`); otherwise each step runs its prompts again, which gives the same logits.
    """

    def __init__(self) -> None:
        self._rows: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    @classmethod
    def for_examples(
        cls, loaded: LoadedModel, examples: Sequence[EncodedExample]
    ) -> _PromptCache | None:
        """A cache for these prompts, or None when they would not fit the memory budget."""
        config = loaded.model.config
        layers = getattr(config, "num_hidden_layers", None)
        heads = getattr(config, "num_attention_heads", None)
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        hidden = getattr(config, "hidden_size", None)
        head_dim = getattr(config, "head_dim", None)
        if head_dim is None and isinstance(hidden, int) and isinstance(heads, int):
            head_dim = hidden // heads
        if not (
            isinstance(layers, int) and isinstance(kv_heads, int) and isinstance(head_dim, int)
        ):
            return None
        tokens = sum(len(example.prompt_ids) for example in examples)
        per_token = layers * 2 * kv_heads * head_dim * 4  # float32: the widest it is kept in
        return cls() if tokens * per_token <= _PROMPT_CACHE_BYTES else None

    def batch(self, rows: Sequence[int], width: int) -> Any | None:
        """A left-padded cache of these examples' prompts, `width` columns wide; None when one
        of them has not been through the model yet."""
        from transformers import DynamicCache

        kept = [self._rows.get(row) for row in rows]
        if not kept or any(own is None for own in kept):
            return None
        layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        for layer in range(len(kept[0] or ())):
            keys, values = [], []
            for own in kept:
                assert own is not None
                key, value = own[layer]
                pad = width - key.shape[1]
                keys.append(F.pad(key, (0, 0, pad, 0)))
                values.append(F.pad(value, (0, 0, pad, 0)))
            layers.append((torch.stack(keys), torch.stack(values)))
        return DynamicCache(ddp_cache_data=layers)

    def keep(self, rows: Sequence[int], lengths: Sequence[int], cache: Any) -> bool:
        """Keep each row's part of a just-computed, left-padded prompt cache; False (nothing
        kept) when the cache is not a plain `DynamicCache`."""
        from transformers import DynamicCache

        layers = getattr(cache, "layers", None)
        if (
            type(cache) is not DynamicCache
            or layers is None
            or any(type(layer).__name__ != "DynamicLayer" for layer in layers)
        ):
            return False
        for position, (row, length) in enumerate(zip(rows, lengths, strict=True)):
            self._rows[row] = [
                (
                    layer.keys[position, :, layer.keys.shape[2] - length :].detach().clone(),
                    layer.values[position, :, layer.values.shape[2] - length :].detach().clone(),
                )
                for layer in layers
            ]
        return True


#: Most memory the training prompts' keys and values may take (see `_PromptCache`).
_PROMPT_CACHE_BYTES = 2 * 1024**3


def _positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count a row's real tokens only (padding shifts nothing)."""
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


def _schedule(total: int, warmup_share: float) -> Callable[[int], float]:
    """Learning-rate factor per step: a linear rise over the warm-up, then a linear fall to 0.

    The fall (as transformers' Trainer does by default) makes large early steps find the task
    and small late ones settle the soft prompt instead of leaving it where the last batch
    pushed it.
    """
    warmup = round(total * warmup_share)

    def factor(done: int) -> float:
        if done < warmup:
            return (done + 1) / (warmup + 1)
        return max(0.0, 1.0 - (done - warmup) / max(total - warmup, 1))

    return factor


def _copied(value: _T) -> _T:
    """A deep copy of an optimizer state (tensors cloned), safe to write while training goes on."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()  # type: ignore[return-value]
    if isinstance(value, dict):
        return {key: _copied(item) for key, item in value.items()}  # type: ignore[return-value]
    if isinstance(value, list | tuple):
        return type(value)(_copied(item) for item in value)
    return value


def _python_rng_state() -> list[Any]:
    """`random.getstate()` as lists (what a weights-only checkpoint can hold)."""
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _python_rng_tuple(state: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def _validator(
    loaded: LoadedModel,
    training: Sequence[Example],
    validation: Sequence[Example],
    config: TrainingConfig,
) -> Validator | None:
    if not validation:
        return None
    labels = {e.output for e in training} | {e.output for e in validation}
    return make_validator(loaded, validation, config, labels=labels)


def make_validator(
    loaded: LoadedModel,
    examples: Sequence[Example],
    config: TrainingConfig,
    *,
    labels: Collection[str],
    what: str = "validation",
) -> Validator:
    """A `Validator` of `examples` encoded as `config` encodes training data, its answers read
    as one of `labels` (the trainer's, for its validation data; benchmarks', for a test set)."""
    tokenizer = loaded.tokenizer

    def decode(ids: list[int]) -> str:
        return str(tokenizer.decode(ids, skip_special_tokens=True))

    return Validator(
        examples,
        encode_examples(tokenizer, examples, config, what=what),
        labels=sorted(labels),
        classification=config.task_id == "classification",
        pad_token_id=loaded.pad_token_id,
        eos_token_id=loaded.eos_token_id,
        decode=decode,
    )


def _prompt_tuning_model(loaded: LoadedModel, config: TrainingConfig) -> PeftModel:
    """The base model wrapped by PEFT with a fresh soft prompt (the only trainable tensor)."""
    from peft import (
        PeftConfig,
        PrefixTuningConfig,
        PromptTuningConfig,
        PromptTuningInit,
        TaskType,
        get_peft_model,
    )

    peft_config: PeftConfig
    if config.peft_method == "prefix_tuning":
        # Text init is done below: PEFT has none for prefixes.
        peft_config = PrefixTuningConfig(
            task_type=TaskType.CAUSAL_LM, num_virtual_tokens=config.num_virtual_tokens
        )
    elif config.init_method == "text":
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
    with warnings.catch_warnings():
        # PEFT 0.21 reads the model's `is_gradient_checkpointing`, which transformers 5
        # deprecates with a FutureWarning on every wrap; it concerns their code, not the user's.
        # Filtered here only, around the call: the process's own filters are left as they are.
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        model = get_peft_model(loaded.model, peft_config)
    # PEFT may hook the shared model's input embeddings to require grads (for gradient
    # checkpointing); the soft prompt gets its gradient without it, and serving must not pay.
    disable = getattr(loaded.model, "disable_input_require_grads", None)
    if callable(disable):
        disable()
    weight = _soft_prompt(model)
    if config.peft_method == "prefix_tuning" and config.init_method == "text":
        text = config.init_text or DEFAULT_INIT_TEXTS["generation"]
        ids = loaded.tokenizer.encode(text, add_special_tokens=False)
        with torch.no_grad():
            weight.copy_(text_prefix(loaded.model, ids, config.num_virtual_tokens).to(weight))
    elif config.init_method == "random":
        # Same distribution as PEFT's random init (nn.Embedding: N(0, 1)), from our own seeded
        # generator so that the run repeats and torch's global RNG is left alone.
        generator = torch.Generator().manual_seed(config.seed)
        with torch.no_grad():
            weight.copy_(torch.randn(weight.shape, generator=generator).to(weight))
    weight.requires_grad_(True)
    return model


def _soft_prompt(model: PeftModel) -> torch.Tensor:
    """The trainable soft prompt: the weight of PEFT's prompt embedding (or, for prefix
    tuning, of its prefix encoder, which without a projection is one embedding too)."""
    from peft.tuners.prefix_tuning import PrefixEncoder
    from peft.tuners.prompt_tuning import PromptEmbedding

    encoder = model.prompt_encoder[model.active_adapter]
    assert isinstance(encoder, PromptEmbedding | PrefixEncoder)
    weight = encoder.embedding.weight
    assert isinstance(weight, torch.Tensor)
    return weight

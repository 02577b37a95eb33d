"""Training data as the local trainer and validator read it: token ids, batches, batch order.

- An example is encoded once: the verbalised input (cut to `max_input_tokens`, keeping its end
  and its leading special tokens) as prompt, the output + EOS as the target the loss covers.
- Batches are padded on the left to their longest member, with labels -100 on padding and on
  the prompt, so every target ends at the right edge and lies in the last `target_width`
  columns (the model computes vocabulary logits for those columns only).
- Batches group examples of similar length, in a seeded order that changes every epoch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from granite_tuner._secrets import get_logger
from granite_tuner._text import apply_verbalizer, keep_last_tokens
from granite_tuner.data import Example
from granite_tuner.errors import ConfigurationError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "IGNORE_INDEX",
    "Batch",
    "EncodedExample",
    "collate",
    "encode_examples",
    "plan_batches",
]

logger = get_logger("granite_tuner.local")

#: Label value that the loss ignores (prompt and padding positions).
IGNORE_INDEX = -100

# Length grouping: examples are shuffled, cut into chunks of this many batches, and sorted by
# length inside each chunk (as transformers' LengthGroupedSampler does), so batches hold
# examples of similar length while their composition still changes from epoch to epoch.
_MEGABATCH_BATCHES = 50


class _EncodingSettings(Protocol):
    @property
    def verbalizer(self) -> str: ...
    @property
    def max_input_tokens(self) -> int: ...
    @property
    def max_output_tokens(self) -> int: ...


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
    config: _EncodingSettings,
    *,
    what: str = "training",
) -> list[EncodedExample]:
    """Token ids of each example: the verbalised input as prompt, the output + EOS as target.

    A prompt longer than `max_input_tokens` keeps its end (the question usually comes last) and
    its leading special tokens (such as BOS); a target is cut to `max_output_tokens`.
    """
    if not examples:
        raise ConfigurationError(f"The {what} data has no examples.")
    prompts = [apply_verbalizer(config.verbalizer, example.input) for example in examples]
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
            prompt = keep_last_tokens(prompt, config.max_input_tokens, special)
        target = [*output, eos] if isinstance(eos, int) else list(output)
        encoded.append(EncodedExample(tuple(prompt), tuple(target[: config.max_output_tokens])))
    if truncated:
        logger.warning(
            "%d of %d %s prompts are longer than max_input_tokens=%d and were cut to their "
            "last tokens; raise max_input_tokens if the start matters.",
            truncated,
            len(encoded),
            what,
            config.max_input_tokens,
        )
    return encoded


def plan_batches(
    lengths: Sequence[int],
    batch_size: int,
    rng: random.Random,
    labels: Sequence[str] | None = None,
) -> list[list[int]]:
    """Indices of the examples in batches of similar length, in a seeded random order.

    With `labels` (one per example, for classification), every batch also holds the labels in
    about the data's proportions: a batch of one label pulls the soft prompt towards always
    answering it, and on small batches that tug swings the answers of a whole validation set
    from one label to the other between epochs.
    """
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if labels is not None and len(set(labels)) > 1:
        order = _spread_labels(order, lengths, labels, batch_size, rng)
        batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    else:
        chunk = batch_size * _MEGABATCH_BATCHES
        batches = []
        for start in range(0, len(order), chunk):
            group = sorted(order[start : start + chunk], key=lambda i: lengths[i], reverse=True)
            batches.extend(group[k : k + batch_size] for k in range(0, len(group), batch_size))
    rng.shuffle(batches)
    return batches


def _spread_labels(
    order: list[int],
    lengths: Sequence[int],
    labels: Sequence[str],
    batch_size: int,
    rng: random.Random,
) -> list[int]:
    """`order` re-laid so each label's examples are spread evenly along it.

    Each label's examples keep their shuffled order, sorted by length within chunks (as
    without labels), and the k-th of a label's n examples goes to position (k + offset) / n of
    the whole, with a random offset per label: any run of consecutive examples then holds each
    label in its share of the data, and neighbours have similar lengths.
    """
    pools: dict[str, list[int]] = {}
    for index in order:
        pools.setdefault(labels[index], []).append(index)
    placed: list[tuple[float, int]] = []
    for pool in pools.values():
        chunk = max(batch_size, round(batch_size * _MEGABATCH_BATCHES * len(pool) / len(order)))
        grouped = [
            index
            for start in range(0, len(pool), chunk)
            for index in sorted(pool[start : start + chunk], key=lambda i: lengths[i], reverse=True)
        ]
        offset = rng.random()
        placed.extend(((k + offset) / len(grouped), index) for k, index in enumerate(grouped))
    placed.sort()
    return [index for _, index in placed]


@dataclass(frozen=True)
class Batch:
    """A left-padded batch, as long as its longest example.

    `labels` is -100 on padding and prompt tokens, so the loss covers the targets only; every
    target ends at the right edge and lies in the last `target_width` columns. `prompt_lengths`
    says where each row's prompt ends and its target starts (a soft prompt placed at the end
    goes there).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    target_width: int
    prompt_lengths: tuple[int, ...]

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
        prompt_lengths=tuple(len(example.prompt_ids) for example in examples),
    )

"""What the local server and its decoder exchange: decoding settings in, answers out.

Kept apart from both so that the server (`_serving`, `_batching`) and the decoder
(`_decoding`, which imports transformers) depend on this module and not on each other.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from granite_tuner.generation import GenerationParameters

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "PEFT_METHODS",
    "SOFT_PROMPT_POSITIONS",
    "DecodeRow",
    "DecodeSettings",
    "Decoded",
    "LocalStopReason",
    "PeftMethod",
    "SoftPromptPosition",
]

#: What watsonx.ai generates when `max_new_tokens` is not given.
DEFAULT_MAX_NEW_TOKENS = 20

LocalStopReason = Literal["max_tokens", "eos_token", "stop_sequence", "time_limit", "cancelled"]

#: Where a soft prompt goes: "start", `[soft prompt][input][output]` (PEFT's layout), or "end",
#: `[input][soft prompt][output]`.
SoftPromptPosition = Literal["start", "end"]
#: The positions that can be trained and served, for checking a value read at run time.
SOFT_PROMPT_POSITIONS: tuple[SoftPromptPosition, ...] = ("start", "end")

#: What a tuned soft prompt is, by PEFT's names: "prompt_tuning", virtual-token embeddings put
#: among the input's (at `SoftPromptPosition`), or "prefix_tuning", virtual tokens' keys and
#: values at every layer, in front of the input, `(virtual tokens, layers * 2 * kv width)`.
PeftMethod = Literal["prompt_tuning", "prefix_tuning"]
#: The methods that can be trained and served, for checking a value read at run time.
PEFT_METHODS: tuple[PeftMethod, ...] = ("prompt_tuning", "prefix_tuning")


@dataclass(frozen=True)
class DecodeSettings:
    """`GenerationParameters` with every default resolved; equal settings can share a batch.

    `random_seed` is not part of it: every request samples from its own generator. Nor, for
    batching, is `truncate_input_tokens`: each row of a batch is cut on its own (`DecodeRow`),
    so `batch_key` leaves it out.
    """

    sample: bool = False
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    min_new_tokens: int = 0
    stop_sequences: tuple[str, ...] = ()
    include_stop_sequence: bool = True
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    repetition_penalty: float | None = None
    time_limit_ms: int | None = None
    truncate_input_tokens: int | None = None

    @classmethod
    def from_parameters(cls, parameters: GenerationParameters | None) -> DecodeSettings:
        p = parameters or GenerationParameters()
        # Sampling at temperature 0 is greedy decoding (and the sampling knobs are moot).
        sample = p.decoding_method == "sample" and p.temperature != 0.0
        return cls(
            sample=sample,
            max_new_tokens=DEFAULT_MAX_NEW_TOKENS if p.max_new_tokens is None else p.max_new_tokens,
            min_new_tokens=p.min_new_tokens or 0,
            stop_sequences=tuple(p.stop_sequences or ()),
            include_stop_sequence=p.include_stop_sequence is not False,
            temperature=(p.temperature if p.temperature is not None else 1.0) if sample else 1.0,
            top_k=p.top_k if sample else None,
            top_p=p.top_p if sample and p.top_p is not None and p.top_p < 1.0 else None,
            repetition_penalty=(
                p.repetition_penalty
                if p.repetition_penalty is not None and p.repetition_penalty != 1.0
                else None
            ),
            time_limit_ms=p.time_limit,
            truncate_input_tokens=p.truncate_input_tokens,
        )

    @property
    def batch_key(self) -> DecodeSettings:
        """These settings less what may differ between the rows of one batch."""
        if self.truncate_input_tokens is None:
            return self
        return dataclasses.replace(self, truncate_input_tokens=None)


@dataclass(frozen=True, eq=False)
class DecodeRow:
    """One prompt of a batch, with what is its own: seed, soft prompt, where to cut it.

    Rows with different soft prompts (or none: the plain base model) share a batch; each gets
    its own soft prompt, in front of its own tokens or (`soft_prompt_position="end"`) after them,
    or, for `peft_method="prefix_tuning"`, as keys and values in front of them at every layer.
    """

    text: str
    seed: int | None = None
    #: `(virtual tokens, hidden)`, put before or after the prompt's token embeddings; for
    #: prefix tuning, `(virtual tokens, layers * 2 * key/value heads * head size)`.
    soft_prompt: torch.Tensor | None = None
    soft_prompt_position: SoftPromptPosition = "start"
    peft_method: PeftMethod = "prompt_tuning"
    #: Keep only the last this many tokens (and leading special tokens), as watsonx.ai does.
    truncate_input_tokens: int | None = None


@dataclass(frozen=True)
class Decoded:
    """The answer to one prompt of a batch (only the new tokens)."""

    text: str
    generated_token_count: int
    input_token_count: int
    stop_reason: LocalStopReason

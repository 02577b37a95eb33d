"""Logits processors of local decoding: a prompt-aware repetition penalty, per-row sampling.

Both follow watsonx.ai's meanings (`GenerationParameters`). `_decoding` hands them to
`model.generate`, which then only takes the single token they leave.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import LogitsProcessor, TopKLogitsWarper, TopPLogitsWarper

from granite_tuner.backends.local._decode_types import DecodeSettings

__all__ = ["PerRowSampler", "PromptAwareRepetitionPenalty"]


class PromptAwareRepetitionPenalty(LogitsProcessor):
    """Repetition penalty over the prompt's tokens and the tokens generated so far.

    `transformers`' own processor sees only `generate`'s `input_ids`, which with embeddings as
    input hold the new tokens alone; this one starts from the prompt's tokens. Seen tokens'
    logits are divided by the penalty when positive and multiplied by it when negative.
    """

    def __init__(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, penalty: float):
        self._prompt_ids = prompt_ids
        self._prompt_mask = prompt_mask
        self._penalty = penalty
        self._seen: torch.Tensor | None = None
        self._counted = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        seen = self._seen
        if seen is None:
            vocab = scores.shape[-1]
            # Padding positions point at an extra column that is dropped afterwards.
            index = self._prompt_ids.masked_fill(self._prompt_mask == 0, vocab)
            grid = torch.zeros((index.shape[0], vocab + 1), dtype=torch.bool, device=scores.device)
            grid.scatter_(1, index.to(scores.device), True)
            seen = self._seen = grid[:, :vocab].contiguous()
        if input_ids.shape[-1] > self._counted:
            seen.scatter_(1, input_ids[:, self._counted :].to(scores.device), True)
            self._counted = input_ids.shape[-1]
        penalised = torch.where(scores < 0, scores * self._penalty, scores / self._penalty)
        return torch.where(seen, penalised, scores)  # type: ignore[return-value]


class PerRowSampler(LogitsProcessor):
    """Samples each row's next token from its own seeded generator; leaves only that token.

    Applies temperature, top-k and top-p, draws one token per row, and returns scores that are
    `-inf` everywhere except at the drawn token, which greedy selection then takes.
    """

    def __init__(
        self, settings: DecodeSettings, seeds: Sequence[int | None], device: torch.device
    ) -> None:
        self._temperature = settings.temperature
        self._warpers: list[LogitsProcessor] = []
        if settings.top_k is not None:
            self._warpers.append(TopKLogitsWarper(top_k=settings.top_k))
        if settings.top_p is not None:
            self._warpers.append(TopPLogitsWarper(top_p=settings.top_p))
        self._generators = [_generator(seed, device) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        warped = scores.float() / self._temperature
        for warper in self._warpers:
            warped = warper(input_ids, warped)
        probabilities = torch.softmax(warped, dim=-1)
        chosen = torch.cat(
            [
                torch.multinomial(probabilities[row], 1, generator=generator)
                for row, generator in enumerate(self._generators)
            ]
        ).unsqueeze(1)
        only = torch.full_like(scores, -math.inf)
        only.scatter_(1, chosen, 0.0)
        return only  # type: ignore[return-value]


def _generator(seed: int | None, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator

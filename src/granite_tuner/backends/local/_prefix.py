"""Prefix tuning's soft prompt: keys and values for every layer, in front of the input.

A prompt-tuning soft prompt is a few embeddings that enter the model with the input, so a small
model can only steer its answer through what its first layer makes of them. A prefix-tuning
soft prompt (PEFT's `PREFIX_TUNING`, Li & Liang 2021; "deep prompt tuning" in P-tuning v2) is
those virtual tokens' keys and values at every layer: each layer's attention reads learned
entries directly. It is the same kind of object (a small tensor, the base model frozen), and on
the shipped review set it is what lifts a 135M model from about 0.9 to 0.983, the demo's median
(docs/benchmarks.md, "Prefix tuning").

PEFT stores it as one `(virtual tokens, layers * 2 * key/value heads * head size)` tensor, each
row laid out `[layer 0 keys, layer 0 values, layer 1 keys, ...]`; the trainer and the server
both turn it into a KV cache here, the same way, so a served answer is the trained model's.
The input's positions then start after the virtual tokens, as in PEFT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from granite_tuner.backends.local._decode_types import PeftMethod
from granite_tuner.backends.local._models import cache_argument

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["PrefixLayout", "prefix_cache", "soft_prompt_width", "text_prefix"]


@dataclass(frozen=True)
class PrefixLayout:
    """How PEFT shapes a prefix for one model: per virtual token, `layers * 2` blocks (keys,
    then values, per layer) of `heads * head_size` numbers."""

    layers: int
    heads: int
    head_size: int

    @classmethod
    def of(cls, model: PreTrainedModel) -> PrefixLayout:
        """The layout PEFT's `PrefixTuningConfig` gives `model` (its KV heads, for GQA)."""
        config: Any = model.config
        if hasattr(config, "get_text_config"):
            config = config.get_text_config()
        attention_heads = int(config.num_attention_heads)
        heads = int(getattr(config, "num_key_value_heads", None) or attention_heads)
        return cls(
            layers=int(config.num_hidden_layers),
            heads=heads,
            head_size=int(config.hidden_size) // attention_heads,
        )

    @property
    def width(self) -> int:
        """Numbers per virtual token."""
        return self.layers * 2 * self.heads * self.head_size


def soft_prompt_width(model: PreTrainedModel, method: PeftMethod) -> int:
    """The second dimension a soft prompt of `method` has for `model`."""
    if method == "prefix_tuning":
        return PrefixLayout.of(model).width
    weight = model.get_input_embeddings().weight
    assert isinstance(weight, torch.Tensor)
    return int(weight.shape[-1])


def prefix_cache(
    prefixes: Sequence[torch.Tensor | None], layout: PrefixLayout, dtype: torch.dtype
) -> tuple[Any, torch.Tensor]:
    """A KV cache holding each row's prefix, and its attention mask `(rows, width)`.

    Rows' prefixes may differ in length or be missing (the plain base model's rows): each is
    put at the right edge of `width` (the longest) columns, the rest masked out. Gradients flow
    to the prefixes (training passes the same tensor for every row).
    """
    from transformers import DynamicCache

    present = [p for p in prefixes if p is not None]
    assert present, "at least one row has a prefix"
    width = max(int(p.shape[0]) for p in present)
    device = present[0].device
    blocks = layout.layers * 2
    rows: list[torch.Tensor] = []
    mask = torch.zeros((len(prefixes), width), dtype=torch.long, device=device)
    for row, prefix in enumerate(prefixes):
        full = torch.zeros(
            (width, blocks, layout.heads, layout.head_size), dtype=dtype, device=device
        )
        if prefix is not None:
            length = int(prefix.shape[0])
            shaped = prefix.to(dtype).view(length, blocks, layout.heads, layout.head_size)
            full = torch.cat((full[: width - length], shaped)) if length < width else shaped
            mask[row, width - length :] = 1
        rows.append(full)
    # (rows, width, blocks, heads, size) -> (blocks, rows, heads, width, size)
    stacked = torch.stack(rows).permute(2, 0, 3, 1, 4)
    pairs = tuple((stacked[2 * layer], stacked[2 * layer + 1]) for layer in range(layout.layers))
    return DynamicCache(pairs), mask


def text_prefix(model: PreTrainedModel, token_ids: Sequence[int], length: int) -> torch.Tensor:
    """Text init for a prefix: the keys and values `model` computes for `token_ids` (repeated
    or cut to `length` tokens), as a `(length, layout.width)` tensor, the analogue of PEFT's text
    init for prompt tuning (which uses the text's embeddings)."""
    if not token_ids:
        raise ValueError("text init needs at least one token")
    ids = (list(token_ids) * (length // len(token_ids) + 1))[:length]
    layout = PrefixLayout.of(model)
    weight = model.get_input_embeddings().weight
    assert isinstance(weight, torch.Tensor)
    with torch.no_grad():
        output = model(input_ids=torch.tensor([ids], device=weight.device), use_cache=True)
    cache = getattr(output, cache_argument(model))
    blocks: list[torch.Tensor] = []
    for layer in cache.layers:
        for states in (layer.keys, layer.values):
            # (1, heads, length, size) -> (length, heads * size)
            blocks.append(states[0].permute(1, 0, 2).reshape(length, -1))
    prefix = torch.cat(blocks, dim=1)
    if prefix.shape[1] != layout.width:
        raise ValueError(
            f"the model's cache has {prefix.shape[1]} numbers per token, not {layout.width}"
        )
    return prefix.float()

"""Reading a saved soft prompt: the one tensor a PEFT prompt- or prefix-tuning adapter holds.

The server applies the soft prompt by hand (see `_decoding` for why), so it needs the tensor, not
a `PeftModel`; this reads it from the folder `PeftModel.save_pretrained` wrote and checks that it
fits the model. Runs in a worker thread (safetensors reads the file).

Where the soft prompt goes is part of what was learned. PEFT puts it at the start of the input;
a soft prompt trained at the end (`[input][soft prompt][output]`, see `_training`) says so under
`POSITION_KEY` in `adapter_config.json`. PEFT itself ignores that key (with a warning naming it)
and would put such a prompt at the start, so only granite-tuner serves those adapters as trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file

from granite_tuner.backends.local._decode_types import PeftMethod, SoftPromptPosition
from granite_tuner.backends.local._prefix import soft_prompt_width
from granite_tuner.errors import ConfigurationError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "POSITION_KEY",
    "load_soft_prompt",
    "mark_position",
]

#: The files `PeftModel.save_pretrained` writes for a prompt-tuning adapter.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_PROMPT_KEY = "prompt_embeddings"
#: The `adapter_config.json` key that records a soft prompt trained at the end of the input.
POSITION_KEY = "granite_tuner_soft_prompt_position"


def mark_position(adapter_dir: Path, position: SoftPromptPosition) -> None:
    """Record in a just-saved adapter where its soft prompt goes (nothing to add for "start")."""
    if position == "start":
        return
    path = adapter_dir / ADAPTER_CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    config[POSITION_KEY] = position
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_soft_prompt(
    adapter_dir: Path, model: PreTrainedModel, method: PeftMethod = "prompt_tuning"
) -> torch.Tensor:
    """The learned tensor of a saved PEFT adapter of `method` (the run's record says which).

    Returned on the model's device and in its dtype, shape `(virtual tokens, hidden size)` for
    prompt tuning, `(virtual tokens, layers * 2 * kv width)` for prefix tuning (`_prefix`).
    Raises `ConfigurationError` saying what is wrong when the folder holds no usable adapter.
    """
    config_path = adapter_dir / ADAPTER_CONFIG
    weights_path = adapter_dir / ADAPTER_WEIGHTS
    if not config_path.is_file() or not weights_path.is_file():
        raise ConfigurationError(
            f"No saved soft prompt in {adapter_dir} (expected {ADAPTER_CONFIG} and "
            f"{ADAPTER_WEIGHTS}, as PeftModel.save_pretrained writes them)."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"Cannot read {config_path}: {exc}") from None
    peft_type = config.get("peft_type") if isinstance(config, dict) else None
    if peft_type != method.upper():
        raise ConfigurationError(
            f"{adapter_dir} holds a {peft_type or 'unknown'} adapter, and its run records "
            f"{method} (peft_type {method.upper()}); only prompt- and prefix-tuning adapters, "
            "as their runs record them, can be served here."
        )
    if config.get("num_transformer_submodules", 1) != 1:
        raise ConfigurationError(
            f"{adapter_dir} was saved for an encoder-decoder model; only causal language "
            "models are served here."
        )
    try:
        tensors = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise ConfigurationError(f"Cannot read {weights_path}: {exc}") from None
    prompt = tensors.get(_PROMPT_KEY)
    width = soft_prompt_width(model, method)
    if prompt is None or prompt.ndim != 2 or int(prompt.shape[1]) != width:
        shape = None if prompt is None else tuple(prompt.shape)
        raise ConfigurationError(
            f"{weights_path} does not hold a soft prompt for this model: expected a "
            f"'{_PROMPT_KEY}' tensor of shape (virtual tokens, {width}), found {shape}."
        )
    weight = model.get_input_embeddings().weight
    assert isinstance(weight, torch.Tensor)
    return prompt.to(device=weight.device, dtype=weight.dtype)

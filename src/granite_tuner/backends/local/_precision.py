"""Which arithmetic a local training run uses: float32, or bf16 autocast where it pays.

On a CPU with bf16 in hardware (Intel AMX, or the AVX-512 BF16 instructions of recent Intel and
AMD chips), running the frozen model's matrix products under `torch.autocast("cpu",
dtype=torch.bfloat16)` cuts a training step to between a half and two thirds of its float32
time (benchmarks/precision.py). The weights stay float32 (bf16 *weights* were slower in the
probe that led here), and so do the soft prompt, its gradient and the optimizer state: autocast
only lowers the precision of the products, so the small updates a soft prompt gets are not
rounded away. On a CPU without such instructions bf16 is emulated and slower, so `"auto"` picks
float32 there.

Two parts of the model stay float32 inside autocast (`keep_float32_under_autocast`):

- Attention, for speed: PyTorch's CPU kernel for the backward pass of bf16 attention was five
  times slower than its float32 one in a profile of a prefix-tuning step (0.65 s against
  0.13 s over six steps), which ate most of the gain of bf16 products (a step at about 0.8
  of float32's time, 0.63-0.66 with float32 attention). Models that use SDPA get an attention
  function that runs in float32 inside autocast and is SDPA itself everywhere else.
- The output layer, for accuracy: bf16 logits are rounded to about three significant digits,
  coarse for the small margin between two labels that the loss and the greedy answer read.
  With them the defaults scored 0.967 [0.942-0.975] on the shipped test set over three seeds
  against float32's 0.975 [0.975-0.983]; with a float32 output layer, 0.983 [0.975-0.983]
  (docs/benchmarks.md, "Precision"). Training keeps only a few positions' logits, so this
  costs nothing measurable.

The hardware probe is a plain function argument so that tests can stand in for a CPU they
do not have.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch

from granite_tuner.errors import ConfigurationError, UnsupportedFeatureError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "PRECISIONS",
    "Precision",
    "autocast",
    "cpu_has_bf16",
    "keep_float32_under_autocast",
    "resolve_precision",
]

Precision = Literal["auto", "float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

#: The attention implementation `keep_float32_under_autocast` registers with transformers.
FLOAT32_UNDER_AUTOCAST_SDPA = "granite_tuner_sdpa"

#: CPU flags (Linux /proc/cpuinfo) that mean bf16 arithmetic in hardware.
_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


def cpu_has_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU does bf16 arithmetic in hardware (read from its flags; False if unknown).

    torch's own capability string (`torch.backends.cpu.get_cpu_capability()`) says AVX512 on
    chips with and without bf16 alike, so the kernel's flags are the reliable source.
    """
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return not _BF16_FLAGS.isdisjoint(line.split(":", 1)[-1].split())
    return False


def resolve_precision(
    precision: str,
    device: torch.device,
    *,
    has_bf16: Callable[[], bool] | None = None,
) -> Literal["float32", "bfloat16"]:
    """The precision a run on `device` uses for `precision` ("auto", "float32" or "bfloat16").

    On a CPU, "auto" is bf16 autocast when `has_bf16()` says the hardware does bf16, else
    float32; "bfloat16" on a CPU without it raises `UnsupportedFeatureError`. On a GPU the model
    already runs in its own dtype (bf16 where supported), which "auto" keeps; "float32" there
    still means no autocast. `has_bf16` defaults to `cpu_has_bf16` (tests pass their own).
    """
    if precision not in PRECISIONS:
        raise ConfigurationError(
            f"precision={precision!r} is not valid; choose one of: "
            f"{', '.join(repr(p) for p in PRECISIONS)}."
        )
    if device.type != "cpu":
        return "bfloat16" if precision == "bfloat16" else "float32"
    if precision == "float32":
        return "float32"
    supported = (has_bf16 or cpu_has_bf16)()
    if precision == "bfloat16" and not supported:
        raise UnsupportedFeatureError(
            "precision='bfloat16' needs a CPU with bf16 in hardware (AMX or AVX-512 BF16), "
            "and this one has neither, so bf16 would be emulated and slower than float32. "
            "Use precision='auto' (it picks float32 here) or 'float32'."
        )
    return "bfloat16" if supported else "float32"


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """bf16 autocast on a CPU for `precision == "bfloat16"`; nothing otherwise."""
    if precision == "bfloat16" and device.type == "cpu":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


def keep_float32_under_autocast(model: PreTrainedModel) -> None:
    """Let `model`'s attention (if it uses SDPA) and output layer run in float32 inside autocast.

    Outside autocast (serving, float32 training, GPUs) both compute exactly what they did:
    the attention function registered here is transformers' own SDPA, called unchanged, with
    SDPA's mask, and the output layer's own `forward` runs. Another attention implementation
    is left as it is; a second call changes nothing.
    """
    if getattr(model.config, "_attn_implementation", None) == "sdpa":
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(FLOAT32_UNDER_AUTOCAST_SDPA, _sdpa_float32_under_autocast)
        AttentionMaskInterface.register(FLOAT32_UNDER_AUTOCAST_SDPA, sdpa_mask)
        model.set_attn_implementation(FLOAT32_UNDER_AUTOCAST_SDPA)
    head = model.get_output_embeddings()  # type: ignore[no-untyped-call]
    if isinstance(head, torch.nn.Linear) and "forward" not in vars(head):  # not wrapped yet
        head.forward = _float32_under_autocast(head)  # type: ignore[method-assign,assignment]


def _float32_under_autocast(layer: torch.nn.Linear) -> Callable[[torch.Tensor], torch.Tensor]:
    """`layer.forward`, run without autocast (so in the weights' float32) when it is on."""
    compute = layer.forward

    def forward(hidden: torch.Tensor) -> torch.Tensor:
        device = hidden.device.type
        if not torch.is_autocast_enabled(device):
            return compute(hidden)
        with torch.autocast(device, enabled=False):
            return compute(hidden.to(layer.weight.dtype))

    return forward


def _sdpa_float32_under_autocast(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    """transformers' SDPA attention, in float32 when autocast is on for the query's device."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    device = query.device.type
    if not torch.is_autocast_enabled(device):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    with torch.autocast(device, enabled=False):
        return sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )

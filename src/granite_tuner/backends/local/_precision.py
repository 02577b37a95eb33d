"""Which arithmetic a local training run uses: float32, or bf16 autocast where it pays.

On a CPU with bf16 in hardware (Intel AMX, or the AVX-512 BF16 instructions of recent Intel and
AMD chips), running the frozen model's matrix products under `torch.autocast("cpu",
dtype=torch.bfloat16)` cuts a training step to between a half and two thirds of its float32
time (benchmarks/precision.py). The weights stay float32 (bf16 *weights* were slower in the
probe that led here), and so do the soft prompt, its gradient and the optimizer state: autocast
only lowers the precision of the products, so the small updates a soft prompt gets are not
rounded away. On a CPU without such instructions bf16 is emulated and slower, so `"auto"` picks
float32 there.

The hardware probe is a plain function argument so that tests can stand in for a CPU they
do not have.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal, get_args

import torch

from granite_tuner.errors import ConfigurationError, UnsupportedFeatureError

__all__ = [
    "PRECISIONS",
    "Precision",
    "autocast",
    "cpu_has_bf16",
    "resolve_precision",
]

Precision = Literal["auto", "float32", "bfloat16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)

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

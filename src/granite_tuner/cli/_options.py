"""Option types and the options every subcommand shares (backend, output)."""

from __future__ import annotations

import argparse
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    #: What `add_subparsers()` returns; each command module's `register` adds its parsers to it.
    SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

__all__ = [
    "add_common_options",
    "add_nproc_option",
    "positive_float",
    "positive_int",
    "whole_number",
    "wrap",
]


def wrap(text: str) -> str:
    """A help paragraph, filled to the width the raw-text help formatter keeps."""
    return textwrap.fill(" ".join(text.split()), width=88)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number above 0")
    return value


def positive_int(text: str) -> int:
    value = whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def attempts(text: str) -> int:
    value = positive_int(text)
    if value > 50:
        raise argparse.ArgumentTypeError(f"{text!r}: at most 50 attempts")
    return value


def add_nproc_option(parser: argparse.ArgumentParser) -> None:
    """`--nproc N`: a local run trains data-parallel in N processes (torchrun, gloo/NCCL)."""
    parser.add_argument(
        "--nproc",
        type=positive_int,
        metavar="N",
        help="--local: train in N processes on this machine (data-parallel, via torchrun; "
        "one GPU each on CUDA)",
    )


def add_common_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Output and backend options, accepted before and after the subcommand.

    With `suppress`, an option left out sets nothing, so that a value given before the
    subcommand is not overwritten by the subcommand's default.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    output = parser.add_argument_group("output")
    output.add_argument(
        "--json",
        action="store_true",
        default=default(False),
        help="write one JSON document to stdout (messages still go to stderr)",
    )
    backend = parser.add_argument_group(
        "backend",
        "watsonx.ai unless --local. The API key comes from WATSONX_APIKEY (or a bearer\n"
        "token from WATSONX_TOKEN), or a hidden prompt; it is never an option.",
    )
    backend.add_argument(
        "--local",
        action="store_true",
        default=default(False),
        help="use the offline backend (PEFT on this machine; the model is the command's --model)",
    )
    backend.add_argument(
        "--home",
        type=Path,
        default=default(None),
        metavar="DIR",
        help="local backend: where models and runs are kept "
        "(default: $GRANITE_TUNER_HOME or ~/.cache/granite-tuner)",
    )
    backend.add_argument(
        "--url", default=default(None), help="watsonx.ai URL (default: $WATSONX_URL)"
    )
    backend.add_argument(
        "--project-id",
        default=default(None),
        metavar="ID",
        help="watsonx.ai project (default: $WATSONX_PROJECT_ID)",
    )
    backend.add_argument(
        "--space-id",
        default=default(None),
        metavar="ID",
        help="or deployment space (default: $WATSONX_SPACE_ID)",
    )
    backend.add_argument(
        "--iam-url",
        default=default(None),
        metavar="URL",
        help="IAM token endpoint (default: $WATSONX_IAM_URL, else IBM Cloud's)",
    )
    backend.add_argument(
        "--ca-bundle",
        type=Path,
        default=default(None),
        metavar="PEM",
        help="trust this CA bundle, a private or test CA (default: $WATSONX_CA_BUNDLE)",
    )
    backend.add_argument(
        "--max-attempts",
        type=attempts,
        default=default(None),
        metavar="N",
        help="attempts per request, the first included (default: 6)",
    )
    backend.add_argument(
        "--rate-limit",
        type=positive_float,
        default=default(None),
        metavar="RPS",
        help="at most this many generation requests per second (e.g. 2 on a free plan)",
    )

"""`granite-tuner resume` and `granite-tuner checkpoints`: local runs that go on after a crash.

`resume` goes on with a stopped local run from its last whole checkpoint, with the same
progress display as `tune`; `checkpoints` lists what a run keeps (each can be deployed with
`granite-tuner deploy`'s model id, `<run id>:checkpoint-<step>`). On watsonx.ai both end with
the backend's `UnsupportedFeatureError` (exit code 2): the service keeps no checkpoints.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from granite_tuner.cli._backends import open_client
from granite_tuner.cli._context import Context
from granite_tuner.cli._exit import ExitCode
from granite_tuner.cli._options import add_nproc_option, positive_float
from granite_tuner.cli._tuning import finish_run, follow_run, poll_interval_for
from granite_tuner.errors import UnsupportedFeatureError
from granite_tuner.tuner import Tuner

if TYPE_CHECKING:
    from granite_tuner.cli._options import SubParsers

__all__ = ["register"]

_FORMATTER = argparse.RawDescriptionHelpFormatter

RESUME_EXAMPLES = """\
examples:
  granite-tuner resume --local 7c1d9a4e-...            # after the training process died
  granite-tuner resume --local 7c1d9a4e-... --curve learning_curve.png --json
  granite-tuner resume --local 7c1d9a4e-... --nproc 2  # any number of processes

The run goes on from its last whole checkpoint with its own settings and seed, and ends as
one uninterrupted run would. A completed run, or one another process trains, is refused
(exit code 2 or 1) and left as it is.
"""

CHECKPOINTS_EXAMPLES = """\
examples:
  granite-tuner checkpoints --local 7c1d9a4e-...
  granite-tuner checkpoints --local 7c1d9a4e-... --json
  granite-tuner deploy --local 7c1d9a4e-...:checkpoint-24   # serve one of them
"""


def register(subparsers: SubParsers, common: list[argparse.ArgumentParser]) -> None:
    resume = subparsers.add_parser(
        "resume",
        parents=common,
        formatter_class=_FORMATTER,
        help="go on with a stopped local tuning run from its last checkpoint",
        description="Go on with a stopped local tuning run from its last whole checkpoint, "
        "with a live progress bar.",
        epilog=RESUME_EXAMPLES,
    )
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument(
        "--poll-interval",
        type=positive_float,
        metavar="SECONDS",
        help="first interval between status reads (default 0.2 s)",
    )
    resume.add_argument("--curve", type=Path, metavar="PNG", help="draw the learning curve")
    add_nproc_option(resume)
    resume.set_defaults(handler=run_resume)

    listing = subparsers.add_parser(
        "checkpoints",
        parents=common,
        formatter_class=_FORMATTER,
        help="list the checkpoints a local tuning run keeps",
        description="List the checkpoints a local tuning run keeps: step, epoch, losses, "
        "and which is best.",
        epilog=CHECKPOINTS_EXAMPLES,
    )
    listing.add_argument("run_id", metavar="RUN_ID")
    listing.set_defaults(handler=run_checkpoints)


async def run_resume(ctx: Context, args: argparse.Namespace) -> ExitCode:
    async with open_client(ctx.backend) as client:
        tuner = Tuner.resume(
            client, run_id=args.run_id, poll_interval=poll_interval_for(ctx, args.poll_interval)
        )
        result = await follow_run(ctx, tuner, f"resuming {args.run_id}")
    return await finish_run(ctx, result, tuner.warnings, args.curve)


async def run_checkpoints(ctx: Context, args: argparse.Namespace) -> ExitCode:
    async with open_client(ctx.backend) as client:
        if not client.supports_checkpoints:
            raise UnsupportedFeatureError(
                f"{ctx.backend.name} keeps no checkpoints of a tuning run; use --local for a "
                "local run's checkpoints."
            )
        checkpoints = await client.list_checkpoints(args.run_id)
    ctx.ui.show(ctx.ui.checkpoints_table(args.run_id, checkpoints))
    ctx.result(
        {"run_id": args.run_id, "checkpoints": [c.model_dump(mode="json") for c in checkpoints]}
    )
    return ExitCode.OK

"""`demo`: the whole workflow offline, the same as `examples/local_workflow.py`.

Prefix-tunes the local model (the bundled SmolLM2-135M-Instruct unless `--model`) on the
shipped dog-grooming review set, draws the learning curve, deploys the tuned soft prompt on the
local batched server, evaluates it and the base model on the shipped test set, and shows the
comparison; `learning_curve.png` and `comparison.json` are written to `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread

from granite_tuner.cli._backends import open_client
from granite_tuner.cli._context import Context
from granite_tuner.cli._deploying import EvaluationSettings, compare_with_progress, show_comparison
from granite_tuner.cli._exit import ExitCode
from granite_tuner.cli._options import whole_number, wrap
from granite_tuner.cli._render import result_document
from granite_tuner.cli._tuning import expected_progress, follow_run
from granite_tuner.data import aload_examples
from granite_tuner.datasets import test_path, train_path
from granite_tuner.deployment import Deployment
from granite_tuner.errors import GraniteTunerError
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.tuner import Tuner

if TYPE_CHECKING:
    from granite_tuner.cli._options import SubParsers

__all__ = ["DEMO_PARAMETERS", "register"]

#: The settings of examples/local_workflow.py (see there for why): each input keeps its last 32
#: tokens (where a review's verdict is); the rest are prefix tuning's defaults.
DEMO_PARAMETERS = PromptTuningParameters(
    task_id="classification",
    num_epochs=5,
    learning_rate=0.01,
    batch_size=4,
    accumulate_steps=1,
    max_input_tokens=32,
    max_output_tokens=2,
    init_method="text",
    init_text="Classify the customer review as satisfied (1) or unsatisfied (0).",
    verbalizer="{{input}}",
    num_virtual_tokens=16,
)
DEMO_EVALUATION = EvaluationSettings(concurrency=16, max_new_tokens=2)
DEMO_RUN_NAME = "grooming-reviews-demo"
DESCRIPTION = """The whole workflow offline, as examples/local_workflow.py runs it: prefix-tune the
local model on the shipped dog-grooming review set, draw the learning curve, deploy the tuned
soft prompt on the local batched server, evaluate it and the base model on the shipped test
set, and compare them. The curve and comparison.json go to --out."""

EXAMPLES = """\
examples:
  granite-tuner demo                                # about 4 minutes on 2 CPU cores
  granite-tuner demo --epochs 2 --out out/demo --min-gain 20
  granite-tuner demo --model ./my-model --json      # another local model folder

Needs the `local` extra and no network. The same workflow runs on watsonx.ai with the
tune, deploy and compare commands.
"""


def register(subparsers: SubParsers, common: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        parents=common,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="the whole workflow offline: tune, curve, deploy, compare",
        description=wrap(DESCRIPTION),
        epilog=EXAMPLES,
    )
    parser.add_argument(
        "--model",
        metavar="MODEL",
        help="a local model folder or Hugging Face id (default: SmolLM2)",
    )
    parser.add_argument(
        "--epochs",
        type=whole_number,
        default=DEMO_PARAMETERS.num_epochs,
        metavar="N",
        help=f"training epochs (default {DEMO_PARAMETERS.num_epochs})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out/local-demo"),
        metavar="DIR",
        help="where the curve and the report go (default out/local-demo)",
    )
    parser.add_argument(
        "--min-gain",
        type=float,
        metavar="POINTS",
        help="exit with code 1 unless tuned accuracy beats base by this many points",
    )
    parser.set_defaults(handler=run_demo)


async def run_demo(ctx: Context, args: argparse.Namespace) -> ExitCode:
    ctx.backend = dataclasses.replace(ctx.backend, local=True)
    parameters = PromptTuningParameters.model_validate(
        {**DEMO_PARAMETERS.model_dump(exclude_none=True), "num_epochs": args.epochs}
    )
    out: Path = args.out
    await anyio.to_thread.run_sync(lambda: out.mkdir(parents=True, exist_ok=True))
    training_set = await aload_examples(
        train_path(), task_id="classification", max_input_tokens=parameters.max_input_tokens
    )
    test_set = await aload_examples(test_path(), purpose="evaluation")
    started = time.perf_counter()
    async with open_client(ctx.backend, model=args.model) as client:
        base_model = client.default_base_model
        ctx.ui.info(f"Prefix tuning {base_model} on {train_path().name}, offline.")
        tuner = Tuner(
            client,
            base_model=base_model,
            training_data=training_set,
            parameters=parameters,
            name=DEMO_RUN_NAME,
            poll_interval=(0.2, 1.0),
        )
        num_epochs, steps = expected_progress(ctx, parameters, len(training_set))
        result = await follow_run(
            ctx, tuner, "tuning", num_epochs=num_epochs, steps_per_epoch=steps
        )
        curve: Path | None = None
        try:
            curve = await anyio.to_thread.run_sync(
                result.plot_learning_curve, out / "learning_curve.png"
            )
        except GraniteTunerError as exc:
            ctx.ui.warning(f"No learning curve: {exc}")
        ctx.ui.info(
            f"Tuned in {result.duration_seconds or 0:.0f} s; final loss "
            f"{result.final_loss or float('nan'):.4f}; learning curve: {curve}"
        )
        async with await Deployment.create(client, result, delete_on_exit=True) as tuned:
            report = await compare_with_progress(
                ctx, DEMO_EVALUATION.evaluator(client), test_set, tuned=tuned, base=base_model
            )
    report_path = await anyio.to_thread.run_sync(report.to_json, out / "comparison.json")
    ctx.ui.info(f"Done in {time.perf_counter() - started:.0f} s. Report: {report_path}")
    return show_comparison(
        ctx,
        report,
        min_gain=args.min_gain,
        extra={
            "run": result_document(result),
            "learning_curve": str(curve) if curve else None,
            "report_path": str(report_path),
        },
    )

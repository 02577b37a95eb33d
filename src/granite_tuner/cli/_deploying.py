"""`deploy`, `evaluate` and `compare`: serve a tuned model and measure it against its base.

On the local backend a deployment lives in memory, for one process: `deploy --local` checks
that a run can be served and shows it, and `evaluate`/`compare --local` take the tuned *run id*
where watsonx.ai takes a deployment id, deploying it for the length of the command.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from granite_tuner._names import generated_name
from granite_tuner.cli._backends import AnyClient, open_client
from granite_tuner.cli._context import CLI_NAME_PREFIX, Context
from granite_tuner.cli._exit import ExitCode
from granite_tuner.cli._options import positive_float, positive_int, whole_number, wrap
from granite_tuner.data import LabelledSet, aload_examples
from granite_tuner.deployment import Deployment
from granite_tuner.errors import ConfigurationError, DeploymentTimeoutError, RunNotFoundError
from granite_tuner.evaluator import Evaluator
from granite_tuner.reports import ComparisonReport, EvaluationReport
from granite_tuner.runs import TuningResult

if TYPE_CHECKING:
    from granite_tuner.cli._options import SubParsers

__all__ = ["EvaluationSettings", "compare_with_progress", "register"]

_FORMATTER = argparse.RawDescriptionHelpFormatter

DEPLOY_EXAMPLES = """\
examples:
  granite-tuner deploy 7c1d9a4e-...                 # a completed tuning run (or a model id)
  granite-tuner deploy 7c1d9a4e-... --serving-name reviews_pt --json
  granite-tuner deploy 7c1d9a4e-... --local         # checks that the local run can be served

Prints the deployment id, its state and serving name. Ctrl-C while waiting leaves the
deployment on watsonx.ai; `granite-tuner cleanup --deployment ID` deletes it.
"""

EVALUATE_EXAMPLES = """\
examples:
  granite-tuner evaluate test.jsonl --deployment 3f2a...        # a tuned deployment
  granite-tuner evaluate test.jsonl --model ibm/granite-13b-instruct-v2 --concurrency 4
  granite-tuner evaluate test.jsonl --local --deployment RUN_ID --report tuned.json

On --local, --deployment takes the tuned run id (local deployments live in one process).
"""

COMPARE_EXAMPLES = """\
examples:
  granite-tuner compare test.jsonl --tuned 3f2a... --base ibm/granite-13b-instruct-v2
  granite-tuner compare test.jsonl --tuned 3f2a... --min-gain 10 --json > comparison.json
  granite-tuner compare test.jsonl --local --tuned RUN_ID --report comparison.json

Scores both on the same examples and tests the difference with McNemar's exact test.
--base defaults to the tuned model's base model. On --local, --tuned takes the run id.
"""


@dataclass(frozen=True)
class EvaluationSettings:
    """How examples are run through the targets."""

    concurrency: int | None = None
    max_new_tokens: int = 4
    item_timeout: float | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EvaluationSettings:
        return cls(
            concurrency=args.concurrency,
            max_new_tokens=args.max_new_tokens,
            item_timeout=args.item_timeout,
        )

    def evaluator(self, client: AnyClient) -> Evaluator:
        return Evaluator(
            client,
            max_concurrency=self.concurrency,
            parameters={"decoding_method": "greedy", "max_new_tokens": self.max_new_tokens},
            item_timeout=self.item_timeout,
        )


def register(subparsers: SubParsers, common: list[argparse.ArgumentParser]) -> None:
    deploy = subparsers.add_parser(
        "deploy",
        parents=common,
        formatter_class=_FORMATTER,
        help="deploy a tuned model and wait until it serves",
        description=wrap(
            "Deploy a completed tuning run (or a tuned model id) and wait until it serves."
        ),
        epilog=DEPLOY_EXAMPLES,
    )
    deploy.add_argument("source", metavar="MODEL_ID_OR_RUN")
    deploy.add_argument("--name", help="the deployment's name (default: from the run's name)")
    deploy.add_argument(
        "--serving-name", metavar="NAME", help="1-36 of a-z 0-9 _ (default: generated)"
    )
    deploy.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait until the deployment serves (default)",
    )
    _add_deployment_wait(deploy)
    deploy.set_defaults(handler=run_deploy)

    evaluate = subparsers.add_parser(
        "evaluate",
        parents=common,
        formatter_class=_FORMATTER,
        help="score a deployment or a base model on a labelled set",
        description=wrap(
            "Run every example through a deployment or a base model, concurrently "
            "and within the service's rate limits, and show accuracy, precision, recall, F1 and "
            "the confusion matrix."
        ),
        epilog=EVALUATE_EXAMPLES,
    )
    evaluate.add_argument("data", type=Path, metavar="DATA", help="JSONL, JSON or CSV")
    target = evaluate.add_mutually_exclusive_group(required=True)
    target.add_argument("--deployment", metavar="ID", help="a deployment (--local: a run id)")
    target.add_argument("--model", metavar="MODEL", help="a base model id (--local: a folder)")
    _add_evaluation_options(evaluate)
    evaluate.set_defaults(handler=run_evaluate)

    compare = subparsers.add_parser(
        "compare",
        parents=common,
        formatter_class=_FORMATTER,
        help="compare a tuned deployment with its base model",
        description=wrap(
            "Score a tuned deployment and a base model on the same examples and "
            "compare them: accuracy, F1, precision, recall and McNemar's p-value."
        ),
        epilog=COMPARE_EXAMPLES,
    )
    compare.add_argument("data", type=Path, metavar="DATA", help="JSONL, JSON or CSV")
    compare.add_argument(
        "--tuned", required=True, metavar="DEPLOYMENT", help="the tuned deployment (--local: run)"
    )
    compare.add_argument(
        "--base", metavar="MODEL", help="the base model (default: the tuned one's)"
    )
    compare.add_argument(
        "--min-gain",
        type=float,
        metavar="POINTS",
        help="exit with code 1 unless tuned accuracy beats base by this many points",
    )
    _add_evaluation_options(compare)
    compare.set_defaults(handler=run_compare)


def _add_deployment_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=900.0,
        metavar="SECONDS",
        help="how long to wait for the deployment to serve (default 900; exit code 4)",
    )
    parser.add_argument(
        "--poll-interval",
        type=positive_float,
        default=1.0,
        metavar="SECONDS",
        help="first interval between status reads (grows to 15 s)",
    )


def _add_evaluation_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation")
    group.add_argument(
        "--concurrency",
        type=positive_int,
        metavar="N",
        help="calls in flight at once (default: 8, or 64 behind --rate-limit)",
    )
    group.add_argument(
        "--max-new-tokens",
        type=whole_number,
        default=4,
        metavar="N",
        help="tokens generated per answer, greedy (default 4: labels are short)",
    )
    group.add_argument(
        "--item-timeout",
        type=positive_float,
        metavar="SECONDS",
        help="an answer slower than this counts as failed",
    )
    group.add_argument(
        "--report", type=Path, metavar="JSON", help="also write the whole report (every item)"
    )
    _add_deployment_wait(parser)


# --- deploy --------------------------------------------------------------------------------------


async def run_deploy(ctx: Context, args: argparse.Namespace) -> ExitCode:
    async with open_client(ctx.backend) as client:
        source = await _deployable(client, args.source, local=ctx.backend.local)
        name = args.name
        if name is None and not isinstance(source, TuningResult):
            name = generated_name("deployment", prefix=CLI_NAME_PREFIX)
        deployment = await Deployment.create(
            client, source, name=name, serving_name=args.serving_name, wait=False
        )
        if not ctx.backend.local:
            ctx.left_running(
                deployment.id,
                f"Deployment {deployment.id} stays on watsonx.ai (state {deployment.state}); "
                f"evaluate with `granite-tuner evaluate DATA --deployment {deployment.id}` or "
                f"delete it with `granite-tuner cleanup --deployment {deployment.id}`.",
            )
            ctx.ui.info(f"Created deployment {deployment.id} ({deployment.serving_name}).")
        if args.wait:
            await _wait_until_ready(ctx, deployment, args)
    ctx.settled(deployment.id)
    ctx.ui.show(ctx.ui.deployment_table(deployment.info))
    if ctx.backend.local:
        ctx.ui.info(
            "Local deployments live only as long as their process: this one is gone now. "
            f"Evaluate the run with `granite-tuner evaluate DATA --local --deployment "
            f"{args.source}`."
        )
    ctx.result(
        {"deployment": deployment.info.model_dump(mode="json"), "backend": client.backend_name}
    )
    return ExitCode.OK


async def _deployable(client: AnyClient, reference: str, *, local: bool) -> TuningResult | str:
    """A tuning run's result when `reference` is a run id, else `reference` as a model id."""
    try:
        run = await client.get_tuning_run(reference)
    except RunNotFoundError:
        # A local model id is a run id, or one of a run's checkpoints (`RUN:checkpoint-STEP`).
        if local and ":checkpoint-" not in reference:
            raise
        return reference
    return TuningResult.from_run(run, backend=client.backend_name)


async def _wait_until_ready(ctx: Context, deployment: Deployment, args: argparse.Namespace) -> None:
    poll = (args.poll_interval, max(args.poll_interval, 15.0))
    waiting = f"waiting for deployment {deployment.id} to serve"
    try:
        if ctx.ui.json_mode:
            await deployment.wait_until_ready(timeout=args.timeout, poll_interval=poll)
        else:
            with ctx.ui.err.status(waiting):
                await deployment.wait_until_ready(timeout=args.timeout, poll_interval=poll)
    except DeploymentTimeoutError:
        ctx.ui.info(
            f"Deployment {deployment.id} may still become ready: `granite-tuner evaluate DATA "
            f"--deployment {deployment.id}` waits for it; `granite-tuner cleanup --deployment "
            f"{deployment.id}` deletes it."
        )
        raise


@asynccontextmanager
async def tuned_deployment(
    ctx: Context, client: AnyClient, reference: str, args: argparse.Namespace
) -> AsyncIterator[tuple[Deployment, str | None]]:
    """The deployment to evaluate, and its base model when known.

    On watsonx.ai `reference` is a deployment id (waited for until it serves); locally it is a
    run id, deployed now and deleted afterwards.
    """
    if not ctx.backend.local:
        deployment = await Deployment.attach(client, reference, wait=False)
        await _wait_until_ready(ctx, deployment, args)
        yield deployment, deployment.info.base_model_id
        return
    result = await _deployable(client, reference, local=True)
    assert isinstance(result, TuningResult)
    async with await Deployment.create(client, result, delete_on_exit=True) as deployment:
        yield deployment, result.base_model


# --- evaluate and compare ------------------------------------------------------------------------


async def run_evaluate(ctx: Context, args: argparse.Namespace) -> ExitCode:
    data = await aload_examples(args.data, purpose="evaluation")
    settings = EvaluationSettings.from_args(args)
    async with open_client(ctx.backend, model=args.model) as client:
        evaluator = settings.evaluator(client)
        if args.model is not None:
            report = await _evaluate(ctx, evaluator, data, args.model, args.model)
        else:
            async with tuned_deployment(ctx, client, args.deployment, args) as (deployment, _):
                report = await _evaluate(ctx, evaluator, data, deployment, args.deployment)
    if args.report is not None:
        ctx.ui.info(f"Report: {report.to_json(args.report)}")
    ctx.ui.show(ctx.ui.metrics_table(report))
    ctx.result({"report": report.model_dump(mode="json", exclude={"items"})})
    return ExitCode.OK


async def _evaluate(
    ctx: Context, evaluator: Evaluator, data: LabelledSet, target: Any, name: str
) -> EvaluationReport:
    with ctx.ui.evaluation_progress("evaluating", len(data)) as progress:
        return await evaluator.evaluate(data, target, name=name, on_progress=progress)


async def compare_with_progress(
    ctx: Context,
    evaluator: Evaluator,
    data: LabelledSet,
    *,
    tuned: Deployment,
    base: str,
) -> ComparisonReport:
    """The tuned deployment against the base model, with one progress bar for both."""
    with ctx.ui.evaluation_progress("evaluating tuned and base", 2 * len(data)) as progress:
        return await evaluator.compare(
            data, tuned=tuned, base=base, baseline="base", on_progress=progress
        )


async def run_compare(ctx: Context, args: argparse.Namespace) -> ExitCode:
    data = await aload_examples(args.data, purpose="evaluation")
    settings = EvaluationSettings.from_args(args)
    async with (
        open_client(ctx.backend, model=args.base) as client,
        tuned_deployment(ctx, client, args.tuned, args) as (tuned, tuned_base),
    ):
        base = args.base or tuned_base
        if not base:
            raise ConfigurationError(
                f"Give --base MODEL: deployment {args.tuned} does not say its base model."
            )
        report = await compare_with_progress(
            ctx, settings.evaluator(client), data, tuned=tuned, base=base
        )
    if args.report is not None:
        ctx.ui.info(f"Report: {report.to_json(args.report)}")
    return show_comparison(ctx, report, min_gain=args.min_gain)


def show_comparison(
    ctx: Context,
    report: ComparisonReport,
    *,
    min_gain: float | None,
    extra: dict[str, Any] | None = None,
) -> ExitCode:
    """Show the comparison, write the JSON document, and check `min_gain` (points)."""
    tuned = report.reports["tuned"].metrics.accuracy
    base = report.reports["base"].metrics.accuracy
    gain = (tuned - base) * 100
    ctx.ui.show(ctx.ui.comparison_table(report))
    ctx.ui.info(f"Accuracy {base:.2f} -> {tuned:.2f} ({gain:+.0f} points).")
    passed = min_gain is None or gain >= min_gain
    ctx.result(
        {
            **(extra or {}),
            "report": report.model_dump(mode="json", exclude={"reports": {"__all__": {"items"}}}),
            "accuracy": {"base": base, "tuned": tuned},
            "gain_points": gain,
            "min_gain": min_gain,
            "passed": passed,
        },
        ok=passed,
    )
    if not passed:
        ctx.ui.error(f"The tuned model gained {gain:.0f} points; expected at least {min_gain:.0f}.")
        return ExitCode.FAILED
    return ExitCode.OK

"""`tune`, `status`, `attach` and `cancel`: start a tuning run, look at it, wait for it, stop it."""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from granite_tuner._names import generated_name
from granite_tuner._steps import steps_per_epoch
from granite_tuner.cli._backends import AnyClient, open_client
from granite_tuner.cli._context import CLI_NAME_PREFIX, Context
from granite_tuner.cli._exit import ExitCode
from granite_tuner.cli._options import add_nproc_option, positive_float, whole_number, wrap
from granite_tuner.cli._render import result_document
from granite_tuner.data import aload_examples
from granite_tuner.errors import (
    ConfigurationError,
    GraniteTunerError,
    InvalidParametersError,
    RunNotFoundError,
    TuningFailedError,
)
from granite_tuner.events import RunSubmitted, TuningEvent
from granite_tuner.parameters import TASK_IDS, PromptTuningParameters
from granite_tuner.runs import TuningResult, TuningRun
from granite_tuner.tuner import Tuner

if TYPE_CHECKING:
    from granite_tuner.cli._options import SubParsers

__all__ = ["expected_progress", "follow_run", "register"]

_FORMATTER = argparse.RawDescriptionHelpFormatter

TUNE_EXAMPLES = """\
examples:
  # watsonx.ai (WATSONX_URL, WATSONX_APIKEY and WATSONX_PROJECT_ID set)
  granite-tuner tune train.jsonl --base-model ibm/granite-13b-instruct-v2 --epochs 20 \\
      --learning-rate 0.3 --name reviews-pt --curve learning_curve.png
  granite-tuner tune train.jsonl --base-model ibm/granite-13b-instruct-v2 \\
      --parameters tuning.toml --no-wait --json      # prints the run id and returns

  # offline, on this machine (the bundled SmolLM2-135M-Instruct, or --model a folder)
  granite-tuner tune train.jsonl --local --epochs 4 --learning-rate 0.03 \\
      --max-input-tokens 32 --num-virtual-tokens 8
  granite-tuner tune train.jsonl --local --nproc 2     # data-parallel, 2 processes

The parameters file (JSON or TOML, by its suffix) holds PromptTuningParameters fields, e.g.
num_epochs = 20; learning_rate = 0.3; verbalizer = "Input: {{input}} Output:".
Options given on the command line override the file. The run id is printed as soon as the
run exists: after Ctrl-C, `granite-tuner attach RUN_ID` waits for it again.
"""

STATUS_EXAMPLES = """\
examples:
  granite-tuner status 7c1d9a4e-...            # one run, by id
  granite-tuner status --name reviews-pt --json
  granite-tuner status --local --name grooming-reviews-demo
"""

ATTACH_EXAMPLES = """\
examples:
  granite-tuner attach 7c1d9a4e-... --curve learning_curve.png
  granite-tuner attach --name reviews-pt --timeout 3600
"""

CANCEL_EXAMPLES = """\
examples:
  granite-tuner cancel 7c1d9a4e-...
  granite-tuner cancel --name reviews-pt --json
"""

#: Tuning options: (flags, PromptTuningParameters field, argparse keywords).
_PARAMETER_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "--task",
        "task_id",
        {"choices": TASK_IDS, "metavar": "TASK", "help": f"one of {', '.join(TASK_IDS)}"},
    ),
    ("--epochs", "num_epochs", {"type": whole_number, "metavar": "N", "help": "1 to 50"}),
    ("--learning-rate", "learning_rate", {"type": float, "metavar": "LR", "help": "to 0.5"}),
    ("--batch-size", "batch_size", {"type": whole_number, "metavar": "N", "help": "1 to 16"}),
    (
        "--accumulate-steps",
        "accumulate_steps",
        {"type": whole_number, "metavar": "N", "help": "1 to 128"},
    ),
    (
        "--max-input-tokens",
        "max_input_tokens",
        {"type": whole_number, "metavar": "N", "help": "1 to 256"},
    ),
    (
        "--max-output-tokens",
        "max_output_tokens",
        {"type": whole_number, "metavar": "N", "help": "1 to 128"},
    ),
    ("--init-method", "init_method", {"choices": ("random", "text")}),
    ("--init-text", "init_text", {"metavar": "TEXT", "help": "with --init-method text"}),
    ("--verbalizer", "verbalizer", {"metavar": "TEMPLATE", "help": "e.g. 'Input: {{input}}'"}),
    (
        "--num-virtual-tokens",
        "num_virtual_tokens",
        {"type": whole_number, "metavar": "N", "help": "local backend only"},
    ),
]


def register(subparsers: SubParsers, common: list[argparse.ArgumentParser]) -> None:
    tune = subparsers.add_parser(
        "tune",
        parents=common,
        formatter_class=_FORMATTER,
        help="prompt-tune a base model on a training file",
        description=wrap(
            "Check the training file and parameters, upload the data, start a "
            "prompt-tuning run and (by default) wait for it with a live progress bar."
        ),
        epilog=TUNE_EXAMPLES,
    )
    tune.add_argument(
        "training_file", type=Path, metavar="TRAINING_FILE", help="JSONL, JSON or CSV"
    )
    tune.add_argument(
        "--base-model",
        "--model",
        dest="base_model",
        metavar="MODEL",
        help="the model to tune (required on watsonx.ai; --local: a folder or Hugging Face id, "
        "default the bundled SmolLM2-135M-Instruct)",
    )
    tune.add_argument("--name", help=f"the run's name (default: {CLI_NAME_PREFIX}<task>-<time>)")
    tune.add_argument(
        "--parameters", type=Path, metavar="FILE", help="tuning parameters, JSON or TOML"
    )
    group = tune.add_argument_group("tuning parameters (override --parameters)")
    for flag, field, options in _PARAMETER_OPTIONS:
        group.add_argument(flag, dest=field, **options)
    checks = tune.add_argument_group("validation (local backend only)")
    checks.add_argument(
        "--validation-file",
        type=Path,
        metavar="FILE",
        help="held-out examples (JSONL, JSON or CSV), checked like the training file",
    )
    checks.add_argument(
        "--validation-split",
        type=float,
        metavar="SHARE",
        help="share of the training file held out instead (default 0.2; 0: no validation)",
    )
    checks.add_argument(
        "--early-stopping-patience",
        type=whole_number,
        metavar="EPOCHS",
        help="stop after this many epochs without a better validation score (0: never)",
    )
    checks.add_argument(
        "--selection-metric",
        choices=("accuracy", "loss"),
        help="the validation figure that picks the kept epoch",
    )
    add_nproc_option(tune)
    tune.add_argument(
        "--peft-method",
        choices=("prefix_tuning", "prompt_tuning"),
        help="--local: what is trained: keys and values at every layer (prefix_tuning, the "
        "default) or embeddings in the input (prompt_tuning, as watsonx.ai tunes)",
    )
    tune.add_argument(
        "--soft-prompt-position",
        choices=("end", "start"),
        help="--local, with --peft-method prompt_tuning: where the soft prompt goes: after the "
        "input (end, the default) or before it (start: PEFT's layout, for an adapter to load "
        "in peft itself)",
    )
    _add_wait_options(tune)
    tune.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for the run to finish (default), or print its id and return "
        "(watsonx.ai only: a local run trains in this process)",
    )
    tune.set_defaults(handler=run_tune)

    for name, summary, epilog in (
        ("status", "show a tuning run's state, loss per epoch and model id", STATUS_EXAMPLES),
        ("attach", "wait for an existing tuning run, with progress", ATTACH_EXAMPLES),
        ("cancel", "cancel a queued or running tuning run", CANCEL_EXAMPLES),
    ):
        parser = subparsers.add_parser(
            name,
            parents=common,
            formatter_class=_FORMATTER,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=epilog,
        )
        parser.add_argument("run_id", nargs="?", metavar="RUN_ID")
        parser.add_argument("--name", help="the run's name instead of its id (the newest wins)")
        if name == "attach":
            _add_wait_options(parser)
    subparsers.choices["status"].set_defaults(handler=run_status)
    subparsers.choices["attach"].set_defaults(handler=run_attach)
    subparsers.choices["cancel"].set_defaults(handler=run_cancel)


def _add_wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=positive_float,
        metavar="SECONDS",
        help="stop waiting after this long (exit code 4; the run goes on)",
    )
    parser.add_argument(
        "--poll-interval",
        type=positive_float,
        metavar="SECONDS",
        help="first interval between status reads; it grows to 60 s (1 s locally)",
    )
    parser.add_argument(
        "--curve", type=Path, metavar="PNG", help="draw the learning curve into this file"
    )


# --- tune ----------------------------------------------------------------------------------------


async def run_tune(ctx: Context, args: argparse.Namespace) -> ExitCode:
    parameters = _parameters(args)
    if not args.wait and ctx.backend.local:
        raise ConfigurationError(
            "--no-wait works on watsonx.ai only: a local run trains in this process and stops "
            "with it."
        )
    if args.base_model is None and not ctx.backend.local:
        raise InvalidParametersError(
            "--base-model is required on watsonx.ai (for example ibm/granite-13b-instruct-v2).",
            field="base_model",
        )
    data = await aload_examples(
        args.training_file,
        purpose="training",
        task_id=parameters.task_id,
        max_input_tokens=parameters.max_input_tokens,
    )
    for warning in data.warnings:
        ctx.ui.warning(str(warning))
    name: str = args.name or generated_name(parameters.task_id, prefix=CLI_NAME_PREFIX)
    async with open_client(ctx.backend, model=args.base_model) as client:
        base_model: str = args.base_model or client.default_base_model
        tuner = Tuner(
            client,
            base_model=base_model,
            training_data=data,
            parameters=parameters,
            name=name,
            timeout=args.timeout,
            poll_interval=poll_interval_for(ctx, args.poll_interval),
            validation_data=args.validation_file,
            validation_split=args.validation_split,
            early_stopping_patience=args.early_stopping_patience,
            selection_metric=args.selection_metric,
        )
        ctx.left_running(
            "start",
            f"Interrupted while starting tuning run {name!r}: if the service received it, "
            f"`granite-tuner status --name {name}` finds it.",
        )
        if not args.wait:
            run_id = await tuner.submit()
            ctx.settled("start")
            ctx.ui.success(f"Tuning run {run_id} ({name}) submitted on watsonx.ai.")
            ctx.ui.info(f"Follow it with `granite-tuner attach {run_id}`.")
            ctx.ui.show(f"{run_id}")
            ctx.result(
                {
                    "run_id": run_id,
                    "name": name,
                    "base_model": base_model,
                    "data_ref": tuner.data_ref,
                    "backend": client.backend_name,
                    "waited": False,
                }
            )
            return ExitCode.OK
        epochs, steps = expected_progress(ctx, parameters, len(data))
        result = await follow_run(
            ctx, tuner, f"tuning {base_model}", num_epochs=epochs, steps_per_epoch=steps
        )
    return await finish_run(ctx, result, tuner.warnings, args.curve, data.warnings)


def _parameters(args: argparse.Namespace) -> PromptTuningParameters:
    values: dict[str, Any] = _read_parameter_file(args.parameters) if args.parameters else {}
    for _, field, _ in _PARAMETER_OPTIONS:
        value = getattr(args, field)
        if value is not None:
            values[field] = value
    return PromptTuningParameters.model_validate(values)


def _read_parameter_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(
            f"Cannot read the parameters file {str(path)!r}: {exc.strerror}."
        ) from None
    try:
        values: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        raise ConfigurationError(f"{str(path)!r} is not valid {kind}: {exc}.") from None
    if not isinstance(values, dict):
        raise ConfigurationError(
            f'{str(path)!r} must hold a table of tuning parameters, e.g. {{"num_epochs": 20}}.'
        )
    return values


def poll_interval_for(ctx: Context, first: float | None) -> tuple[float, float]:
    default = (0.2, 1.0) if ctx.backend.local else (2.0, 60.0)
    if first is None:
        return default
    return first, max(first, default[1])


def expected_progress(
    ctx: Context, parameters: PromptTuningParameters, examples: int
) -> tuple[int | None, int | None]:
    """(epochs, steps per epoch) where they can be known before the run reports them: on the
    local backend, with the trainer's own defaults and computation (the demo uses this too)."""
    if not ctx.backend.local:
        return parameters.num_epochs, None
    from granite_tuner.backends.local import TrainingConfig

    config = TrainingConfig.from_parameters(parameters)
    return config.num_epochs, steps_per_epoch(examples, config.batch_size, config.accumulate_steps)


async def follow_run(
    ctx: Context,
    tuner: Tuner,
    title: str,
    *,
    num_epochs: int | None = None,
    steps_per_epoch: int | None = None,
) -> TuningResult:
    """Run (or wait for) `tuner` with a progress bar; say what is left if interrupted."""
    local = ctx.backend.local
    with ctx.ui.tuning_progress(
        title, num_epochs=num_epochs, steps_per_epoch=steps_per_epoch
    ) as progress:

        def on_event(event: TuningEvent) -> None:
            if isinstance(event, RunSubmitted):
                _announce(ctx, event, local=local)
            if tuner.last_run is not None:
                epochs = tuner.last_run.parameters.get("num_epochs")
                progress.set_num_epochs(epochs if isinstance(epochs, int) else None)
            progress(event)

        tuner.on_event = on_event
        try:
            result = await tuner.run()
        except TuningFailedError as exc:
            if isinstance(exc.result, TuningResult):
                ctx.ui.show(ctx.ui.run_table(exc.result))
            raise
        finally:
            last = tuner.last_run
            if tuner.run_id is not None and last is not None and last.is_finished:
                ctx.settled(tuner.run_id)
    return result


def _announce(ctx: Context, event: RunSubmitted, *, local: bool) -> None:
    run_id = event.run_id
    ctx.settled("start")
    verb = "Attached to" if event.attached else "Started"
    if local:
        processes = ctx.backend.processes or 1
        where = "this process" if processes == 1 else f"{processes} processes started by this one"
        ctx.ui.info(f"{verb} local tuning run {run_id} ({event.name}); it trains in {where}.")
        ctx.left_running(
            run_id,
            f"Local tuning run {run_id} stopped with this process (it is recorded as canceled); "
            f"go on from its last checkpoint with `granite-tuner resume --local {run_id}`.",
        )
        return
    ctx.ui.info(f"{verb} tuning run {run_id} ({event.name}) on watsonx.ai.")
    ctx.ui.info(f"If interrupted, wait for it again with `granite-tuner attach {run_id}`.")
    ctx.left_running(
        run_id,
        f"Tuning run {run_id} is still running on watsonx.ai; re-attach with "
        f"`granite-tuner attach {run_id}` or cancel it with `granite-tuner cancel {run_id}`.",
    )


async def finish_run(
    ctx: Context,
    result: TuningResult,
    warnings: list[str],
    curve: Path | None,
    shown: tuple[object, ...] = (),
) -> ExitCode:
    already = {str(w) for w in shown}
    for warning in warnings:
        if warning not in already:
            ctx.ui.warning(warning)
    curve_path: Path | None = None
    if curve is not None:
        try:
            curve_path = await anyio.to_thread.run_sync(result.plot_learning_curve, curve)
        except GraniteTunerError as exc:
            ctx.ui.warning(f"No learning curve: {exc}")
    ctx.ui.show(ctx.ui.run_table(result))
    if curve_path is not None:
        ctx.ui.info(f"Learning curve: {curve_path}")
    ctx.result(
        {
            "run": result_document(result),
            "learning_curve": str(curve_path) if curve_path else None,
        }
    )
    return ExitCode.OK


# --- status, attach, cancel ----------------------------------------------------------------------


def _which_run(args: argparse.Namespace) -> tuple[str | None, str | None]:
    run_id: str | None = args.run_id
    name: str | None = args.name
    if (run_id is None) == (name is None):
        raise ConfigurationError("Name the run: give RUN_ID or --name NAME (one of them).")
    return run_id, name


async def find_run(client: AnyClient, run_id: str | None, name: str | None) -> TuningRun:
    if run_id is not None:
        return await client.get_tuning_run(run_id)
    assert name is not None
    runs = await client.find_tuning_runs(name)
    if not runs:
        raise RunNotFoundError(f"There is no tuning run named {name!r}.")
    return runs[0]


async def run_status(ctx: Context, args: argparse.Namespace) -> ExitCode:
    run_id, name = _which_run(args)
    async with open_client(ctx.backend) as client:
        run = await find_run(client, run_id, name)
        result = TuningResult.from_run(run, backend=client.backend_name)
    ctx.ui.show(ctx.ui.run_table(result))
    ctx.result({"run": result_document(result)})
    return ExitCode.OK


async def run_attach(ctx: Context, args: argparse.Namespace) -> ExitCode:
    run_id, name = _which_run(args)
    async with open_client(ctx.backend) as client:
        if run_id is not None:
            tuner = Tuner.attach(
                client,
                run_id=run_id,
                timeout=args.timeout,
                poll_interval=poll_interval_for(ctx, args.poll_interval),
            )
        else:
            tuner = Tuner.attach(
                client,
                name=name,
                timeout=args.timeout,
                poll_interval=poll_interval_for(ctx, args.poll_interval),
            )
        result = await follow_run(ctx, tuner, f"waiting for {run_id or name}")
    return await finish_run(ctx, result, tuner.warnings, args.curve)


async def run_cancel(ctx: Context, args: argparse.Namespace) -> ExitCode:
    run_id, name = _which_run(args)
    async with open_client(ctx.backend) as client:
        run = await find_run(client, run_id, name)
        if run.is_finished:
            ctx.ui.info(f"Tuning run {run.id} has already ended ({run.state}); nothing to cancel.")
        else:
            await client.cancel_tuning_run(run.id)
            run = await client.get_tuning_run(run.id)
            ctx.ui.success(f"Asked {ctx.backend.name} to cancel tuning run {run.id}.")
        result = TuningResult.from_run(run, backend=client.backend_name)
    ctx.ui.show(ctx.ui.run_table(result))
    ctx.result({"run": result_document(result)})
    return ExitCode.OK

"""The parser, and one command's run: event loop, signals, errors and exit codes.

`run_command` is the only place that calls `anyio.run`. Inside the loop, a watcher task turns
SIGINT (Ctrl-C) and SIGTERM into a cancellation of the command: the command unwinds the way
any cancelled coroutine does (a local run stops, a local deployment goes, an HTTP request in
flight is abandoned; nothing remote is canceled), and then the user is told what is still
running remotely and how to re-attach to it or cancel it. A second signal while that happens
ends the process at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

import anyio
from anyio.abc import TaskStatus
from rich.console import Console

from granite_tuner._version import __version__
from granite_tuner.cli import (
    _cleanup,
    _demo,
    _deploying,
    _fake_server,
    _resuming,
    _serve,
    _tuning,
)
from granite_tuner.cli._backends import BackendOptions, resolve_credentials
from granite_tuner.cli._context import Context, Handler
from granite_tuner.cli._exit import EXIT_CODE_TABLE, ExitCode, exit_code_for, innermost
from granite_tuner.cli._options import add_common_options
from granite_tuner.cli._render import Renderer, result_document
from granite_tuner.errors import APIStatusError, GraniteTunerError, TuningFailedError
from granite_tuner.runs import TuningResult

__all__ = ["build_parser", "run_command"]

DESCRIPTION = """\
Prompt-tune IBM Granite models on watsonx.ai, or offline on this machine (--local): tune,
wait, deploy, evaluate, compare and clean up, with progress bars, tables or --json."""

EPILOG = f"""\
workflow:
  granite-tuner tune train.jsonl --base-model ibm/granite-13b-instruct-v2 --epochs 20
  granite-tuner deploy RUN_ID
  granite-tuner compare test.jsonl --tuned DEPLOYMENT_ID --base ibm/granite-13b-instruct-v2
  granite-tuner cleanup --created-by-cli
  granite-tuner demo                      # all of it offline, on the shipped data set
  granite-tuner fake-server               # a fake watsonx.ai to point the commands at

watsonx.ai settings: --url or WATSONX_URL; --project-id/--space-id or WATSONX_PROJECT_ID/
WATSONX_SPACE_ID; --iam-url or WATSONX_IAM_URL; --ca-bundle or WATSONX_CA_BUNDLE; the API
key from WATSONX_APIKEY (or a token from WATSONX_TOKEN), else a hidden prompt when stdin is
a terminal. The key is never an option (shell history, ps). `granite-tuner fake-server`
prints all of these for a fake watsonx.ai, to try every command offline.

exit codes:
{EXIT_CODE_TABLE}

`granite-tuner COMMAND --help` shows each command's options and examples."""

#: Commands that never talk to watsonx.ai.
_LOCAL_ONLY = frozenset({"demo"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="granite-tuner",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_common_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    add_common_options(common, suppress=True)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _tuning.register(subparsers, [common])
    _resuming.register(subparsers, [common])
    _deploying.register(subparsers, [common])
    _cleanup.register(subparsers, [common])
    _demo.register(subparsers, [common])
    _serve.register(subparsers, [common])
    _fake_server.register(subparsers, [common])
    return parser


def run_command(argv: Sequence[str] | None, *, out: Console, err: Console) -> int:
    """Parse `argv`, run the command, and return its exit code (see `ExitCode`)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error (already printed)
        return exit_.code if isinstance(exit_.code, int) else ExitCode.USAGE
    ui = Renderer(out=out, err=err, json_mode=args.json)
    ctx = Context(command=args.command, ui=ui, backend=BackendOptions.from_args(args))
    handler: Handler = args.handler
    sync_handler = getattr(args, "sync_handler", None)
    if sync_handler is not None:  # runs its own event loop and signal handling (serve)
        try:
            code: int = sync_handler(ctx, args)
        except Exception as error:
            return _failed(ctx, error)
        return code
    try:
        if args.command not in _LOCAL_ONLY:
            ctx.backend = resolve_credentials(ctx.backend)
        return anyio.run(_run_in_loop, handler, ctx, args)
    except KeyboardInterrupt:  # before the loop's own handler was installed, or on Windows
        return _interrupted(ctx, signal.SIGINT)
    except Exception as error:
        return _failed(ctx, error)


async def _run_in_loop(handler: Handler, ctx: Context, args: argparse.Namespace) -> int:
    received: list[int] = []
    code: int = ExitCode.INTERRUPTED
    async with anyio.create_task_group() as task_group:
        command_scope = anyio.CancelScope()
        watcher: anyio.CancelScope | None = None
        if _can_watch_signals():
            watcher = await task_group.start(_watch_signals, command_scope, ctx, received)
        with command_scope:
            try:
                code = await handler(ctx, args)
            except Exception as error:
                code = _failed(ctx, error)
        if watcher is not None:
            watcher.cancel()
    if received:
        return _interrupted(ctx, received[0])
    return code


def _can_watch_signals() -> bool:
    return threading.current_thread() is threading.main_thread() and sys.platform != "win32"


async def _watch_signals(
    command_scope: anyio.CancelScope,
    ctx: Context,
    received: list[int],
    *,
    task_status: TaskStatus[anyio.CancelScope],
) -> None:
    with (
        anyio.CancelScope() as scope,
        anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals,
    ):
        task_status.started(scope)
        async for signum in signals:
            if received:  # a second signal: stop waiting for the clean-up
                _tell_what_is_left(ctx)
                sys.stderr.flush()
                os._exit(128 + received[0])
            received.append(signum)
            ctx.ui.info("Interrupted: stopping (press Ctrl-C again to quit at once).")
            command_scope.cancel()


def _interrupted(ctx: Context, signum: int) -> int:
    code = 128 + signum
    _tell_what_is_left(ctx)
    if ctx.ui.json_mode:
        ctx.ui.document(
            {
                "ok": False,
                "command": ctx.command,
                "error": {
                    "type": "Interrupted",
                    "message": f"Interrupted by {signal.Signals(signum).name}.",
                    "exit_code": code,
                },
                "left_running": ctx.notes,
            }
        )
    return code


def _tell_what_is_left(ctx: Context) -> None:
    notes = ctx.notes
    if not notes:
        ctx.ui.info("Interrupted; nothing was left running.")
    for note in notes:
        ctx.ui.warning(note)


def _failed(ctx: Context, error: BaseException) -> int:
    """Report `error` (a message, no traceback, unless it is a bug) and return its exit code."""
    error = innermost(error)
    code = exit_code_for(error)
    if isinstance(error, GraniteTunerError | OSError):
        ctx.ui.error(_message(error))
    else:  # a bug: show where
        ctx.ui.err.print_exception()
    if ctx.ui.json_mode:
        ctx.ui.document({"ok": False, "command": ctx.command, **_error_document(error, code)})
    return code


def _message(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        where = f" {error.filename!s}" if error.filename else ""
        return f"{error.strerror}:{where}"
    message = str(error)
    if isinstance(error, APIStatusError) and error.trace and error.trace not in message:
        message += f" (trace id {error.trace})"
    return message


def _error_document(error: BaseException, code: int) -> dict[str, Any]:
    details: dict[str, Any] = {
        "type": type(error).__name__,
        "message": _message(error),
        "exit_code": code,
    }
    for attribute in ("run_id", "deployment_id", "field", "status_code", "trace"):
        value = getattr(error, attribute, None)
        if value is not None:
            details[attribute] = value
    if isinstance(error, APIStatusError) and error.codes:
        details["codes"] = list(error.codes)
    document: dict[str, Any] = {"error": details}
    if isinstance(error, TuningFailedError) and isinstance(error.result, TuningResult):
        document["run"] = result_document(error.result)
    return document

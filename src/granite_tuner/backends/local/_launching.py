"""A local run in several processes: the client starts `torchrun` and watches the run store.

`LocalClient(processes=N)` creates the run as always (same checks, same record, the run's
lock held by the client), then starts `python -m torch.distributed.run --standalone
--nproc-per-node N -m granite_tuner.backends.local.distributed --run-id ID` and, while it
runs, reads the run.json that rank 0 writes, so `get_tuning_run`, a `Tuner`'s events and the
CLI's progress bar see the run as they see a one-process run. torchrun's own output (with
each worker's) goes to `workers.log` in the run's folder.

When the processes end, the run's final record is rank 0's. When they fail — a rank raised,
was killed, or timed out in a collective — torchrun stops the others and prints which rank
failed first; that, with rank 0's own error, is the run's failure message. A cancel (or the
client closing) asks rank 0 through the store to stop at the next step, and terminates the
processes if they do not end within a grace period.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import anyio
import anyio.to_thread

from granite_tuner._secrets import get_logger
from granite_tuner.backends.local._training import TrainingCancelled

if TYPE_CHECKING:
    from anyio.abc import Process

    from granite_tuner.backends.local._store import RunRecord, RunStore

__all__ = [
    "DEFAULT_COLLECTIVE_TIMEOUT",
    "WORKERS_LOG",
    "ProcessOptions",
    "WorkerProcessesFailed",
    "describe_failure",
    "run_in_processes",
    "torchrun_command",
]

logger = get_logger("granite_tuner.local")

#: Seconds a rank waits in a collective for the others before the run fails.
DEFAULT_COLLECTIVE_TIMEOUT = 600.0

#: torchrun's output, and its workers', in the run's folder.
WORKERS_LOG = "workers.log"

#: How often the client reads the record the worker processes write (seconds).
_POLL_INTERVAL = 0.5
#: How long stopping processes get to end by themselves, then after SIGTERM (seconds).
_STOP_GRACE = 30.0
_TERM_GRACE = 15.0


class WorkerProcessesFailed(Exception):
    """The worker processes of a multi-process run ended without completing it."""


@dataclass(frozen=True)
class ProcessOptions:
    """How a client's runs train in several processes on this machine."""

    count: int
    #: "cpu" (gloo) or "cuda" (NCCL, one GPU per process).
    device_type: str = "cpu"
    collective_timeout: float = DEFAULT_COLLECTIVE_TIMEOUT


def torchrun_command(
    options: ProcessOptions,
    *,
    home: Path,
    run_id: str,
    model: str,
    resume: bool,
    checkpoint_every_steps: int | None,
    keep_checkpoints: int,
) -> list[str]:
    """The command that trains `run_id` in `options.count` processes on this machine."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={options.count}",
        "--max-restarts=0",
        "-m",
        "granite_tuner.backends.local.distributed",
        "--home",
        str(home),
        "--run-id",
        run_id,
        "--model",
        model,
        "--device",
        options.device_type,
        "--timeout",
        str(options.collective_timeout),
        "--keep-checkpoints",
        str(keep_checkpoints),
    ]
    if checkpoint_every_steps is not None:
        command += ["--checkpoint-every-steps", str(checkpoint_every_steps)]
    if resume:
        command.append("--resume")
    return command


async def run_in_processes(
    store: RunStore,
    run_id: str,
    options: ProcessOptions,
    *,
    model: str,
    resume: bool,
    checkpoint_every_steps: int | None,
    keep_checkpoints: int,
    adopt: Callable[[RunRecord], None],
) -> None:
    """Train the stored run `run_id` in worker processes, passing each record they write to
    `adopt`. Returns when it completed; raises `TrainingCancelled` when rank 0 stopped it on
    request, `WorkerProcessesFailed` (saying which rank failed and how) otherwise."""
    command = torchrun_command(
        options,
        home=store.root,
        run_id=run_id,
        model=model,
        resume=resume,
        checkpoint_every_steps=checkpoint_every_steps,
        keep_checkpoints=keep_checkpoints,
    )
    log_path = store.run_dir(run_id) / WORKERS_LOG
    log = await anyio.to_thread.run_sync(_open_log, log_path)
    try:
        process = await anyio.open_process(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
        try:
            while process.returncode is None:
                with anyio.move_on_after(_POLL_INTERVAL):
                    await process.wait()
                await _adopt_latest(store, run_id, adopt)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await _stop(process, store, run_id)
                await _adopt_latest(store, run_id, adopt)
            raise
    finally:
        log.close()
    record = await anyio.to_thread.run_sync(store.load, run_id)
    adopt(record)
    code = process.returncode
    if code == 0 and record.state == "completed":
        return
    if code == 0 and record.state == "canceled":
        raise TrainingCancelled
    text = await anyio.to_thread.run_sync(_read_text, log_path)
    raise WorkerProcessesFailed(describe_failure(text, code, record))


def _open_log(path: Path) -> BinaryIO:
    return path.open("ab")  # closed by the caller


async def _adopt_latest(store: RunStore, run_id: str, adopt: Callable[[RunRecord], None]) -> None:
    """Adopt rank 0's progress; its final state only once the processes have ended (the run
    is not over, for the client, before its processes are)."""
    with contextlib.suppress(OSError):
        record = await anyio.to_thread.run_sync(store.load, run_id)
        if not record.is_active:
            record = record.model_copy(update={"state": "running", "finished_at": None})
        adopt(record)


async def _stop_processes(process: Process, store: RunStore, run_id: str) -> None:
    """Ask rank 0 to stop (through the store), then SIGTERM, then SIGKILL the whole group."""
    if process.returncode is not None:
        return
    with contextlib.suppress(OSError):
        await anyio.to_thread.run_sync(store.request_cancel, run_id)
    for grace, sig in ((_STOP_GRACE, signal.SIGTERM), (_TERM_GRACE, signal.SIGKILL)):
        with anyio.move_on_after(grace):
            await process.wait()
            return
        logger.warning("Worker processes of run %s did not stop; sending %s", run_id, sig.name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
    await process.wait()


async def _stop(process: Process, store: RunStore, run_id: str) -> None:
    """`_stop_processes`, then take back the request to stop: the run has ended."""
    await _stop_processes(process, store, run_id)
    with contextlib.suppress(OSError):
        await anyio.to_thread.run_sync(store.clear_cancel, run_id)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


_ROOT_CAUSE = re.compile(
    r"Root Cause \(first observed failure\):.*?rank\s*:\s*(?P<rank>\d+).*?"
    r"exitcode\s*:\s*(?P<code>-?\d+).*?traceback\s*:\s*(?P<trace>[^\n]*)",
    re.DOTALL,
)


_KILLED = re.compile(r"rank\s*:\s*(?P<rank>\d+)[^\n]*\n[^\n]*exitcode\s*:\s*-9\b")


def describe_failure(log: str, exit_code: int | None, record: RunRecord) -> str:
    """One line: which rank failed first and how (from torchrun's summary), any rank that
    torchrun had to kill (it hung: did not end on SIGTERM), and rank 0's recorded error."""
    parts: list[str] = []
    matches = list(_ROOT_CAUSE.finditer(log))
    if matches:
        match = matches[-1]  # the last summary in the log is this attempt's
        rank, code, trace = match["rank"], int(match["code"]), match["trace"].strip()
        how = f"exit code {code}"
        if code < 0:
            with contextlib.suppress(ValueError):
                how = f"killed by {signal.Signals(-code).name}"
        detail = "" if trace.startswith(("Signal", "To enable traceback")) else f": {trace}"
        parts.append(f"rank {rank} failed first ({how}){detail}")
        summary = log[log.rfind("Failures:", 0, match.start()) : match.start()]
        hung = sorted({int(m["rank"]) for m in _KILLED.finditer(summary)} - {int(rank)})
        if hung:
            names = ", ".join(str(r) for r in hung)
            parts.append(f"rank {names} did not answer and had to be killed (SIGKILL)")
    else:
        parts.append(f"the worker processes ended with exit code {exit_code}")
    if record.state == "failed" and record.failure_message:
        parts.append(f"rank 0 recorded: {record.failure_message}")
    elif record.state in ("queued", "running"):
        parts.append(f"rank 0 was stopped at step {len(record.metrics)}")
    return "; ".join(parts) + f" (see {WORKERS_LOG} in the run's folder)"

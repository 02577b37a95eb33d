"""One rank of a data-parallel local tuning run; start it with `torchrun`.

```
torchrun --nproc-per-node 2 -m granite_tuner.backends.local.distributed \\
    train.jsonl --parameters tuning.toml --name reviews-dp --home /shared/granite-tuner
```

Every rank runs this module. Rank 0 does what a one-process run does — checks and stores the
data, creates the run, validates, writes run.json, the checkpoints and the adapter under
`--home` — and sends the data to the other ranks, which only train their share of each batch
(see `_data_parallel`). So only rank 0 needs the data file and a writable home; every rank
needs the base model (`--model`: a folder, a cached Hugging Face id, or the bundled default).

`granite-tuner tune --local --nproc N` (and `LocalClient(processes=N)`) start this module
themselves with `--run-id`, for a run the client has created, and `--resume` to go on from
its last checkpoint, with any number of processes.

Exit status: 0 when the run completed or was canceled, 1 when it failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import torch
import torch.distributed as dist

from granite_tuner._secrets import get_logger
from granite_tuner.backends.local._checkpoints import DEFAULT_KEEP_LAST, latest_valid
from granite_tuner.backends.local._data_parallel import (
    Leader,
    Rank,
    follow,
    join_process_group,
)
from granite_tuner.backends.local._launching import DEFAULT_COLLECTIVE_TIMEOUT
from granite_tuner.backends.local._models import (
    DEFAULT_MODEL,
    ModelCache,
    default_home,
    resolve_device,
)
from granite_tuner.backends.local._precision import resolve_precision
from granite_tuner.backends.local._store import Owner, RunStore
from granite_tuner.backends.local._tuning import TrainingRunner
from granite_tuner.data import load_examples
from granite_tuner.errors import ConfigurationError, GraniteTunerError
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.validation import ValidationOptions

__all__ = ["main"]

logger = get_logger("granite_tuner.local")

#: The canceled run's message when the process that started the workers died.
OWNER_GONE = "canceled: the process that started it ended"
#: How often rank 0 checks that the process that started the run is alive (seconds).
_OWNER_CHECK_INTERVAL = 1.0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m granite_tuner.backends.local.distributed",
        description="One rank of a data-parallel local prompt-tuning run (start it with "
        "torchrun). Rank 0 stores the run under --home; the others train their share.",
    )
    parser.add_argument("training_file", nargs="?", type=Path, help="JSONL, JSON or CSV")
    parser.add_argument("--run-id", help="train this stored run (what --nproc uses)")
    parser.add_argument("--resume", action="store_true", help="with --run-id: from its checkpoint")
    parser.add_argument("--parameters", type=Path, help="PromptTuningParameters, JSON or TOML")
    parser.add_argument("--name", help="the run's name")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the base model")
    parser.add_argument("--home", type=Path, help="where runs are kept (rank 0)")
    parser.add_argument("--validation-file", type=Path)
    parser.add_argument("--validation-split", type=float)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--checkpoint-every-steps", type=int)
    parser.add_argument("--keep-checkpoints", type=int, default=DEFAULT_KEEP_LAST)
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_COLLECTIVE_TIMEOUT,
        help="seconds a rank waits for the others in a collective before the run fails",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Join the process group, play this rank's part, leave the group; the exit status."""
    args = _parser().parse_args(argv)
    if (args.run_id is None) == (args.training_file is None):
        _parser().error("give a TRAINING_FILE, or --run-id for a stored run")
    device_type = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rank = join_process_group(device_type, timeout=args.timeout)
    # An entry point: its log lines (progress, the error that ends a run) go to stderr, which
    # torchrun collects (and `--nproc` keeps in the run's workers.log), marked with the rank.
    logging.basicConfig(
        level=logging.INFO,
        format=f"[rank {rank.rank}] %(asctime)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    home = args.home.expanduser() if args.home is not None else default_home()
    try:
        if rank.is_leader:
            return anyio.run(_lead, args, rank, home)
        device, dtype = resolve_device(str(rank.device))
        follow(rank, ModelCache(home, device=device, dtype=dtype), model=args.model)
        return 0
    finally:
        dist.destroy_process_group()


async def _lead(args: argparse.Namespace, rank: Rank, home: Path) -> int:
    """Rank 0: the run as one process would train it, with the others' help."""
    device, dtype = resolve_device(str(rank.device))
    leader = Leader(rank)
    runner = TrainingRunner(
        model_name=args.model,
        models=ModelCache(home, device=device, dtype=dtype),
        store=RunStore(home),
        torch_limiter=anyio.CapacityLimiter(1),
        seed=args.seed,
        precision=resolve_precision("auto", device),
        checkpoint_every_steps=args.checkpoint_every_steps,
        keep_checkpoints=args.keep_checkpoints,
        trainer_factory=leader,
    )
    try:
        if args.run_id is not None:
            state = await _train_stored(runner, args.run_id, resume=args.resume)
        else:
            state = await _tune_file(args, runner)
    except GraniteTunerError as exc:
        logger.error("%s", exc)  # noqa: TRY400  (the message says it all)
        return 1
    finally:
        leader.send(None)  # the others wait for a job: none comes when none was sent
    return 1 if state == "failed" else 0


async def _train_stored(runner: TrainingRunner, run_id: str, *, resume: bool) -> str:
    """Train the run a client created (from its last checkpoint with `resume`), for as long
    as that client's process lives; its final state."""
    record = await anyio.to_thread.run_sync(runner.store.load, run_id)
    resume_state = None
    if resume:
        found = await anyio.to_thread.run_sync(latest_valid, runner.store.run_dir(run_id))
        if found is None:
            raise ConfigurationError(f"Run {run_id} has no whole checkpoint to resume from.")
        resume_state = found[1]["trainer"]
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(_stop_when_gone, runner, record.owner, run_id)
        final = await runner.train_record(record, resume_state=resume_state)
        task_group.cancel_scope.cancel()
    return final.state


async def _stop_when_gone(runner: TrainingRunner, owner: Owner, run_id: str) -> None:
    """Stop the run if the process that started it dies (it holds the run's lock; without it
    another process could resume the run while these ones still train it)."""
    while await anyio.to_thread.run_sync(owner.is_alive):  # noqa: ASYNC110  # polls the OS
        await anyio.sleep(_OWNER_CHECK_INTERVAL)
    logger.warning("The process that started run %s is gone; stopping the run", run_id)
    await runner.cancel_tuning_run(run_id, reason=OWNER_GONE)


async def _tune_file(args: argparse.Namespace, runner: TrainingRunner) -> str:
    """Check and store the training file, create the run, train it; its final state."""
    parameters = PromptTuningParameters.model_validate(_read_parameters(args.parameters))
    data = await anyio.to_thread.run_sync(
        lambda: load_examples(args.training_file, task_id=parameters.task_id)
    )
    data_ref = await runner.upload_training_data(data, name=args.training_file.name)
    validation_ref = None
    if args.validation_file is not None:
        held_out = await anyio.to_thread.run_sync(
            lambda: load_examples(args.validation_file, purpose="validation")
        )
        validation_ref = await runner.upload_training_data(held_out, name="validation")
    async with anyio.create_task_group() as task_group:
        runner.open(task_group)
        run = await runner.start_tuning(
            name=args.name or f"distributed-{parameters.task_id}",
            base_model=args.model,
            data_ref=data_ref,
            parameters=parameters,
            validation=ValidationOptions(data_ref=validation_ref, split=args.validation_split),
        )
        logger.info("Training run %s in %d processes", run.id, dist.get_world_size())
        final = await runner.wait(run.id)
        runner.close()
    logger.info("Run %s ended %s: %s", final.id, final.state, final.message)
    return final.state


def _read_parameters(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    text = path.read_text(encoding="utf-8")
    values: Any = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    if not isinstance(values, dict):
        raise ConfigurationError(f"{str(path)!r} must hold a table of tuning parameters.")
    return values


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    sys.exit(record(main)())

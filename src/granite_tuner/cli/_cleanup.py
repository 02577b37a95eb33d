"""`cleanup`: delete deployments, tuning runs and training data — only what the user names.

Safe by construction:

- nothing is deleted unless named: by id (`--deployment`, `--run`, `--data`, each repeatable),
  or by a name prefix (`--prefix`, at least 3 characters), or `--created-by-cli`, which is the
  prefix the CLI gives the runs and deployments it names itself (`granite-tuner-cli-`);
- the plan is shown first, and carried out only after a yes at the prompt, or with `--yes`;
  without a terminal to ask on, and without `--yes`, nothing is deleted (exit code 2);
  `--dry-run` shows the plan and stops;
- a run still queued or running is canceled before it is deleted; deployments go first, then
  runs, then training data; something already gone is reported, not an error.

With a prefix, the training data of each matched run goes too (`--keep-data` keeps it); on the
local backend a stored data set is kept while another run still refers to it (a local run
resumes from its stored data; watsonx.ai reads a run's data only when it starts).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Literal

from rich.prompt import Confirm

from granite_tuner.cli._backends import AnyClient, open_client
from granite_tuner.cli._context import CLI_NAME_PREFIX, Context
from granite_tuner.cli._exit import ExitCode, exit_code_for
from granite_tuner.cli._options import wrap
from granite_tuner.errors import (
    ConfigurationError,
    DeploymentNotFoundError,
    GraniteTunerError,
    NotFoundError,
    RunNotFoundError,
)

if TYPE_CHECKING:
    from granite_tuner.cli._options import SubParsers

__all__ = ["register"]

Kind = Literal["deployment", "run", "data"]
_ORDER: tuple[Kind, ...] = ("deployment", "run", "data")
_GONE = (NotFoundError, RunNotFoundError, DeploymentNotFoundError)
_MIN_PREFIX = 3

EXAMPLES = f"""\
examples:
  granite-tuner cleanup --deployment 3f2a... --run 7c1d...      # asks before deleting
  granite-tuner cleanup --created-by-cli --dry-run              # what the CLI named itself
  granite-tuner cleanup --prefix reviews-pt --yes --json
  granite-tuner cleanup --local --run 7c1d... --yes

--created-by-cli matches names starting with {CLI_NAME_PREFIX!r}: runs that `tune` named
itself (no --name) and their deployments. With a prefix, each matched run's training data is
deleted too, unless --keep-data. Without --yes the plan is shown and confirmed at a prompt;
with no terminal to ask on, nothing is deleted (exit code 2).
"""


@dataclass
class Target:
    """One object to delete."""

    kind: Kind
    id: str
    name: str = ""
    state: str = ""
    active: bool = False  # a run that must be canceled first


def register(subparsers: SubParsers, common: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "cleanup",
        parents=common,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="delete deployments, runs and training data you name",
        description=wrap(
            "Delete the deployments, tuning runs and training data you name, by id "
            "or by name prefix, after showing the plan and asking (or with --yes)."
        ),
        epilog=EXAMPLES,
    )
    for flag, kind in (("--deployment", "deployments"), ("--run", "runs"), ("--data", "data")):
        parser.add_argument(
            flag, dest=kind, action="append", default=[], metavar="ID", help="(repeatable)"
        )
    by_name = parser.add_mutually_exclusive_group()
    by_name.add_argument("--prefix", help="every run and deployment whose name starts so")
    by_name.add_argument(
        "--created-by-cli",
        action="store_true",
        help=f"the same as --prefix {CLI_NAME_PREFIX}",
    )
    parser.add_argument(
        "--keep-data", action="store_true", help="with a prefix: keep the runs' training data"
    )
    parser.add_argument("--dry-run", action="store_true", help="show the plan, delete nothing")
    parser.add_argument("--yes", "-y", action="store_true", help="delete without asking")
    parser.set_defaults(handler=run_cleanup)


async def run_cleanup(ctx: Context, args: argparse.Namespace) -> ExitCode:
    prefix: str | None = CLI_NAME_PREFIX if args.created_by_cli else args.prefix
    if prefix is not None and len(prefix.strip()) < _MIN_PREFIX:
        raise ConfigurationError(
            f"--prefix {prefix!r} is too short to be safe: give at least {_MIN_PREFIX} characters."
        )
    if not (args.deployments or args.runs or args.data or prefix):
        raise ConfigurationError(
            "Name what to delete: --deployment ID, --run ID, --data ID, --prefix PREFIX or "
            "--created-by-cli."
        )
    if ctx.backend.local and args.deployments:
        raise ConfigurationError(
            "Local deployments live only in the process that made them; there is nothing to "
            "delete. Use --run or --data."
        )
    async with open_client(ctx.backend) as client:
        targets, missing = await _plan(ctx, client, args, prefix)
        if not targets:
            ctx.ui.info("Nothing to delete.")
            _report(ctx, targets, [], missing, [], dry_run=args.dry_run)
            return ExitCode.OK
        rows = [(t.kind, t.id, t.name, t.state) for t in targets]
        if not ctx.ui.json_mode or not args.yes:
            ctx.ui.err.print(ctx.ui.objects_table(f"To delete on {ctx.backend.name}", rows))
        if args.dry_run:
            ctx.ui.info(f"Dry run: {len(targets)} objects would be deleted.")
            _report(ctx, targets, [], missing, [], dry_run=True)
            return ExitCode.OK
        if not args.yes:
            _confirm(ctx, len(targets))
        deleted, failed = await _delete(ctx, client, targets)
    _report(ctx, targets, deleted, missing, failed, dry_run=False)
    if failed:
        return exit_code_for(failed[0][1])
    return ExitCode.OK


def _confirm(ctx: Context, count: int) -> None:
    if not sys.stdin.isatty():
        raise ConfigurationError(
            "Refusing to delete without confirmation: there is no terminal to ask on. "
            "Check the plan with --dry-run, then pass --yes."
        )
    if not Confirm.ask(f"Delete these {count} objects?", console=ctx.ui.err, default=False):
        raise ConfigurationError("Nothing was deleted.")


async def _plan(
    ctx: Context, client: AnyClient, args: argparse.Namespace, prefix: str | None
) -> tuple[list[Target], list[Target]]:
    """(what to delete, what was named but is not there)."""
    targets: list[Target] = []
    missing: list[Target] = []
    for deployment_id in args.deployments:
        try:
            info = await client.get_deployment(deployment_id)
        except _GONE:
            missing.append(Target("deployment", deployment_id))
            continue
        targets.append(Target("deployment", info.id, info.name or "", info.state))
    for run_id in args.runs:
        try:
            run = await client.get_tuning_run(run_id)
        except _GONE:
            missing.append(Target("run", run_id))
            continue
        targets.append(Target("run", run.id, run.name or "", run.state, not run.is_finished))
    targets.extend(Target("data", data_id) for data_id in args.data)
    if prefix is not None:
        found = await _matches(
            client, prefix, keep_data=args.keep_data, keep_shared_data=ctx.backend.local
        )
        known = {(t.kind, t.id) for t in targets}
        targets.extend(t for t in found if (t.kind, t.id) not in known)
    targets.sort(key=lambda t: _ORDER.index(t.kind))
    return targets, missing


async def _matches(
    client: AnyClient, prefix: str, *, keep_data: bool, keep_shared_data: bool
) -> list[Target]:
    """The deployments and runs whose name starts with `prefix`, and (unless `keep_data`) the
    data those runs were started with; with `keep_shared_data`, not data another run uses."""
    found = [
        Target("deployment", d.id, d.name or "", d.state)
        for d in await client.list_deployments()
        if (d.name or "").startswith(prefix)
    ]
    runs = await client.list_tuning_runs()
    matched = [r for r in runs if (r.name or "").startswith(prefix)]
    found.extend(Target("run", r.id, r.name or "", r.state, not r.is_finished) for r in matched)
    if keep_data:
        return found
    matched_ids = {r.id for r in matched}
    others = [r for r in runs if r.id not in matched_ids] if keep_shared_data else []
    kept = {ref for r in others for ref in r.data_refs}
    data: dict[str, str] = {}
    for run in matched:
        for ref in run.data_refs:
            if ref not in kept:
                data.setdefault(ref, f"data of {run.name or run.id}")
    found.extend(Target("data", ref, name) for ref, name in data.items())
    return found


async def _delete(
    ctx: Context, client: AnyClient, targets: list[Target]
) -> tuple[list[Target], list[tuple[Target, GraniteTunerError]]]:
    deleted: list[Target] = []
    failed: list[tuple[Target, GraniteTunerError]] = []
    for target in targets:
        try:
            if target.kind == "deployment":
                await client.delete_deployment(target.id)
            elif target.kind == "run":
                if target.active:
                    await client.cancel_tuning_run(target.id)
                await client.delete_tuning_run(target.id)
            else:
                await client.delete_training_data(target.id)
        except _GONE:
            ctx.ui.info(f"{target.kind} {target.id} was already gone.")
            deleted.append(target)
        except GraniteTunerError as exc:
            ctx.ui.error(f"Could not delete {target.kind} {target.id}: {exc}")
            failed.append((target, exc))
        else:
            ctx.ui.success(
                f"Deleted {target.kind} {target.id}" + (f" ({target.name})" if target.name else "")
            )
            deleted.append(target)
    return deleted, failed


def _report(
    ctx: Context,
    targets: list[Target],
    deleted: list[Target],
    missing: list[Target],
    failed: list[tuple[Target, GraniteTunerError]],
    *,
    dry_run: bool,
) -> None:
    for target in missing:
        ctx.ui.warning(f"There is no {target.kind} {target.id} (nothing to delete).")
    ctx.result(
        {
            "dry_run": dry_run,
            "planned": [asdict(t) for t in targets],
            "deleted": [asdict(t) for t in deleted],
            "missing": [asdict(t) for t in missing],
            "failed": [{**asdict(t), "error": str(e)} for t, e in failed],
        },
        ok=not failed,
    )

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
local backend a stored data set is kept while another run still refers to it.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

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
    from granite_tuner.backends.local import LocalClient
    from granite_tuner.backends.watsonx import WatsonxClient
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
        if ctx.backend.local:
            found = await _local_matches(client, prefix, keep_data=args.keep_data)
        else:
            found = await _watsonx_matches(client, prefix, keep_data=args.keep_data)
        known = {(t.kind, t.id) for t in targets}
        targets.extend(t for t in found if (t.kind, t.id) not in known)
    targets.sort(key=lambda t: _ORDER.index(t.kind))
    return targets, missing


async def _watsonx_matches(client: AnyClient, prefix: str, *, keep_data: bool) -> list[Target]:
    watsonx: WatsonxClient = client  # type: ignore[assignment]  # not --local
    found: list[Target] = []
    for deployment in await watsonx.deployments.list():
        if (deployment.name or "").startswith(prefix):
            found.append(
                Target("deployment", deployment.id, deployment.name or "", deployment.state)
            )
    data: dict[str, str] = {}
    for training in await watsonx.trainings.list():
        if (training.name or "").startswith(prefix):
            name = training.name or ""
            found.append(Target("run", training.id, name, training.state, not training.is_finished))
            for asset_id in _training_data_ids(training.raw):
                data.setdefault(asset_id, f"data of {name}")
    if not keep_data:
        found.extend(Target("data", asset_id, name) for asset_id, name in data.items())
    return found


def _training_data_ids(raw: dict[str, Any]) -> list[str]:
    """The data-asset ids a training was started with (read from its `raw` JSON)."""
    entity = raw.get("entity")
    references = entity.get("training_data_references") if isinstance(entity, dict) else None
    ids: list[str] = []
    for reference in references if isinstance(references, list) else []:
        location = reference.get("location") if isinstance(reference, dict) else None
        asset_id = location.get("id") if isinstance(location, dict) else None
        if isinstance(asset_id, str) and asset_id:
            ids.append(asset_id)
    return ids


async def _local_matches(client: AnyClient, prefix: str, *, keep_data: bool) -> list[Target]:
    import anyio.to_thread

    local: LocalClient = client  # type: ignore[assignment]  # --local
    records = await anyio.to_thread.run_sync(local.store.list_runs)
    matched = [r for r in records if (r.name or "").startswith(prefix)]
    found = [Target("run", r.id, r.name or "", r.state, r.is_active) for r in matched]
    if not keep_data:
        kept = {r.data_ref for r in records if not (r.name or "").startswith(prefix)}
        refs = dict.fromkeys(r.data_ref for r in matched if r.data_ref not in kept)
        found.extend(Target("data", ref, "stored training set") for ref in refs)
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

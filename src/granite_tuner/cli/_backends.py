"""Which backend a command talks to, and how its client is built.

- `--local` (with `--home`) picks the offline backend: `LocalClient`, imported only then (it
  imports torch). The model is the command's own `--model` / `--base-model` / `--base`;
  `--nproc N` (tune, resume) trains in N processes (see docs/scaling.md), and
  `--soft-prompt-position` (tune) says where a new run puts its soft prompt.
- Otherwise watsonx.ai. Settings come from the options first (`--url`, `--project-id`,
  `--space-id`, `--iam-url`, `--ca-bundle`), then the environment (`WATSONX_URL`,
  `WATSONX_PROJECT_ID`, `WATSONX_SPACE_ID`, `WATSONX_IAM_URL`, `WATSONX_CA_BUNDLE`), read by
  `WatsonxClient` itself.
- The API key is never an option (it would land in the shell history and in `ps`): it comes
  from `WATSONX_APIKEY` (or a bearer token from `WATSONX_TOKEN`), or, when neither is set and
  stdin is a terminal, from a hidden prompt. `resolve_credentials` runs before the event loop
  starts, so the prompt never blocks it.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from granite_tuner.backends.base import Backend
from granite_tuner.backends.watsonx import RetryPolicy, WatsonxClient
from granite_tuner.errors import ConfigurationError
from granite_tuner.limits import RateLimiter

if TYPE_CHECKING:
    import argparse

__all__ = ["AnyClient", "BackendOptions", "open_client", "resolve_credentials"]

#: A client of either backend: commands use only the backend protocols, never a concrete client.
AnyClient: TypeAlias = Backend

_KEY_PROMPT = "watsonx.ai API key (input hidden; set WATSONX_APIKEY to skip this): "


@dataclass(frozen=True)
class BackendOptions:
    """The backend options of one command line."""

    local: bool = False
    home: Path | None = None
    url: str | None = None
    project_id: str | None = None
    space_id: str | None = None
    iam_url: str | None = None
    ca_bundle: Path | None = None
    max_attempts: int | None = None
    rate_limit: float | None = None
    #: Local runs train in this many processes (`--nproc`; None: one, this one).
    processes: int | None = None
    #: What new local runs train (`--peft-method`; None: the default).
    peft_method: Literal["prefix_tuning", "prompt_tuning"] | None = None
    #: Where new local runs put the soft prompt (`--soft-prompt-position`; None: the default).
    soft_prompt_position: Literal["start", "end"] | None = None
    #: An API key typed at the prompt (never from an option); kept out of reprs.
    api_key: str | None = None

    def __repr__(self) -> str:
        return f"BackendOptions(local={self.local}, url={self.url!r})"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BackendOptions:
        return cls(
            local=bool(getattr(args, "local", False)),
            home=getattr(args, "home", None),
            url=getattr(args, "url", None),
            project_id=getattr(args, "project_id", None),
            space_id=getattr(args, "space_id", None),
            iam_url=getattr(args, "iam_url", None),
            ca_bundle=getattr(args, "ca_bundle", None),
            max_attempts=getattr(args, "max_attempts", None),
            rate_limit=getattr(args, "rate_limit", None),
            processes=getattr(args, "nproc", None),
            peft_method=getattr(args, "peft_method", None),
            soft_prompt_position=getattr(args, "soft_prompt_position", None),
        )

    @property
    def name(self) -> str:
        return "the local backend" if self.local else "watsonx.ai"


def resolve_credentials(options: BackendOptions) -> BackendOptions:
    """Check the watsonx.ai settings a command needs, asking for the API key if need be.

    Raises `ConfigurationError` (exit code 2) naming the option or variable to set.
    """
    if options.local:
        return options
    if options.processes is not None:
        raise ConfigurationError(
            "--nproc trains a local run in several processes: use it with --local."
        )
    if options.soft_prompt_position is not None or options.peft_method is not None:
        option = "--soft-prompt-position" if options.peft_method is None else "--peft-method"
        raise ConfigurationError(
            f"{option} chooses how a local run trains its soft prompt: use it with --local "
            "(watsonx.ai prompt-tunes in its own way)."
        )
    if options.project_id and options.space_id:
        raise ConfigurationError("Give --project-id or --space-id, not both.")
    if not (options.url or os.environ.get("WATSONX_URL")):
        raise ConfigurationError(
            "No watsonx.ai URL: give --url or set WATSONX_URL (for example "
            "https://us-south.ml.cloud.ibm.com), or use --local for the offline backend."
        )
    if not (
        options.project_id
        or options.space_id
        or os.environ.get("WATSONX_PROJECT_ID")
        or os.environ.get("WATSONX_SPACE_ID")
    ):
        raise ConfigurationError(
            "No watsonx.ai project or space: give --project-id or --space-id, or set "
            "WATSONX_PROJECT_ID or WATSONX_SPACE_ID."
        )
    if os.environ.get("WATSONX_APIKEY") or os.environ.get("WATSONX_TOKEN"):
        return options
    if not sys.stdin.isatty():
        raise ConfigurationError(
            "No watsonx.ai credentials: set WATSONX_APIKEY (an IBM Cloud API key) or "
            "WATSONX_TOKEN (a bearer token). The key is never taken as an option."
        )
    key = getpass.getpass(_KEY_PROMPT, stream=sys.stderr).strip()
    if not key:
        raise ConfigurationError("No API key was entered.")
    return BackendOptions(**{**options.__dict__, "api_key": key})


def watsonx_client(options: BackendOptions) -> WatsonxClient:
    """A `WatsonxClient` for these options (the environment fills what they leave out)."""
    settings: dict[str, Any] = {
        "url": options.url,
        "project_id": options.project_id,
        "space_id": options.space_id,
        "iam_url": options.iam_url,
        "api_key": options.api_key,
    }
    if options.ca_bundle is not None:
        if not options.ca_bundle.is_file():
            raise ConfigurationError(f"--ca-bundle {str(options.ca_bundle)!r} is not a file.")
        settings["verify"] = str(options.ca_bundle)
    if options.max_attempts is not None:
        settings["retry"] = RetryPolicy(max_attempts=options.max_attempts)
    if options.rate_limit is not None:
        settings["rate_limiter"] = RateLimiter(requests_per_second=options.rate_limit)
    return WatsonxClient(**{k: v for k, v in settings.items() if v is not None})


@asynccontextmanager
async def open_client(
    options: BackendOptions, *, model: str | None = None
) -> AsyncIterator[AnyClient]:
    """An open client of the chosen backend; `model` is the local backend's model."""
    if options.local:
        from granite_tuner.backends.local import LocalClient

        if options.soft_prompt_position is not None and options.peft_method != "prompt_tuning":
            raise ConfigurationError(
                "--soft-prompt-position places prompt tuning's soft prompt: add --peft-method "
                "prompt_tuning (a prefix, the default, goes in front of the input at every layer)."
            )
        settings: dict[str, Any] = {"home": options.home}
        if options.processes is not None:
            settings["processes"] = options.processes
        if options.peft_method is not None:
            settings["peft_method"] = options.peft_method
        if options.soft_prompt_position is not None:
            settings["soft_prompt_position"] = options.soft_prompt_position
        local = LocalClient(model, **settings) if model else LocalClient(**settings)
        async with local as client:
            yield client
    else:
        async with watsonx_client(options) as client:
            yield client

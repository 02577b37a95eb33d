"""What every command gets: where to write, which backend, and what an interruption leaves.

A command that starts something remote says so with `ctx.left_running(key, note)` as soon as it
knows the object's id, and takes the note back with `ctx.settled(key)` once the object no longer
needs the process. When Ctrl-C arrives, the notes still held are what the user is told was left
running, with the commands that re-attach to it or cancel it.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from granite_tuner.cli._backends import BackendOptions
from granite_tuner.cli._exit import ExitCode
from granite_tuner.cli._render import Renderer

__all__ = ["CLI_NAME_PREFIX", "Context", "Handler"]

#: Names of the runs and deployments the CLI names itself start with this prefix, so that
#: `granite-tuner cleanup --created-by-cli` can find them (and nothing else).
CLI_NAME_PREFIX = "granite-tuner-cli-"


@dataclass
class Context:
    """One command's surroundings."""

    command: str
    ui: Renderer
    backend: BackendOptions
    _notes: dict[str, str] = field(default_factory=dict)

    def left_running(self, key: str, note: str) -> None:
        """If interrupted now, `note` tells the user what is left running and what to do."""
        self._notes[key] = note

    def settled(self, key: str) -> None:
        """The object `key` no longer depends on this process."""
        self._notes.pop(key, None)

    @property
    def notes(self) -> list[str]:
        return list(self._notes.values())

    def result(self, document: dict[str, object], *, ok: bool = True) -> None:
        """Write the command's `--json` document (nothing without `--json`)."""
        if self.ui.json_mode:
            self.ui.document({"ok": ok, "command": self.command, **document})


#: What a subcommand's parser sets as `handler`: run the command, return its exit code.
Handler = Callable[[Context, argparse.Namespace], Awaitable[ExitCode]]

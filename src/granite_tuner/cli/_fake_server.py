"""`granite-tuner fake-server`: the bundled fake watsonx.ai, standalone, for trying the CLI.

Like `serve`, it runs outside the CLI's event loop: the fake serves from its own thread and
the command waits for Ctrl-C (or SIGTERM). It is the one command that imports
`granite_tuner.testing`, and only its public names.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from granite_tuner.errors import ConfigurationError

if TYPE_CHECKING:
    from granite_tuner.cli._context import Context
    from granite_tuner.cli._options import SubParsers

__all__ = ["register", "run_fake_server"]

EXAMPLES = """examples:
  granite-tuner fake-server                     # prints the export lines; Ctrl-C stops it
  granite-tuner fake-server --env-file fake.env # then, in another shell: source fake.env

The printed WATSONX_* variables are all that `granite-tuner` (and WatsonxClient.from_env())
needs: every command of docs/cli.md then runs against the fake, offline."""


def register(subparsers: SubParsers, common: list[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "fake-server",
        help="serve a fake watsonx.ai on 127.0.0.1 (HTTPS) and print its environment",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port to listen on (default: a free one)"
    )
    parser.add_argument(
        "--env-file", type=Path, help="also write the export lines to this file, to `source`"
    )
    parser.set_defaults(handler=None, sync_handler=run_fake_server, json=False)


def run_fake_server(ctx: Context, args: argparse.Namespace) -> int:
    if importlib.util.find_spec("trustme") is None:
        raise ConfigurationError(
            "granite-tuner fake-server needs the testing extra (trustme, for its test CA): "
            "pip install 'granite-tuner[testing]'."
        )
    from granite_tuner.testing import run_until_stopped

    return run_until_stopped(port=args.port, env_file=args.env_file)

"""The fake as a server of its own: `granite-tuner fake-server`, `python -m granite_tuner.testing`.

It serves HTTPS on loopback with a throw-away CA, prints the environment a client needs
(`export` lines for a POSIX shell; `--env-file` writes them to a file to `source`), and runs
until Ctrl-C or SIGTERM. `WatsonxClient.from_env()` and the `granite-tuner` command read exactly
these variables, so anything written for watsonx.ai can be tried against it offline.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from ._fake import FakeWatsonx
from ._server import ServerHandle

__all__ = ["API_KEY", "environment_for", "main", "run_until_stopped"]

#: The API key the printed environment uses (the fake accepts any non-empty key).
API_KEY = "fake-api-key"


def environment_for(fake: FakeWatsonx, server: ServerHandle) -> dict[str, str]:
    """The `WATSONX_*` variables that point a client at `server`."""
    env = {
        "WATSONX_URL": server.url,
        "WATSONX_APIKEY": API_KEY,
        "WATSONX_PROJECT_ID": fake.project_id,
        "WATSONX_IAM_URL": server.url + "/identity/token",
    }
    if server.ca_cert_path is not None:
        env["WATSONX_CA_BUNDLE"] = server.ca_cert_path
    return env


def run_until_stopped(
    *,
    port: int = 0,
    env_file: Path | None = None,
    write: Callable[[str], None] = lambda line: print(line, flush=True),
    fake: FakeWatsonx | None = None,
) -> int:
    """Serve a fake on 127.0.0.1:`port` over HTTPS until SIGINT or SIGTERM; returns 0.

    Must run in the main thread (it waits for the signals).
    """
    fake = fake or FakeWatsonx()
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())
    try:
        with fake.serve(tls=True, port=port) as server:
            exports = [
                f"export {k}={shlex.quote(v)}" for k, v in environment_for(fake, server).items()
            ]
            write(f"# A fake watsonx.ai serves {server.url} (HTTPS, a throw-away test CA).")
            write("# Paste these lines into another shell; Ctrl-C here stops the fake.")
            for line in exports:
                write(line)
            if env_file is not None:
                env_file.write_text("\n".join(exports) + "\n", encoding="utf-8")
                write(f"# The same lines are in {env_file}: source it.")
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: stop, as SIGTERM does
                stop.wait()
            write(f"# Stopped after {len(fake.requests)} requests.")
    finally:
        signal.signal(signal.SIGTERM, _restorable(previous))
    return 0


def _restorable(
    handler: Callable[[int, FrameType | None], object] | int | None,
) -> Callable[[int, FrameType | None], object] | int:
    return signal.SIG_DFL if handler is None else handler


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m granite_tuner.testing",
        description="Serve a fake watsonx.ai on 127.0.0.1 (HTTPS) and print its environment.",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port to listen on (default: a free one)"
    )
    parser.add_argument(
        "--env-file", type=Path, help="also write the export lines to this file, to `source`"
    )
    args = parser.parse_args(argv)
    return run_until_stopped(port=args.port, env_file=args.env_file)

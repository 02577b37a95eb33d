"""Running the app on uvicorn: in the foreground (`serve`), or in a thread (`serve_in_thread`).

Why uvicorn: it is the most used production ASGI server for Python, already a dependency of
the project's examples, and it does what a service needs and this package should not write
itself -- HTTP/1.1 parsing with limits, keep-alive, TLS, and on SIGINT/SIGTERM a graceful
shutdown: it stops accepting connections, lets in-flight requests (streams included) finish
within `graceful_shutdown` seconds, then runs the app's lifespan shutdown, which closes the
model server. Hypercorn would do as well; uvicorn's single asyncio worker matches the one
batching model server per process.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from granite_tuner.errors import ConfigurationError
from granite_tuner.server._app import ServerApp, create_app

if TYPE_CHECKING:
    from granite_tuner.server._config import ServeConfig

__all__ = ["RunningServer", "serve", "serve_in_thread"]

_START_TIMEOUT = 120.0


def _uvicorn() -> Any:
    try:
        import uvicorn
    except ImportError:  # pragma: no cover - depends on the installation
        raise ConfigurationError(
            "granite-tuner serve runs on uvicorn: pip install 'granite-tuner[serve]'."
        ) from None
    return uvicorn


def _uvicorn_config(app: ServerApp, config: ServeConfig, **extra: Any) -> Any:
    uvicorn = _uvicorn()
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        lifespan="on",
        ssl_certfile=str(config.ssl_certfile) if config.ssl_certfile else None,
        ssl_keyfile=str(config.ssl_keyfile) if config.ssl_keyfile else None,
        timeout_graceful_shutdown=config.graceful_shutdown,
        server_header=False,
        # The access log shows method, path and status; never headers or bodies, so no
        # key or token can reach it (they travel in headers and form bodies only).
        access_log=True,
        **extra,
    )


def serve(config: ServeConfig) -> None:
    """Serve until SIGINT or SIGTERM (blocking); in-flight requests finish first."""
    app = create_app(config)
    server = _uvicorn().Server(_uvicorn_config(app, config))
    server.run()
    if not server.started:
        raise ConfigurationError(
            "granite-tuner serve did not start; the log above says why (a run that is not "
            "completed, a base model that is not available offline, a port in use...)."
        )


@dataclass
class RunningServer:
    url: str
    app: ServerApp
    _server: Any
    _thread: threading.Thread

    def stop(self) -> None:
        """Stop as SIGTERM would: in-flight requests finish, then the models are closed."""
        self._server.should_exit = True
        self._thread.join()


@contextmanager
def serve_in_thread(config: ServeConfig, **uvicorn_options: Any) -> Iterator[RunningServer]:
    """Run a server in a background thread (its own event loop) for tests and benchmarks.

    `config.port` 0 picks a free port; the yielded `url` says which. Leaves once stopped.
    """
    app = create_app(config)
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY on accepted connections only for
    # sockets that say they are TCP; without it Nagle's algorithm and delayed ACKs add ~40 ms
    # to every response that is written in two parts (head, then body).
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    port = sock.getsockname()[1]
    server = _uvicorn().Server(_uvicorn_config(app, config, log_level="warning", **uvicorn_options))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="granite-tuner-serve", daemon=True
    )
    thread.start()
    ready = threading.Event()
    try:
        for _ in range(int(_START_TIMEOUT / 0.01)):
            if server.started or not thread.is_alive():
                break
            ready.wait(0.01)
        if not server.started:
            raise ConfigurationError("The server did not start; see the log for why.")
        host = f"[{config.host}]" if ":" in config.host else config.host
        running = RunningServer(f"{config.scheme}://{host}:{port}", app, server, thread)
        yield running
    finally:
        server.should_exit = True
        thread.join(timeout=_START_TIMEOUT)
        sock.close()

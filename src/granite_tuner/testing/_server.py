"""A small HTTP/1.1 server that runs an ASGI app on loopback, in a background thread.

Why not uvicorn or hypercorn: the fake watsonx server has to fail on purpose in ways that a
production server does not let an app fail, because those failures are what a reliable client
must survive:

* drop the connection with no response at all, even after the app has changed its state ("the
  server acted but the answer was lost") -- the app raises `ConnectionDropped`;
* send a truncated body -- the app declares a ``Content-Length``, sends less, then raises
  `ConnectionDropped`;
* stream a body slowly -- every ``http.response.body`` message is written to the socket at once.

A production server also turns an app exception into its own 500 page; this one answers with a
watsonx-shaped JSON error body, so a client under test parses it like a service error.

The server speaks HTTP/1.1 with ``h11`` over ``anyio`` streams, on an asyncio event loop in a
daemon thread of its own, so that tests on any event loop (or on none) can use it:

    with serve_in_thread(app, tls=True) as server:
        httpx.get(server.url + "/ml/v1/...", verify=server.client_ssl_context())

It is a test tool, not a web server: no HTTP/2, no lifespan events, no special handling of
``HEAD``, and every request body is read into memory before the app is called.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import struct
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from concurrent.futures import Future
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, TypeVar
from urllib.parse import unquote_to_bytes

import anyio
import h11
from anyio import TypedAttributeProvider
from anyio.abc import (
    ByteStream,
    SocketAttribute,
    SocketListener,
    SocketStream,
    TaskGroup,
    TaskStatus,
)
from anyio.from_thread import BlockingPortal
from anyio.streams.tls import TLSStream

__all__ = [
    "ASGIApp",
    "ConnectionDropped",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "ServerHandle",
    "serve_in_thread",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("granite_tuner.testing")

_T = TypeVar("_T")

# Larger request bodies are refused with 413 (the fake server holds bodies in memory).
_MAX_REQUEST_BODY = 256 * 1024 * 1024

_READ_SIZE = 65536
# While an app waits for ``http.disconnect``, the connection is read so that a client that goes
# away is noticed; a client that sends pipelined requests meanwhile is not read past this.
_MAX_READ_AHEAD = 1024 * 1024
_TLS_HANDSHAKE_TIMEOUT = 10.0
# Shutdown only cancels tasks and closes sockets, so it takes milliseconds; this bound turns a
# bug that would hang a test run into an error.
_THREAD_JOIN_TIMEOUT = 10.0

# What a read from or a write to a client connection raises when the client is gone.
_STREAM_ERRORS = (
    anyio.EndOfStream,
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    OSError,  # includes ssl.SSLError
)

# How a connection ends: "close" sends FIN after whatever was sent; "reset" makes the kernel
# send RST, so the client sees a connection error instead of an orderly end of stream.
_Ending = Literal["close", "reset"]


class ConnectionDropped(Exception):
    """Raised by an ASGI app to make the server close the TCP connection at once.

    The response is not finished (or not started): what was already sent stays sent. Raise it
    before ``http.response.start`` for no response at all, or after part of the body for a
    truncated body. The connection is reset (TCP RST), so the client sees a connection error,
    never a status code: `httpx.ReadError` from httpx's async clients (asyncio and trio,
    HTTP and HTTPS); the sync ``httpx.Client`` over HTTPS gets
    `httpx.RemoteProtocolError` instead, because Python's ``ssl`` module reports the
    reset as an end of stream.
    """


@dataclass(frozen=True)
class ServerHandle:
    """Where a running server listens, and how a client trusts it."""

    url: str
    """Base URL without a trailing slash, e.g. ``"https://127.0.0.1:54321"``."""
    host: str
    port: int
    scheme: Literal["http", "https"]
    ca_cert_path: str | None
    """PEM file of the throw-away CA that signed the server certificate (HTTPS only); pass it
    to clients as ``verify=...`` (requests, older httpx) or use `client_ssl_context`.
    It is deleted when the server stops."""

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context for clients that trusts the server's test CA (HTTPS only)."""
        if self.ca_cert_path is None:
            raise ValueError(f"the server at {self.url} speaks plain HTTP; it has no test CA")
        return ssl.create_default_context(cafile=self.ca_cert_path)


@contextmanager
def serve_in_thread(
    app: ASGIApp, *, tls: bool = False, host: str = "127.0.0.1", port: int = 0
) -> Iterator[ServerHandle]:
    """Serve `app` on `host`:`port` (0 picks a free port) from a daemon thread.

    The thread runs its own asyncio event loop; the app is awaited there. The context yields
    once the server accepts connections. On exit it stops accepting, cancels the connections
    still open (idle keep-alive ones and ones with a response in flight), closes every socket,
    joins the thread and deletes the temporary certificate files.
    """
    scheme: Literal["http", "https"] = "https" if tls else "http"
    with ExitStack() as files:
        ssl_context: ssl.SSLContext | None = None
        ca_cert_path: str | None = None
        if tls:
            directory = files.enter_context(tempfile.TemporaryDirectory(prefix="granite-tuner-"))
            ssl_context, ca_cert_path = _make_test_tls(directory)
        server = _Server(app, scheme, ssl_context)
        thread = _EventLoopThread()
        thread.start()
        try:
            portal = thread.portal()
            serving, bound_port = portal.start_task(server.serve, host, port)
            url_host = f"[{host}]" if ":" in host else host
            yield ServerHandle(
                url=f"{scheme}://{url_host}:{bound_port}",
                host=host,
                port=bound_port,
                scheme=scheme,
                ca_cert_path=ca_cert_path,
            )
        finally:
            thread.stop()
        if not serving.cancelled() and serving.exception() is not None:
            raise RuntimeError("the fake server stopped serving") from serving.exception()


def _make_test_tls(directory: str) -> tuple[ssl.SSLContext, str]:
    """Make a throw-away CA and a server certificate for loopback; return the server context
    and the path of the CA's PEM file."""
    import trustme  # optional dependency ("testing" extra), only needed for HTTPS

    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1", "localhost", "::1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate.configure_cert(context)
    context.set_alpn_protocols(["http/1.1"])
    ca_cert_path = os.path.join(directory, "test-ca.pem")
    ca.cert_pem.write_to_path(ca_cert_path)
    return context, ca_cert_path


class _EventLoopThread(threading.Thread):
    """A daemon thread running an asyncio event loop that other threads drive via a portal.

    A daemon thread, so that a test run that never leaves ``serve_in_thread`` still exits.
    """

    def __init__(self) -> None:
        super().__init__(name="granite-tuner-fake-server", daemon=True)
        self._portal: Future[BlockingPortal] = Future()

    def run(self) -> None:
        try:
            anyio.run(self._main, backend="asyncio")
        except BaseException as exc:
            if not self._portal.done():
                self._portal.set_exception(exc)
            else:
                logger.exception("fake server: the event loop thread crashed")

    async def _main(self) -> None:
        async with BlockingPortal() as portal:
            self._portal.set_result(portal)
            await portal.sleep_until_stopped()

    def portal(self) -> BlockingPortal:
        """Wait until the loop runs; return the portal that calls into it."""
        return self._portal.result()

    def stop(self) -> None:
        """Cancel every task in the loop, let the loop finish and join the thread."""
        if self._portal.done() and self._portal.exception() is None:
            portal = self._portal.result()
            with suppress(RuntimeError):  # the loop has already finished
                portal.call(portal.stop, True)
        self.join(_THREAD_JOIN_TIMEOUT)
        if self.is_alive():
            raise RuntimeError("the fake server thread did not stop")


class _Server:
    """Accepts connections and serves each one in its own task."""

    def __init__(
        self, app: ASGIApp, scheme: Literal["http", "https"], ssl_context: ssl.SSLContext | None
    ) -> None:
        self._app = app
        self._scheme = scheme
        self._ssl_context = ssl_context

    async def serve(self, host: str, port: int, *, task_status: TaskStatus[int]) -> None:
        """Listen, report the bound port, and serve until cancelled."""
        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        async with listener, anyio.create_task_group() as connections:
            for socket_listener in listener.listeners:
                if isinstance(socket_listener, SocketListener):
                    connections.start_soon(self._accept, socket_listener, connections)
            task_status.started(_extra(listener, SocketAttribute.local_port))

    async def _accept(self, listener: SocketListener, connections: TaskGroup) -> None:
        """Accept connections for ever, each served in its own task."""
        while True:
            try:
                stream = await listener.accept()
            except OSError:  # e.g. out of file descriptors: try again in a moment
                logger.warning("fake server: accept() failed", exc_info=True)
                await anyio.sleep(0.05)
                continue
            connections.start_soon(self._serve_connection, stream)

    async def _serve_connection(self, socket_stream: SocketStream) -> None:
        """Serve one connection until either side closes it; never raise (except cancellation),
        so that one connection cannot take the server down."""
        raw_socket = _extra(socket_stream, SocketAttribute.raw_socket)
        client = _address(_extra(socket_stream, SocketAttribute.remote_address))
        local = _address(_extra(socket_stream, SocketAttribute.local_address))
        stream: ByteStream = socket_stream
        ending: _Ending = "close"
        try:
            if self._ssl_context is not None:
                try:
                    with anyio.fail_after(_TLS_HANDSHAKE_TIMEOUT):
                        stream = await TLSStream.wrap(
                            socket_stream,
                            server_side=True,
                            ssl_context=self._ssl_context,
                            standard_compatible=False,
                        )
                except (TimeoutError, *_STREAM_ERRORS) as exc:
                    # e.g. a client that does not trust the test CA: its business, not ours.
                    logger.debug("fake server: TLS handshake with %s failed: %r", client, exc)
                    return
            connection = _Connection(self._app, stream, self._scheme, client, local)
            ending = await connection.serve()
        except Exception:
            logger.exception("fake server: unexpected error on the connection from %s", client)
            ending = "reset"
        finally:
            if ending == "reset":
                # Linger on, with a timeout of 0: close() then sends RST instead of FIN.
                with suppress(OSError):
                    raw_socket.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
            await anyio.aclose_forcefully(stream)


class _Connection:
    """One client connection: HTTP/1.1 request/response cycles for as long as keep-alive lasts."""

    def __init__(
        self,
        app: ASGIApp,
        stream: ByteStream,
        scheme: Literal["http", "https"],
        client: tuple[str, int] | None,
        server: tuple[str, int] | None,
    ) -> None:
        self._app = app
        self._stream = stream
        self._scheme = scheme
        self._client = client
        self._server = server
        self._h11 = h11.Connection(h11.SERVER)

    async def serve(self) -> _Ending:
        """Serve requests until the connection has to end; say how it ends."""
        while True:
            try:
                ending = await self._serve_one_request()
            except h11.RemoteProtocolError as exc:
                await self._send_error(exc.error_status_hint, "bad_request", str(exc))
                return "close"
            if ending is not None:
                return ending
            if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
                self._h11.start_next_cycle()
            else:  # "Connection: close", HTTP/1.0, or a client that is still sending
                return "close"

    async def _serve_one_request(self) -> _Ending | None:
        """Read a request and run the app on it; None means the connection may be reused."""
        request = await self._next_event()
        if not isinstance(request, h11.Request):
            return "close"  # the client closed an idle connection
        body = await self._read_body(request)
        if body is None:
            return "close"
        exchange = _Exchange(self._h11, self._stream, body)
        failure: Exception | None = None
        try:
            await self._app(self._scope(request), exchange.receive, exchange.send)
        except Exception as exc:
            failure = exc
        return await self._finish(request, exchange, failure)

    async def _finish(
        self, request: h11.Request, exchange: _Exchange, failure: Exception | None
    ) -> _Ending | None:
        """Decide what the app's outcome means for the connection."""
        target = request.target.decode("latin-1")
        if failure is not None and _is_connection_dropped(failure):
            logger.debug("fake server: dropping the connection on %s as the app asked", target)
            return "reset"
        if failure is not None:
            logger.error("fake server: the app raised on %s", target, exc_info=failure)
            if exchange.client_gone or exchange.complete:
                return "close"  # nobody to tell, or the answer is already out
            if exchange.started:
                return "reset"  # too late for a 500: the status line is out
            message = f"{type(failure).__name__}: {failure}"
            sent = await self._send_error(500, "fake_server_error", message)
            return None if sent else "close"
        if exchange.client_gone:
            return "close"
        if not exchange.complete:
            logger.debug("fake server: the app left the response to %s unfinished", target)
            return "reset"
        return None

    async def _next_event(self) -> h11.Event:
        """The next event from the client, reading from the socket as h11 needs."""
        while True:
            event = self._h11.next_event()
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:  # cannot happen: a new cycle starts only when both are DONE
                raise RuntimeError("h11 paused the connection")
            try:
                data = await self._stream.receive(_READ_SIZE)
            except _STREAM_ERRORS:
                data = b""  # h11 turns this into ConnectionClosed or RemoteProtocolError
            self._h11.receive_data(data)

    async def _read_body(self, request: h11.Request) -> bytes | None:
        """The whole request body, or None if the client went away or it is too large."""
        declared = _content_length(request)
        if declared is not None and declared > _MAX_REQUEST_BODY:
            await self._send_error(413, "request_too_large", _too_large_message())
            return None
        if self._h11.they_are_waiting_for_100_continue:
            await self._write(h11.InformationalResponse(status_code=100, headers=[]))
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > _MAX_REQUEST_BODY:
                    await self._send_error(413, "request_too_large", _too_large_message())
                    return None
                chunks.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:
                return None

    async def _send_error(self, status: int, code: str, message: str) -> bool:
        """Send a watsonx-shaped JSON error response if h11 still allows one; say if it went."""
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return False
        body = json.dumps(
            {
                "errors": [{"code": code, "message": message}],
                "trace": "fake",
                "status_code": status,
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if status != 500:  # the request could not be read cleanly: do not reuse the connection
            headers.append((b"connection", b"close"))
        response = h11.Response(status_code=status, headers=headers, reason=_reason(status))
        return await self._write(response, h11.Data(data=body), h11.EndOfMessage())

    async def _write(self, *events: h11.Event) -> bool:
        data = b"".join(self._h11.send(event) or b"" for event in events)
        try:
            await self._stream.send(data)
        except _STREAM_ERRORS:
            return False
        return True

    def _scope(self, request: h11.Request) -> Scope:
        raw_path, _, query_string = request.target.partition(b"?")
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": request.http_version.decode("ascii"),
            "method": request.method.decode("ascii"),
            "scheme": self._scheme,
            "path": unquote_to_bytes(raw_path).decode("utf-8", errors="replace"),
            "raw_path": raw_path,
            "query_string": query_string,
            "root_path": "",
            "headers": list(request.headers),  # names come lower-cased from h11
            "client": self._client,
            "server": self._server,
        }


class _Exchange:
    """The ASGI ``receive`` and ``send`` of one request, and what became of its response."""

    def __init__(self, connection: h11.Connection, stream: ByteStream, body: bytes) -> None:
        self._h11 = connection
        self._stream = stream
        self._body: bytes | None = body
        self._over = anyio.Event()  # set when the response is complete or the client has left
        self._watching = False
        self.started = False
        self.complete = False
        self.client_gone = False

    def client_left(self) -> None:
        self.client_gone = True
        self._over.set()

    async def receive(self) -> Message:
        """The whole body first; then ``http.disconnect`` once the exchange is over."""
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        if self._watching:  # another task of the app is already waiting for the end
            await self._over.wait()
        else:
            # Only now is the connection read while the app runs: an app that never asks does
            # not pay for a second task per request (a third of the throughput).
            self._watching = True
            try:
                async with anyio.create_task_group() as task_group:
                    task_group.start_soon(self._read_until_client_leaves)
                    await self._over.wait()
                    task_group.cancel_scope.cancel()
            finally:
                self._watching = False
        return {"type": "http.disconnect"}

    async def _read_until_client_leaves(self) -> None:
        read_ahead = 0
        try:
            while read_ahead <= _MAX_READ_AHEAD:
                data = await self._stream.receive(_READ_SIZE)
                read_ahead += len(data)
                self._h11.receive_data(data)  # a pipelined request, kept for the next cycle
        except _STREAM_ERRORS:
            self.client_left()

    async def send(self, message: Message) -> None:
        """Write each message to the socket as it comes (so slow streaming really streams)."""
        kind = message["type"]
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("the app sent 'http.response.start' twice")
            status = int(message["status"])
            headers = [(bytes(name), bytes(value)) for name, value in message.get("headers", [])]
            self.started = True
            await self._write(
                h11.Response(status_code=status, headers=headers, reason=_reason(status))
            )
        elif kind == "http.response.body":
            if not self.started or self.complete:
                raise RuntimeError("'http.response.body' outside a started, unfinished response")
            body = bytes(message.get("body", b""))
            if body:
                await self._write(h11.Data(data=body))
            if not message.get("more_body", False):
                await self._write(h11.EndOfMessage())
                self.complete = True
                self._over.set()
        else:
            raise RuntimeError(f"the fake server does not support ASGI message {kind!r}")

    async def _write(self, event: h11.Response | h11.Data | h11.EndOfMessage) -> None:
        # h11 first, even for a client that is gone: it checks what the app sends
        # (h11.LocalProtocolError, e.g. more body than the declared Content-Length).
        data = self._h11.send(event)
        if self.client_gone:
            return  # like other servers: the app is not told, its output is dropped
        try:
            await self._stream.send(data)
        except _STREAM_ERRORS:
            self.client_left()


def _is_connection_dropped(exc: Exception) -> bool:
    """True for ConnectionDropped, also inside an exception group from an app's task group."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(ConnectionDropped) is not None
    return isinstance(exc, ConnectionDropped)


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has validated it
    return None


def _too_large_message() -> str:
    return f"request bodies larger than {_MAX_REQUEST_BODY} bytes are refused by the fake server"


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _extra(provider: TypedAttributeProvider, attribute: _T) -> _T:
    """anyio's typed ``extra()`` (ruff's S610 takes it for Django's ``QuerySet.extra``)."""
    return provider.extra(attribute)  # noqa: S610


def _address(address: object) -> tuple[str, int] | None:
    """(host, port) of an IPv4 or IPv6 socket address, as ASGI wants it."""
    if isinstance(address, tuple) and len(address) >= 2:
        return str(address[0]), int(address[1])
    return None

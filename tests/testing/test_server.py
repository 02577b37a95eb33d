"""Tests of the loopback HTTP/1.1 server that runs the fake watsonx app.

A tiny ASGI app below has one route per behaviour under test. The server runs in its own thread
(asyncio); the clients run on the test's event loop (asyncio and trio). Tests synchronise with
events and with the HTTP exchanges themselves, never with sleeps.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest

from granite_tuner.testing import _server
from granite_tuner.testing._server import (
    ConnectionDropped,
    Message,
    Receive,
    Scope,
    Send,
    ServerHandle,
    serve_in_thread,
)

pytestmark = pytest.mark.anyio


async def _respond(send: Send, status: int, body: bytes = b"", *, length: bool = True) -> None:
    headers = [(b"content-type", b"application/json")]
    if length:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _App:
    """An ASGI app with one route per server behaviour under test.

    It runs in the server's thread; the tests read its attributes after the HTTP exchange that
    set them has finished, or wait on its threading events.
    """

    def __init__(self) -> None:
        self.server_threads: set[threading.Thread] = set()
        self.actions = 0  # how often /drop acted before its answer was lost
        self.saw_disconnect = threading.Event()
        self.holding = threading.Event()
        self.answered_late = threading.Event()
        # anyio events belong to the server's event loop, so they are made there, lazily.
        self._released: anyio.Event | None = None
        self._arrived = 0
        self._all_arrived: anyio.Event | None = None

    def _release_event(self) -> anyio.Event:
        if self._released is None:
            self._released = anyio.Event()
        return self._released

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.server_threads.add(threading.current_thread())
        request = await receive()
        path: str = scope["path"]
        if path.startswith("/echo"):
            await self._echo(scope, request, send)
        elif path == "/chunked":
            await _respond(send, 200, b'{"chunked": true}', length=False)
        elif path == "/drop":
            self.actions += 1  # the server acted, but its answer will be lost
            raise ConnectionDropped
        elif path == "/drop-in-task-group":
            async with anyio.create_task_group():
                raise ConnectionDropped
        elif path == "/truncated":
            headers = [(b"content-length", b"100")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
            raise ConnectionDropped
        elif path == "/unfinished":
            headers = [(b"content-length", b"100")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
        elif path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first", "more_body": True})
            await self._release_event().wait()
            await send({"type": "http.response.body", "body": b"second"})
        elif path == "/release":
            self._release_event().set()
            await _respond(send, 204)
        elif path == "/answer-after-release":
            await self._release_event().wait()
            await _respond(send, 200, b"{}")
            self.answered_late.set()
        elif path == "/boom":
            raise ValueError("kaboom")
        elif path == "/wait-for-disconnect":
            if (await receive())["type"] == "http.disconnect":
                self.saw_disconnect.set()
        elif path == "/hold":
            self.holding.set()
            await anyio.sleep_forever()
        elif path == "/barrier":
            await self._barrier(int(scope["query_string"].decode().removeprefix("n=")))
            await _respond(send, 200, b"{}")
        else:
            await _respond(send, 404, b"{}")

    async def _echo(self, scope: Scope, request: Message, send: Send) -> None:
        headers = {name.decode(): value.decode() for name, value in scope["headers"]}
        echo = {
            "method": scope["method"],
            "scheme": scope["scheme"],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode(),
            "query_string": scope["query_string"].decode(),
            "http_version": scope["http_version"],
            "client_port": scope["client"][1],
            "server_port": scope["server"][1],
            "headers": headers,
            "body": request["body"].decode(),
            "more_body": request["more_body"],
        }
        await _respond(send, 200, json.dumps(echo).encode())

    async def _barrier(self, parties: int) -> None:
        """Return once `parties` requests are in the app at the same time."""
        if self._all_arrived is None:
            self._all_arrived = anyio.Event()
        self._arrived += 1
        if self._arrived == parties:
            self._all_arrived.set()
        await self._all_arrived.wait()


@pytest.fixture
def app() -> _App:
    return _App()


@pytest.fixture(params=["http", "https"])
def server(request: pytest.FixtureRequest, app: _App) -> Iterator[ServerHandle]:
    with serve_in_thread(app, tls=request.param == "https") as handle:
        yield handle


@pytest.fixture
def plain_server(app: _App) -> Iterator[ServerHandle]:
    with serve_in_thread(app) as handle:
        yield handle


def _verify(server: ServerHandle) -> ssl.SSLContext | bool:
    return server.client_ssl_context() if server.scheme == "https" else True


def _client(
    server: ServerHandle, *, read_timeout: float = 5.0, max_connections: int = 10
) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=server.url,
        verify=_verify(server),
        timeout=httpx.Timeout(5.0, read=read_timeout),
        limits=httpx.Limits(max_connections=max_connections),
    )


async def test_request_and_response(server: ServerHandle) -> None:
    async with _client(server) as client:
        response = await client.get("/echo/a%20b?x=1%202&y=")

    assert response.status_code == 200
    assert response.reason_phrase == "OK"
    assert response.headers["content-type"] == "application/json"
    echo = response.json()
    assert echo["method"] == "GET"
    assert echo["scheme"] == server.scheme
    assert echo["path"] == "/echo/a b"  # percent-decoded
    assert echo["raw_path"] == "/echo/a%20b"
    assert echo["query_string"] == "x=1%202&y="  # raw
    assert echo["http_version"] == "1.1"
    assert echo["server_port"] == server.port
    assert echo["headers"]["host"] == f"127.0.0.1:{server.port}"
    assert echo["body"] == ""
    assert echo["more_body"] is False
    assert server.url == f"{server.scheme}://127.0.0.1:{server.port}"


async def test_response_without_content_length_is_chunked(server: ServerHandle) -> None:
    async with _client(server) as client:
        response = await client.get("/chunked")

    assert response.headers["transfer-encoding"] == "chunked"
    assert response.json() == {"chunked": True}


async def test_keep_alive_serves_several_requests_on_one_connection(server: ServerHandle) -> None:
    async with _client(server) as client:
        ports = {(await client.get("/echo")).json()["client_port"] for _ in range(3)}

    assert len(ports) == 1


async def test_connection_close_is_honoured(server: ServerHandle) -> None:
    async with _client(server) as client:
        first = await client.get("/echo", headers={"connection": "close"})
        second = await client.get("/echo")

    assert first.headers["connection"] == "close"
    assert first.json()["client_port"] != second.json()["client_port"]


async def test_request_bodies_with_content_length_and_chunked(server: ServerHandle) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for part in (b'{"in', b'put": ', b'"chunked"}'):
            yield part

    async with _client(server) as client:
        sized = (await client.post("/echo", content=b'{"input": "sized"}')).json()
        chunked = (await client.post("/echo", content=chunks())).json()

    assert sized["body"] == '{"input": "sized"}'
    assert sized["headers"]["content-length"] == "18"
    assert chunked["body"] == '{"input": "chunked"}'
    assert chunked["headers"]["transfer-encoding"] == "chunked"


async def test_many_concurrent_requests(server: ServerHandle) -> None:
    # The app answers none of them until all 100 are inside it at once.
    parties = 100
    statuses: list[int] = []

    async with _client(server, max_connections=parties) as client:

        async def call() -> None:
            statuses.append((await client.get("/barrier", params={"n": parties})).status_code)

        async with anyio.create_task_group() as task_group:
            for _ in range(parties):
                task_group.start_soon(call)

    assert statuses == [200] * parties


@pytest.mark.parametrize("path", ["/drop", "/drop-in-task-group"])
async def test_connection_dropped_before_the_response(
    server: ServerHandle, app: _App, path: str
) -> None:
    async with _client(server) as client:
        # The connection is reset: the client sees a connection error, no status code.
        with pytest.raises(httpx.ReadError):
            await client.get(path)
        after = await client.get("/echo")

    assert after.status_code == 200
    if path == "/drop":
        assert app.actions == 1  # the server acted; only its answer was lost


@pytest.mark.parametrize("path", ["/truncated", "/unfinished"])
async def test_truncated_body(server: ServerHandle, path: str) -> None:
    async with _client(server) as client:
        async with client.stream("GET", path) as response:
            assert response.status_code == 200
            assert response.headers["content-length"] == "100"
            with pytest.raises(httpx.ReadError):
                await response.aread()
        assert (await client.get("/echo")).status_code == 200


async def test_slowly_streamed_body_arrives_in_chunks(server: ServerHandle) -> None:
    async with _client(server) as client, client.stream("GET", "/stream") as response:
        assert response.headers["transfer-encoding"] == "chunked"
        parts = response.aiter_raw()
        received = b""
        while received != b"first":  # arrives while the app still holds back "second"
            received += await anext(parts)
        assert (await client.post("/release")).status_code == 204
        async for part in parts:
            received += part

    assert received == b"firstsecond"


async def test_app_exception_becomes_a_500_json_error(
    server: ServerHandle, caplog: pytest.LogCaptureFixture
) -> None:
    async with _client(server) as client:
        response = await client.get("/boom")
        after = await client.get("/echo")

    assert response.status_code == 500
    assert response.json() == {
        "errors": [{"code": "fake_server_error", "message": "ValueError: kaboom"}],
        "trace": "fake",
        "status_code": 500,
    }
    assert after.status_code == 200
    errors = [r for r in caplog.records if r.name == "granite_tuner.testing"]
    assert [r.levelname for r in errors] == ["ERROR"]
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], ValueError)


async def test_client_timeout_while_the_app_is_slow(server: ServerHandle, app: _App) -> None:
    async with _client(server, read_timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/wait-for-disconnect")

    # The app is told that the client left (ASGI http.disconnect) and ends harmlessly.
    assert await anyio.to_thread.run_sync(app.saw_disconnect.wait, 5.0)
    async with _client(server) as client:
        assert (await client.get("/echo")).status_code == 200


async def test_client_timeout_then_the_app_answers_into_a_closed_connection(
    server: ServerHandle, app: _App
) -> None:
    async with _client(server, read_timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/answer-after-release")

    async with _client(server) as client:
        assert (await client.post("/release")).status_code == 204
        assert await anyio.to_thread.run_sync(app.answered_late.wait, 5.0)
        assert (await client.get("/echo")).status_code == 200


async def test_client_that_does_not_trust_the_ca_fails_harmlessly(app: _App) -> None:
    with serve_in_thread(app, tls=True) as server:
        async with httpx.AsyncClient() as untrusting:  # system CAs only
            with pytest.raises(httpx.ConnectError) as failure:
                await untrusting.get(server.url + "/echo")
        async with _client(server) as trusting:
            response = await trusting.get("/echo")

    assert any(isinstance(exc, ssl.SSLCertVerificationError) for exc in _causes(failure.value))
    assert response.status_code == 200


def _causes(exc: BaseException | None) -> Iterator[BaseException]:
    while exc is not None:
        yield exc
        exc = exc.__cause__ or exc.__context__


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_shutdown_closes_idle_and_in_flight_connections(tls: bool) -> None:
    app = _App()
    in_flight_errors: list[Exception] = []

    with serve_in_thread(app, tls=tls) as server:
        idle_client = httpx.Client(base_url=server.url, verify=_verify(server))
        assert idle_client.get("/echo").status_code == 200  # its connection now idles in the pool

        def hold() -> None:
            with httpx.Client(base_url=server.url, verify=_verify(server)) as client:
                try:
                    client.get("/hold")
                except httpx.TransportError as exc:
                    in_flight_errors.append(exc)

        holder = threading.Thread(target=hold)
        holder.start()
        assert app.holding.wait(5.0)

    (server_thread,) = app.server_threads
    assert not server_thread.is_alive()
    holder.join(5.0)
    assert len(in_flight_errors) == 1
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((server.host, server.port)).close()
    if server.ca_cert_path is not None:
        assert not os.path.exists(server.ca_cert_path)
    idle_client.close()


def test_a_port_in_use_is_reported_and_nothing_is_left_running(plain_server: ServerHandle) -> None:
    def server_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "granite-tuner-fake-server"]

    threads_before = server_threads()
    with pytest.raises(OSError), serve_in_thread(_App(), port=plain_server.port):
        pytest.fail("the second server must not start")

    assert server_threads() == threads_before


def test_client_ssl_context_needs_https(plain_server: ServerHandle) -> None:
    assert plain_server.ca_cert_path is None
    with pytest.raises(ValueError, match="plain HTTP"):
        plain_server.client_ssl_context()


def _raw_exchange(server: ServerHandle, request: bytes, *, until: bytes) -> bytes:
    """Send raw bytes; read until `until` has arrived or the server closes."""
    with socket.create_connection((server.host, server.port), timeout=5.0) as connection:
        connection.sendall(request)
        received = b""
        while until not in received:
            data = connection.recv(65536)
            if not data:
                break
            received += data
        return received


def test_malformed_request_gets_400(plain_server: ServerHandle) -> None:
    received = _raw_exchange(plain_server, b"NONSENSE\r\n\r\n", until=b"}")

    assert received.startswith(b"HTTP/1.1 400 ")
    assert b'"code": "bad_request"' in received


def test_pipelined_requests_are_answered_in_order(plain_server: ServerHandle) -> None:
    requests = b"".join(
        b"GET /echo/" + name + b" HTTP/1.1\r\nHost: x\r\n\r\n" for name in (b"one", b"two")
    )
    received = _raw_exchange(plain_server, requests, until=b"/echo/two")

    assert received.count(b"HTTP/1.1 200 OK") == 2
    assert received.index(b"/echo/one") < received.index(b"/echo/two")


def test_expect_100_continue(plain_server: ServerHandle) -> None:
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    with socket.create_connection((plain_server.host, plain_server.port), timeout=5.0) as conn:
        conn.sendall(head)
        assert conn.recv(65536).startswith(b"HTTP/1.1 100 ")
        conn.sendall(b"{}")
        received = b""
        while b"more_body" not in received:
            received += conn.recv(65536)

    assert received.startswith(b"HTTP/1.1 200 ")


async def test_too_large_request_body_gets_413(
    server: ServerHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_server, "_MAX_REQUEST_BODY", 10)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"x" * 11

    async with _client(server) as client:
        sized = await client.post("/echo", content=b"x" * 11)
        chunked = await client.post("/echo", content=chunks())

    for response in (sized, chunked):
        assert response.status_code == 413
        error: dict[str, Any] = response.json()
        assert error["errors"][0]["code"] == "request_too_large"

"""How much the Evaluator costs over a bare httpx loop doing the same requests.

No latency and no rate limit on the fake server, 32 requests in flight, 5,000 prompts: the
Evaluator (client, retries, limiter, parsing, per-item bookkeeping) against a bare
`httpx.AsyncClient` loop POSTing the same generation requests with 32 workers.

The fake watsonx.ai server runs in a process of its own (this script started with `--serve`),
so this process holds only the client under test: its cost is what the ratio measures, not
the server's work sharing the interpreter. Each measured run gets a fresh server: the fake
records every request it answers, and a server grown by thousands of earlier records answers
more slowly, which would penalise whichever side runs second. The rounds alternate which
side goes first; each round gives one ratio Evaluator / bare httpx (requests/s), and the
median and range of those ratios are printed. A short unmeasured run of each side first
pays the one-off costs of a fresh process (scikit-learn is imported when the first metrics
are computed).

    PYTHONPATH=src .venv/bin/python benchmarks/evaluator_overhead.py [--prompts 5000]
        [--concurrency 32] [--rounds 5]
    PYTHONPATH=src .venv/bin/python benchmarks/evaluator_overhead.py --profile evaluator
        # cProfile of one side only (evaluator or httpx), top functions by own time
    PYTHONPATH=src .venv/bin/python benchmarks/evaluator_overhead.py --in-memory
        # no network at all: both sides on an httpx.MockTransport with a canned answer, so
        # the ratio is the CPU cost of our layers against httpx's own request handling
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import httpx

from granite_tuner import Evaluator, Example, RateLimiter, WatsonxClient
from granite_tuner.backends.watsonx._endpoints import API_VERSION

BASE_MODEL = "ibm/granite-13b-instruct-v2"


@dataclass(frozen=True)
class Server:
    url: str
    token: str
    project_id: str
    ca: str
    in_memory: bool = False


#: What the fake answers a generation request (trimmed to the fields our client reads).
CANNED = json.dumps(
    {
        "model_id": BASE_MODEL,
        "created_at": "2026-12-05T00:00:00.000Z",
        "results": [
            {
                "generated_text": "1",
                "generated_token_count": 1,
                "input_token_count": 12,
                "stop_reason": "eos_token",
            }
        ],
    }
).encode()


def canned(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=CANNED, headers={"content-type": "application/json"})


def http_client(server: Server, limits: httpx.Limits | None = None) -> httpx.AsyncClient:
    """The same kind of client for both sides: TLS to the fake, or the in-memory transport."""
    if server.in_memory:
        return httpx.AsyncClient(transport=httpx.MockTransport(canned))
    verify = ssl.create_default_context(cafile=server.ca)
    return httpx.AsyncClient(verify=verify, limits=limits or httpx.Limits())


def prompt(n: int) -> str:
    return f"Comment: review number {n} of the groomer.\nSatisfaction:\n"


async def bare_httpx(server: Server, count: int, workers: int) -> float:
    """Requests/s of a plain worker pool posting generation requests."""
    send, receive = anyio.create_memory_object_stream[int](workers)
    headers = {"Authorization": f"Bearer {server.token}"}
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=50)
    async with http_client(server, limits) as http:

        async def worker() -> None:
            async with receive.clone() as items:
                async for n in items:
                    response = await http.post(
                        f"{server.url}/ml/v1/text/generation",
                        params={"version": API_VERSION},
                        json={
                            "model_id": BASE_MODEL,
                            "input": prompt(n),
                            "project_id": server.project_id,
                        },
                        headers=headers,
                    )
                    response.raise_for_status()
                    response.json()["results"][0]["generated_text"]

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)
            async with send:
                for n in range(count):
                    await send.send(n)
            receive.close()
        return count / (time.perf_counter() - started)


async def evaluator(server: Server, count: int, workers: int) -> float:
    """Requests/s of the Evaluator over the same requests."""
    memory = http_client(server) if server.in_memory else None
    async with WatsonxClient(
        url=server.url,
        token=server.token,
        project_id=server.project_id,
        verify=server.ca,
        rate_limiter=RateLimiter(max_concurrency=workers),
        http_client=memory,
    ) as client:
        data = (Example(input=prompt(n), output="1") for n in range(count))
        started = time.perf_counter()
        report = await Evaluator(client, max_concurrency=workers).evaluate(data, BASE_MODEL)
        seconds = time.perf_counter() - started
    if memory is not None:
        await memory.aclose()
    assert report.metrics.counts.completed == count, report.metrics.counts
    return count / seconds


Side = Callable[[Server, int, int], Awaitable[float]]


def serve() -> None:
    """`--serve`: run the fake on HTTPS until stdin closes; print where it listens first."""
    from granite_tuner.testing import FakeWatsonx

    fake = FakeWatsonx()
    with fake.serve(tls=True) as handle:
        assert handle.ca_cert_path is not None
        where = Server(handle.url, fake.issue_token(), fake.project_id, handle.ca_cert_path)
        print(json.dumps(where.__dict__), flush=True)
        sys.stdin.read()  # until the parent closes the pipe (or exits)


def start_server() -> tuple[subprocess.Popen[str], Server]:
    """A fresh fake server in a child process, and where it listens."""
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait()
        raise SystemExit(f"the fake server did not start (exit code {process.returncode})")
    return process, Server(**json.loads(line))


def stop_server(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None
    process.stdin.close()
    process.wait(timeout=30)


def measure(side: Side, server: Server | None, count: int, workers: int) -> float:
    """Requests/s of one side: against `server` (in-memory), or a fresh server process."""
    if server is not None:
        return anyio.run(side, server, count, workers)
    process, fresh = start_server()
    try:
        return anyio.run(side, fresh, count, workers)
    finally:
        stop_server(process)


def spread(values: list[float], digits: int = 2) -> str:
    return (
        f"{statistics.median(values):.{digits}f} "
        f"[{min(values):.{digits}f}-{max(values):.{digits}f}]"
    )


def compare(server: Server | None, args: argparse.Namespace) -> None:
    sides: dict[str, Side] = {"bare httpx": bare_httpx, "Evaluator": evaluator}
    rates: dict[str, list[float]] = {name: [] for name in sides}
    ratios: list[float] = []
    for side in sides.values():  # warm-up, not counted: first imports (scikit-learn for the
        measure(side, server, 200, args.concurrency)  # metrics), first schema builds
    for round_ in range(args.rounds):
        order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
        this_round: dict[str, float] = {}
        for name in order:
            this_round[name] = measure(sides[name], server, args.prompts, args.concurrency)
            rates[name].append(this_round[name])
        ratios.append(this_round["Evaluator"] / this_round["bare httpx"])
        print(
            f"round {round_ + 1} ({' first, '.join(order)} second): "
            + ", ".join(f"{name} {rate:.1f} req/s" for name, rate in this_round.items())
            + f", ratio {ratios[-1]:.2f}",
            flush=True,
        )
    where = "in-memory transport" if server is not None else "a fresh fake server process per run"
    print(
        f"{args.prompts} prompts, {args.concurrency} in flight, {where}, "
        f"{args.rounds} alternating rounds; median [min-max]"
    )
    for name, values in rates.items():
        print(f"{name:<11} {spread(values, 1)} requests/s")
    print(f"ratio Evaluator / bare httpx: {spread(ratios)}")


def profile(server: Server | None, args: argparse.Namespace) -> None:
    side: Side = bare_httpx if args.profile == "httpx" else evaluator
    measure(side, server, 200, args.concurrency)  # warm-up: imports, first schemas
    process, fresh = start_server() if server is None else (None, server)
    profiler = cProfile.Profile()
    try:
        profiler.enable()
        rate = anyio.run(side, fresh, args.prompts, args.concurrency)
        profiler.disable()
    finally:
        if process is not None:
            stop_server(process)
    print(f"{side.__name__} under cProfile: {rate:.1f} requests/s (profiling slows it down)")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--profile",
        choices=("evaluator", "httpx"),
        help="profile one side instead (cProfile, top functions by own time)",
    )
    parser.add_argument("--top", type=int, default=40, help="functions shown by --profile")
    parser.add_argument(
        "--in-memory", action="store_true", help="no server: both sides on an in-memory transport"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    run = profile if args.profile is not None else compare
    if args.in_memory:
        run(Server("https://watsonx.invalid", "t" * 32, "p-1", "", in_memory=True), args)
        return
    run(None, args)


if __name__ == "__main__":
    main()

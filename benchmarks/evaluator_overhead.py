"""How much the Evaluator costs over a bare httpx loop doing the same requests.

No latency and no rate limit on the fake server, 32 requests in flight, 5,000 prompts: the
Evaluator (client, retries, limiter, parsing, per-item bookkeeping) against a bare
`httpx.AsyncClient` loop POSTing the same generation requests with 32 workers. Both run in
this process against the same kind of server; the ratio is what our layers leave of it.

    .venv/bin/python benchmarks/evaluator_overhead.py [--prompts 5000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import ssl
import time

import anyio
import httpx

from granite_tuner import Evaluator, Example, RateLimiter, WatsonxClient
from granite_tuner.backends.watsonx._endpoints import API_VERSION
from granite_tuner.testing import FakeWatsonx

BASE_MODEL = "ibm/granite-13b-instruct-v2"


def prompt(n: int) -> str:
    return f"Comment: review number {n} of the groomer.\nSatisfaction:\n"


async def bare_httpx(
    url: str, token: str, project_id: str, ca: str, count: int, workers: int
) -> float:
    """Requests/s of a plain worker pool posting generation requests."""
    send, receive = anyio.create_memory_object_stream[int](workers)
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=50)
    async with httpx.AsyncClient(verify=ca_context(ca), limits=limits) as http:

        async def worker() -> None:
            async with receive.clone() as items:
                async for n in items:
                    response = await http.post(
                        f"{url}/ml/v1/text/generation",
                        params={"version": API_VERSION},
                        json={"model_id": BASE_MODEL, "input": prompt(n), "project_id": project_id},
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


def ca_context(ca: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca)


async def evaluator(
    url: str, token: str, project_id: str, ca: str, count: int, workers: int
) -> float:
    """Requests/s of the Evaluator over the same requests."""
    async with WatsonxClient(
        url=url,
        token=token,
        project_id=project_id,
        verify=ca,
        rate_limiter=RateLimiter(max_concurrency=workers),
    ) as client:
        data = (Example(input=prompt(n), output="1") for n in range(count))
        started = time.perf_counter()
        report = await Evaluator(client, max_concurrency=workers).evaluate(data, BASE_MODEL)
        seconds = time.perf_counter() - started
    assert report.metrics.counts.completed == count, report.metrics.counts
    return count / seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    results: dict[str, float] = {}
    for name, run in (("bare httpx", bare_httpx), ("Evaluator", evaluator)):
        fake = FakeWatsonx()
        with fake.serve(tls=True) as server:
            assert server.ca_cert_path is not None
            token = fake.issue_token()
            results[name] = anyio.run(
                run,
                server.url,
                token,
                fake.project_id,
                server.ca_cert_path,
                args.prompts,
                args.concurrency,
            )
        print(
            f"{name:<11} {results[name]:8.1f} requests/s  "
            f"({args.prompts} prompts, {args.concurrency} in flight)"
        )
    print(f"ratio Evaluator / bare httpx: {results['Evaluator'] / results['bare httpx']:.2f}")


if __name__ == "__main__":
    main()

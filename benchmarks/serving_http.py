"""`granite-tuner serve` vs the in-process `Deployment`: requests/s and time to first token.

For concurrency 1, 4 and 16 it measures, on the same tuned soft prompt and the same prompts
(the shipped grooming test reviews, greedy, `--max-new-tokens` tokens):

- in process: `Deployment.generate` for throughput, `LocalClient.generate_stream` for the time
  to the first piece of text;
- over HTTP: the server on loopback (uvicorn, plain HTTP), `POST .../text/generation` for
  throughput and `.../text/generation_stream` for the time to the first `data:` event.

The overhead ratio is HTTP requests/s over in-process requests/s (1.0 = no overhead). Then, at
concurrency 16 over HTTP, requests spread over 4 tuned soft prompts vs all on one: rows of
different soft prompts of one base model share a batch, so mixing should cost little; the mean
batch size of each side (from the server's `serving_stats`) shows whether they did. Each figure
is measured `--repeats` times, the two sides alternating, and printed as median [min-max].

The tuned runs are made first (4 quick runs of one epoch on a few examples, in a scratch home),
so the script needs nothing but the bundled model. Nothing is downloaded.

    python benchmarks/serving_http.py [--model smollm2-135m-instruct] [--requests 48]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio
import httpx
from pydantic import SecretStr

from granite_tuner.backends.local import LocalClient
from granite_tuner.backends.local._models import DEFAULT_MODEL
from granite_tuner.backends.local._serving import ServingStats
from granite_tuner.data import Example, LabelledSet
from granite_tuner.datasets import test_path, train_path
from granite_tuner.deployment import Deployment
from granite_tuner.generation import GenerationParameters
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.server import ServeConfig, serve_in_thread

KEY = "benchmark-key"
RUNS = ("bench_a", "bench_b", "bench_c", "bench_d")


def _prompts(count: int) -> list[str]:
    with test_path().open(encoding="utf-8") as file:
        prompts = [json.loads(line)["input"] for line in file]
    return [prompts[i % len(prompts)] for i in range(count)]


async def _tune(model: str, home: Path) -> None:
    with train_path().open(encoding="utf-8") as file:
        rows = [json.loads(line) for line in file][:8]
    data = LabelledSet(examples=tuple(Example(input=r["input"], output=r["output"]) for r in rows))
    async with LocalClient(model, home=home) as client:
        for name in RUNS:
            ref = await client.upload_training_data(data, name=name)
            run = await client.start_tuning(
                name=name,
                base_model=model,
                data_ref=ref,
                parameters=PromptTuningParameters(
                    num_epochs=1, batch_size=8, num_virtual_tokens=8, init_method="random"
                ),
            )
            while not (run := await client.get_tuning_run(run.id)).is_finished:  # noqa: ASYNC110
                await anyio.sleep(0.05)
            assert run.state == "completed", run.failure_message


async def _pool(
    count: int, concurrency: int, one: Callable[[int], Awaitable[float]]
) -> list[float]:
    """Run `one(i)` for i < count with `concurrency` workers; the values they return."""
    values: list[float] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            index, next_index = next_index, next_index + 1
            values.append(await one(index))

    async with anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(worker)
    return values


def _mean_batch(before: ServingStats, after: ServingStats) -> float:
    """Prompts per batch between two readings of a client's serving stats."""
    return (after.prompts - before.prompts) / max(1, after.batches - before.batches)


def _stats(values: Sequence[float]) -> str:
    return f"{statistics.median(values):8.2f} [{min(values):.2f}-{max(values):.2f}]"


async def main(args: argparse.Namespace) -> None:
    home = Path(tempfile.mkdtemp(prefix="gt-serve-bench-"))
    print(f"tuning {len(RUNS)} quick runs on {args.model} in {home} ...", flush=True)
    await _tune(args.model, home)
    prompts = _prompts(args.requests)
    parameters = GenerationParameters(decoding_method="greedy", max_new_tokens=args.max_new_tokens)
    body = {"parameters": parameters.to_watsonx()}
    config = ServeConfig(
        model=args.model,
        home=home,
        runs=RUNS,
        port=0,
        api_keys=(SecretStr(KEY),),
        max_concurrency_per_key=None,
    )
    headers = {"authorization": f"Bearer {KEY}"}
    results: dict[str, list[float]] = {}

    def record(name: str, value: float) -> None:
        results.setdefault(name, []).append(value)

    with serve_in_thread(config) as server:
        async with LocalClient(args.model, home=home) as client:
            registry = server.app.context.registry
            assert registry is not None
            runs = {s.run.name: s.run.id for s in registry.tuned if s.run is not None}
            deployments = [await Deployment.create(client, runs[name]) for name in RUNS]
            tuned = deployments[0]
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            async with httpx.AsyncClient(
                base_url=server.url, headers=headers, limits=limits, timeout=600
            ) as http:

                def path(run: str, stream: bool = False) -> str:
                    suffix = "_stream" if stream else ""
                    return f"/ml/v1/deployments/{run}/text/generation{suffix}?version=2025-01-01"

                async def http_one(index: int, run: str = RUNS[0]) -> float:
                    response = await http.post(path(run), json={**body, "input": prompts[index]})
                    response.raise_for_status()
                    return 0.0

                async def http_ttft(index: int) -> float:
                    start = time.perf_counter()
                    payload = {**body, "input": prompts[index]}
                    async with http.stream("POST", path(RUNS[0], True), json=payload) as response:
                        first = 0.0
                        async for line in response.aiter_lines():
                            if not first and line.startswith("data:"):
                                first = time.perf_counter() - start
                    return first

                async def local_one(index: int) -> float:
                    await tuned.generate(prompts[index], parameters)
                    return 0.0

                async def local_ttft(index: int) -> float:
                    start = time.perf_counter()
                    first = None
                    async for _ in client.generate_stream(
                        prompts[index], deployment_id=tuned.id, parameters=parameters
                    ):
                        first = first if first is not None else time.perf_counter() - start
                    assert first is not None
                    return first

                async def rate(one: Callable[[int], Awaitable[float]], concurrency: int) -> float:
                    start = time.perf_counter()
                    await _pool(len(prompts), concurrency, one)
                    return len(prompts) / (time.perf_counter() - start)

                await rate(http_one, 16)  # warm-up: model caches, connections
                await rate(local_one, 16)
                for repeat in range(args.repeats):
                    print(f"round {repeat + 1}/{args.repeats}", flush=True)
                    for concurrency in (1, 4, 16):
                        local = await rate(local_one, concurrency)
                        remote = await rate(http_one, concurrency)
                        record(f"local rps c={concurrency}", local)
                        record(f"http rps c={concurrency}", remote)
                        record(f"ratio c={concurrency}", remote / local)
                        count = min(len(prompts), 4 * concurrency)
                        ttft_local = await _pool(count, concurrency, local_ttft)
                        ttft_http = await _pool(count, concurrency, http_ttft)
                        record(
                            f"local ttft ms c={concurrency}", 1000 * statistics.median(ttft_local)
                        )
                        record(f"http ttft ms c={concurrency}", 1000 * statistics.median(ttft_http))
                    served = registry.client
                    before = served.serving_stats()
                    one = await rate(http_one, 16)
                    middle = served.serving_stats()
                    mixed = await rate(lambda index: http_one(index, RUNS[index % len(RUNS)]), 16)
                    after = served.serving_stats()
                    record("http rps c=16, 1 soft prompt", one)
                    record("http rps c=16, 4 soft prompts mixed", mixed)
                    record("mixed / one", mixed / one)
                    record("mean batch, 1 soft prompt", _mean_batch(before, middle))
                    record("mean batch, 4 soft prompts mixed", _mean_batch(middle, after))
    print(f"\nmodel {args.model}, {args.requests} requests, max_new_tokens {args.max_new_tokens}")
    print("figure                                   median [min-max]")
    for name, values in results.items():
        print(f"{name:40s} {_stats(values)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    anyio.run(main, parser.parse_args())

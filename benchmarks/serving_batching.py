"""Micro-batching in the local server: prompts per second at concurrency 16 vs one at a time.

The local backend's server runs concurrent `generate` calls for one model as one left-padded
batch. This script measures what that buys on this machine: the shipped test prompts (the
grooming reviews, with the classification instruction) through `LocalClient.generate` on the
default model (SmolLM2-135M-Instruct, bundled), greedy, `max_new_tokens` 4 by default:

- one by one: each call awaited before the next starts (each batch holds one prompt);
- batched: `--concurrency` callers at once, as `Evaluator(max_concurrency=16)` would call it.

The two modes alternate, `--concurrency` prompts at a time (one batch, then the same prompts
one by one), so that a machine busy with other work slows both alike; the best round of each
mode gives the throughputs, and the median of the back-to-back pairs a second, sturdier ratio.
It also checks that both modes gave the same answers. Nothing is downloaded; the first run
converts the bundled GGUF file once (~20 s) into the cache under `--home`.

    python benchmarks/serving_batching.py [--prompts 64] [--concurrency 16] [--max-new-tokens 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import anyio
import torch

from granite_tuner.backends.local._models import DEFAULT_MODEL
from granite_tuner.backends.local.client import LocalClient
from granite_tuner.datasets import test_path
from granite_tuner.generation import GenerationParameters, GenerationResult


def _prompts(count: int) -> list[str]:
    with test_path().open(encoding="utf-8") as file:
        prompts = [json.loads(line)["input"] for line in file]
    return [prompts[i % len(prompts)] for i in range(count)]


async def _one_by_one(
    client: LocalClient, model: str, prompts: Sequence[str], parameters: GenerationParameters
) -> tuple[float, list[GenerationResult]]:
    start = time.perf_counter()
    answers = [await client.generate(p, model_id=model, parameters=parameters) for p in prompts]
    return time.perf_counter() - start, answers


async def _concurrent(
    client: LocalClient,
    model: str,
    prompts: Sequence[str],
    parameters: GenerationParameters,
    concurrency: int,
) -> tuple[float, list[GenerationResult]]:
    """`concurrency` workers taking the next prompt as soon as they are free."""
    answers: list[GenerationResult | None] = [None] * len(prompts)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(prompts):
            index = next_index
            next_index += 1
            answers[index] = await client.generate(
                prompts[index], model_id=model, parameters=parameters
            )

    start = time.perf_counter()
    async with anyio.create_task_group() as group:
        for _ in range(concurrency):
            group.start_soon(worker)
    elapsed = time.perf_counter() - start
    done = [answer for answer in answers if answer is not None]
    assert len(done) == len(prompts)
    return elapsed, done


async def run(args: argparse.Namespace) -> None:
    prompts = _prompts(args.prompts)
    parameters = GenerationParameters(decoding_method="greedy", max_new_tokens=args.max_new_tokens)
    async with LocalClient(args.model, home=args.home) as client:
        start = time.perf_counter()
        await client.generate("Comment: warm-up\nSatisfaction:\n", model_id=args.model)
        load_seconds = time.perf_counter() - start
        loaded = await client.models.get(args.model)
        lengths = [len(loaded.tokenizer(p)["input_ids"]) for p in prompts]
        print(f"model: {args.model} on {client.device} ({torch.get_num_threads()} threads)")
        print(f"loaded and warmed up in {load_seconds:.1f} s")
        print(
            f"prompts: {len(prompts)} (tokens: mean {statistics.fmean(lengths):.0f}, "
            f"min {min(lengths)}, max {max(lengths)}), greedy, "
            f"max_new_tokens={args.max_new_tokens}"
        )
        single_times: list[float] = []
        batched_times: list[float] = []
        paired: list[float] = []  # one-by-one time / batched time, same prompts, back to back
        single_answers: list[GenerationResult] = []
        batched_answers: list[GenerationResult] = []
        for round_number in range(1, args.rounds + 1):
            before = client.serving_stats()
            batched_seconds = single_seconds = 0.0
            single_answers, batched_answers = [], []
            for start in range(0, len(prompts), args.concurrency):
                chunk = prompts[start : start + args.concurrency]
                seconds, answers = await _concurrent(
                    client, args.model, chunk, parameters, args.concurrency
                )
                batched_seconds += seconds
                batched_answers += answers
                alone, answers = await _one_by_one(client, args.model, chunk, parameters)
                single_seconds += alone
                single_answers += answers
                paired.append(alone / seconds)
            batches = client.serving_stats().batches - before.batches - len(prompts)
            batched_times.append(batched_seconds)
            single_times.append(single_seconds)
            print(
                f"round {round_number}: batched {len(prompts) / batched_seconds:6.2f} prompts/s "
                f"({batched_seconds:5.1f} s, mean batch {len(prompts) / max(batches, 1):4.1f}); "
                f"one by one {len(prompts) / single_seconds:6.2f} prompts/s "
                f"({single_seconds:5.1f} s)"
            )
    single = len(prompts) / min(single_times)
    batched = len(prompts) / min(batched_times)
    differ = sum(a.text != b.text for a, b in zip(single_answers, batched_answers, strict=True))
    best = f"(best of {args.rounds} rounds)"
    print()
    print(f"one by one:                  {single:6.2f} prompts/s {best}")
    print(f"batched, concurrency {args.concurrency:<3}:     {batched:6.2f} prompts/s {best}")
    print(f"ratio batched / one by one:  {batched / single:6.2f}x")
    print(
        f"ratio, median of {len(paired)} back-to-back pairs of {args.concurrency} prompts: "
        f"{statistics.median(paired):.2f}x"
    )
    print(f"answers that differ between the two modes: {differ} of {len(prompts)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--home", type=Path, default=None, help="granite-tuner cache folder")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    anyio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()

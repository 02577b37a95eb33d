"""Peak memory of a 100,000-prompt evaluation in streaming mode.

The examples are produced lazily and the target is a plain async function (no network: the
point is the Evaluator's own memory, and an in-process fake server would add its own request
log). Prints the growth of the process's peak resident set size over the run, and the same
for a 1,000-prompt run as the baseline.

    .venv/bin/python benchmarks/evaluator_memory.py [--prompts 100000]
"""

from __future__ import annotations

import argparse
import resource
import time

import anyio
import anyio.lowlevel

from granite_tuner import Evaluator, Example


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


async def answer(prompt: str) -> str:
    await anyio.lowlevel.checkpoint()
    return "1" if len(prompt) % 2 else "0"


async def stream(count: int) -> tuple[int, float]:
    data = (
        Example(input=f"Comment: review {n}\nSatisfaction:\n", output=str(n % 2))
        for n in range(count)
    )
    received = 0
    started = time.perf_counter()
    async with Evaluator(max_concurrency=32).stream(data, answer) as results:
        async for _ in results:
            received += 1
    report = results.report
    assert report.metrics.counts.total == count, report.metrics.counts
    return received, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=100_000)
    args = parser.parse_args()
    for count in (1_000, args.prompts):
        before = peak_rss_mb()
        received, seconds = anyio.run(stream, count)
        growth = peak_rss_mb() - before
        print(
            f"{received:>7} prompts streamed in {seconds:6.1f} s: peak RSS growth {growth:6.1f} MB"
        )


if __name__ == "__main__":
    main()

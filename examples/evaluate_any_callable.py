"""Evaluate any async `prompt -> text` function with the Evaluator: no backend, no model server.

Your pipeline may already have classifiers that granite-tuner never built: a rules-based one,
or a call to some other model service. The `Evaluator` scores any async function the way it
scores a watsonx.ai deployment: it runs the shipped dog-grooming test set through two such
functions, at most `--concurrency` calls at a time, records every failed call (its error and
type) instead of stopping, and compares the two on accuracy, F1 and McNemar's test.

    python examples/evaluate_any_callable.py [output-folder] [--concurrency N]

The "remote model" is a stand-in (a sleep, a rule, and injected failures), so this runs
anywhere in a second; replace its body with a call to your own service.
"""

from __future__ import annotations

import argparse
import re
import zlib
from pathlib import Path

import anyio

from granite_tuner import ComparisonReport, Evaluator
from granite_tuner.datasets import test_path

POSITIVE = {
    "happy",
    "fluffy",
    "thank",
    "highly",
    "recommend",
    "love",
    "lovely",
    "gentle",
    "thorough",
}
NEGATIVE = {
    "nobody",
    "disappointed",
    "avoid",
    "unfortunately",
    "wouldn't",
    "never",
    "refund",
    "rude",
}
REVIEW = re.compile(r"Comment:(.*?)(?:\nSatisfaction:|$)", re.DOTALL)


def review_of(prompt: str) -> str:
    """The review inside a test prompt (the instruction and the answer cue are left out)."""
    found = REVIEW.search(prompt)
    return found.group(1).strip() if found else prompt


async def keyword_rules(prompt: str) -> str:
    """A rules-based classifier: no more complaint words than praise words means satisfied."""
    words = re.findall(r"[a-z']+", review_of(prompt).lower())
    score = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
    return "1" if score >= 0 else "0"


class RemoteModel:
    """Stands in for a call to another model service: some latency, answers in words, and
    (decided by a checksum, so every run is the same) a few errors and a few stalls."""

    def __init__(self, latency: float = 0.02) -> None:
        self.latency = latency
        self.in_flight = 0
        self.most_in_flight = 0  # to show that the Evaluator kept its concurrency limit

    async def __call__(self, prompt: str) -> str:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            checksum = zlib.crc32(prompt.encode())
            if checksum % 13 == 0:
                raise ConnectionError("the model service closed the connection")
            # A stalled call: the Evaluator's item_timeout ends it and records a TimeoutError.
            await anyio.sleep(10.0 if checksum % 17 == 0 else self.latency)
            # This "model" reads only the last sentence, where reviews tend to give the verdict.
            last = re.split(r"(?<=[.!?])\s+", review_of(prompt))[-1]
            verdict = await keyword_rules(f"Comment: {last}")
            return "Satisfied." if verdict == "1" else "Unsatisfied."
        finally:
            self.in_flight -= 1


async def main(out: Path, concurrency: int) -> ComparisonReport:
    remote = RemoteModel()
    evaluator = Evaluator(
        max_concurrency=concurrency,  # worker tasks, so at most this many calls at once
        item_timeout=1.0,  # seconds one call may take before it is recorded as failed
        # The remote model answers in words; these map them onto the data's labels "1"/"0".
        label_parser={"satisfied": "1", "unsatisfied": "0"},
        # A plain function may also be paced: rate_limiter=RateLimiter(requests_per_second=5).
    )
    report = await evaluator.compare(
        test_path(), rules=keyword_rules, remote=remote, baseline="rules"
    )
    print(report.to_markdown())

    failed = [item for item in report.reports["remote"].items if item.failed]
    print(f"\n{len(failed)} remote calls failed and were recorded, not lost:")
    for item in failed[:5]:
        print(f"  item {item.index}: {item.error_type}: {item.error}")
    print(f"Most remote calls in flight at once: {remote.most_in_flight} (limit {concurrency})")
    path = report.to_json(out / "callables.json")
    print(f"Report with every item: {path}")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("out/callables"))
    parser.add_argument("--concurrency", type=int, default=8, metavar="N")
    arguments = parser.parse_args()
    arguments.out.mkdir(parents=True, exist_ok=True)
    anyio.run(main, arguments.out, arguments.concurrency)

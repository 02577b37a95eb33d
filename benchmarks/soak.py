"""Soak: thousands of generations through the Evaluator while the fake fails on purpose.

The fake watsonx.ai (HTTPS on loopback, answering at once) injects faults into text-generation
requests at random, from a fixed seed: 10 % answered 429, 2 % answered 503, 1 % dropped
connections (half before the server acted, half after) and 1 % answered later than the client's
read timeout. The Evaluator runs every prompt through a `WatsonxClient` with a small-backoff
retry policy. What must hold: every input index comes back exactly once in the report (nothing
lost, nothing twice), and every item that still failed after its retries is recorded with a
typed error from `granite_tuner.errors`.

    .venv/bin/python benchmarks/soak.py                      # 10,000 requests, seed 7
    .venv/bin/python benchmarks/soak.py --requests 2000 --seed 3

Exits 1 if any item is lost or duplicated, or a failure is untyped.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import anyio

import granite_tuner.errors
from granite_tuner import Evaluator, Example, RateLimiter, RetryPolicy, WatsonxClient
from granite_tuner.testing import FakeWatsonx, Fault, ServerHandle

BASE_MODEL = "ibm/granite-13b-instruct-v2"
GENERATION_PATH = "/text/generation$"


@dataclass(frozen=True)
class FaultMix:
    """The share of generation requests each fault hits; a request gets at most one fault."""

    rate_limited: float = 0.10
    unavailable: float = 0.02
    dropped: float = 0.01
    timed_out: float = 0.01
    #: `Retry-After` sent with the 429s (None: none, so the client backs off on its own).
    retry_after: str | None = None
    #: How long a "timed out" request is held before the fake answers it, in seconds.
    delay: float = 1.0


@dataclass(frozen=True)
class SoakSettings:
    requests: int = 10_000
    seed: int = 7
    max_concurrency: int = 64
    #: The client's read timeout, shorter than the fault's delay.
    timeout: float = 0.5
    retry: RetryPolicy = field(
        default_factory=lambda: RetryPolicy(max_attempts=4, initial_backoff=0.05, max_backoff=0.5)
    )
    #: Set high so that the client's own pacing never limits the soak; the rate it falls to
    #: after 429s (half of this) stays far above what the fake can serve.
    requests_per_second: float = 5_000.0
    mix: FaultMix = field(default_factory=FaultMix)


@dataclass
class SoakResult:
    requests: int
    completed: int
    failed: Counter[str]
    untyped: Counter[str]
    lost: list[int]
    duplicates: list[int]
    attempts: int
    generation_requests_seen: int
    injected: Counter[str]
    objects_created: int
    rate_limited_by_limiter: int
    seconds: float

    @property
    def retries(self) -> int:
        return self.attempts - self.requests

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicates or self.untyped or self.objects_created)


def fault_rules(mix: FaultMix) -> list[Fault]:
    """Rules whose effective rates are the mix's shares.

    The fake tries the rules in order and the first whose draw hits wins, so each rule's
    probability is its share of the requests that the rules before it let through.
    """
    wanted: list[tuple[float, Fault]] = [
        (mix.rate_limited, Fault("status", status=429, retry_after=mix.retry_after)),
        (mix.unavailable, Fault("status", status=503)),
        (mix.dropped / 2, Fault("drop_before")),
        (mix.dropped / 2, Fault("drop_after")),
        (mix.timed_out, Fault("delay", delay=mix.delay)),
    ]
    rules = []
    left = 1.0
    for share, rule in wanted:
        rule.method, rule.path, rule.times = "POST", GENERATION_PATH, None
        rule.probability = min(1.0, share / left) if left > 0 else 0.0
        left -= share
        rules.append(rule)
    return rules


def injected_counts(fake: FakeWatsonx) -> tuple[int, Counter[str]]:
    """How many generation requests the fake saw, and how many of them each fault hit."""
    seen = 0
    counts: Counter[str] = Counter()
    for request in fake.requests:
        if not request.path.endswith("/text/generation"):
            continue
        seen += 1
        if request.fault == "status":
            counts[str(request.status)] += 1
        elif request.fault is not None:
            counts[request.fault] += 1
    return seen, counts


def is_typed(error_type: str) -> bool:
    """Whether an item's error type is one of granite_tuner.errors."""
    error_class = getattr(granite_tuner.errors, error_type, None)
    return isinstance(error_class, type) and issubclass(
        error_class, granite_tuner.errors.GraniteTunerError
    )


def examples(count: int) -> Iterator[Example]:
    """Prompts made as the Evaluator reads them (it never holds more than a few ahead)."""
    for n in range(count):
        yield Example(
            input=f"Comment: soak review {n} of the groomer.\nSatisfaction:\n", output="1"
        )


async def run_soak(fake: FakeWatsonx, server: ServerHandle, settings: SoakSettings) -> SoakResult:
    """Run the soak against a served `fake` (which should be fresh) and tally what came back."""
    for rule in fault_rules(settings.mix):
        fake.faults.add(rule)
    objects_before = len(fake.assets) + len(fake.trainings) + len(fake.deployments)
    client = WatsonxClient(
        url=server.url,
        api_key="soak-test-api-key",
        iam_url=server.url + "/identity/token",
        project_id=fake.project_id,
        verify=server.ca_cert_path,
        retry=settings.retry,
        timeout=settings.timeout,
        rate_limiter=RateLimiter(
            requests_per_second=settings.requests_per_second,
            max_concurrency=settings.max_concurrency,
        ),
    )
    started = time.perf_counter()
    async with client:
        report = await Evaluator(client, max_concurrency=settings.max_concurrency).evaluate(
            examples(settings.requests), BASE_MODEL
        )
    seconds = time.perf_counter() - started

    indices = Counter(item.index for item in report.items)
    failed = Counter(item.error_type for item in report.items if item.error_type is not None)
    seen, injected = injected_counts(fake)
    # Generation creates nothing; any asset, training or deployment now is one made by mistake.
    objects_after = len(fake.assets) + len(fake.trainings) + len(fake.deployments)
    return SoakResult(
        requests=settings.requests,
        completed=sum(1 for item in report.items if not item.failed),
        failed=failed,
        untyped=Counter({name: n for name, n in failed.items() if not is_typed(name)}),
        lost=[i for i in range(settings.requests) if i not in indices],
        duplicates=sorted(i for i, n in indices.items() if n > 1),
        attempts=sum(item.attempts for item in report.items),
        generation_requests_seen=seen,
        injected=injected,
        objects_created=objects_after - objects_before,
        rate_limited_by_limiter=client.rate_limiter.stats.rate_limited,
        seconds=seconds,
    )


def describe(result: SoakResult, settings: SoakSettings) -> str:
    seen = result.generation_requests_seen or 1
    injected = result.injected
    dropped = injected["drop_before"] + injected["drop_after"]
    failures = ", ".join(f"{name} {n}" for name, n in result.failed.most_common()) or "none"
    lines = [
        f"requests (items)        {result.requests}",
        f"completed               {result.completed}",
        f"failed after retries    {result.failed.total()} ({failures})",
        f"untyped failures        {result.untyped.total()}",
        f"lost                    {len(result.lost)}",
        f"duplicates              {len(result.duplicates)}",
        f"objects created         {result.objects_created} (generation creates none)",
        f"attempts                {result.attempts} "
        f"(the fake saw {result.generation_requests_seen})",
        f"retries                 {result.retries} (attempts - items)",
        f"429s seen               {injected['429']} ({injected['429'] / seen:.1%} of requests;"
        f" the limiter counted {result.rate_limited_by_limiter})",
        f"503s seen               {injected['503']} ({injected['503'] / seen:.1%})",
        f"dropped connections     {dropped} ({dropped / seen:.1%}: "
        f"{injected['drop_before']} before, {injected['drop_after']} after handling)",
        f"timeouts                {injected['delay']} ({injected['delay'] / seen:.1%}; held "
        f"{settings.mix.delay:g} s, client timeout {settings.timeout:g} s)",
        f"wall time               {result.seconds:.1f} s "
        f"({result.attempts / result.seconds:.0f} attempts/s)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=10_000, help="items to evaluate")
    parser.add_argument("--seed", type=int, default=7, help="seeds the fake's fault draws")
    parser.add_argument("--concurrency", type=int, default=64, help="Evaluator workers")
    parser.add_argument(
        "--retry-after",
        default=None,
        help="Retry-After value sent with the injected 429s (default: none)",
    )
    args = parser.parse_args()
    settings = SoakSettings(
        requests=args.requests,
        seed=args.seed,
        max_concurrency=args.concurrency,
        mix=FaultMix(retry_after=args.retry_after),
    )
    mix = settings.mix
    print(
        f"soak: {settings.requests} generations, seed {settings.seed}, concurrency "
        f"{settings.max_concurrency}; faults 429 {mix.rate_limited:.0%}, 503 "
        f"{mix.unavailable:.0%}, dropped {mix.dropped:.0%}, timeout {mix.timed_out:.0%} "
        f"(429s with Retry-After: {mix.retry_after or 'none'}); "
        f"retry {settings.retry.max_attempts} attempts, backoff "
        f"{settings.retry.initial_backoff:g}-{settings.retry.max_backoff:g} s"
    )
    fake = FakeWatsonx(seed=settings.seed)
    with fake.serve(tls=True) as server:
        result = anyio.run(run_soak, fake, server, settings)
    print(describe(result, settings))
    if not result.ok:
        print("FAILED: items lost or duplicated, objects made, or untyped failures")
        sys.exit(1)


if __name__ == "__main__":
    main()

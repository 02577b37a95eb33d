"""Our Evaluator vs IBM's `ModelInference.generate(list, concurrency_limit=...)` under rate limits.

Each scenario runs both clients, one after the other, against identical fake watsonx.ai
servers (HTTPS on loopback, a token-bucket rate limit answered with 429, a fixed latency per
generation) and prints, for each: requests/s, share of the limit, requests answered 429, items
completed, items lost, and the ratio ours/official.

    .venv/bin/python benchmarks/rate_limits.py                 # all three scenarios
    .venv/bin/python benchmarks/rate_limits.py --scenario tight

Scenarios (from the issue):
  tight     2 requests/s limit, 150 ms latency, 120 prompts, concurrency 8 requested
  slow      8 requests/s limit, 1.5 s latency, 400 prompts, official SDK at concurrency 10
  at-limit  8 requests/s limit, 150 ms latency, 400 prompts, concurrency 8
"""

from __future__ import annotations

import argparse
import time
import warnings
from dataclasses import dataclass
from typing import Any

import anyio

from granite_tuner import Evaluator, Example, RateLimiter, WatsonxClient
from granite_tuner.testing import FakeWatsonx, ServerHandle

BASE_MODEL = "ibm/granite-13b-instruct-v2"


@dataclass(frozen=True)
class Scenario:
    name: str
    rate: float
    latency: float
    prompts: int
    concurrency: int


SCENARIOS = {
    "tight": Scenario("tight", rate=2.0, latency=0.15, prompts=120, concurrency=8),
    "slow": Scenario("slow", rate=8.0, latency=1.5, prompts=400, concurrency=10),
    "at-limit": Scenario("at-limit", rate=8.0, latency=0.15, prompts=400, concurrency=8),
}


@dataclass(frozen=True)
class Outcome:
    seconds: float
    completed: int
    lost: int
    requests: int
    rate_limited: int
    error: str | None = None

    def requests_per_second(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0


def prompts(scenario: Scenario) -> list[str]:
    return [
        f"Comment: review number {n} of the groomer.\nSatisfaction:\n"
        for n in range(scenario.prompts)
    ]


def generation_statuses(fake: FakeWatsonx) -> list[int | None]:
    return [r.status for r in fake.requests if r.path.endswith("/text/generation")]


def run_ours(scenario: Scenario) -> Outcome:
    fake = FakeWatsonx(rate_limit=scenario.rate, generation_latency=scenario.latency)
    with fake.serve(tls=True) as server:

        async def main() -> Outcome:
            # The caller knows its plan's limit; "concurrency requested" caps in-flight requests
            # where the scenario asks for it; in `slow` the rate decides (rate x latency).
            limiter = RateLimiter(
                requests_per_second=scenario.rate,
                max_concurrency=None if scenario.name == "slow" else scenario.concurrency,
            )
            async with client_for(fake, server, limiter) as client:
                data = [Example(input=p, output="1") for p in prompts(scenario)]
                started = time.perf_counter()
                report = await Evaluator(client).evaluate(data, BASE_MODEL)
                seconds = time.perf_counter() - started
            statuses = generation_statuses(fake)
            return Outcome(
                seconds=seconds,
                completed=report.metrics.counts.completed,
                lost=scenario.prompts - len(report.items),
                requests=len(statuses),
                rate_limited=statuses.count(429),
            )

        return anyio.run(main)


def client_for(fake: FakeWatsonx, server: ServerHandle, limiter: RateLimiter) -> WatsonxClient:
    return WatsonxClient(
        url=server.url,
        token=fake.issue_token(),
        project_id=fake.project_id,
        verify=server.ca_cert_path,
        rate_limiter=limiter,
    )


def run_official(scenario: Scenario) -> Outcome:
    from ibm_watsonx_ai import APIClient, Credentials
    from ibm_watsonx_ai.foundation_models import ModelInference

    fake = FakeWatsonx(rate_limit=scenario.rate, generation_latency=scenario.latency)
    with fake.serve(tls=True) as server, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        credentials = Credentials(
            url=server.url,
            platform_url=server.url,
            token=fake.issue_token(),
            verify=server.ca_cert_path,
        )
        client = APIClient(credentials, project_id=fake.project_id)
        model = ModelInference(model_id=BASE_MODEL, api_client=client)
        before = len(generation_statuses(fake))
        started = time.perf_counter()
        error = None
        completed = 0
        try:
            answers: Any = model.generate(
                prompt=prompts(scenario), concurrency_limit=scenario.concurrency
            )
            completed = sum(1 for a in answers if a and a.get("results"))
        except Exception as exc:  # the SDK gives up on a 429 and returns nothing
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"
        seconds = time.perf_counter() - started
        statuses = generation_statuses(fake)[before:]
    return Outcome(
        seconds=seconds,
        completed=completed,
        lost=scenario.prompts - completed,
        requests=len(statuses),
        rate_limited=statuses.count(429),
        error=error,
    )


def describe(label: str, outcome: Outcome, scenario: Scenario) -> str:
    rps = outcome.requests_per_second()
    share_429 = outcome.rate_limited / outcome.requests if outcome.requests else 0.0
    line = (
        f"  {label:<9} {rps:6.2f} req/s  {rps / scenario.rate:6.1%} of limit  "
        f"429s {outcome.rate_limited:4d}/{outcome.requests:<4d} ({share_429:5.1%})  "
        f"completed {outcome.completed:4d}  lost {outcome.lost:4d}  ({outcome.seconds:5.1f} s)"
    )
    if outcome.error:
        line += f"\n            gave up: {outcome.error}"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    args = parser.parse_args()
    chosen = list(SCENARIOS.values()) if args.scenario == "all" else [SCENARIOS[args.scenario]]
    for scenario in chosen:
        print(
            f"{scenario.name}: limit {scenario.rate:g} req/s, latency {scenario.latency:g} s, "
            f"{scenario.prompts} prompts, concurrency {scenario.concurrency}"
        )
        ours = run_ours(scenario)
        print(describe("ours", ours, scenario))
        official = run_official(scenario)
        print(describe("official", official, scenario))
        if official.completed and official.requests_per_second() > 0:
            ratio = ours.requests_per_second() / official.requests_per_second()
            print(f"  ratio ours/official (req/s): {ratio:.2f}x")
        else:
            print(
                "  ratio ours/official: official completed nothing; "
                f"ours completed {ours.completed}"
            )
        print()


if __name__ == "__main__":
    main()

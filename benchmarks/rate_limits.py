"""Our Evaluator against every way a service may count its rate limit, told the rate or not.

Each run evaluates prompts through `WatsonxClient` + `Evaluator` against a fake watsonx.ai
(HTTPS on loopback, a fixed latency per generation) whose limit counts requests as a token
bucket, a sliding one-second window or a fixed window aligned to the clock's seconds, and
answers 429 above it. For each mode x {told, not told} x scenario it prints the share of the
limit achieved (items answered per second while the service was in use, from the first
request's arrival to the last answer, / limit), the share of calls answered 429, the items
lost and the seconds the whole evaluation took. "Told" is
`RateLimiter(requests_per_second=limit)`; "not told" is `RateLimiter()`, which learns the
limit from the service's answers.

    .venv/bin/python benchmarks/rate_limits.py                  # everything, once (~3 minutes)
    .venv/bin/python benchmarks/rate_limits.py --runs 3         # median and range of 3 runs
    .venv/bin/python benchmarks/rate_limits.py --mode sliding_window --scenario at-limit
    .venv/bin/python benchmarks/rate_limits.py --headers none   # no x-requests-limit-* at all
    .venv/bin/python benchmarks/rate_limits.py --official       # IBM's SDK too, same fakes

Scenarios (from issue 16):
  tight      2 requests/s,  150 ms latency,  60 prompts, concurrency 8
  at-limit   8 requests/s,  150 ms latency, 200 prompts, concurrency 8
  slow       8 requests/s,  1.5 s latency,  200 prompts, concurrency 16 (8/s x 1.5 s needs 12)
  sprinkled  no limit, no latency, 80 prompts, 15 % of calls answered 429 at random with no
             Retry-After; the default `RateLimiter()`, against the same run without faults.

The three modes run in parallel processes (each runs its scenarios one after the other), so
the whole run takes about as long as one mode (~3 minutes). On a small machine the processes
compete for the CPU, which spreads arrival times and costs a few per cent in the slow
scenario; `--jobs 1` runs them one after the other (~9 minutes a run), as the figures in
docs/benchmarks.md were measured.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import anyio

from granite_tuner import Evaluator, Example, RateLimiter, WatsonxClient
from granite_tuner.testing import FakeWatsonx, Fault, ServerHandle
from granite_tuner.testing._ratelimit import RATE_LIMIT_MODES

BASE_MODEL = "ibm/granite-13b-instruct-v2"
Headers = Literal["remaining", "all", "none"]


@dataclass(frozen=True)
class Scenario:
    name: str
    rate: float
    latency: float
    prompts: int
    concurrency: int


SCENARIOS = {
    "tight": Scenario("tight", rate=2.0, latency=0.15, prompts=60, concurrency=8),
    "at-limit": Scenario("at-limit", rate=8.0, latency=0.15, prompts=200, concurrency=8),
    "slow": Scenario("slow", rate=8.0, latency=1.5, prompts=200, concurrency=16),
}
SPRINKLED_PROMPTS = 80
SPRINKLED_SHARE = 0.15


@dataclass(frozen=True)
class Outcome:
    mode: str
    scenario: str
    client: str  # told, not told, IBM's SDK; or, for sprinkled: faults, no faults
    seconds: float  # the whole call, as the caller waits for it
    completed: int
    lost: int
    requests: int
    rate_limited: int
    rate: float  # the limit (0: none)
    # At the service: from the first generation request's arrival to the last one's answer.
    busy_seconds: float = 0.0
    error: str | None = None

    @property
    def share_of_limit(self) -> float:
        """Answers per second while the service was in use, as a share of its limit.

        Timed at the service, so what the caller does before its first request and after
        its last answer (computing metrics, building the report) does not count: that is no
        use of the limit, and IBM's SDK and ours are timed alike.
        """
        if not (self.busy_seconds and self.rate):
            return 0.0
        return self.completed / self.busy_seconds / self.rate

    @property
    def share_429(self) -> float:
        return self.rate_limited / self.requests if self.requests else 0.0


def prompts(count: int) -> list[Example]:
    return [
        Example(input=f"Comment: review number {n} of the groomer.\nSatisfaction:\n", output="1")
        for n in range(count)
    ]


@dataclass(frozen=True)
class Traffic:
    """The generation requests the fake received (from the ``since``-th on)."""

    statuses: list[int | None]
    busy_seconds: float  # from the first one's arrival to the last answer


def generation_traffic(fake: FakeWatsonx, since: int = 0) -> Traffic:
    calls = [r for r in fake.requests if r.path.endswith("/text/generation")][since:]
    answered = [r.answered_at for r in calls if r.answered_at is not None]
    busy = max(answered) - calls[0].received_at if calls and answered else 0.0
    return Traffic([r.status for r in calls], busy)


def client_for(fake: FakeWatsonx, server: ServerHandle, limiter: RateLimiter) -> WatsonxClient:
    return WatsonxClient(
        url=server.url,
        token=fake.issue_token(),
        project_id=fake.project_id,
        verify=server.ca_cert_path,
        rate_limiter=limiter,
    )


def evaluate(
    fake: FakeWatsonx, limiter: RateLimiter, count: int, concurrency: int | None
) -> tuple[float, int, Traffic]:
    """Evaluate ``count`` prompts; (seconds, completed, what the fake saw)."""
    with fake.serve(tls=True) as server:

        async def main() -> tuple[float, int]:
            async with client_for(fake, server, limiter) as client:
                started = time.perf_counter()
                report = await Evaluator(client, max_concurrency=concurrency).evaluate(
                    prompts(count), BASE_MODEL
                )
                return time.perf_counter() - started, report.metrics.counts.completed

        seconds, completed = anyio.run(main)
    return seconds, completed, generation_traffic(fake)


def run_ours(mode: str, scenario: Scenario, told: bool, headers: Headers) -> Outcome:
    fake = FakeWatsonx(
        rate_limit=scenario.rate,
        rate_limit_mode=mode,  # type: ignore[arg-type]
        rate_limit_headers=headers,
        generation_latency=scenario.latency,
    )
    limiter = RateLimiter(requests_per_second=scenario.rate) if told else RateLimiter()
    seconds, completed, traffic = evaluate(fake, limiter, scenario.prompts, scenario.concurrency)
    return Outcome(
        mode=mode,
        scenario=scenario.name,
        client="told" if told else "not told",
        seconds=seconds,
        completed=completed,
        lost=scenario.prompts - completed,
        requests=len(traffic.statuses),
        rate_limited=traffic.statuses.count(429),
        rate=scenario.rate,
        busy_seconds=traffic.busy_seconds,
    )


def run_official(mode: str, scenario: Scenario, headers: Headers) -> Outcome:
    """IBM's `ModelInference.generate(list, concurrency_limit=...)` on the same fake."""
    from ibm_watsonx_ai import APIClient, Credentials
    from ibm_watsonx_ai.foundation_models import ModelInference

    fake = FakeWatsonx(
        rate_limit=scenario.rate,
        rate_limit_mode=mode,  # type: ignore[arg-type]
        rate_limit_headers=headers,
        generation_latency=scenario.latency,
    )
    texts = [example.input for example in prompts(scenario.prompts)]
    with fake.serve(tls=True) as server, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        credentials = Credentials(
            url=server.url, platform_url=server.url, token=fake.issue_token(),
            verify=server.ca_cert_path,
        )  # fmt: skip
        model = ModelInference(
            model_id=BASE_MODEL, api_client=APIClient(credentials, project_id=fake.project_id)
        )
        before = len(generation_traffic(fake).statuses)
        started = time.perf_counter()
        error, completed = None, 0
        try:
            answers: Any = model.generate(
                prompt=texts, concurrency_limit=min(10, scenario.concurrency)
            )
            completed = sum(1 for a in answers if a and a.get("results"))
        except Exception as exc:  # the SDK gives up on a 429 it cannot absorb
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
        seconds = time.perf_counter() - started
        traffic = generation_traffic(fake, since=before)
    return Outcome(
        mode=mode,
        scenario=scenario.name,
        client="IBM's SDK",
        seconds=seconds,
        completed=completed,
        lost=scenario.prompts - completed,
        requests=len(traffic.statuses),
        rate_limited=traffic.statuses.count(429),
        rate=scenario.rate,
        busy_seconds=traffic.busy_seconds,
        error=error,
    )


def run_sprinkled(faults: bool) -> Outcome:
    fake = FakeWatsonx()
    if faults:
        fake.faults.add(
            Fault(
                "status",
                path=r"/text/generation$",
                status=429,
                probability=SPRINKLED_SHARE,
                times=None,
            )
        )
    seconds, completed, traffic = evaluate(fake, RateLimiter(), SPRINKLED_PROMPTS, None)
    return Outcome(
        mode="-",
        scenario="sprinkled",
        client="faults" if faults else "no faults",
        seconds=seconds,
        completed=completed,
        lost=SPRINKLED_PROMPTS - completed,
        requests=len(traffic.statuses),
        rate_limited=traffic.statuses.count(429),
        rate=0.0,
        busy_seconds=traffic.busy_seconds,
    )


def run_mode(
    mode: str, scenarios: list[Scenario], told: list[bool], args: argparse.Namespace
) -> None:
    """Every chosen scenario of one mode, as JSON lines on stdout."""
    for scenario in scenarios:
        for is_told in told:
            print(json.dumps(asdict(run_ours(mode, scenario, is_told, args.headers))), flush=True)
        if args.official:
            print(json.dumps(asdict(run_official(mode, scenario, args.headers))), flush=True)


def collect(args: argparse.Namespace) -> list[Outcome]:
    """One run of everything chosen: modes in parallel processes, then the sprinkled case."""
    modes = list(RATE_LIMIT_MODES) if args.mode == "all" else [args.mode]
    outcomes: list[Outcome] = []
    if args.scenario != "sprinkled":
        base = [sys.executable, str(Path(__file__).resolve()), "--worker"]
        base += ["--scenario", args.scenario, "--told", args.told, "--headers", args.headers]
        base += ["--official"] if args.official else []
        running: list[subprocess.Popen[str]] = []
        for mode in modes:
            while len(running) >= args.jobs:
                outcomes += finish(running.pop(0))
            running.append(
                subprocess.Popen([*base, "--mode", mode], stdout=subprocess.PIPE, text=True)
            )
        for process in running:
            outcomes += finish(process)
    if args.scenario in ("all", "sprinkled"):
        outcomes += [run_sprinkled(faults=False), run_sprinkled(faults=True)]
    return outcomes


def finish(process: subprocess.Popen[str]) -> list[Outcome]:
    out, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a worker failed with exit status {process.returncode}")
    return [Outcome(**json.loads(line)) for line in out.splitlines() if line.startswith("{")]


def describe(runs: list[list[Outcome]]) -> None:
    """Median [min-max] over runs, one line per mode x scenario x client."""
    keys = list(dict.fromkeys((o.mode, o.scenario, o.client) for o in runs[0]))
    print(f"{'mode':<15} {'scenario':<10} {'client':<10} {'share of limit':>22} "
          f"{'429s':>20} {'lost':>6} {'seconds':>18}")  # fmt: skip
    for key in keys:
        same = [o for run in runs for o in run if (o.mode, o.scenario, o.client) == key]
        shares = [o.share_of_limit for o in same]
        rejected = [o.share_429 for o in same]
        seconds = [o.seconds for o in same]
        share_text = "-" if key[1] == "sprinkled" else spread(shares, "{:.3f}")
        print(
            f"{key[0]:<15} {key[1]:<10} {key[2]:<10} {share_text:>22} "
            f"{spread(rejected, '{:.1%}'):>20} {max(o.lost for o in same):>6} "
            f"{spread(seconds, '{:.2f}'):>18}"
        )
        for o in same:
            if o.error:
                print(f"    gave up: {o.error}")


def spread(values: list[float], fmt: str) -> str:
    middle = fmt.format(statistics.median(values))
    if len(values) == 1:
        return middle
    return f"{middle} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=[*RATE_LIMIT_MODES, "all"], default="all")
    parser.add_argument("--scenario", choices=[*SCENARIOS, "sprinkled", "all"], default="all")
    parser.add_argument("--told", choices=["yes", "no", "both"], default="both")
    parser.add_argument("--headers", choices=["remaining", "all", "none"], default="remaining")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=3, help="modes run in parallel")
    parser.add_argument("--official", action="store_true", help="also run IBM's SDK")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    told = {"yes": [True], "no": [False], "both": [True, False]}[args.told]
    if args.worker:
        chosen = list(SCENARIOS.values()) if args.scenario == "all" else [SCENARIOS[args.scenario]]
        run_mode(args.mode, chosen, told, args)
        return
    print(f"limit headers: {args.headers}; runs: {args.runs}", flush=True)
    runs = []
    for number in range(args.runs):
        started = time.perf_counter()
        runs.append(collect(args))
        print(f"run {number + 1} took {time.perf_counter() - started:.0f} s", flush=True)
    describe(runs)


if __name__ == "__main__":
    main()

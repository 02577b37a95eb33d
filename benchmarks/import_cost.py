"""What starting granite-tuner costs: wall time and peak memory of a fresh interpreter.

Each case runs in its own fresh `python` process; the rounds alternate the cases (each round
starts one case later), so that a change in the machine's load falls on all of them. Printed per
case: median and range of the wall time (start to exit) and of the peak RSS, and the ratio of
the medians to `import ibm_watsonx_ai.foundation_models` (IBM's SDK, when installed).

Byte code: an installed package ships its `.pyc` files, so every case runs once first, unmeasured,
with PYTHONDONTWRITEBYTECODE removed from its environment, and is then measured with its
byte-code cache in place (otherwise a source checkout would be timed compiling itself).

    PYTHONPATH=src .venv/bin/python benchmarks/import_cost.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

IBM = "import ibm_watsonx_ai.foundation_models"


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]


@dataclass(frozen=True)
class Sample:
    seconds: float
    peak_mb: float


def cli_argv() -> list[str]:
    """`granite-tuner --help` as installed next to this interpreter, else `python -m`."""
    script = Path(sys.executable).parent / "granite-tuner"
    if script.exists() or shutil.which("granite-tuner") == str(script):
        return [str(script), "--help"]
    return [sys.executable, "-m", "granite_tuner.cli", "--help"]


def cases() -> list[Case]:
    python = sys.executable
    found = [
        Case("python -c pass (interpreter start)", [python, "-c", "pass"]),
        Case("import httpx, pydantic, anyio", [python, "-c", "import httpx, pydantic, anyio"]),
        Case("import granite_tuner", [python, "-c", "import granite_tuner"]),
        Case("granite-tuner --help", cli_argv()),
    ]
    if importlib.util.find_spec("ibm_watsonx_ai") is not None:
        found.append(Case(IBM, [python, "-c", IBM]))
    if importlib.util.find_spec("openai") is not None:
        found.append(Case("import openai", [python, "-c", "import openai"]))
    return found


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def measure(case: Case, env: dict[str, str]) -> Sample:
    """One fresh process: wall time from start to exit, and its own peak RSS (wait4)."""
    started = time.perf_counter()
    process = subprocess.Popen(
        case.argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{case.name}: exited with {process.returncode}")
    return Sample(seconds=seconds, peak_mb=usage.ru_maxrss / 1024)  # ru_maxrss: KiB on Linux


def spread(values: list[float], digits: int) -> str:
    return (
        f"{statistics.median(values):.{digits}f} "
        f"[{min(values):.{digits}f}-{max(values):.{digits}f}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    env = environment()
    chosen = cases()
    for case in chosen:  # warm-up: writes the byte-code caches, fills the page cache
        measure(case, env)
    samples: dict[str, list[Sample]] = {case.name: [] for case in chosen}
    for round_ in range(args.rounds):
        shift = round_ % len(chosen)
        for case in chosen[shift:] + chosen[:shift]:
            samples[case.name].append(measure(case, env))

    ibm = samples.get(IBM)
    ibm_s = statistics.median(s.seconds for s in ibm) if ibm else None
    ibm_mb = statistics.median(s.peak_mb for s in ibm) if ibm else None
    print(f"{args.rounds} alternating rounds, each case in a fresh process; median [min-max]")
    print(f"{'case':<40} {'wall s':<22} {'peak RSS MB':<22} vs IBM's SDK (time, memory)")
    for name, runs in samples.items():
        seconds = [s.seconds for s in runs]
        peaks = [s.peak_mb for s in runs]
        versus = ""
        if ibm_s is not None and ibm_mb is not None:
            versus = (
                f"{statistics.median(seconds) / ibm_s:.2f}x, "
                f"{statistics.median(peaks) / ibm_mb:.2f}x"
            )
        print(f"{name:<40} {spread(seconds, 3):<22} {spread(peaks, 1):<22} {versus}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Record the `granite-tuner` command in action as SVG terminal captures for the docs.

Runs the project's own CLI in-process (`granite_tuner.cli.main`, with a recording rich console)
against the bundled fake watsonx.ai over HTTPS, on the shipped dog-grooming review set:

    tune -> deploy -> compare -> cleanup

and writes `cli-tune.svg`, `cli-deploy.svg`, `cli-compare.svg` and `cli-cleanup.svg`. The fake's
"models" answer from a rule (the tuned deployment knows most test labels, the base model
answers "1"), so the numbers show the plumbing, not machine learning. Takes a few seconds.

    python scripts/capture_cli.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from granite_tuner.cli import main
from granite_tuner.datasets import test_path, train_path
from granite_tuner.testing import FakeWatsonx, GenerationCall

BASE_MODEL = "ibm/granite-13b-instruct-v2"
WIDTH = 100


def rule_answers() -> dict[str, str]:
    """The test set's labels, with about one in eight flipped: the 'tuned' model's answers."""
    answers: dict[str, str] = {}
    with test_path().open(encoding="utf-8") as lines:
        for line in lines:
            example = json.loads(line)
            label: str = example["output"]
            if zlib.crc32(example["input"].encode()) % 8 == 0:
                label = "0" if label == "1" else "1"
            answers[example["input"]] = label
    return answers


class Recorder:
    """Runs commands against one fake and saves what each showed as an SVG."""

    def __init__(self, out: Path, connection: list[str], display: dict[str, str]) -> None:
        self.out = out
        self.connection = connection
        #: Arguments shown otherwise than passed (long temporary paths as short file names).
        self.display = display

    def capture(self, name: str, argv: list[str], hidden: tuple[str, ...] = ()) -> str:
        """Run `granite-tuner ARGV... HIDDEN...`, save `cli-NAME.svg`; returns the text."""
        console = Console(record=True, file=io.StringIO(), width=WIDTH, color_system="truecolor")
        shown = " ".join(self.display.get(part, part) for part in argv)
        console.print(f"[bold green]$[/] granite-tuner {shown}", highlight=False)
        code = main([*argv, *hidden, *self.connection], console=console)
        if code != 0:
            raise SystemExit(f"granite-tuner {argv[0]} exited {code}:\n{console.export_text()}")
        text = console.export_text(clear=False)
        path = self.out / f"cli-{name}.svg"
        console.save_svg(str(path), title=f"granite-tuner {argv[0]}")
        print(f"wrote {path}")
        return text


@contextmanager
def environment(**values: str) -> Iterator[None]:
    """The settings a user keeps in the environment, set for the block and then restored."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def capture_all(out: Path) -> list[Path]:
    """Write the captures into `out`; their paths."""
    answers = rule_answers()

    def answer(call: GenerationCall) -> str:
        return answers.get(call.input, "1") if call.deployment_id else "1"

    fake = FakeWatsonx(training_polls=4, metrics_per_epoch=3, answer=answer)
    train, test = str(train_path()), str(test_path())
    with (
        fake.serve(tls=True) as server,
        environment(
            WATSONX_URL=server.url,
            WATSONX_PROJECT_ID=fake.project_id,
            WATSONX_APIKEY="capture-only-key",
        ),
    ):
        connection = ["--iam-url", server.url + "/identity/token",
                      "--ca-bundle", str(server.ca_cert_path)]  # fmt: skip
        recorder = Recorder(out, connection, {train: "train.jsonl", test: "test.jsonl"})
        fast = ("--poll-interval", "0.05")
        recorder.capture(
            "tune",
            ["tune", train, "--base-model", BASE_MODEL, "--epochs", "5", "--learning-rate", "0.3",
             "--name", "reviews-pt"],
            fast,
        )  # fmt: skip
        (run_id,) = fake.trainings
        recorder.capture("deploy", ["deploy", run_id], fast)
        (deployment_id,) = fake.deployments
        recorder.capture(
            "compare", ["compare", test, "--tuned", deployment_id, "--base", BASE_MODEL]
        )
        recorder.capture("cleanup", ["cleanup", "--prefix", "reviews-pt", "--yes"])
    return [out / f"cli-{name}.svg" for name in ("tune", "deploy", "compare", "cleanup")]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/img"), metavar="DIR")
    arguments = parser.parse_args()
    arguments.out.mkdir(parents=True, exist_ok=True)
    capture_all(arguments.out.resolve())
    sys.exit(0)

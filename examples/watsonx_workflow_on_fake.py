"""The prompt-tuning workflow on watsonx.ai, run against the bundled fake server.

Check and upload the training data, prompt-tune a Granite model and wait for it (with a live
loss per epoch), draw the learning curve, deploy the tuned model, compare it with the base
model on a test set within a rate limit, and clean up. Swap the client for
`WatsonxClient.from_env()` and the same code runs on IBM watsonx.ai.

    python examples/watsonx_workflow_on_fake.py [output-folder]

The fake's "models" answer from a rule (the tuned deployment reads the label hidden in the
test prompt; the base model always answers "1"), so the numbers show the plumbing, not
machine learning. The local backend does the real thing offline.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import anyio

from granite_tuner import (
    Deployment,
    EpochCompleted,
    Evaluator,
    Example,
    RateLimiter,
    StateChanged,
    Tuner,
    TuningEvent,
    WatsonxClient,
)
from granite_tuner.testing import FakeWatsonx, GenerationCall

DATA = Path(__file__).parent / "data" / "grooming_reviews_sample.jsonl"
BASE_MODEL = "ibm/granite-13b-instruct-v2"
PARAMETERS = {
    "num_epochs": 5,
    "learning_rate": 0.3,
    "batch_size": 8,
    "accumulate_steps": 1,
    "max_input_tokens": 256,
    "max_output_tokens": 2,
    "init_method": "text",
    "init_text": "Classify the customer review as satisfied (1) or unsatisfied (0).",
    "verbalizer": "{{input}}",
}
LABEL = re.compile(r"#(\d)$")


def fake_answer(call: GenerationCall) -> str:
    """Stand-in models: the tuned one has "learned" the label, the base one always says 1."""
    found = LABEL.search(call.input.strip())
    if call.deployment_id is not None and found:
        return found.group(1)
    return "1."


def training_rows() -> list[dict[str, str]]:
    """The sample reviews, repeated with a visit number to reach the 50 examples required."""
    sample = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines()]
    return [
        {
            "input": row["input"].replace("Comment: ", f"Comment (visit {n}): "),
            "output": row["output"],
        }
        for n in range(3)
        for row in sample
    ]


def show(event: TuningEvent) -> None:
    if isinstance(event, StateChanged):
        print(f"  run {event.run_id[:8]}: {event.state}")
    elif isinstance(event, EpochCompleted):
        print(f"  epoch {event.epoch + 1}/{event.num_epochs}: mean loss {event.mean_loss:.4f}")


async def main(out: Path) -> None:
    fake = FakeWatsonx(training_polls=4, deployment_polls=2, rate_limit=8.0, answer=fake_answer)
    with fake.serve(tls=True) as server:
        async with WatsonxClient(
            url=server.url,
            api_key="demo-api-key-not-secret",
            iam_url=server.url + "/identity/token",
            project_id=fake.project_id,
            verify=server.ca_cert_path,
            rate_limiter=RateLimiter(requests_per_second=8.0),
        ) as client:
            print(f"watsonx.ai (fake) at {server.url}")
            tuner = Tuner(
                client,
                base_model=BASE_MODEL,
                training_data=training_rows(),
                parameters=PARAMETERS,
                name="grooming-reviews",
                poll_interval=(0.05, 0.5),
                on_event=show,
            )
            result = await tuner.run()
            losses = ", ".join(f"{loss:.3f}" for loss in result.loss_per_epoch)
            print(f"Tuned model {result.model_id}; loss per epoch: {losses}")
            curve = result.plot_learning_curve(out / "learning_curve.png")
            print(f"Learning curve: {curve}")

            test_set = [
                Example(input=f"{row['input']}#{row['output']}", output=row["output"])
                for row in training_rows()[:24]
            ]
            async with await Deployment.create(
                client, result, delete_on_exit=True, poll_interval=(0.05, 0.5)
            ) as tuned:
                print(f"Deployment {tuned.id} is {tuned.state} as {tuned.serving_name}")
                report = await Evaluator(client, parameters={"max_new_tokens": 2}).compare(
                    test_set, tuned=tuned, base=BASE_MODEL, baseline="base"
                )
            print()
            print(report.to_markdown())
            report.to_json(out / "comparison.json")
            await tuner.delete()
            print(f"\nCleaned up; the report is in {out / 'comparison.json'}.")
        print(f"The fake server saw {len(fake.requests)} requests.")


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "out/watsonx-fake")
    folder.mkdir(parents=True, exist_ok=True)
    anyio.run(main, folder)

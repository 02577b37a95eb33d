"""The prompt-tuning workflow on watsonx.ai, run against the bundled fake server.

Upload a training file, prompt-tune a Granite model, wait for the run, read its loss per
epoch, deploy the tuned model, ask it and the base model about a few reviews (concurrently,
within a concurrency limit), and clean up. Point `WatsonxClient` at the real service
instead (`WatsonxClient.from_env()`) and the same code runs there.

    python examples/watsonx_workflow_on_fake.py
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from statistics import fmean

import anyio

from granite_tuner import WatsonxClient
from granite_tuner.testing import FakeWatsonx

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


async def wait_for(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll with a growing interval; the Tuner (next release) does this for you."""
    delay = 0.05
    while not await check():
        await anyio.sleep(delay)
        delay = min(delay * 2, 2.0)
    print(f"  {what}")


async def main() -> None:
    fake = FakeWatsonx(training_polls=3, deployment_polls=2)
    with fake.serve(tls=True) as server:
        async with WatsonxClient(
            url=server.url,
            api_key="demo-api-key-not-secret",
            iam_url=server.url + "/identity/token",
            project_id=fake.project_id,
            verify=server.ca_cert_path,
        ) as client:
            print(f"watsonx.ai (fake) at {server.url}")
            tunable = await client.foundation_models.list(prompt_tunable=True)
            print("Prompt-tunable models:", ", ".join(m.model_id for m in tunable))

            asset = await client.assets.upload(
                DATA.read_bytes(), name=DATA.name, file_name=DATA.name
            )
            print(f"Uploaded {DATA.name} as data asset {asset.id}")

            training = await client.trainings.create(
                name="grooming-reviews",
                base_model=BASE_MODEL,
                task_id="classification",
                data_asset_id=asset.id,
                parameters=PARAMETERS,
            )
            print(f"Training {training.id} is {training.state}")

            async def training_done() -> bool:
                nonlocal training
                training = await client.trainings.get(training.id)
                return training.is_finished

            await wait_for(training_done, "training finished")
            print(f"Training {training.id}: {training.state}, model {training.model_id}")
            epochs = sorted({m.epoch for m in training.metrics if m.epoch is not None})
            for epoch in epochs:
                losses = [m.loss for m in training.metrics if m.epoch == epoch and m.loss]
                print(f"  epoch {epoch}: mean loss {fmean(losses):.4f}")
            assert training.model_id is not None

            deployment = await client.deployments.create(
                model_id=training.model_id, name="grooming-reviews-pt", serving_name="grooming_pt"
            )

            async def deployment_ready() -> bool:
                nonlocal deployment
                deployment = await client.deployments.get(deployment.id)
                return deployment.state in ("ready", "failed")

            await wait_for(deployment_ready, "deployment settled")
            print(f"Deployment {deployment.id}: {deployment.state}")

            examples = [json.loads(line) for line in DATA.read_text().splitlines()][:8]
            answers: dict[tuple[str, int], str] = {}
            limiter = anyio.CapacityLimiter(4)

            async def ask(index: int, prompt: str, tuned: bool) -> None:
                async with limiter:
                    if tuned:
                        result = await client.generation.generate(
                            prompt, deployment_id=deployment.id, parameters={"max_new_tokens": 2}
                        )
                    else:
                        result = await client.generation.generate(
                            prompt, model_id=BASE_MODEL, parameters={"max_new_tokens": 2}
                        )
                answers["tuned" if tuned else "base", index] = result.text.strip()

            async with anyio.create_task_group() as tasks:
                for index, example in enumerate(examples):
                    tasks.start_soon(ask, index, example["input"], True)
                    tasks.start_soon(ask, index, example["input"], False)
            for target in ("base", "tuned"):
                right = sum(answers[target, i] == e["output"] for i, e in enumerate(examples))
                print(f"{target:>5}: {right}/{len(examples)} answers match the label")

            await client.deployments.delete(deployment.id)
            await client.trainings.delete(training.id)
            await client.assets.delete(asset.id)
            print("Cleaned up the deployment, the training and the data asset.")
        print(f"The fake server saw {len(fake.requests)} requests.")


if __name__ == "__main__":
    anyio.run(main)

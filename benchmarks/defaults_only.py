"""Local tuning with nothing but the task and the training data, judged on the shipped test set.

For each seed, `LocalClient(seed=N)` tunes the default model on the shipped training set with
`parameters={"task_id": "classification"}` and nothing else, so every setting is the local
backend's default (method, validation split, kept epoch, precision and soft-prompt position
included); `--peft-method prompt_tuning` runs prompt tuning's defaults instead. The kept
epoch is deployed and scored by the `Evaluator` on the shipped test set, greedy with two new
tokens (the answer is one label). Each seed's accuracy, kept epoch and training time are
printed, then the median and range. The runs are kept in the default home
(`$GRANITE_TUNER_HOME`), as the demo's are.

    PYTHONPATH=src:. .venv/bin/python benchmarks/defaults_only.py --seeds 0 1 2 \\
        [--peft-method prefix_tuning|prompt_tuning]
"""

from __future__ import annotations

import argparse
import statistics

import anyio

from granite_tuner import Deployment, Evaluator, Tuner, load_examples
from granite_tuner.backends.local import LocalClient
from granite_tuner.backends.local._decode_types import PEFT_METHODS, PeftMethod
from granite_tuner.backends.local._training import DEFAULT_PEFT_METHOD
from granite_tuner.datasets import test_path, train_path

GENERATION = {"decoding_method": "greedy", "max_new_tokens": 2}


async def run_seed(seed: int, method: PeftMethod) -> tuple[float, int, float, str]:
    """(test accuracy of the kept epoch, kept epoch from 1, training seconds, stop reason)."""
    async with LocalClient(seed=seed, peft_method=method) as client:
        result = await Tuner(
            client,
            base_model=client.model_name,
            training_data=load_examples(train_path()),
            parameters={"task_id": "classification"},
        ).run()
        async with await Deployment.create(client, result, delete_on_exit=True) as tuned:
            report = await Evaluator(client, max_concurrency=16, parameters=GENERATION).evaluate(
                load_examples(test_path(), purpose="evaluation"), tuned
            )
    accuracy = report.metrics.accuracy
    assert accuracy is not None
    return (
        accuracy,
        (result.best_epoch or 0) + 1,
        result.duration_seconds or 0.0,
        str(result.stop_reason),
    )


async def main(seeds: list[int], method: PeftMethod) -> None:
    accuracies: list[float] = []
    print(f"{method}, the local defaults otherwise", flush=True)
    for seed in seeds:
        accuracy, kept, seconds, stop = await run_seed(seed, method)
        accuracies.append(accuracy)
        print(
            f"seed {seed}: test accuracy {accuracy:.3f}, kept epoch {kept} ({stop}), "
            f"training {seconds:.0f} s",
            flush=True,
        )
    print(
        f"median {statistics.median(accuracies):.3f} "
        f"[{min(accuracies):.3f}-{max(accuracies):.3f}] over seeds {seeds}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--peft-method", choices=PEFT_METHODS, default=DEFAULT_PEFT_METHOD)
    arguments = parser.parse_args()
    anyio.run(main, arguments.seeds, arguments.peft_method)

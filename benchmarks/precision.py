"""float32 against bf16 autocast on this CPU: optimizer-step time, and the accuracy each reaches.

1. Step time: two trainers on the same model, data and settings, one per precision, take turns
   (`--rounds` rounds of `--steps` steps each), so background load hits both alike; the
   median seconds per step of each and their ratio are printed.
2. Accuracy (unless `--steps-only`): for each of `--seeds`, a full run of each precision with
   the package's defaults on the shipped training set (20 % held out for validation, the best
   epoch kept), then the kept soft prompt's accuracy on the shipped test set, read from greedy
   answers with the Evaluator's parser (the trainer's batched validator, pointed at the test
   set); then each precision's median and range over the seeds.

    .venv/bin/python benchmarks/precision.py [--rounds 3] [--steps 6] [--steps-only] \
        [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace
from typing import Literal

import torch

from granite_tuner.backends.local._models import (
    DEFAULT_MODEL,
    LoadedModel,
    ModelCache,
    default_home,
    resolve_device,
)
from granite_tuner.backends.local._precision import autocast, cpu_has_bf16
from granite_tuner.backends.local._training import PromptTrainer, TrainingConfig, make_validator
from granite_tuner.data import load_examples
from granite_tuner.datasets import test_path, train_path
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.splitting import stratified_split

PRECISIONS: tuple[Literal["float32", "bfloat16"], ...] = ("float32", "bfloat16")


def step_times(loaded: LoadedModel, rounds: int, steps: int) -> dict[str, list[float]]:
    examples = list(load_examples(train_path()).examples)
    base = TrainingConfig.from_parameters(PromptTuningParameters(), seed=0)
    trainers = {p: PromptTrainer(loaded, examples, replace(base, precision=p)) for p in PRECISIONS}
    times: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    trainers["float32"].step()  # warm-up: first-call allocations
    trainers["bfloat16"].step()
    for _ in range(rounds):
        for precision, trainer in trainers.items():
            for _ in range(steps):
                started = time.perf_counter()
                trainer.step()
                times[precision].append(time.perf_counter() - started)
    return times


def accuracy_run(
    loaded: LoadedModel, precision: Literal["float32", "bfloat16"], seed: int
) -> tuple[float, float | None, int, float]:
    """(test accuracy of the kept prompt, its validation accuracy, kept epoch, train seconds)."""
    examples = list(load_examples(train_path()).examples)
    config = replace(
        TrainingConfig.from_parameters(PromptTuningParameters(), seed=seed), precision=precision
    )
    training, held = stratified_split(examples, config.validation_split, seed=seed)
    trainer = PromptTrainer(loaded, training, config, validation=held)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    assert trainer.best_epoch is not None
    kept = trainer.validation_scores[trainer.best_epoch]
    trainer.restore_best()
    test = list(load_examples(test_path(), purpose="evaluation").examples)
    validator = make_validator(loaded, test, config, labels=["0", "1"], what="test")
    with autocast(loaded.device, precision):
        score = validator.score(trainer.logits)
    assert score.accuracy is not None
    return score.accuracy, kept.accuracy, trainer.best_epoch, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--steps-only", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    arguments = parser.parse_args()
    device, dtype = resolve_device(None)
    print(f"CPU has hardware bf16: {cpu_has_bf16()}; torch threads: {torch.get_num_threads()}")
    loaded = ModelCache(default_home(), device=device, dtype=dtype).get_sync(DEFAULT_MODEL)
    times = step_times(loaded, arguments.rounds, arguments.steps)
    medians = {p: statistics.median(t) for p, t in times.items()}
    for precision, values in times.items():
        print(
            f"{precision:9s} step: median {medians[precision]:.3f} s "
            f"(range {min(values):.3f}-{max(values):.3f}, {len(values)} steps)"
        )
    print(f"bf16 / float32 step time: {medians['bfloat16'] / medians['float32']:.2f}")
    if arguments.steps_only:
        return
    accuracies: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for seed in arguments.seeds:
        for precision in PRECISIONS:
            test, validation, epoch, seconds = accuracy_run(loaded, precision, seed)
            accuracies[precision].append(test)
            print(
                f"{precision:9s} defaults, seed {seed}: kept epoch {epoch + 1}, validation "
                f"accuracy {validation:.3f}, test accuracy {test:.3f}, training {seconds:.0f} s",
                flush=True,
            )
    for precision, values in accuracies.items():
        print(
            f"{precision:9s} test accuracy: median {statistics.median(values):.3f} "
            f"[{min(values):.3f}-{max(values):.3f}] over seeds {arguments.seeds}"
        )


if __name__ == "__main__":
    main()

"""The soft prompt at the start of the input (PEFT's layout) against at its end: step time and
the accuracy each reaches.

1. Step time: two trainers on the same model, data and settings (the demo's), one per position,
   take turns (`--rounds` rounds of `--steps` steps each), so background load hits both alike;
   the median seconds per step of each and their ratio are printed. Both are timed after a
   first epoch: by then the "end" trainer keeps every training prompt's keys and values, and
   its steps run only the soft prompt and the output through the model. (Its first epoch
   runs each input once without gradients as well, and costs about what a "start" epoch does.)
2. Accuracy (unless `--steps-only`): for each seed, a full run of each position with the demo's
   settings (prompt tuning at lr 0.03, as the demo was before it moved to prefix tuning) on the
   shipped training set (20 % held out for validation, the best epoch kept, `--epochs-start`
   and `--epochs-end` epochs), then the kept soft prompt's accuracy on the
   shipped test set, read from greedy answers with the Evaluator's parser (the trainer's
   batched validator, pointed at the test set). Medians and ranges over the seeds close it.

    .venv/bin/python benchmarks/soft_prompt_position.py [--rounds 3] [--steps 6] [--steps-only]
        [--seeds 0 1 2] [--epochs-start 4] [--epochs-end 8]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from granite_tuner.backends.local._decode_types import SoftPromptPosition
from granite_tuner.backends.local._models import (
    DEFAULT_MODEL,
    LoadedModel,
    ModelCache,
    default_home,
    resolve_device,
)
from granite_tuner.backends.local._precision import autocast, resolve_precision
from granite_tuner.backends.local._training import PromptTrainer, TrainingConfig, make_validator
from granite_tuner.cli._demo import DEMO_PARAMETERS
from granite_tuner.data import load_examples
from granite_tuner.datasets import test_path, train_path
from granite_tuner.splitting import stratified_split

POSITIONS: tuple[SoftPromptPosition, ...] = ("start", "end")


#: The demo's settings with prompt tuning's learning rate: the demo itself prefix-tunes now, and
#: a prefix has no position.
PROMPT_TUNING_DEMO = DEMO_PARAMETERS.model_copy(update={"learning_rate": 0.03})


def demo_config(loaded: LoadedModel, position: SoftPromptPosition, seed: int) -> TrainingConfig:
    return TrainingConfig.from_parameters(
        PROMPT_TUNING_DEMO,
        seed=seed,
        precision=resolve_precision("auto", loaded.device),
        soft_prompt_position=position,
        peft_method="prompt_tuning",
    )


def step_times(loaded: LoadedModel, rounds: int, steps: int) -> dict[str, list[float]]:
    examples = list(load_examples(train_path()).examples)
    trainers = {p: PromptTrainer(loaded, examples, demo_config(loaded, p, 0)) for p in POSITIONS}
    for trainer in trainers.values():
        # Warm-up: a whole first epoch, after which the "end" trainer has every prompt's keys
        # and values (later epochs are what the comparison is about; the first costs the same).
        while trainer.iteration < trainer.steps_per_epoch:
            trainer.step()
    times: dict[str, list[float]] = {p: [] for p in POSITIONS}
    for _ in range(rounds):
        for position, trainer in trainers.items():
            for _ in range(steps):
                started = time.perf_counter()
                trainer.step()
                times[position].append(time.perf_counter() - started)
    return times


def accuracy_run(
    loaded: LoadedModel, position: SoftPromptPosition, seed: int, epochs: int
) -> tuple[float, float | None, int, float]:
    """(test accuracy of the kept prompt, its validation accuracy, kept epoch, train seconds)."""
    examples = list(load_examples(train_path()).examples)
    config = replace(demo_config(loaded, position, seed), num_epochs=epochs)
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
    with autocast(loaded.device, config.precision):
        score = validator.score(trainer.logits)
    assert score.accuracy is not None
    return score.accuracy, kept.accuracy, trainer.best_epoch, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--steps-only", action="store_true")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--epochs-start", type=int, default=4
    )  # the demo before it moved to the end
    parser.add_argument("--epochs-end", type=int, default=8)
    arguments = parser.parse_args()
    device, dtype = resolve_device(None)
    loaded = ModelCache(default_home(), device=device, dtype=dtype).get_sync(DEFAULT_MODEL)
    print(
        f"torch threads: {torch.get_num_threads()}; precision: "
        f"{resolve_precision('auto', device)}; the demo's settings"
    )
    times = step_times(loaded, arguments.rounds, arguments.steps)
    medians = {p: statistics.median(t) for p, t in times.items()}
    for position, values in times.items():
        print(
            f"{position:5s} step: median {medians[position]:.3f} s "
            f"(range {min(values):.3f}-{max(values):.3f}, {len(values)} steps)"
        )
    print(f"end / start step time: {medians['end'] / medians['start']:.2f}")
    if arguments.steps_only:
        return
    epochs = {"start": arguments.epochs_start, "end": arguments.epochs_end}
    results: dict[str, list[tuple[float, float]]] = {p: [] for p in POSITIONS}
    for seed in arguments.seeds:
        for position in POSITIONS:
            test, validation, kept, seconds = accuracy_run(loaded, position, seed, epochs[position])
            results[position].append((test, seconds))
            print(
                f"seed {seed} {position:5s} ({epochs[position]} epochs): kept epoch {kept + 1}, "
                f"validation {validation:.3f}, test {test:.3f}, training {seconds:.0f} s",
                flush=True,
            )
    for position, rows in results.items():
        accuracies = [a for a, _ in rows]
        spent = [s for _, s in rows]
        print(
            f"{position:5s} ({epochs[position]} epochs): test accuracy median "
            f"{statistics.median(accuracies):.3f} [{min(accuracies):.3f}-{max(accuracies):.3f}], "
            f"training {statistics.median(spent):.0f} s [{min(spent):.0f}-{max(spent):.0f}]"
        )


if __name__ == "__main__":
    main()

"""Sweep of local prompt-tuning settings, judged on held-out parts of the TRAINING data only.

For each setting and seed the shipped training set (340 reviews) is split, stratified by label
and seeded, into a training part and a held-out part (`--holdout`, 20 % by default). The trainer
trains on the training part and, after every epoch, scores the soft prompt on the held-out part
twice: as it is, and with an instruction line put in front of every input (a distribution
shift: the training inputs have no such line; the line here is not the shipped test set's).
The kept epoch is chosen on the plain held-out part only, as the package does with its own
validation split; the table reports both accuracies at that epoch, and at the last epoch.

The shipped test set is never read here: settings chosen on it would fit it, not the task.

    .venv/bin/python benchmarks/tuning_defaults.py --seeds 0 1 2 \\
        --setting "demo:max_input_tokens=32,num_virtual_tokens=8,num_epochs=6"

A setting is `name:key=value,...` over `PromptTuningParameters` fields plus `warmup_share`,
`early_stopping_patience`, `precision`, `peft_method`, `soft_prompt_position` and
`label_mixed_batches` (1 or 0); fields left out take the package's defaults.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from typing import Any

import torch

from granite_tuner.backends.local._models import (
    DEFAULT_MODEL,
    ModelCache,
    default_home,
    resolve_device,
)
from granite_tuner.backends.local._precision import autocast, resolve_precision
from granite_tuner.backends.local._training import (
    DEFAULT_PEFT_METHOD,
    DEFAULT_SOFT_PROMPT_POSITION,
    PromptTrainer,
    TrainingConfig,
    make_validator,
)
from granite_tuner.data import Example, load_examples
from granite_tuner.datasets import train_path
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.splitting import stratified_split

#: Put in front of every held-out input for the shifted score (not the test set's wording).
SHIFT_PREFIX = "Read this dog-grooming review and say if the owner was happy (1) or not (0).\n"
_TRAINER_ONLY = {
    "warmup_share",
    "early_stopping_patience",
    "precision",
    "peft_method",
    "soft_prompt_position",
    "label_mixed_batches",
}


def parse_setting(text: str) -> tuple[str, dict[str, Any]]:
    name, _, body = text.partition(":")
    values: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, _, raw = item.partition("=")
        value: Any = raw
        for kind in (int, float):
            try:
                value = kind(raw)
                break
            except ValueError:
                continue
        values[key.strip()] = None if raw == "none" else value
    return name, values


def run_one(
    loaded: Any, name: str, values: dict[str, Any], seed: int, holdout: float
) -> dict[str, Any]:
    examples = list(load_examples(train_path()).examples)
    training, held = stratified_split(examples, holdout, seed=seed)
    parameters = PromptTuningParameters.model_validate(
        {"task_id": "classification"} | {k: v for k, v in values.items() if k not in _TRAINER_ONLY}
    )
    precision = resolve_precision(str(values.get("precision", "auto")), loaded.device)
    config = TrainingConfig.from_parameters(
        parameters,
        seed=seed,
        precision=precision,
        early_stopping_patience=values.get("early_stopping_patience"),
        soft_prompt_position=values.get("soft_prompt_position", DEFAULT_SOFT_PROMPT_POSITION),
        peft_method=values.get("peft_method", DEFAULT_PEFT_METHOD),
    )
    config = replace(
        config,
        warmup_share=float(values.get("warmup_share", 0.0)),
        label_mixed_batches=bool(values.get("label_mixed_batches", config.label_mixed_batches)),
    )
    trainer = PromptTrainer(loaded, training, config, validation=held)
    shifted_examples = [Example(input=SHIFT_PREFIX + e.input, output=e.output) for e in held]
    assert trainer.validator is not None
    shifted = make_validator(loaded, shifted_examples, config, labels=["0", "1"], what="shifted")
    epochs: list[dict[str, Any]] = []
    started = time.perf_counter()
    validation_seconds = 0.0
    while (result := trainer.step()) is not None:
        if result.epoch_finished and result.validation is not None:
            begun = time.perf_counter()
            with autocast(loaded.device, precision):
                shift_score = shifted.score(trainer.logits)
            validation_seconds += time.perf_counter() - begun
            epochs.append(
                {
                    "epoch": result.epoch,
                    "val_loss": round(result.validation.loss, 4),
                    "val_acc": result.validation.accuracy,
                    "shift_acc": shift_score.accuracy,
                }
            )
    seconds = time.perf_counter() - started - validation_seconds
    best = trainer.best_epoch
    kept = next(e for e in epochs if e["epoch"] == best)
    return {
        "setting": name,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "precision": precision,
        "peft_method": config.peft_method,
        "soft_prompt_position": config.soft_prompt_position,
        "best_epoch": best,
        "epochs_run": len(epochs),
        "kept_val_acc": kept["val_acc"],
        "kept_shift_acc": kept["shift_acc"],
        "last_val_acc": epochs[-1]["val_acc"],
        "last_shift_acc": epochs[-1]["shift_acc"],
        "train_seconds": round(seconds, 1),
        "epochs": epochs,
        "stop": trainer.stop_reason,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", action="append", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--holdout", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--jsonl", default=None, help="append each run's record to this file")
    arguments = parser.parse_args()
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    device, dtype = resolve_device(None)
    loaded = ModelCache(default_home(), device=device, dtype=dtype).get_sync(DEFAULT_MODEL)
    rows: dict[str, list[dict[str, Any]]] = {}
    for text in arguments.setting:
        name, values = parse_setting(text)
        for seed in arguments.seeds:
            record = run_one(loaded, name, values, seed, arguments.holdout)
            rows.setdefault(name, []).append(record)
            print(json.dumps(record), flush=True)
            if arguments.jsonl:
                with open(arguments.jsonl, "a", encoding="utf-8") as out:
                    out.write(json.dumps(record) + "\n")
    print(
        "\n| setting | held-out acc (kept epoch): median [range] | shifted acc | last epoch acc "
        "| shifted, last | kept epochs | train s (median) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, records in rows.items():

        def summary(key: str, records: list[dict[str, Any]] = records) -> str:
            values = [r[key] for r in records]
            return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"

        kept = ", ".join(str(r["best_epoch"] + 1) for r in records)
        seconds = statistics.median(r["train_seconds"] for r in records)
        print(
            f"| {name} | {summary('kept_val_acc')} | {summary('kept_shift_acc')} | "
            f"{summary('last_val_acc')} | {summary('last_shift_acc')} | {kept} | {seconds:.0f} |"
        )


if __name__ == "__main__":
    main()

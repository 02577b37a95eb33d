"""Time per optimizer step: our prompt-tuning engine against a minimal hand-written PEFT loop.

Both run in this process on the same base model (SmolLM2-135M-Instruct unless --model says
otherwise), the same examples, batch size, number of virtual tokens, init and learning rate:

- ours:     `PromptTrainer.step()` — length-grouped batches, each padded to its longest
            example (collated inside the timed step), logits only where targets are;
- ours, full logits: the same with the logit trimming switched off (shows what it is worth);
- minimal, same batches: `get_peft_model` + AdamW + `model(input_ids, attention_mask,
            labels).loss.backward()` over pre-built, right-padded tensors of exactly the batches
            ours trains on (collation is not timed: the loop gets that for free);
- minimal, shuffled batches: the same loop over plain shuffled batches, each padded to its
            longest example — what a tutorial loop usually does.

Variants are interleaved epoch by epoch for --rounds rounds and the median epoch is reported,
so background load hits all of them alike. Plain-text output; the target is ours within 10%
of "minimal, same batches" (ratio <= 1.10).

    .venv/bin/python benchmarks/training_step.py [--examples 48] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from granite_tuner.backends.local._models import (
    DEFAULT_MODEL,
    LoadedModel,
    ModelCache,
    default_home,
    resolve_device,
)
from granite_tuner.backends.local._training import (
    IGNORE_INDEX,
    EncodedExample,
    PromptTrainer,
    TrainingConfig,
    plan_batches,
)
from granite_tuner.data import Example

SUBJECTS = ["The groomer", "The staff", "The salon", "My dog", "The price", "The booking"]
GOOD = ["was friendly", "did a lovely job", "was quick", "was fair", "made him look great"]
BAD = ["was rude", "was late again", "was far too expensive", "left her matted", "ignored us"]


def reviews(count: int, seed: int) -> list[Example]:
    """Review-like texts of 1 to 12 clauses (very different lengths), labelled 1 or 0."""
    rng = random.Random(seed)
    examples = []
    for index in range(count):
        positive = index % 2 == 0
        clauses = [
            f"{rng.choice(SUBJECTS)} {rng.choice(GOOD if positive else BAD)}"
            for _ in range(rng.randint(1, 12))
        ]
        text = "Review: " + ". ".join(clauses) + ". Was the customer satisfied?"
        examples.append(Example(input=text, output="1" if positive else "0"))
    return examples


Batches = list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def right_padded(encoded: Sequence[EncodedExample], groups: list[list[int]], pad: int) -> Batches:
    """Tensors for the minimal loop: right padding, labels -100 on prompt and padding."""
    batches: Batches = []
    for indices in groups:
        width = max(encoded[i].length for i in indices)
        ids, mask, labels = [], [], []
        for i in indices:
            example = encoded[i]
            tokens = [*example.prompt_ids, *example.target_ids]
            fill = width - len(tokens)
            ids.append(tokens + [pad] * fill)
            mask.append([1] * len(tokens) + [0] * fill)
            labels.append(
                [IGNORE_INDEX] * len(example.prompt_ids) + [*example.target_ids]
                + [IGNORE_INDEX] * fill
            )  # fmt: skip
        batches.append((torch.tensor(ids), torch.tensor(mask), torch.tensor(labels)))
    return batches


def minimal_loop(loaded: LoadedModel, config: TrainingConfig) -> Callable[[Batches], float]:
    """The textbook PEFT prompt-tuning loop; returns a function timing one epoch of it."""
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    model = get_peft_model(
        loaded.model,
        PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=config.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.TEXT,
            prompt_tuning_init_text=config.init_text,
            tokenizer_name_or_path=loaded.source,
            tokenizer_kwargs={"local_files_only": True},
        ),
    )
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=config.learning_rate
    )

    def epoch(batches: Batches) -> float:
        started = time.perf_counter()
        for input_ids, attention_mask, labels in batches:
            loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
            torch.autograd.backward(loss)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    return epoch


def ours(
    loaded: LoadedModel, examples: list[Example], config: TrainingConfig, *, trim: bool
) -> Callable[[], float]:
    """A function timing one epoch of our engine (a fresh trainer each time, built untimed)."""

    def epoch() -> float:
        trainer = PromptTrainer(loaded, examples, config)
        if not trim:
            trainer._logits_to_keep = False  # benchmark switch: every position's logits
        started = time.perf_counter()
        trainer.train()
        return time.perf_counter() - started

    return epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--virtual-tokens", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    device, dtype = resolve_device(None)
    cache = ModelCache(args.home or default_home(), device=device, dtype=dtype)
    started = time.perf_counter()
    loaded = cache.get_sync(args.model)
    load_seconds = time.perf_counter() - started
    config = TrainingConfig(
        num_epochs=1,
        batch_size=args.batch_size,
        num_virtual_tokens=args.virtual_tokens,
        seed=args.seed,
    )
    examples = reviews(args.examples, args.seed)

    ours_trimmed = ours(loaded, examples, config, trim=True)
    ours_full = ours(loaded, examples, config, trim=False)
    encoded = PromptTrainer(loaded, examples, config).examples
    lengths = [e.length for e in encoded]
    grouped = plan_batches(lengths, config.batch_size, random.Random(config.seed * 1_000_003))
    order = list(range(len(encoded)))
    random.Random(args.seed).shuffle(order)
    shuffled = [order[k : k + config.batch_size] for k in range(0, len(order), config.batch_size)]
    same_batches = right_padded(encoded, grouped, loaded.pad_token_id)
    shuffled_batches = right_padded(encoded, shuffled, loaded.pad_token_id)
    minimal = minimal_loop(loaded, config)
    steps = len(grouped)

    def tokens(groups: list[list[int]]) -> float:
        return statistics.fmean(max(lengths[i] for i in g) * len(g) for g in groups)

    variants: dict[str, Callable[[], float]] = {
        "ours (PromptTrainer)": ours_trimmed,
        "ours, full logits": ours_full,
        "minimal loop, same batches": lambda: minimal(same_batches),
        "minimal loop, shuffled batches": lambda: minimal(shuffled_batches),
    }
    padded = {
        "ours (PromptTrainer)": tokens(grouped),
        "ours, full logits": tokens(grouped),
        "minimal loop, same batches": tokens(grouped),
        "minimal loop, shuffled batches": tokens(shuffled),
    }
    for run in variants.values():  # warm-up: first calls allocate and tune kernels
        run()
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, run in variants.items():
            seconds[name].append(run() / steps)

    print(
        f"training step benchmark: {args.model} on {device} ({torch.get_num_threads()} threads), "
        f"{args.examples} examples, batch {config.batch_size}, "
        f"{config.num_virtual_tokens} virtual tokens, {steps} steps/epoch, "
        f"{args.rounds} rounds (model load {load_seconds:.1f} s)"
    )
    print(f"  {'variant':<32} {'median s/step':>13} {'min':>7} {'max':>7} {'tokens/batch':>13}")
    for name, values in seconds.items():
        print(
            f"  {name:<32} {statistics.median(values):>13.3f} {min(values):>7.3f} "
            f"{max(values):>7.3f} {padded[name]:>13.0f}"
        )
    ours_step = statistics.median(seconds["ours (PromptTrainer)"])
    ours_best = min(seconds["ours (PromptTrainer)"])
    for baseline in ("minimal loop, same batches", "minimal loop, shuffled batches"):
        ratio = ours_step / statistics.median(seconds[baseline])
        best = ours_best / min(seconds[baseline])
        print(f"  ratio ours / {baseline}: {ratio:.2f} (medians), {best:.2f} (minimums)")
    verdict = ours_step <= 1.10 * statistics.median(seconds["minimal loop, same batches"])
    print(
        "  target (ours within 10% of the minimal loop, same batches): "
        + ("met" if verdict else "NOT met")
    )
    load = os.getloadavg()[0]
    if max(load, load_before) > (os.cpu_count() or 1) * 0.75:
        print(
            f"  WARNING: the machine was busy (1-min load {load_before:.1f} before, {load:.1f} "
            "after): other processes share the CPU, so these timings are unreliable; rerun "
            "when it is idle (the minimums are the least disturbed figures)."
        )


if __name__ == "__main__":
    main()

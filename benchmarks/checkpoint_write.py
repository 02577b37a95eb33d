"""Checkpoint size and write time on the default model, against one optimizer step.

A local run writes a checkpoint at every epoch end (and every N steps when asked): the
trainer's state copied (`PromptTrainer.state_dict`), serialised, checksummed, written with
fsync under a temporary name and renamed into place (`_checkpoints.write_checkpoint`), then
older ones pruned. This script trains SmolLM2-135M-Instruct (unless --model) with the default
settings for a few steps, then interleaves --rounds rounds of (one optimizer step, one
checkpoint write) and prints the median and range of each, the checkpoint's size on disk, and
the ratio write / step — what a checkpoint costs in units of training. Plain-text output.

    PYTHONPATH=src:. .venv/bin/python benchmarks/checkpoint_write.py [--rounds 15] [--examples 48]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.training_step import reviews
from granite_tuner.backends.local import _checkpoints
from granite_tuner.backends.local._models import (
    DEFAULT_MODEL,
    ModelCache,
    default_home,
    resolve_device,
)
from granite_tuner.backends.local._training import PromptTrainer, TrainingConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--home", type=Path, default=None)
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    device, dtype = resolve_device(None)
    loaded = ModelCache(args.home or default_home(), device=device, dtype=dtype).get_sync(
        args.model
    )
    config = TrainingConfig(num_epochs=1000)  # the default settings; enough steps to go on
    trainer = PromptTrainer(loaded, reviews(args.examples, 0), config)
    trainer.step()  # warm-up: first calls allocate; the optimizer gets its state
    manifest = {
        "epoch": 0,
        "end_of_epoch": False,
        "created_at": "2026-01-01T00:00:00Z",
        "parameters": config.to_dict(),
        "base_model": args.model,
        "data_ref": "0" * 64,
    }
    steps: list[float] = []
    writes: list[float] = []
    size = 0
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(scratch)
        for _ in range(args.rounds):
            started = time.perf_counter()
            result = trainer.step()
            steps.append(time.perf_counter() - started)
            assert result is not None
            started = time.perf_counter()
            payload = {"trainer": trainer.state_dict(), "history": "{}"}
            written = _checkpoints.write_checkpoint(
                run_dir, payload, manifest, step=result.iteration
            )
            _checkpoints.prune(run_dir, keep_last=2, best_epoch=None)
            writes.append(time.perf_counter() - started)
            size = sum(p.stat().st_size for p in written.folder.iterdir())

    def summary(values: list[float]) -> str:
        return (
            f"median {statistics.median(values) * 1000:8.1f} ms  "
            f"(range {min(values) * 1000:.1f}-{max(values) * 1000:.1f} ms, n={len(values)})"
        )

    print(f"model: {args.model} on {device}; default settings: {config.num_virtual_tokens} "
          f"virtual tokens, batch {config.batch_size}, {args.examples} examples")  # fmt: skip
    print(f"load average before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f}")
    print(f"checkpoint size on disk: {size / 1024:.1f} KiB (state.pt + manifest.json)")
    print(f"optimizer step:          {summary(steps)}")
    print(f"checkpoint write:        {summary(writes)}")
    print(
        f"ratio write / step (medians): {statistics.median(writes) / statistics.median(steps):.3f}"
    )


if __name__ == "__main__":
    main()

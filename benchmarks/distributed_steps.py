"""Training steps per second in 1 vs 2 data-parallel processes (torchrun, gloo, CPU).

Each round trains the same run twice through the data-parallel entry point
(`python -m torch.distributed.run --standalone --nproc-per-node P -m
granite_tuner.backends.local.distributed ...`), once with P=1 and once with P=2, in
alternating order, each process with one torch thread (OMP_NUM_THREADS=1). The rate is read
from the step timestamps rank 0 writes into run.json, after the first --skip steps (start-up,
first allocations), so process start and model loading are left out. Prints each round, the
median and range per process count, the ratio of the medians (2 processes / 1), and the load
average before and after (the machine may be shared). The global batch is the same in both,
so a step is the same amount of work: the ideal ratio is 2.

    PYTHONPATH=src:. .venv/bin/python benchmarks/distributed_steps.py [--rounds 3]
        [--examples 256] [--batch-size 16] [--hidden 256] [--model FOLDER]

The default model is the tiny test model (hidden size 32, 2 layers); `--hidden H` builds a
random Llama of hidden size H and 4 layers over the same tokenizer instead, so that a step's
arithmetic, not torch's per-operation overhead, is what the processes share.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.tiny_model import build_tiny_model, review_examples

from granite_tuner.backends.local._store import RunStore


def build_wider_model(tiny: Path, folder: Path, hidden: int) -> None:
    """A random 4-layer Llama of hidden size `hidden`, with the tiny model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_pretrained(str(tiny))
    config.hidden_size = hidden
    config.intermediate_size = 4 * hidden
    config.num_hidden_layers = 4
    config.num_attention_heads = max(hidden // 32, 1)
    config.num_key_value_heads = max(hidden // 64, 1)
    config.head_dim = hidden // config.num_attention_heads
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(str(folder))
    AutoTokenizer.from_pretrained(str(tiny)).save_pretrained(str(folder))


def steps_per_second(
    processes: int, *, model: str, data: Path, parameters: Path, home: Path, skip: int
) -> float:
    """Train one run in `processes` processes; its steady steps per second."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "granite_tuner.backends.local.distributed",
        str(data),
        "--parameters",
        str(parameters),
        "--model",
        model,
        "--home",
        str(home),
        "--validation-split",
        "0",
        "--device",
        "cpu",
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command, check=True, env=environment, capture_output=True)
    (record,) = RunStore(home).list_runs()
    stamps = [point.timestamp for point in record.metrics if point.timestamp][skip:]
    return (len(stamps) - 1) / (stamps[-1] - stamps[0]).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--skip", type=int, default=3, help="first steps left out")
    parser.add_argument("--model", help="a model folder (default: the tiny test model)")
    parser.add_argument("--hidden", type=int, help="build a wider random model instead")
    args = parser.parse_args()

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        model = args.model
        if model is None:
            model = str(root / "tiny")
            build_tiny_model(Path(model))
            if args.hidden is not None:
                build_wider_model(Path(model), root / "wider", args.hidden)
                model = str(root / "wider")
        data = root / "train.jsonl"
        data.write_text(
            "".join(
                json.dumps({"input": e.input, "output": e.output}) + "\n"
                for e in review_examples(args.examples)
            ),
            encoding="utf-8",
        )
        parameters = root / "parameters.json"
        parameters.write_text(
            json.dumps(
                {
                    "num_epochs": args.epochs,
                    "batch_size": args.batch_size,
                    "num_virtual_tokens": 8,
                    "max_input_tokens": 64,
                }
            ),
            encoding="utf-8",
        )
        rates: dict[int, list[float]] = {1: [], 2: []}
        for round_ in range(args.rounds):
            order = (1, 2) if round_ % 2 == 0 else (2, 1)
            for processes in order:
                home = root / f"home-{round_}-{processes}"
                rate = steps_per_second(
                    processes,
                    model=model,
                    data=data,
                    parameters=parameters,
                    home=home,
                    skip=args.skip,
                )
                rates[processes].append(rate)
                print(f"round {round_ + 1}: {processes} process(es): {rate:.2f} steps/s")
    load_after = os.getloadavg()

    print()
    for processes, values in rates.items():
        print(
            f"{processes} process(es): median {statistics.median(values):.2f} steps/s "
            f"(range {min(values):.2f}-{max(values):.2f}, {len(values)} runs)"
        )
    ratio = statistics.median(rates[2]) / statistics.median(rates[1])
    print(f"ratio 2 processes / 1 process: {ratio:.2f}x (ideal 2x)")
    print(
        f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}; "
        f"after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f} "
        f"({os.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main()

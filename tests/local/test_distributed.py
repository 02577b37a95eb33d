"""Data-parallel local tuning: real `torchrun`, real gloo, two real processes, the tiny model.

Each process runs one torch thread (torchrun sets OMP_NUM_THREADS=1), so two ranks fit this
2-core machine. A run in two processes must be the same run as in one: the same loss at every
step, the same validation figures, the same soft prompt (float32, within 1e-5), one copy of
each artifact, each event once. A rank killed mid-run fails the run soon (well within the
collective timeout) with an error naming the rank, its checkpoints stay whole, and a resume
— in one process — finishes it. A cancel stops every process, and a resume in two goes on.
The entry point also runs under a user's own `torchrun`, and bad data ends every rank with
the data check's message.

No sleeps for outcomes: the tests wait on the run's state under `anyio.fail_after`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
import torch

import granite_tuner
from granite_tuner import Tuner
from granite_tuner.backends.local import LocalClient, RunStore
from granite_tuner.backends.local._checkpoints import latest_valid, list_checkpoints
from granite_tuner.data import LabelledSet
from granite_tuner.errors import ConfigurationError, InvalidParametersError
from granite_tuner.events import EpochCompleted, RunFinished, StepLogged, TuningEvent
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.runs import TuningRun
from tests.tiny_model import review_examples

pytestmark = pytest.mark.anyio

#: 24 examples, a quarter held out: 18 training examples in batches of 4 -> 5 steps an epoch
#: (the last batch has 2 examples, one per rank).
PARAMETERS: dict[str, Any] = {
    "num_epochs": 2,
    "batch_size": 4,
    "learning_rate": 0.05,
    "num_virtual_tokens": 4,
    "init_method": "random",
}
TOTAL_STEPS = 10
SRC = Path(granite_tuner.__file__).parent.parent
ENDED = ("completed", "failed", "canceled")


async def _tune(model: Path, home: Path, processes: int) -> tuple[TuningRun, list[TuningEvent]]:
    events: list[TuningEvent] = []
    async with LocalClient(
        str(model), home=home, precision="float32", processes=processes, collective_timeout=60
    ) as client:
        result = await Tuner(
            client,
            base_model=client.model_name,
            training_data=LabelledSet(examples=review_examples(24)),
            parameters=PARAMETERS,
            name="data-parallel",
            validation_split=0.25,
            poll_interval=(0.1, 0.5),
            on_event=events.append,
            timeout=300,
        ).run()
        return await client.get_tuning_run(result.run_id), events


@pytest.fixture(scope="module")
def one_process(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same run trained in this process (once per module)."""
    home = tmp_path_factory.mktemp("one-process")
    anyio.run(_tune, tiny_model_dir, home, 1)
    return home


def _only_run(home: Path) -> Path:
    runs = [p for p in (home / "runs").iterdir() if not p.name.startswith(".")]
    assert len(runs) == 1, runs
    return runs[0]


def _last_soft_prompt(run_dir: Path) -> torch.Tensor:
    found = latest_valid(run_dir)
    assert found is not None
    prompt: torch.Tensor = found[1]["trainer"]["soft_prompt"]
    return prompt


def _adapter_prompt(run_dir: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    (tensor,) = load_file(str(run_dir / "adapter" / "adapter_model.safetensors")).values()
    return tensor


@pytest.mark.slow
async def test_two_processes_train_the_same_run_as_one(
    tiny_model_dir: Path, one_process: Path, tmp_path: Path
) -> None:
    with anyio.fail_after(300):
        run, events = await _tune(tiny_model_dir, tmp_path / "home", 2)
    reference_dir = _only_run(one_process)
    reference = await _stored_run(one_process, reference_dir.name)

    assert run.state == "completed", run.failure_message
    assert [m.iteration for m in run.metrics] == list(range(1, TOTAL_STEPS + 1))
    for ours, theirs in zip(run.metrics, reference.metrics, strict=True):
        assert ours.loss == pytest.approx(theirs.loss, abs=1e-5)
    assert len(run.validation) == len(reference.validation) == 2
    for ours_v, theirs_v in zip(run.validation, reference.validation, strict=True):
        assert ours_v.loss == pytest.approx(theirs_v.loss, abs=1e-5)
        assert ours_v.accuracy == theirs_v.accuracy
    assert run.best_epoch == reference.best_epoch

    # The soft prompt after the last step (the last checkpoint) and the kept one (the adapter).
    run_dir = _only_run(tmp_path / "home")
    torch.testing.assert_close(
        _last_soft_prompt(run_dir), _last_soft_prompt(reference_dir), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(
        _adapter_prompt(run_dir), _adapter_prompt(reference_dir), atol=1e-5, rtol=0
    )

    # One copy of each artifact: one run, one stored data set, the same checkpoints, and only
    # torchrun's log besides what a one-process run writes.
    assert len(list((tmp_path / "home" / "data").iterdir())) == 1
    steps = [c.manifest.step for c in list_checkpoints(run_dir)]
    assert steps == [c.manifest.step for c in list_checkpoints(reference_dir)]
    assert {p.name for p in run_dir.iterdir()} == {p.name for p in reference_dir.iterdir()} | {
        "workers.log"
    }
    assert list((run_dir / "adapter").iterdir())
    assert not list(run_dir.glob(".*"))

    # Every event once.
    logged = Counter(e.iteration or 0 for e in events if isinstance(e, StepLogged))
    assert sorted(logged) == list(range(1, TOTAL_STEPS + 1))
    assert set(logged.values()) == {1}
    assert [e.epoch for e in events if isinstance(e, EpochCompleted)] == [0, 1]
    assert sum(isinstance(e, RunFinished) for e in events) == 1


async def _stored_run(home: Path, run_id: str) -> TuningRun:
    async with LocalClient(home=home) as client:
        return await client.get_tuning_run(run_id)


def _rank_pid(run_id: str, rank: int) -> int | None:
    """The pid of the worker process of `run_id` that torchrun started as `rank`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            b"granite_tuner.backends.local.distributed" in command
            and run_id.encode() in command
            and f"RANK={rank}".encode() in environment
        ):
            return int(entry.name)
    return None


async def _until_ended(client: LocalClient, run_id: str) -> TuningRun:
    while (run := await client.get_tuning_run(run_id)).state not in ENDED:  # noqa: ASYNC110  # polls the run
        await anyio.sleep(0.1)
    return run


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the rank in /proc")
async def test_a_killed_rank_fails_the_run_and_resume_finishes_it(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    timeout = 60
    async with LocalClient(
        str(tiny_model_dir),
        home=home,
        precision="float32",
        processes=2,
        collective_timeout=timeout,
        checkpoint_every_steps=2,
    ) as client:
        ref = await client.upload_training_data(
            LabelledSet(examples=review_examples(24)), name="reviews"
        )
        parameters = {**PARAMETERS, "num_epochs": 8}  # 40 steps: still training at the kill
        run = await client.start_tuning(
            name="killed",
            base_model=client.model_name,
            data_ref=ref,
            parameters=PromptTuningParameters.model_validate(parameters),
        )
        with anyio.fail_after(120):
            while not await client.list_checkpoints(run.id):  # noqa: ASYNC110  # polls the store
                await anyio.sleep(0.1)
        pid = _rank_pid(run.id, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(timeout):
            failed = await _until_ended(client, run.id)
        assert failed.state == "failed"
        assert failed.failure_message is not None
        assert "rank 1 failed first (killed by SIGKILL)" in failed.failure_message
        kept = [c.step for c in await client.list_checkpoints(run.id)]
    found = latest_valid(home / "runs" / run.id)
    assert found is not None
    assert found[0].manifest.step == kept[-1]

    # Resume in one process this time: the state does not depend on the number of ranks.
    async with LocalClient(str(tiny_model_dir), home=home, precision="float32") as client:
        await client.resume_tuning(run.id)
        with anyio.fail_after(120):
            done = await _until_ended(client, run.id)
    assert done.state == "completed", done.failure_message
    assert [m.iteration for m in done.metrics] == list(range(1, 41))


def test_processes_must_be_a_positive_whole_number() -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidParametersError, match="processes="):
            LocalClient(processes=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidParametersError, match="collective_timeout="):
        LocalClient(processes=2, collective_timeout=0)


def test_the_entry_point_outside_torchrun_says_how_to_start_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from granite_tuner.backends.local.distributed import main

    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="torchrun"):
        main(["--run-id", "x", "--home", str(tmp_path), "--device", "cpu"])


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the ranks in /proc")
async def test_cancel_stops_every_process_and_resume_goes_on_in_two(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    async with LocalClient(
        str(tiny_model_dir), home=tmp_path / "home", processes=2, checkpoint_every_steps=1
    ) as client:
        ref = await client.upload_training_data(
            LabelledSet(examples=review_examples(24)), name="reviews"
        )
        run = await client.start_tuning(
            name="canceled",
            base_model=client.model_name,
            data_ref=ref,
            parameters=PromptTuningParameters.model_validate({**PARAMETERS, "num_epochs": 50}),
        )
        with anyio.fail_after(120):
            while not await client.list_checkpoints(run.id):  # noqa: ASYNC110  # polls the store
                await anyio.sleep(0.1)
            await client.cancel_tuning_run(run.id)
        canceled = await client.get_tuning_run(run.id)
        assert canceled.state == "canceled"
        assert canceled.failure_message == "canceled by request"
        assert len(canceled.metrics) < 250
    assert _rank_pid(run.id, 0) is None
    assert _rank_pid(run.id, 1) is None
    assert not (tmp_path / "home" / "runs" / run.id / "cancel-requested").exists()

    # Resume in two processes: rank 0 loads the checkpoint and hands its state to rank 1.
    async with LocalClient(str(tiny_model_dir), home=tmp_path / "home", processes=2) as client:
        await client.resume_tuning(run.id)
        with anyio.fail_after(180):
            done = await _until_ended(client, run.id)
    assert done.state == "completed", done.failure_message
    assert [m.iteration for m in done.metrics] == list(range(1, 251))


def _torchrun(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The entry point under a user's own `torchrun --nproc-per-node 2` (this tree's code)."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), *sys.path])}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "granite_tuner.backends.local.distributed",
            *arguments,
        ],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_a_users_own_torchrun_trains_a_training_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(
            json.dumps({"input": e.input, "output": e.output}) + "\n" for e in review_examples(60)
        ),
        encoding="utf-8",
    )
    parameters = tmp_path / "tuning.toml"
    parameters.write_text(
        'num_epochs = 1\nbatch_size = 8\nnum_virtual_tokens = 4\ninit_method = "random"\n',
        encoding="utf-8",
    )
    home = tmp_path / "home"
    done = _torchrun(
        str(data),
        "--parameters",
        str(parameters),
        "--name",
        "own-torchrun",
        "--model",
        str(tiny_model_dir),
        "--home",
        str(home),
        "--device",
        "cpu",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = RunStore(home).list_runs()
    assert record.name == "own-torchrun"
    assert record.state == "completed"
    assert record.validation  # 20 % held out by default, as in one process
    assert len(record.metrics) == 6  # 48 training examples in batches of 8


@pytest.mark.slow
def test_bad_data_ends_every_rank_with_the_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text('{"input": "only one"}\n', encoding="utf-8")
    done = _torchrun(
        str(data),
        "--model",
        str(tiny_model_dir),
        "--home",
        str(tmp_path / "home"),
        "--device",
        "cpu",
        "--timeout",
        "60",
        cwd=tmp_path,
    )
    assert done.returncode != 0
    assert "[rank 0]" in done.stderr
    assert "'output' is missing" in done.stderr  # the data check's own message
    assert not RunStore(tmp_path / "home").list_runs()

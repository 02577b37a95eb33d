"""Checkpoints of local runs (tiny model): what is kept, deploying one, and every bad resume.

Each bad state must raise its typed error and change nothing: run.json and the checkpoint
folders are compared byte for byte before and after. The crash tests (SIGKILL, a kill inside
a checkpoint write, two processes) are in tests/reliability/test_checkpoint_resume.py.
"""

from __future__ import annotations

import logging
from contextlib import aclosing
from pathlib import Path

import anyio
import pytest
import torch

from granite_tuner import (
    ConfigurationError,
    Deployment,
    EpochCompleted,
    InvalidParametersError,
    NoCheckpointError,
    ResumeMismatchError,
    RunFinishedError,
    RunInUseError,
    Tuner,
    TuningResult,
    UnsupportedFeatureError,
    WatsonxClient,
)
from granite_tuner.backends.local import LocalClient, RunStore
from granite_tuner.data import LabelledSet
from granite_tuner.runs import TuningRun
from tests.tiny_model import review_examples

pytestmark = pytest.mark.anyio

#: 60 examples, 12 held out for validation: 48 / batch 4 = 12 steps per epoch.
PARAMETERS = {
    "num_epochs": 3,
    "batch_size": 4,
    "learning_rate": 0.1,
    "num_virtual_tokens": 4,
    "init_method": "random",
}
DATA = LabelledSet(examples=tuple(review_examples(60)))
FAST_POLL = (0.005, 0.02)


def client(model: Path, home: Path, **options: object) -> LocalClient:
    return LocalClient(str(model), home=home, precision="float32", **options)  # type: ignore[arg-type]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under a run folder (but the lock), by relative path, with its bytes."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != "train.lock"
    }


async def completed(local: LocalClient, model: Path, **parameters: object) -> TuningResult:
    return await Tuner(
        local,
        base_model=str(model),
        training_data=DATA,
        parameters={**PARAMETERS, **parameters},
        poll_interval=FAST_POLL,
    ).run()


async def stopped(local: LocalClient, model: Path, *, epochs: int = 2, num_epochs: int = 10) -> str:
    """A run of `num_epochs` canceled after `epochs` of them (each with its checkpoint)."""
    tuner = Tuner(
        local,
        base_model=str(model),
        training_data=DATA,
        parameters={**PARAMETERS, "num_epochs": num_epochs},
        poll_interval=FAST_POLL,
    )
    with anyio.fail_after(120):
        async with aclosing(tuner.events()) as events:
            async for event in events:
                # Reported once a later epoch has begun: its end-of-epoch checkpoint is whole.
                if isinstance(event, EpochCompleted) and event.epoch + 1 == epochs:
                    break
    assert tuner.run_id is not None
    await local.cancel_tuning_run(tuner.run_id)
    run = await local.get_tuning_run(tuner.run_id)
    assert run.state == "canceled"
    return tuner.run_id


# --- what is kept --------------------------------------------------------------------------------


async def test_checkpoints_are_kept_at_epoch_ends_and_every_n_steps_bounded_and_deployable(
    tiny_model_dir: Path, tmp_path: Path, anyio_backend: str
) -> None:
    async with client(
        tiny_model_dir, tmp_path, checkpoint_every_steps=5, keep_checkpoints=2
    ) as local:
        result = await completed(local, tiny_model_dir)
        listed = await local.list_checkpoints(result.run_id)

    best_epoch = result.best_epoch
    assert best_epoch is not None
    best_step = 12 * (best_epoch + 1)
    assert [c.step for c in result.checkpoints] == sorted({best_step, 35, 36})
    assert list(result.checkpoints) == listed
    folder = RunStore(tmp_path).run_dir(result.run_id) / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        f"step-{c.step:08d}" for c in result.checkpoints
    ]
    last = result.checkpoints[-1]
    assert (last.epoch, last.end_of_epoch, last.best) == (2, True, best_epoch == 2)
    assert last.validation_loss == result.validation[-1].loss
    assert last.training_loss == pytest.approx(result.loss_per_epoch[-1])
    mid = next(c for c in result.checkpoints if c.step == 35)
    assert (mid.epoch, mid.end_of_epoch, mid.validation_loss, mid.best) == (2, False, None, False)
    assert result.checkpoint().best or best_epoch == 2  # the default: the best one

    # A result round-trips with its checkpoints (the CLI writes results as JSON).
    assert TuningResult.model_validate_json(result.model_dump_json()) == result


async def test_any_kept_checkpoint_deploys_and_serves_its_own_soft_prompt(
    tiny_model_dir: Path, tmp_path: Path, anyio_backend: str
) -> None:
    async with client(tiny_model_dir, tmp_path, checkpoint_every_steps=5) as local:
        result = await completed(local, tiny_model_dir)
        first = result.checkpoints[0]
        async with await Deployment.create(
            local, result, checkpoint=first.step, poll_interval=FAST_POLL, delete_on_exit=True
        ) as deployment:
            assert deployment.info.model_id == first.model_id
            assert deployment.info.is_ready, deployment.info.failure_message
            answer = await deployment.generate("Staff was kind .", {"max_new_tokens": 2})
            assert isinstance(answer.text, str)
        served = local._server._deployments  # the soft prompt it serves is the checkpoint's
        assert not served  # deleted on exit
        state = torch.load(
            RunStore(tmp_path).run_dir(result.run_id)
            / "checkpoints"
            / f"step-{first.step:08d}"
            / "state.pt",
            weights_only=True,
        )
        final = await Deployment.create(local, result, poll_interval=FAST_POLL)
        assert final.info.model_id == result.run_id  # no checkpoint=: the run's kept prompt
        assert not torch.equal(state["trainer"]["soft_prompt"], torch.zeros(1))

        with pytest.raises(ConfigurationError, match="no checkpoint at step 7; kept: "):
            await Deployment.create(local, result, checkpoint=7)
        with pytest.raises(ConfigurationError, match="needs the run's TuningResult"):
            await Deployment.create(local, result.run_id, checkpoint=first.step)


async def test_checkpoint_settings_are_checked(tiny_model_dir: Path, tmp_path: Path) -> None:
    for options in ({"checkpoint_every_steps": 0}, {"keep_checkpoints": 0}):
        with pytest.raises(InvalidParametersError, match=next(iter(options))):
            client(tiny_model_dir, tmp_path, **options)


# --- bad resumes -------------------------------------------------------------------------------


async def test_resuming_a_completed_run_says_so_and_changes_nothing(
    tiny_model_dir: Path, tmp_path: Path, anyio_backend: str
) -> None:
    async with client(tiny_model_dir, tmp_path) as local:
        result = await completed(local, tiny_model_dir, num_epochs=1)
    folder = RunStore(tmp_path).run_dir(result.run_id)
    before = snapshot(folder)  # once the client that ran it has written its end
    async with client(tiny_model_dir, tmp_path) as local:
        with pytest.raises(RunFinishedError, match="completed") as finished:
            await Tuner.resume(local, run_id=result.run_id, poll_interval=FAST_POLL).run()
        assert finished.value.run_id == result.run_id
        assert snapshot(folder) == before
        assert (await local.get_tuning_run(result.run_id)).state == "completed"


async def test_resuming_with_other_parameters_or_base_model_is_refused_and_changes_nothing(
    tiny_model_dir: Path, tmp_path: Path, anyio_backend: str
) -> None:
    async with client(tiny_model_dir, tmp_path) as local:
        run_id = await stopped(local, tiny_model_dir)
        folder = RunStore(tmp_path).run_dir(run_id)
        before = snapshot(folder)
        with pytest.raises(ResumeMismatchError, match=r"learning_rate=0\.2 \(run: 0\.1\)"):
            await Tuner.resume(
                local,
                run_id=run_id,
                parameters={**PARAMETERS, "num_epochs": 10, "learning_rate": 0.2},
            ).run()
        with pytest.raises(ResumeMismatchError, match="not 'another-model'"):
            await local.resume_tuning(run_id, base_model="another-model")
        assert snapshot(folder) == before
        assert (await local.get_tuning_run(run_id)).state == "canceled"

        # The run's own settings are accepted, and the run goes on to the end.
        resumed = await Tuner.resume(
            local,
            run_id=run_id,
            base_model=str(tiny_model_dir),
            parameters={**PARAMETERS, "num_epochs": 10},
            poll_interval=FAST_POLL,
        ).run()
        assert resumed.state == "completed"
        assert [p.iteration for p in resumed.metrics] == list(range(1, 121))


async def test_a_checkpoint_that_fails_its_checksum_is_skipped_with_a_warning_naming_it(
    tiny_model_dir: Path, tmp_path: Path, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with client(tiny_model_dir, tmp_path) as local:
        run_id = await stopped(local, tiny_model_dir, epochs=2)
        kept = await local.list_checkpoints(run_id)
        folder = RunStore(tmp_path).run_dir(run_id) / "checkpoints"
        damaged = folder / f"step-{kept[-1].step:08d}" / "state.pt"
        content = bytearray(damaged.read_bytes())
        content[len(content) // 2] ^= 0xFF
        damaged.write_bytes(bytes(content))

        with caplog.at_level(logging.WARNING, logger="granite_tuner"):
            run = await local.resume_tuning(run_id)
        assert run.message == f"resuming from the checkpoint at step {kept[-2].step}"
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any(str(damaged) in w and "checksum" in w for w in warnings), warnings
        assert damaged.read_bytes() == bytes(content)  # not deleted, not overwritten yet
        await local.cancel_tuning_run(run_id)


async def test_a_run_without_a_whole_checkpoint_cannot_be_resumed(
    tiny_model_dir: Path, tmp_path: Path, anyio_backend: str
) -> None:
    async with client(tiny_model_dir, tmp_path) as local:
        run_id = await stopped(local, tiny_model_dir, epochs=1)
        folder = RunStore(tmp_path).run_dir(run_id)
        for state in folder.glob("checkpoints/*/state.pt"):
            state.write_bytes(b"torn")
        before = snapshot(folder)
        with pytest.raises(NoCheckpointError, match="no whole checkpoint"):
            await local.resume_tuning(run_id)
        assert snapshot(folder) == before


async def test_two_clients_cannot_resume_one_run_at_once(
    tiny_model_dir: Path, tmp_path: Path, anyio_backend: str
) -> None:
    async with client(tiny_model_dir, tmp_path) as first:
        run_id = await stopped(first, tiny_model_dir)
        run = await first.resume_tuning(run_id)  # holds the run's lock until the run ends
        assert run.state == "queued"
        with pytest.raises(RunInUseError, match="in this client already"):
            await first.resume_tuning(run_id)
        # Another client (another open file, as another process would have) is refused too.
        async with client(tiny_model_dir, tmp_path) as second:
            with pytest.raises(RunInUseError, match="another process"):
                await second.resume_tuning(run_id)
        await first.cancel_tuning_run(run_id)
    # Once the first client let go, the run can be resumed again.
    async with client(tiny_model_dir, tmp_path) as third:
        assert (await third.resume_tuning(run_id)).state == "queued"


async def test_the_watsonx_backend_refuses_checkpoints_and_resume_with_a_typed_error(
    anyio_backend: str,
) -> None:
    watsonx = WatsonxClient(
        url="https://127.0.0.1:9", api_key="fake-key-for-refusals", project_id="p"
    )
    assert watsonx.supports_checkpoints is False
    with pytest.raises(UnsupportedFeatureError, match="keeps no checkpoints"):
        await Tuner.resume(watsonx, run_id="run-1").run()
    with pytest.raises(UnsupportedFeatureError, match="keeps no checkpoints"):
        await watsonx.list_checkpoints("run-1")
    with pytest.raises(UnsupportedFeatureError, match="keeps no checkpoints"):
        await watsonx.resume_tuning("run-1")
    result = TuningResult.from_run(
        TuningRun(id="run-1", state="completed", model_id="m-1"), backend="watsonx"
    )
    with pytest.raises(UnsupportedFeatureError, match="keeps no checkpoints"):
        await Deployment.create(watsonx, result, checkpoint=12)


def test_a_run_recorded_before_later_defaults_resumes_with_its_own_parameters() -> None:
    """A prompt-tuning run from before prefix tuning and label-mixed batches became defaults,
    resumed with the parameters it was started with, is not refused for settings it did not
    choose; a parameter that really differs still is."""
    from dataclasses import replace

    from granite_tuner.backends.local._resuming import _check_parameters
    from granite_tuner.backends.local._training import TrainingConfig
    from granite_tuner.parameters import PromptTuningParameters

    parameters = PromptTuningParameters(task_id="classification", num_epochs=2)
    recorded = replace(
        TrainingConfig.from_parameters(parameters, peft_method="prompt_tuning"),
        soft_prompt_position="start",
        label_mixed_batches=False,
    )
    _check_parameters("run-old", recorded, parameters)
    with pytest.raises(ResumeMismatchError, match=r"num_epochs=3 \(run: 2\)"):
        _check_parameters("run-old", recorded, parameters.model_copy(update={"num_epochs": 3}))

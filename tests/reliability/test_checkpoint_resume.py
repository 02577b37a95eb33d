"""A local run killed mid-epoch goes on from its last whole checkpoint to the same result.

Real processes and real SIGKILLs. A child process trains the tiny model (float32, seed 0,
a checkpoint every 5 steps and at each epoch end) and stops itself at a chosen step — the
child's own wrapper around `PromptTrainer.step` prints where it is and blocks — so the kill
lands at a known point; the test then SIGKILLs it. A second child resumes the run with
`Tuner.resume`. A third child, started once per module, trains the same run without a kill:
the resumed run must end with the same soft prompts (within 1e-5) and the same loss at every
step, logged once each, from 1 to the last.

The torn-write test stops the child inside `write_checkpoint`, after the new checkpoint's
files are written and synced but before its folder is renamed into place (the module's
`before_rename` hook), and kills it there: the resume must use the checkpoint before it. On
the way, a child that has resumed the run (and holds it) makes this process's resume fail
with `RunInUseError`: two processes never train one run.

No sleeps: the tests wait on the children's stdout under `anyio.fail_after`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
import torch
from safetensors.torch import load_file

from granite_tuner import RunInUseError, Tuner, TuningResult
from granite_tuner.backends.local import LocalClient, RunStore
from tests.reliability.test_crash_resume import REPO, child_process, run_folder_problems

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

#: 60 examples, 20% held out for validation -> 48 training examples, batch 4: 12 steps/epoch.
STEPS_PER_EPOCH = 12
NUM_EPOCHS = 3
CHECKPOINT_EVERY = 5

# argv: backend, model folder, home, mode ("start" | "resume"), run id, stop step,
# torn step. Prints SUBMITTED, STOPPED (then blocks), TORN (then blocks) and RESULT.
_CHILD = """
import sys, threading
import anyio
from granite_tuner import RunSubmitted, Tuner
from granite_tuner.backends.local import LocalClient, _checkpoints
from granite_tuner.backends.local._training import PromptTrainer
from granite_tuner.data import LabelledSet
from tests.tiny_model import review_examples

def stop_here(what, where):
    print(what, where, flush=True)
    threading.Event().wait()  # until SIGKILL

async def main(model, home, mode, run_id, stop_at, torn_at):
    stop_at, torn_at = int(stop_at), int(torn_at)
    if stop_at:
        step = PromptTrainer.step
        def stepping(self):
            result = step(self)
            if result is not None and result.iteration == stop_at:
                stop_here("STOPPED", result.iteration)
            return result
        PromptTrainer.step = stepping
    if torn_at:
        def before_rename(folder):
            if folder.name.startswith(f".step-{torn_at:08d}."):
                stop_here("TORN", folder)
        _checkpoints.before_rename = before_rename
    async with LocalClient(model, home=home, precision="float32", seed=0,
                           checkpoint_every_steps=5) as client:
        def report(event):
            if isinstance(event, RunSubmitted):
                print("SUBMITTED", event.run_id, flush=True)
                if tuner.last_run is not None:
                    print("FROM", tuner.last_run.message, flush=True)
        options = dict(poll_interval=(0.005, 0.02), on_event=report)
        if mode == "start":
            tuner = Tuner(
                client, base_model=model, name="resumable",
                training_data=LabelledSet(examples=tuple(review_examples(60))),
                parameters=dict(num_epochs=3, batch_size=4, learning_rate=0.1,
                                num_virtual_tokens=4, init_method="random"),
                **options,
            )
        else:
            tuner = Tuner.resume(client, run_id=run_id, **options)
        result = await tuner.run()
        print("RESULT", result.model_dump_json(), flush=True)

anyio.run(main, *sys.argv[2:], backend=sys.argv[1])
"""


class Finished:
    """What a run left: its result, the kept soft prompt, the last checkpoint's soft prompt."""

    def __init__(self, result: TuningResult, home: Path) -> None:
        self.result = result
        folder = RunStore(home).run_dir(result.run_id)
        self.kept = load_file(str(folder / "adapter" / "adapter_model.safetensors"))[
            "prompt_embeddings"
        ]
        last = max((folder / "checkpoints").iterdir())
        state = torch.load(last / "state.pt", weights_only=True)
        self.current = state["trainer"]["soft_prompt"]
        self.folder = folder

    def losses(self) -> list[tuple[int | None, float | None]]:
        return [(point.iteration, point.loss) for point in self.result.metrics]


def _args(backend: str, model: Path, home: Path, mode: str, *rest: str | int) -> list[str]:
    return [backend, str(model), str(home), mode, *map(str, rest)]


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Finished:
    """The same run, never killed (one child process, like the others)."""
    home = tmp_path_factory.mktemp("uninterrupted")
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *_args("asyncio", tiny_model_dir, home, "start", "", 0, 0)],
        cwd=REPO,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return Finished(TuningResult.model_validate_json(line[len("RESULT ") :]), home)


async def _start_and_kill(
    backend: str, model: Path, home: Path, tmp_path: Path, *, stop: int = 0, torn: int = 0
) -> str:
    """A child starts the run and stops (at step `stop`, or inside the write of the
    checkpoint of step `torn`); it is SIGKILLed there. Returns the run id."""
    async with child_process(
        _CHILD,
        *_args(backend, model, home, "start", "", stop, torn),
        env=dict(os.environ),
        stderr_path=tmp_path / "trainer.err",
    ) as trainer:
        run_id = await trainer.line("SUBMITTED")
        await trainer.line("STOPPED" if stop else "TORN")
        await trainer.kill()
    return run_id


async def _resume(backend: str, model: Path, home: Path, tmp_path: Path, run_id: str) -> Finished:
    async with child_process(
        _CHILD,
        *_args(backend, model, home, "resume", run_id, 0, 0),
        env=dict(os.environ),
        stderr_path=tmp_path / "resumer.err",
    ) as resumer:
        assert await resumer.line("SUBMITTED") == run_id
        assert await resumer.line("FROM") == "resuming from the checkpoint at step 20"
        result = TuningResult.model_validate_json(await resumer.line("RESULT", timeout=300))
        with anyio.fail_after(60):
            assert await resumer.process.wait() == 0
    return Finished(result, home)


def _assert_same_run(resumed: Finished, reference: Finished) -> None:
    total = STEPS_PER_EPOCH * NUM_EPOCHS
    assert resumed.result.state == "completed"
    # Every step logged once, in order, none missing: the loss history is continuous.
    assert [i for i, _ in resumed.losses()] == list(range(1, total + 1))
    for (step, loss), (_, expected) in zip(resumed.losses(), reference.losses(), strict=True):
        assert loss == pytest.approx(expected, abs=1e-5), f"step {step}"
    assert torch.allclose(resumed.kept, reference.kept, atol=1e-5, rtol=0)
    assert torch.allclose(resumed.current, reference.current, atol=1e-5, rtol=0)
    assert resumed.kept.dtype == torch.float32
    assert resumed.result.best_epoch == reference.result.best_epoch
    # With the soft prompt at the end (the default), a resumed process computes the inputs'
    # kept keys and values afresh, in other batches: the same figures up to float rounding.
    for point, wanted in zip(resumed.result.validation, reference.result.validation, strict=True):
        assert point.loss == pytest.approx(wanted.loss, abs=1e-5)
        assert point.model_copy(update={"loss": wanted.loss}) == wanted
    assert run_folder_problems(resumed.folder) == []


async def test_a_run_killed_mid_epoch_resumes_in_a_new_process_to_the_uninterrupted_result(
    tiny_model_dir: Path, tmp_path: Path, anyio_backend: str, uninterrupted: Finished
) -> None:
    home = tmp_path / "home"
    # Step 23: in the middle of epoch 2 (steps 13-24); checkpoints were written at steps
    # 5, 10, 12 (epoch end), 15 and 20, so the resume goes on from step 20, mid-epoch.
    run_id = await _start_and_kill(anyio_backend, tiny_model_dir, home, tmp_path, stop=23)
    store = RunStore(home)
    steps = sorted(p.name for p in (store.run_dir(run_id) / "checkpoints").iterdir())
    assert steps == ["step-00000012", "step-00000015", "step-00000020"]  # best (epoch 1) + 2
    assert store.read(run_id).state == "failed"  # interrupted, as before

    resumed = await _resume(anyio_backend, tiny_model_dir, home, tmp_path, run_id)

    _assert_same_run(resumed, uninterrupted)
    assert resumed.result.run_id == run_id
    kept = [c.step for c in resumed.result.checkpoints]
    best_epoch = uninterrupted.result.best_epoch
    assert best_epoch is not None
    best_step = STEPS_PER_EPOCH * (best_epoch + 1)
    assert kept == sorted({best_step, 35, 36})  # the best epoch's and the last two
    assert [c.step for c in resumed.result.checkpoints if c.best] == [best_step]
    assert resumed.result.checkpoint().step == best_step  # the default to deploy


async def test_a_kill_between_writing_and_renaming_a_checkpoint_resumes_from_the_one_before(
    tiny_model_dir: Path, tmp_path: Path, anyio_backend: str, uninterrupted: Finished
) -> None:
    home = tmp_path / "home"
    # Killed inside the write of step 15's checkpoint: its files are whole, but not in place.
    run_id = await _start_and_kill(anyio_backend, tiny_model_dir, home, tmp_path, torn=15)
    store = RunStore(home)
    parent = store.run_dir(run_id) / "checkpoints"
    torn, *names = sorted(p.name for p in parent.iterdir())
    assert names == ["step-00000010", "step-00000012"]  # step 5's was pruned after step 12's
    assert torn.startswith(".step-00000015.tmp-")  # the torn one, under its scratch name
    assert (parent / torn / "manifest.json").is_file()

    # A first resumer stops at step 13 and holds the run: a second process is refused.
    async with child_process(
        _CHILD,
        *_args(anyio_backend, tiny_model_dir, home, "resume", run_id, 13, 0),
        env=dict(os.environ),
        stderr_path=tmp_path / "holder.err",
    ) as holder:
        assert await holder.line("SUBMITTED") == run_id
        assert await holder.line("FROM") == "resuming from the checkpoint at step 12"
        await holder.line("STOPPED")
        async with LocalClient(str(tiny_model_dir), home=home, precision="float32") as other:
            with pytest.raises(RunInUseError, match="another process"):
                await Tuner.resume(other, run_id=run_id).run()
            assert (await other.get_tuning_run(run_id)).state == "running"
        await holder.kill()

    async with child_process(
        _CHILD,
        *_args(anyio_backend, tiny_model_dir, home, "resume", run_id, 0, 0),
        env=dict(os.environ),
        stderr_path=tmp_path / "resumer.err",
    ) as resumer:
        assert await resumer.line("SUBMITTED") == run_id
        assert await resumer.line("FROM") == "resuming from the checkpoint at step 12"
        result = TuningResult.model_validate_json(await resumer.line("RESULT", timeout=300))
        with anyio.fail_after(60):
            assert await resumer.process.wait() == 0
    resumed = Finished(result, home)

    _assert_same_run(resumed, uninterrupted)
    assert not any(p.name.startswith(".") for p in parent.iterdir())

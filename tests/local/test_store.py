"""The run store: atomic writes, reload from another process, interrupted runs, data by hash."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from granite_tuner.backends.local._store import Owner, RunRecord, RunStore, new_run_id
from granite_tuner.data import LabelledSet
from granite_tuner.errors import ConfigurationError, RunNotFoundError
from granite_tuner.runs import MetricPoint, loss_per_epoch
from tests.tiny_model import review_examples


def record(**changes: object) -> RunRecord:
    values: dict[str, object] = {
        "id": new_run_id(),
        "name": "reviews",
        "state": "running",
        "base_model": "tiny",
        "task_id": "classification",
        "parameters": {"num_epochs": 2},
        "data_ref": "0" * 64,
        "created_at": datetime.now(UTC),
        "owner": Owner.current(),
    }
    values.update(changes)
    return RunRecord.model_validate(values)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    return int(process.stdout)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp-" in p.name)


def test_a_run_round_trips_through_run_json(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run = record()
    store.create(run)
    run.add_metric(MetricPoint(iteration=1, epoch=0, loss=2.0))
    run.add_metric(MetricPoint(iteration=2, epoch=0, loss=1.0))
    run.add_metric(MetricPoint(iteration=3, epoch=1, loss=0.5))
    store.save(run)

    again = store.load(run.id)
    assert again.model_dump() == run.model_dump()
    assert again.epoch_losses == [1.5, 0.5] == loss_per_epoch(again.metrics)
    assert json.loads((tmp_path / "runs" / run.id / "run.json").read_text())["state"] == "running"
    assert again.to_run().model_id is None
    completed = again.model_copy(update={"state": "completed"})
    assert completed.to_run().model_id == run.id


def test_epoch_means_are_kept_incrementally_after_a_reload(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run = record()
    store.create(run)
    for iteration, loss in enumerate([4.0, 2.0, 3.0], start=1):
        run.add_metric(MetricPoint(iteration=iteration, epoch=0, loss=loss))
    store.save(run)
    again = store.load(run.id)
    again.add_metric(MetricPoint(iteration=4, epoch=0, loss=7.0))
    again.add_metric(MetricPoint(iteration=5, epoch=1, loss=1.0))
    assert again.epoch_losses == pytest.approx(loss_per_epoch(again.metrics)) == [4.0, 1.0]


def test_a_failed_write_leaves_the_previous_run_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RunStore(tmp_path)
    run = record()
    store.create(run)
    before = (tmp_path / "runs" / run.id / "run.json").read_bytes()

    def crash(src: object, dst: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    run.add_metric(MetricPoint(iteration=1, epoch=0, loss=1.0))
    with pytest.raises(OSError, match="disk gone"):
        store.save(run)
    assert (tmp_path / "runs" / run.id / "run.json").read_bytes() == before
    assert leftovers(tmp_path) == []


def test_a_failed_create_leaves_no_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore(tmp_path)
    run = record()

    def crash(self: Path, target: object) -> None:
        raise OSError("no rename today")

    monkeypatch.setattr(Path, "rename", crash)
    with pytest.raises(OSError):
        store.create(run)
    assert store.list_runs() == []
    assert leftovers(tmp_path) == []
    with pytest.raises(RunNotFoundError):
        store.load(run.id)


def test_runs_reload_in_a_new_process(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    older = record(name="a", state="completed", created_at=datetime.now(UTC) - timedelta(hours=1))
    newer = record(name="b", state="failed", failure_message="boom")
    for run in (older, newer):
        store.create(run)
    script = (
        "import json, sys\n"
        "from granite_tuner.backends.local._store import RunStore\n"
        "store = RunStore(sys.argv[1])\n"
        "print(json.dumps([[r.id, r.name, r.state, r.failure_message] "
        "for r in store.list_runs()]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert json.loads(done.stdout) == [
        [newer.id, "b", "failed", "boom"],
        [older.id, "a", "completed", None],
    ]


def test_a_running_run_whose_process_is_gone_is_reported_failed(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    gone = record(owner=Owner(pid=dead_pid(), host=Owner.current().host))
    queued_elsewhere = record(state="queued", owner=Owner(pid=os.getpid(), host="another-host"))
    alive = record()
    for run in (gone, queued_elsewhere, alive):
        store.create(run)

    for run in (gone, queued_elsewhere):
        reported = store.read(run.id)
        assert reported.state == "failed"
        assert reported.failure_message is not None
        assert "interrupted" in reported.failure_message
        assert "start it again" in reported.failure_message
        assert store.load(run.id).state == run.state  # reported, not rewritten
    assert store.read(alive.id).state == "running"


def test_a_reused_pid_does_not_keep_a_run_alive(tmp_path: Path) -> None:
    me = Owner.current()
    if me.started is None:
        pytest.skip("process start times are read from /proc (Linux)")
    store = RunStore(tmp_path)
    run = record(owner=me.model_copy(update={"started": me.started - 1}))
    store.create(run)
    assert store.read(run.id).state == "failed"


def test_training_data_is_stored_once_by_content(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    data = LabelledSet(examples=tuple(review_examples(5)))
    ref = store.put_data(data)
    assert ref == data.content_hash()
    assert store.put_data(LabelledSet(examples=tuple(review_examples(5)))) == ref
    assert [p.name for p in (tmp_path / "data").iterdir()] == [f"{ref}.jsonl"]
    assert store.load_data(ref).examples == data.examples
    store.delete_data(ref)
    assert not store.has_data(ref)
    with pytest.raises(ConfigurationError):
        store.load_data(ref)
    with pytest.raises(ConfigurationError):
        store.data_path("../../etc/passwd")


def test_delete_removes_the_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run = record()
    store.create(run)
    store.delete(run.id)
    assert store.list_runs() == []
    assert list((tmp_path / "runs").iterdir()) == []
    with pytest.raises(RunNotFoundError):
        store.delete(run.id)
    with pytest.raises(RunNotFoundError):
        store.save(run)
    with pytest.raises(RunNotFoundError):
        store.load("../outside")


def test_adapters_are_moved_into_place_whole(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run = record()
    store.create(run)

    def half_written(folder: Path) -> None:
        folder.mkdir()
        (folder / "adapter_config.json").write_text("{}")
        raise RuntimeError("crashed while saving")

    with pytest.raises(RuntimeError):
        store.save_adapter(run.id, half_written)
    assert not store.adapter_dir(run.id).exists()
    assert leftovers(tmp_path) == []

    def whole(folder: Path) -> None:
        folder.mkdir()
        (folder / "adapter_model.safetensors").write_bytes(b"weights")

    path = store.save_adapter(run.id, whole)
    assert (path / "adapter_model.safetensors").read_bytes() == b"weights"

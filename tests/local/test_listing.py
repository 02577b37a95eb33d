"""What the CLI lists with, on `LocalClient`: its default base model and its runs, newest first."""

from __future__ import annotations

from pathlib import Path

import pytest

from granite_tuner.backends.local import DEFAULT_MODEL, LocalClient
from granite_tuner.data import LabelledSet
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.validation import ValidationOptions
from tests.tiny_model import review_examples

pytestmark = pytest.mark.anyio

QUICK = PromptTuningParameters(
    num_epochs=1, batch_size=4, learning_rate=0.1, num_virtual_tokens=4, init_method="random"
)
TRAIN = LabelledSet(examples=tuple(review_examples(24)))
HELD_OUT = LabelledSet(examples=tuple(review_examples(8, seed=5)))


def test_the_default_base_model_is_the_clients_model(tiny_model_dir: Path, home: Path) -> None:
    assert LocalClient(str(tiny_model_dir), home=home).default_base_model == str(tiny_model_dir)
    assert LocalClient(home=home).default_base_model == DEFAULT_MODEL


async def test_runs_are_listed_newest_first_with_their_data(
    tiny_model_dir: Path, home: Path
) -> None:
    model = str(tiny_model_dir)
    async with LocalClient(model, home=home) as client:
        assert await client.list_tuning_runs() == []
        train = await client.upload_training_data(TRAIN, name="train")
        held_out = await client.upload_training_data(HELD_OUT, name="held-out")
        first = await client.start_tuning(
            name="first", base_model=model, data_ref=train, parameters=QUICK
        )
        second = await client.start_tuning(
            name="second",
            base_model=model,
            data_ref=train,
            parameters=QUICK,
            validation=ValidationOptions(data_ref=held_out),
        )
        listed = await client.list_tuning_runs()
        assert [run.id for run in listed] == [second.id, first.id]
        assert [run.data_refs for run in listed] == [(train, held_out), (train,)]
        assert (await client.get_tuning_run(second.id)).data_refs == (train, held_out)

    # a later client reads the same from disk
    async with LocalClient(model, home=home) as again:
        listed = await again.list_tuning_runs()
        assert [run.id for run in listed] == [second.id, first.id]
        assert [run.data_refs for run in listed] == [(train, held_out), (train,)]

"""End to end on the bundled SmolLM2-135M-Instruct: converted offline, tuned, adapter reloaded."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from granite_tuner import Tuner
from granite_tuner.backends.local import DEFAULT_MODEL, LocalClient
from granite_tuner.backends.local._training import DEFAULT_NUM_VIRTUAL_TOKENS
from tests.tiny_model import review_examples

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.slow,
]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # one run of the real model is enough
async def test_prompt_tuning_smollm2_end_to_end(smollm2_home: Path) -> None:
    from peft import PeftModel
    from safetensors.torch import load_file

    examples = [
        {"input": f"Review: {e.input} Satisfied?", "output": e.output} for e in review_examples(60)
    ]
    # PEFT's own layout, so that PEFT loads the adapter as it was trained.
    async with LocalClient(
        home=smollm2_home, peft_method="prompt_tuning", soft_prompt_position="start"
    ) as client:
        result = await Tuner(
            client,
            base_model=DEFAULT_MODEL,
            training_data=examples,
            parameters={
                "num_epochs": 1,
                "batch_size": 8,
                "max_input_tokens": 32,
                "max_output_tokens": 4,
            },
            poll_interval=(0.05, 0.5),
        ).run()
        loaded = await client.models.get(DEFAULT_MODEL)
        adapter = client.store.adapter_dir(result.run_id)

    losses = [m.loss for m in result.metrics if m.loss is not None]
    assert len(losses) == 6  # 48 of 60 examples (12 held out for validation), batches of 8
    assert len(result.validation) == 1
    assert all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses  # learning, roughly
    models = smollm2_home / "models"
    assert (models / DEFAULT_MODEL / "model.safetensors").is_file()  # converted once, cached
    assert [p.name for p in models.iterdir()] == [DEFAULT_MODEL]  # no temporary folder left

    tuned = PeftModel.from_pretrained(loaded.model, str(adapter))
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    [weights] = saved.values()
    assert weights.shape == (DEFAULT_NUM_VIRTUAL_TOKENS, loaded.model.config.hidden_size)
    assert torch.equal(tuned.get_prompt(batch_size=1)[0], weights.to(loaded.dtype))

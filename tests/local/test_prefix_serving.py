"""Serving a prefix-tuning soft prompt: keys and values in front of the input at every layer.

The run's recorded `peft_method` decides how the server reads its adapter; such rows share
batches with prompt-tuning rows (at either end) and with the plain base model, and each row gets
the answer PEFT's own `PeftModel` gives for its sequence.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import cast

import pytest
import torch
from peft import PeftModel, PrefixTuningConfig, TaskType, get_peft_model

from granite_tuner.runs import TuningRun
from tests.local.serving_support import (
    BASE,
    GREEDY,
    PROMPTS,
    StandIn,
    Tiny,
    assert_one_batch_answers_as_alone,
    deploy,
    text_of,
)

pytestmark = pytest.mark.anyio


def _add_prefix_run(client: StandIn, tiny: Tiny, run_id: str, virtual_tokens: int) -> PeftModel:
    """A completed prefix-tuning run with a random prefix, saved by PEFT; its `PeftModel`."""
    root = tiny.adapter_dir.parent.parent
    peft_model = get_peft_model(
        copy.deepcopy(tiny.loaded.model),
        PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=virtual_tokens),
    )
    embedding = cast(torch.nn.Embedding, peft_model.prompt_encoder["default"].embedding)
    weight = embedding.weight
    with torch.no_grad():
        weight.copy_(
            torch.randn(weight.shape, generator=torch.Generator().manual_seed(virtual_tokens))
        )
    peft_model.save_pretrained(str(root / run_id / "adapter"))
    client.runs[run_id] = TuningRun(
        id=run_id,
        state="completed",
        base_model=BASE,
        parameters={"peft_method": "prefix_tuning", "soft_prompt_position": "start"},
    )
    return peft_model


def _peft_greedy(tiny: Tiny, model: PeftModel, prompt: str, max_new_tokens: int) -> list[int]:
    """Greedy decoding by PEFT's own forward pass over the whole unpadded sequence each step."""
    ids: list[int] = tiny.loaded.tokenizer(prompt)["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            sequence = torch.tensor([ids + new], dtype=torch.long)
            logits = model(input_ids=sequence, attention_mask=torch.ones_like(sequence)).logits
            token = int(logits[0, -1].argmax())
            new.append(token)
            if token == tiny.loaded.tokenizer.eos_token_id:
                break
    return new


async def test_a_prefix_answers_as_peft_does(client: StandIn, tiny: Tiny) -> None:
    reference = _add_prefix_run(client, tiny, "run-prefix", virtual_tokens=3)
    tuned = await deploy(client, "run-prefix")
    differs = 0
    for prompt in PROMPTS:
        answer = await client.generate(prompt, deployment_id=tuned, parameters=GREEDY)
        assert answer.text == text_of(tiny, _peft_greedy(tiny, reference, prompt, 6))
        base = await client.generate(prompt, model_id=BASE, parameters=GREEDY)
        differs += base.text != answer.text
    assert differs  # the prefix changes answers: it is really applied


async def test_prefix_rows_share_batches_and_answer_as_alone(
    client: StandIn, tiny: Tiny, generate_calls: list[int]
) -> None:
    _add_prefix_run(client, tiny, "run-prefix", virtual_tokens=3)
    _add_prefix_run(client, tiny, "run-prefix-long", virtual_tokens=5)
    targets = [
        {"deployment_id": await deploy(client, "run-prefix")},
        {"deployment_id": await deploy(client, "run-prefix-long")},
        {"deployment_id": await deploy(client, "run-ok")},
        {"model_id": BASE},
    ]
    await assert_one_batch_answers_as_alone(client, targets, generate_calls)


async def test_a_run_whose_adapter_is_not_what_it_records_is_not_served(
    client: StandIn, tiny: Tiny
) -> None:
    root: Path = tiny.adapter_dir.parent.parent
    # run-ok's adapter is prompt tuning; this run says prefix tuning.
    client.runs["run-mislabelled"] = TuningRun(
        id="run-mislabelled",
        state="completed",
        base_model=BASE,
        parameters={"peft_method": "prefix_tuning"},
    )
    shutil.copytree(tiny.adapter_dir, root / "run-mislabelled" / "adapter", dirs_exist_ok=True)
    info = await client.deploy("run-mislabelled", name="test", serving_name=None)
    assert not info.is_ready
    message = info.failure_message or ""
    assert "PROMPT_TUNING adapter" in message
    assert "prefix_tuning" in message


async def test_a_run_that_records_an_unknown_method_is_not_served(
    client: StandIn, tiny: Tiny
) -> None:
    client.runs["run-lora"] = TuningRun(
        id="run-lora", state="completed", base_model=BASE, parameters={"peft_method": "lora"}
    )
    info = await client.deploy("run-lora", name="test", serving_name=None)
    assert not info.is_ready
    assert "peft_method='lora'" in (info.failure_message or "")

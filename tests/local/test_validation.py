"""Validation on the local backend (tiny model): the split, the kept epoch, early stopping,
what events, results and the run store say, and the precision option."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from granite_tuner import (
    ConfigurationError,
    Deployment,
    EpochCompleted,
    Evaluator,
    InvalidDataError,
    InvalidParametersError,
    RunFinished,
    Tuner,
    TuningEvent,
    UnsupportedFeatureError,
)
from granite_tuner.backends.local import LocalClient, RunStore
from granite_tuner.backends.local import _precision as precision_module
from granite_tuner.backends.local._adapter import load_soft_prompt
from granite_tuner.backends.local._models import LoadedModel
from granite_tuner.backends.local._precision import (
    FLOAT32_UNDER_AUTOCAST_SDPA,
    cpu_has_bf16,
    keep_float32_under_autocast,
    resolve_precision,
)
from granite_tuner.backends.local._training import PromptTrainer, TrainingConfig
from granite_tuner.data import Example, LabelledSet
from granite_tuner.parameters import PromptTuningParameters
from granite_tuner.splitting import stratified_split
from tests.tiny_model import review_examples

TRAINING = review_examples(48)
# The same inputs with the other answer: the better the model learns TRAINING_YES, the worse it
# does on these. The first epoch teaches the answer's form (one word, then EOS), which helps
# "no" too; from then on every epoch makes "no" less likely, so the first epoch is the best.
CONTRARY = [Example(input=e.input, output="no") for e in review_examples(16, seed=5)]
TRAINING_YES = [Example(input=e.input, output="yes") for e in review_examples(48, seed=5)]
CONFIG = TrainingConfig(
    num_epochs=3,
    batch_size=4,
    num_virtual_tokens=4,
    learning_rate=0.3,
    init_method="random",
    init_text=None,
    selection_metric="loss",
    early_stopping_patience=None,
)
PARAMETERS = PromptTuningParameters(
    num_epochs=3, batch_size=4, learning_rate=0.3, num_virtual_tokens=4, init_method="random"
)


# --- the split ---------------------------------------------------------------------------------


def test_split_is_stratified_by_label() -> None:
    examples = [Example(input=f"text {i}", output="a" if i % 4 else "b") for i in range(100)]
    training, validation = stratified_split(examples, 0.2, seed=3)
    assert len(validation) == 20
    assert len(training) == 80
    assert Counter(e.output for e in validation) == {"a": 15, "b": 5}  # 75/25, as the whole
    assert {e.input for e in training}.isdisjoint(e.input for e in validation)
    # Both parts keep the data's order.
    assert [e.input for e in training] == [e.input for e in examples if e in training]


def test_split_is_repeatable_and_follows_the_seed() -> None:
    examples = review_examples(60)
    first = stratified_split(examples, 0.25, seed=1)
    assert stratified_split(examples, 0.25, seed=1) == first
    assert stratified_split(examples, 0.25, seed=2)[1] != first[1]


def test_split_keeps_every_label_in_training_and_refuses_empty_parts() -> None:
    examples = [Example(input=f"x{i}", output="common") for i in range(9)]
    examples.append(Example(input="rare one", output="rare"))
    training, _ = stratified_split(examples, 0.5, seed=0)
    assert any(e.output == "rare" for e in training)
    with pytest.raises(ConfigurationError, match="no validation"):
        stratified_split(examples[:3], 0.1)
    with pytest.raises(ConfigurationError, match="between 0 and 1"):
        stratified_split(examples, 1.5)


# --- the trainer -------------------------------------------------------------------------------


def _soft_prompt(trainer: PromptTrainer) -> torch.Tensor:
    return trainer._soft_prompt.detach().clone()


def test_the_best_epoch_is_kept_when_it_is_not_the_last(
    tiny_loaded: LoadedModel, tmp_path: Path
) -> None:
    trainer = PromptTrainer(tiny_loaded, TRAINING_YES, CONFIG, validation=CONTRARY)
    after_epoch: dict[int, torch.Tensor] = {}

    def remember(result: object) -> None:
        if getattr(result, "epoch_finished", False):
            after_epoch[getattr(result, "epoch")] = _soft_prompt(trainer)  # noqa: B009

    results = trainer.train(remember)
    losses = [r.validation.loss for r in results if r.validation is not None]
    assert len(losses) == 3
    assert losses == sorted(losses)  # worse after every epoch
    assert trainer.best_epoch == 0
    assert trainer.stop_reason == "trained all 3 epochs"
    trainer.save(tmp_path / "adapter")
    saved = load_soft_prompt(tmp_path / "adapter", tiny_loaded.model)
    assert torch.equal(saved, after_epoch[0])
    assert not torch.equal(saved, after_epoch[2])


def test_early_stopping_stops_and_says_why(tiny_loaded: LoadedModel) -> None:
    config = TrainingConfig(**{**CONFIG.to_dict(), "num_epochs": 6, "early_stopping_patience": 2})
    trainer = PromptTrainer(tiny_loaded, TRAINING_YES, config, validation=CONTRARY)
    results = trainer.train()
    assert {r.epoch for r in results} == {0, 1, 2}  # best 0, then 2 epochs without a better one
    assert results[-1].stopped is not None
    assert trainer.finished
    assert trainer.step() is None
    assert trainer.stop_reason.startswith("early stopping")
    assert "2 epochs" in trainer.stop_reason


def test_validation_accuracy_reads_answers_like_the_evaluator(tiny_loaded: LoadedModel) -> None:
    """Accuracy comes from greedy answers parsed into labels: an untrained prompt that says
    neither label scores 0, a learned task scores high on held-out data."""
    training, held = stratified_split(review_examples(80), 0.25, seed=0)
    config = TrainingConfig(**{**CONFIG.to_dict(), "num_epochs": 8, "selection_metric": "accuracy"})
    trainer = PromptTrainer(tiny_loaded, training, config, validation=held)
    first = trainer.validate()
    assert first is not None
    assert first.accuracy is not None
    trainer.train()
    assert trainer.best_epoch is not None
    best = trainer.validation_scores[trainer.best_epoch]
    assert best.accuracy is not None
    assert best.accuracy == max(s.accuracy or 0 for s in trainer.validation_scores)


def test_precision_is_honoured_and_the_soft_prompt_stays_float32(
    tiny_loaded: LoadedModel,
) -> None:
    seen: list[torch.dtype] = []
    layer = tiny_loaded.model.model.layers[0].mlp.down_proj
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    try:
        for precision, expected in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            seen.clear()
            config = TrainingConfig(**{**CONFIG.to_dict(), "precision": precision})
            trainer = PromptTrainer(tiny_loaded, TRAINING, config)
            assert trainer.step() is not None
            assert set(seen) == {expected}
            assert trainer._soft_prompt.dtype == torch.float32
            state = trainer.optimizer.state[trainer._soft_prompt]
            assert state["exp_avg"].dtype == torch.float32
    finally:
        handle.remove()


def test_attention_and_logits_run_in_float32_under_bf16_autocast_and_as_before_elsewhere(
    tiny_loaded: LoadedModel,
) -> None:
    model = tiny_loaded.model
    assert model.config._attn_implementation == FLOAT32_UNDER_AUTOCAST_SDPA
    attention = model.model.layers[0].self_attn
    seen: dict[str, torch.dtype] = {}
    hooks = [
        attention.q_proj.register_forward_hook(lambda _m, _i, out: seen.update(q=out.dtype)),
        attention.o_proj.register_forward_pre_hook(lambda _m, args: seen.update(o=args[0].dtype)),
        model.lm_head.register_forward_hook(lambda _m, _i, out: seen.update(logits=out.dtype)),
    ]
    try:
        config = TrainingConfig(**{**CONFIG.to_dict(), "precision": "bfloat16"})
        assert PromptTrainer(tiny_loaded, TRAINING, config).step() is not None
    finally:
        for hook in hooks:
            hook.remove()
    # The products stay bf16; attention and the logits are computed in float32.
    assert seen == {"q": torch.bfloat16, "o": torch.float32, "logits": torch.float32}

    ids = torch.tensor([[3, 5, 7, 9, 11], [0, 0, 4, 6, 8]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    with torch.no_grad():
        ours = model(input_ids=ids, attention_mask=mask).logits
        model.set_attn_implementation("sdpa")
        try:
            plain = model(input_ids=ids, attention_mask=mask).logits
            model.set_attn_implementation("eager")
            wrapped = model.lm_head.forward
            keep_float32_under_autocast(model)  # another implementation is left alone
            assert model.config._attn_implementation == "eager"
            assert model.lm_head.forward is wrapped  # and the output layer wrapped once
        finally:
            model.set_attn_implementation(FLOAT32_UNDER_AUTOCAST_SDPA)
    assert torch.equal(ours[0], plain[0])
    assert torch.equal(ours[1, 2:], plain[1, 2:])


# --- the precision option ----------------------------------------------------------------------


def test_precision_auto_follows_the_hardware_and_bfloat16_needs_it() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, has_bf16=lambda: True) == "bfloat16"
    assert resolve_precision("auto", cpu, has_bf16=lambda: False) == "float32"
    assert resolve_precision("float32", cpu, has_bf16=lambda: True) == "float32"
    assert resolve_precision("bfloat16", cpu, has_bf16=lambda: True) == "bfloat16"
    with pytest.raises(UnsupportedFeatureError, match="bf16 in hardware"):
        resolve_precision("bfloat16", cpu, has_bf16=lambda: False)
    with pytest.raises(ConfigurationError, match="precision='half'"):
        resolve_precision("half", cpu)


def test_the_bf16_probe_reads_the_cpu_flags(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse2 avx512f avx512_bf16\n", encoding="utf-8")
    assert cpu_has_bf16(info)
    info.write_text("processor : 0\nflags : fpu sse2 avx512f\n", encoding="utf-8")
    assert not cpu_has_bf16(info)
    assert not cpu_has_bf16(tmp_path / "missing")


def test_the_client_refuses_bfloat16_on_a_cpu_without_it(
    tiny_model_dir: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: False)
    with pytest.raises(UnsupportedFeatureError, match="precision='auto'"):
        LocalClient(str(tiny_model_dir), home=home, precision="bfloat16")
    assert LocalClient(str(tiny_model_dir), home=home).precision == "float32"
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: True)
    assert LocalClient(str(tiny_model_dir), home=home).precision == "bfloat16"


# --- through Tuner and the client --------------------------------------------------------------


@pytest.mark.anyio
async def test_a_run_keeps_and_deploys_its_best_epoch(tiny_model_dir: Path, home: Path) -> None:
    events: list[TuningEvent] = []
    async with LocalClient(
        str(tiny_model_dir), home=home, precision="float32", peft_method="prompt_tuning"
    ) as client:
        result = await Tuner(
            client,
            base_model=str(tiny_model_dir),
            training_data=LabelledSet(examples=tuple(TRAINING_YES)),
            validation_data=[e.model_dump() for e in CONTRARY],
            parameters=PARAMETERS,
            selection_metric="loss",
            poll_interval=(0.01, 0.05),
            on_event=events.append,
        ).run()
        assert result.best_epoch == 0
        assert result.stop_reason == "trained all 3 epochs"
        assert len(result.validation_loss_per_epoch) == 3
        assert result.validation_accuracy_per_epoch == [0.0, 0.0, 0.0]  # "no" is never said
        assert result.parameters["validation_split"] == 0.0
        assert result.parameters["precision"] == "float32"

        # The same training, step by step here: the adapter on disk is epoch 1's prompt.
        loaded = await client.models.get(str(tiny_model_dir))
        config = TrainingConfig.from_parameters(
            PARAMETERS,
            seed=0,
            selection_metric="loss",
            early_stopping_patience=None,
            peft_method="prompt_tuning",
        )
        trainer = PromptTrainer(loaded, TRAINING_YES, config)
        while (step := trainer.step()) is not None and not step.epoch_finished:
            pass
        adapter = client.store.adapter_dir(result.run_id)
        assert torch.allclose(load_soft_prompt(adapter, loaded.model), _soft_prompt(trainer))

        async with await Deployment.create(client, result, delete_on_exit=True) as tuned:
            answer = await tuned.generate(CONTRARY[0].input, parameters={"max_new_tokens": 2})
        assert answer.text.strip()

    epochs = [e for e in events if isinstance(e, EpochCompleted)]
    assert [e.epoch for e in epochs] == [0, 1, 2]
    assert [e.validation_loss for e in epochs] == result.validation_loss_per_epoch
    assert [e.best_epoch for e in epochs] == [0, 0, 0]
    finished = [e for e in events if isinstance(e, RunFinished)]
    assert finished[-1].best_epoch == 0
    assert finished[-1].stop_reason == result.stop_reason

    # The run store keeps all of it for a later process.
    stored = RunStore(home).read(result.run_id)
    assert stored.best_epoch == 0
    assert [p.loss for p in stored.validation] == result.validation_loss_per_epoch
    assert stored.to_run().stop_reason == result.stop_reason


@pytest.mark.anyio
async def test_early_stopping_through_tuner(tiny_model_dir: Path, home: Path) -> None:
    async with LocalClient(
        str(tiny_model_dir), home=home, precision="float32", peft_method="prompt_tuning"
    ) as client:
        result = await Tuner(
            client,
            base_model=str(tiny_model_dir),
            training_data=LabelledSet(examples=tuple(TRAINING_YES)),
            validation_data=LabelledSet(examples=tuple(CONTRARY)),
            parameters=PARAMETERS.model_copy(update={"num_epochs": 10}),
            selection_metric="loss",
            early_stopping_patience=1,
            poll_interval=(0.01, 0.05),
        ).run()
    assert result.succeeded
    assert len(result.loss_per_epoch) == 2
    assert result.best_epoch == 0
    assert result.stop_reason is not None
    assert result.stop_reason.startswith("early stopping")


@pytest.mark.anyio
async def test_validation_split_holds_out_a_stratified_share(
    tiny_model_dir: Path, home: Path
) -> None:
    data = LabelledSet(examples=tuple(review_examples(40)))
    async with LocalClient(str(tiny_model_dir), home=home, precision="float32") as client:
        result = await Tuner(
            client,
            base_model=str(tiny_model_dir),
            training_data=data,
            parameters=PARAMETERS.model_copy(update={"num_epochs": 2}),
            validation_split=0.25,
            poll_interval=(0.01, 0.05),
        ).run()
        assert result.parameters["validation_split"] == 0.25
        assert result.parameters["selection_metric"] == "accuracy"  # classification
        assert len(result.validation) == 2
        # 30 training examples in batches of 4: 8 steps per epoch.
        assert len(result.metrics) == 16
        assert result.best_epoch is not None

        # The kept soft prompt, deployed, answers the held-out part with the same accuracy.
        _, held = stratified_split(list(data.examples), 0.25, seed=client.seed)
        async with await Deployment.create(client, result, delete_on_exit=True) as tuned:
            report = await Evaluator(client, parameters={"max_new_tokens": 2}).evaluate(
                held, target=tuned
            )
    kept = result.validation[result.best_epoch]
    assert report.metrics.accuracy == pytest.approx(kept.accuracy)


@pytest.mark.anyio
async def test_bad_validation_rows_get_file_and_line_errors(
    tiny_model_dir: Path, home: Path, tmp_path: Path
) -> None:
    path = tmp_path / "validation.jsonl"
    rows = [json.dumps(e.model_dump()) for e in review_examples(4)]
    rows.insert(2, json.dumps({"input": "the dog was good ."}))  # line 3: no output
    rows.append("{not json")  # line 6
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    async with LocalClient(str(tiny_model_dir), home=home) as client:
        tuner = Tuner(
            client,
            base_model=str(tiny_model_dir),
            training_data=LabelledSet(examples=tuple(TRAINING)),
            validation_data=path,
            parameters=PARAMETERS,
        )
        with pytest.raises(InvalidDataError) as caught:
            await tuner.run()
        assert await client.list_tuning_runs() == []
    assert "validation data" in str(caught.value)
    lines = {(p.source, p.line) for p in caught.value.problems}
    assert (str(path), 3) in lines
    assert (str(path), 6) in lines


def test_validation_arguments_are_checked(tiny_model_dir: Path, home: Path) -> None:
    client = LocalClient(str(tiny_model_dir), home=home)
    with pytest.raises(InvalidParametersError, match="not both"):
        Tuner(client, validation_data=LabelledSet(examples=tuple(TRAINING)), validation_split=0.2)
    with pytest.raises(InvalidParametersError, match=r"validation_split=1\.5"):
        Tuner(client, validation_split=1.5)
    with pytest.raises(InvalidParametersError, match="early_stopping_patience=-1"):
        Tuner(client, early_stopping_patience=-1)
    with pytest.raises(InvalidParametersError, match="selection_metric='f1'"):
        Tuner(client, selection_metric="f1")  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_too_large_a_split_is_refused_before_the_run_exists(
    tiny_model_dir: Path, home: Path
) -> None:
    async with LocalClient(str(tiny_model_dir), home=home) as client:
        tuner = Tuner(
            client,
            base_model=str(tiny_model_dir),
            training_data=LabelledSet(examples=tuple(review_examples(10))),
            parameters=PARAMETERS,
            validation_split=0.01,
        )
        with pytest.raises(ConfigurationError, match="no validation"):
            await tuner.run()
        assert await client.list_tuning_runs() == []

"""The training engine on the tiny model: masking, padding, grouping, seeds, steps, cancel."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
import torch

from granite_tuner.backends.local._models import LoadedModel, cache_argument
from granite_tuner.backends.local._training import (
    DEFAULT_INIT_TEXTS,
    IGNORE_INDEX,
    EncodedExample,
    PromptTrainer,
    TrainingCancelled,
    TrainingConfig,
    collate,
    encode_examples,
    plan_batches,
)
from granite_tuner.data import Example
from granite_tuner.errors import ConfigurationError
from granite_tuner.parameters import PromptTuningParameters
from tests.tiny_model import constant_examples, review_examples

FAST = TrainingConfig(num_epochs=1, batch_size=4, num_virtual_tokens=4, learning_rate=0.1)


def ids(loaded: LoadedModel, text: str) -> list[int]:
    encoded: list[int] = loaded.tokenizer(text, add_special_tokens=False)["input_ids"]
    return encoded


# --- configuration ----------------------------------------------------------------------------


def test_unset_parameters_take_local_defaults() -> None:
    config = TrainingConfig.from_parameters(PromptTuningParameters(), seed=7)
    assert config.learning_rate == 0.01
    assert config.num_virtual_tokens == 16
    assert config.batch_size == 4
    assert config.num_epochs == 5
    assert config.max_input_tokens == 256
    assert config.peft_method == "prefix_tuning"
    assert config.soft_prompt_position == "start"  # a prefix goes in front of the input
    assert config.accumulate_steps == 1
    assert config.verbalizer == "{{input}}"
    assert config.init_method == "text"
    assert config.init_text == DEFAULT_INIT_TEXTS["classification"]
    assert config.seed == 7


def test_prompt_tuning_takes_its_own_defaults() -> None:
    config = TrainingConfig.from_parameters(PromptTuningParameters(), peft_method="prompt_tuning")
    assert config.peft_method == "prompt_tuning"
    assert (config.learning_rate, config.num_epochs, config.num_virtual_tokens) == (0.03, 8, 8)
    assert config.soft_prompt_position == "end"
    start = TrainingConfig.from_parameters(
        PromptTuningParameters(), peft_method="prompt_tuning", soft_prompt_position="start"
    )
    assert start.soft_prompt_position == "start"


def test_given_parameters_keep_their_meaning() -> None:
    parameters = PromptTuningParameters(
        task_id="summarization",
        num_epochs=3,
        learning_rate=0.1,
        batch_size=2,
        accumulate_steps=4,
        max_input_tokens=64,
        max_output_tokens=16,
        init_method="random",
        verbalizer="Text: {{input}} Summary:",
        num_virtual_tokens=5,
    )
    config = TrainingConfig.from_parameters(parameters)
    assert (config.num_epochs, config.learning_rate, config.batch_size) == (3, 0.1, 2)
    assert (config.accumulate_steps, config.max_input_tokens, config.max_output_tokens) == (
        4,
        64,
        16,
    )
    assert (config.init_method, config.init_text, config.num_virtual_tokens) == ("random", None, 5)
    assert config.verbalizer == "Text: {{input}} Summary:"


# --- encoding, masking, padding -----------------------------------------------------------------


def test_examples_are_verbalised_and_targets_end_with_eos(tiny_loaded: LoadedModel) -> None:
    config = TrainingConfig(verbalizer="review : {{input}} satisfied ?")
    [encoded] = encode_examples(
        tiny_loaded.tokenizer, [Example(input="the dog was good", output="yes")], config
    )
    bos = tiny_loaded.tokenizer.bos_token_id
    assert encoded.prompt_ids == (bos, *ids(tiny_loaded, "review : the dog was good satisfied ?"))
    assert encoded.target_ids == (*ids(tiny_loaded, "yes"), tiny_loaded.eos_token_id)


def test_long_prompts_keep_their_end_and_bos(tiny_loaded: LoadedModel) -> None:
    config = TrainingConfig(max_input_tokens=4, max_output_tokens=2)
    [encoded] = encode_examples(
        tiny_loaded.tokenizer,
        [Example(input="the dog was good and the cat was bad", output="no no no")],
        config,
    )
    assert encoded.prompt_ids == (
        tiny_loaded.tokenizer.bos_token_id,
        *ids(tiny_loaded, "cat was bad"),
    )
    assert encoded.target_ids == tuple(ids(tiny_loaded, "no no"))  # cut, so no EOS


def test_labels_cover_the_output_tokens_only(tiny_loaded: LoadedModel) -> None:
    short = EncodedExample(prompt_ids=(2, 10), target_ids=(40, 3))
    long = EncodedExample(prompt_ids=(2, 10, 11, 12, 13), target_ids=(41, 42, 3))
    batch = collate([short, long], pad_token_id=1)

    assert batch.input_ids.tolist() == [
        [1, 1, 1, 1, 2, 10, 40, 3],
        [2, 10, 11, 12, 13, 41, 42, 3],
    ]
    assert batch.attention_mask.tolist() == [[0, 0, 0, 0, 1, 1, 1, 1], [1] * 8]
    ignore = IGNORE_INDEX
    assert batch.labels.tolist() == [
        [ignore] * 6 + [40, 3],
        [ignore] * 5 + [41, 42, 3],
    ]
    assert batch.target_width == 3
    assert batch.num_target_tokens == 5


def test_batches_are_padded_to_their_longest_example_only(tiny_loaded: LoadedModel) -> None:
    encoded = encode_examples(tiny_loaded.tokenizer, review_examples(40), TrainingConfig())
    lengths = [example.length for example in encoded]
    for indices in plan_batches(lengths, 4, random.Random(0)):
        batch = collate([encoded[i] for i in indices], tiny_loaded.pad_token_id)
        assert batch.input_ids.shape == (len(indices), max(lengths[i] for i in indices))


def test_batches_group_examples_of_similar_length() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(5, 200) for _ in range(400)]
    batches = plan_batches(lengths, 8, random.Random(0))

    assert sorted(i for batch in batches for i in batch) == list(range(400))  # each once
    assert all(len(batch) == 8 for batch in batches)

    def padding(plan: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in plan)

    order = list(range(400))
    random.Random(0).shuffle(order)
    unsorted = [order[k : k + 8] for k in range(0, 400, 8)]
    assert padding(batches) < padding(unsorted) / 10
    # seeded: the same plan again; another epoch's seed reorders the batches
    assert plan_batches(lengths, 8, random.Random(0)) == batches
    assert plan_batches(lengths, 8, random.Random(1)) != batches


def test_labelled_batches_mix_the_labels_in_their_share_of_the_data() -> None:
    """Classification batches hold each label in its share (one label in four here), not
    runs of one label, and still group examples of similar length."""
    rng = random.Random(2)
    lengths = [rng.randint(5, 200) for _ in range(400)]
    labels = ["yes" if i % 4 == 0 else "no" for i in range(400)]
    batches = plan_batches(lengths, 8, random.Random(0), labels)

    assert sorted(i for batch in batches for i in batch) == list(range(400))  # each once
    assert all(len(batch) == 8 for batch in batches)
    assert all(1 <= sum(labels[i] == "yes" for i in batch) <= 3 for batch in batches)
    unlabelled = plan_batches(lengths, 8, random.Random(0))
    assert max(sum(labels[i] == "yes" for i in batch) for batch in unlabelled) > 3

    def padding(plan: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in plan)

    order = list(range(400))
    random.Random(0).shuffle(order)
    assert padding(batches) < padding([order[k : k + 8] for k in range(0, 400, 8)]) / 3
    assert plan_batches(lengths, 8, random.Random(0), labels) == batches
    assert plan_batches(lengths, 8, random.Random(1), labels) != batches


def test_classification_runs_mix_labels_and_old_records_do_not() -> None:
    classification = PromptTuningParameters(task_id="classification")
    generation = PromptTuningParameters(task_id="generation")
    assert TrainingConfig.from_parameters(classification).label_mixed_batches
    assert not TrainingConfig.from_parameters(generation).label_mixed_batches
    assert not TrainingConfig().label_mixed_batches  # what a run.json without the key means


def test_loss_matches_peft_forward_on_unpadded_examples(tiny_loaded: LoadedModel) -> None:
    """Left padding, explicit positions and trimmed logits give PEFT's own loss."""
    examples = review_examples(6, seed=3)
    trainer = PromptTrainer(tiny_loaded, examples, FAST)
    batch = collate(trainer.examples, tiny_loaded.pad_token_id)
    assert len({example.length for example in trainer.examples}) > 1  # really padded

    with torch.no_grad():
        ours = float(trainer.batch_loss(batch))
        total, tokens = 0.0, 0
        for example in trainer.examples:
            input_ids = torch.tensor([[*example.prompt_ids, *example.target_ids]])
            labels = torch.tensor(
                [[IGNORE_INDEX] * len(example.prompt_ids) + list(example.target_ids)]
            )
            loss = trainer.peft_model(input_ids=input_ids, labels=labels).loss
            count = len(example.target_ids)  # tokens predicted: all targets (BOS never is one)
            total += float(loss) * count
            tokens += count
    assert ours == pytest.approx(total / tokens, rel=1e-4)


# --- training ---------------------------------------------------------------------------------


def test_same_seed_gives_the_same_losses(tiny_loaded: LoadedModel) -> None:
    examples = review_examples(24)
    for init_method in ("text", "random"):
        config = TrainingConfig(
            num_epochs=2,
            batch_size=4,
            num_virtual_tokens=4,
            learning_rate=0.1,
            init_method=init_method,
            init_text="the dog was good" if init_method == "text" else None,
            seed=5,
        )
        first = [r.loss for r in PromptTrainer(tiny_loaded, examples, config).train()]
        second = [r.loss for r in PromptTrainer(tiny_loaded, examples, config).train()]
        assert first == second
        other = TrainingConfig(**{**config.to_dict(), "seed": 6})
        assert [r.loss for r in PromptTrainer(tiny_loaded, examples, other).train()] != first


def test_loss_falls_on_a_trivially_learnable_task(tiny_loaded: LoadedModel) -> None:
    config = TrainingConfig(
        num_epochs=8, batch_size=8, num_virtual_tokens=4, learning_rate=0.3, init_method="random"
    )
    results = PromptTrainer(tiny_loaded, constant_examples(32), config).train()
    first = [r.loss for r in results if r.epoch == 0]
    last = [r.loss for r in results if r.epoch == config.num_epochs - 1]
    assert sum(last) / len(last) < 0.5 * sum(first) / len(first)


def test_only_the_soft_prompt_changes(tiny_loaded: LoadedModel) -> None:
    before = {name: p.detach().clone() for name, p in tiny_loaded.model.named_parameters()}
    trainer = PromptTrainer(tiny_loaded, review_examples(8), FAST)
    prompt_before = trainer.peft_model.get_prompt(batch_size=1).detach().clone()
    trainer.train()
    assert not torch.equal(trainer.peft_model.get_prompt(batch_size=1), prompt_before)
    for name, param in tiny_loaded.model.named_parameters():
        assert torch.equal(param, before[name]), name
        assert not param.requires_grad
    assert not tiny_loaded.model.training


def test_accumulate_steps_make_one_optimizer_step_per_group(tiny_loaded: LoadedModel) -> None:
    config = TrainingConfig(
        num_epochs=2, batch_size=2, accumulate_steps=2, num_virtual_tokens=4, learning_rate=0.1
    )
    trainer = PromptTrainer(tiny_loaded, review_examples(10), config)  # 5 batches an epoch
    results = trainer.train()

    (soft_prompt,) = trainer.optimizer.param_groups[0]["params"]
    optimizer_steps = int(trainer.optimizer.state[soft_prompt]["step"])
    assert trainer.steps_per_epoch == 3
    assert trainer.total_steps == 6
    assert optimizer_steps == 6
    assert [r.batches for r in results] == [2, 2, 1, 2, 2, 1]
    assert [r.iteration for r in results] == [1, 2, 3, 4, 5, 6]
    assert [r.epoch for r in results] == [0, 0, 0, 1, 1, 1]
    assert [r.epoch_finished for r in results] == [False, False, True, False, False, True]
    assert trainer.step() is None


def test_the_learning_rate_falls_linearly_to_zero(tiny_loaded: LoadedModel) -> None:
    config = TrainingConfig(num_epochs=2, batch_size=5, num_virtual_tokens=4, learning_rate=0.1)
    trainer = PromptTrainer(tiny_loaded, review_examples(20), config)  # 4 steps an epoch
    rates = [trainer.optimizer.param_groups[0]["lr"]]
    while trainer.step() is not None:
        rates.append(trainer.optimizer.param_groups[0]["lr"])

    assert rates == pytest.approx([0.1 * (1 - done / 8) for done in range(9)])


def test_cancel_stops_within_one_step(tiny_loaded: LoadedModel) -> None:
    cancel = threading.Event()
    config = TrainingConfig(
        num_epochs=1, batch_size=2, accumulate_steps=4, num_virtual_tokens=4, learning_rate=0.1
    )
    trainer = PromptTrainer(tiny_loaded, review_examples(8), config, cancel=cancel)
    prompt = trainer.peft_model.get_prompt(batch_size=1).detach().clone()
    batches = 0
    batch_loss = trainer.batch_loss

    def loss_then_cancel(batch: object, examples: object = None) -> torch.Tensor:
        nonlocal batches
        batches += 1
        cancel.set()  # as if cancel_tuning_run came during the first batch
        return batch_loss(batch, examples)  # type: ignore[arg-type]

    trainer.batch_loss = loss_then_cancel  # type: ignore[method-assign]
    with pytest.raises(TrainingCancelled):
        trainer.step()
    assert batches == 1  # not the 4 batches of the step
    assert trainer.iteration == 0
    assert torch.equal(trainer.peft_model.get_prompt(batch_size=1), prompt)  # nothing applied


def test_saved_adapter_loads_back_with_peft(tiny_loaded: LoadedModel, tmp_path: Path) -> None:
    from peft import PeftModel

    trainer = PromptTrainer(tiny_loaded, review_examples(8), FAST)
    trainer.train()
    trainer.save(tmp_path / "adapter")

    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    loaded = PeftModel.from_pretrained(tiny_loaded.model, str(tmp_path / "adapter"))
    assert torch.equal(loaded.get_prompt(batch_size=1), trainer.peft_model.get_prompt(batch_size=1))


def test_building_a_trainer_hides_peft_s_warning_and_leaves_the_filters(
    tiny_loaded: LoadedModel,
) -> None:
    """PEFT's `is_gradient_checkpointing` FutureWarning is filtered around the wrap only."""
    import warnings

    examples = list(review_examples(8))
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PromptTrainer(tiny_loaded, examples, FAST)
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    assert warnings.filters == before


# --- the soft prompt at the end of the input --------------------------------------------------

AT_END = TrainingConfig(
    num_epochs=1, batch_size=4, num_virtual_tokens=4, learning_rate=0.1, soft_prompt_position="end"
)


def _unpadded_logits_at_end(trainer: PromptTrainer, example: EncodedExample) -> torch.Tensor:
    """One plain forward pass over `[prompt][soft prompt][target]`, no padding, no cache."""
    embed = trainer.loaded.model.get_input_embeddings()
    soft = trainer.peft_model.get_prompt(batch_size=1)[0]
    sequence = torch.cat(
        (
            embed(torch.tensor(example.prompt_ids, dtype=torch.long)),
            soft,
            embed(torch.tensor(example.target_ids, dtype=torch.long)),
        )
    )
    logits: torch.Tensor = trainer.loaded.model(inputs_embeds=sequence[None]).logits[0]
    return logits


def test_a_soft_prompt_at_the_end_sits_between_prompt_and_target(
    tiny_loaded: LoadedModel,
) -> None:
    """Two passes (prompts cached, then soft prompt + target) over padded rows of different
    prompt and target lengths give the logits of one plain pass over each unpadded row."""
    examples = [*review_examples(5, seed=3), Example(input="good dog", output="yes it was")]
    trainer = PromptTrainer(tiny_loaded, examples, AT_END)
    batch = collate(trainer.examples, tiny_loaded.pad_token_id)
    assert len(set(batch.prompt_lengths)) > 1
    assert len({len(e.target_ids) for e in trainer.examples}) > 1
    keep = batch.target_width + 1
    with torch.no_grad():
        ours = trainer.logits(batch, keep)
        for row, example in enumerate(trainer.examples):
            expected = _unpadded_logits_at_end(trainer, example)
            own = len(example.target_ids) + 1  # the soft prompt's last position, then targets
            torch.testing.assert_close(ours[row, -own:], expected[-own:], rtol=1e-4, atol=1e-4)


def test_a_soft_prompt_at_the_end_learns_and_only_it_changes(tiny_loaded: LoadedModel) -> None:
    before = {name: p.detach().clone() for name, p in tiny_loaded.model.named_parameters()}
    config = TrainingConfig(**{**AT_END.to_dict(), "num_epochs": 8, "batch_size": 8})
    config = TrainingConfig(**{**config.to_dict(), "learning_rate": 0.3, "init_method": "random"})
    results = PromptTrainer(tiny_loaded, constant_examples(32), config).train()
    first = [r.loss for r in results if r.epoch == 0]
    last = [r.loss for r in results if r.epoch == config.num_epochs - 1]
    assert sum(last) / len(last) < 0.5 * sum(first) / len(first)
    for name, param in tiny_loaded.model.named_parameters():
        assert torch.equal(param, before[name]), name


def test_an_adapter_trained_at_the_end_says_so(tiny_loaded: LoadedModel, tmp_path: Path) -> None:
    import json

    from granite_tuner.backends.local._adapter import POSITION_KEY

    for position in ("start", "end"):
        config = TrainingConfig(**{**AT_END.to_dict(), "soft_prompt_position": position})
        trainer = PromptTrainer(tiny_loaded, review_examples(8), config)
        trainer.train()
        trainer.save(tmp_path / position)
        saved = json.loads((tmp_path / position / "adapter_config.json").read_text())
        assert saved.get(POSITION_KEY, "start") == position
        assert saved["peft_type"] == "PROMPT_TUNING"


def test_kept_prompt_keys_and_values_give_the_same_logits(tiny_loaded: LoadedModel) -> None:
    """From a training batch's second pass on, its prompts' keys and values come from what the
    first pass kept, regrouped and re-padded; the logits are those of running them again."""
    examples = [*review_examples(5, seed=4), Example(input="good", output="1")]
    trainer = PromptTrainer(tiny_loaded, examples, AT_END)
    assert trainer._prompt_cache is not None
    first = [0, 1, 2, 5]
    regrouped = [5, 2, 3]  # 3 was never run: the whole batch runs again
    again = [2, 5, 0]  # all kept, padded to another width than they were computed in
    with torch.no_grad():
        for rows in (first, regrouped, again):
            batch = collate([trainer.examples[i] for i in rows], tiny_loaded.pad_token_id)
            keep = batch.target_width + 1
            fresh = trainer.logits(batch, keep)
            reused = trainer.logits(batch, keep, rows)
            torch.testing.assert_close(reused, fresh, rtol=1e-4, atol=1e-5)
    assert trainer._prompt_cache.batch(again, 40) is not None
    assert trainer._prompt_cache.batch([4], 40) is None  # never run


def test_training_at_the_end_repeats_with_the_same_seed(tiny_loaded: LoadedModel) -> None:
    """The kept keys and values change nothing: two runs give the same losses, and so does a
    run that keeps none."""
    config = TrainingConfig(**{**AT_END.to_dict(), "num_epochs": 3})
    examples = review_examples(16)
    first = [r.loss for r in PromptTrainer(tiny_loaded, examples, config).train()]
    assert first == [r.loss for r in PromptTrainer(tiny_loaded, examples, config).train()]
    uncached = PromptTrainer(tiny_loaded, examples, config)
    uncached._prompt_cache = None
    assert [r.loss for r in uncached.train()] == pytest.approx(first, rel=1e-4)


# --- prefix tuning ------------------------------------------------------------------------------

PREFIX = TrainingConfig(
    num_epochs=2,
    batch_size=4,
    num_virtual_tokens=3,
    learning_rate=0.5,  # the tiny random model needs big steps to move in 8
    peft_method="prefix_tuning",
    init_method="text",
    init_text="the review",
)


def test_prefix_logits_are_peft_s_for_left_padded_batches(tiny_loaded: LoadedModel) -> None:
    """The trainer's own prefix pass (a KV cache, positions after the prefix) gives what PEFT's
    `PeftModel` gives for each unpadded sequence, also after training moved the prefix."""
    trainer = PromptTrainer(tiny_loaded, review_examples(12), PREFIX)
    trainer.train()
    rows = sorted(trainer.examples, key=lambda e: len(e.prompt_ids))
    batch = collate([rows[0], rows[-1], rows[5]], tiny_loaded.pad_token_id)
    assert len(rows[0].prompt_ids) != len(rows[-1].prompt_ids)  # really padded
    with torch.no_grad():
        ours = trainer.logits(batch, batch.target_width + 1)
        for row, example in enumerate([rows[0], rows[-1], rows[5]]):
            sequence = torch.tensor([[*example.prompt_ids, *example.target_ids]])
            peft = trainer.peft_model(input_ids=sequence, attention_mask=torch.ones_like(sequence))
            keep = len(example.target_ids) + 1
            torch.testing.assert_close(ours[row, -keep:], peft.logits[0, -keep:])


def test_prefix_tuning_learns_and_saves_a_peft_prefix(
    tiny_loaded: LoadedModel, tmp_path: Path
) -> None:
    from peft import PeftModel

    from granite_tuner.backends.local._adapter import load_soft_prompt
    from granite_tuner.backends.local._prefix import PrefixLayout

    trainer = PromptTrainer(tiny_loaded, constant_examples(16), PREFIX)
    losses = [step.loss for step in trainer.train()]
    assert losses[-1] < losses[0] / 2, losses
    trainer.save(tmp_path / "adapter")
    layout = PrefixLayout.of(tiny_loaded.model)
    saved = load_soft_prompt(tmp_path / "adapter", tiny_loaded.model, "prefix_tuning")
    assert saved.shape == (3, layout.width)
    assert torch.equal(saved, trainer.soft_prompt.detach())
    reloaded = PeftModel.from_pretrained(tiny_loaded.model, str(tmp_path / "adapter"))
    assert reloaded.peft_config["default"].peft_type == "PREFIX_TUNING"
    with pytest.raises(ConfigurationError, match="PREFIX_TUNING adapter"):
        load_soft_prompt(tmp_path / "adapter", tiny_loaded.model, "prompt_tuning")


def test_prefix_text_init_is_the_text_s_keys_and_values(tiny_loaded: LoadedModel) -> None:
    """Text init for a prefix: row i is what the model computes for the text's i-th token."""
    trainer = PromptTrainer(tiny_loaded, review_examples(8), PREFIX)
    ids = tiny_loaded.tokenizer("the review", add_special_tokens=False)["input_ids"]
    assert len(ids) == 2  # three virtual tokens: the text once, then its first token again
    with torch.no_grad():
        output = tiny_loaded.model(input_ids=torch.tensor([[*ids, ids[0]]]), use_cache=True)
    layer = getattr(output, cache_argument(tiny_loaded.model)).layers[0]
    first_keys = layer.keys[0].permute(1, 0, 2).reshape(3, -1)
    prefix = trainer.soft_prompt.detach()
    torch.testing.assert_close(prefix[:, : first_keys.shape[1]], first_keys)

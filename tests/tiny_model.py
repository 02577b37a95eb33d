"""A tiny random language model built offline, and small labelled sets over its vocabulary.

The model is a 2-layer Llama with hidden size 32 and a word-level tokenizer over a few dozen
words (with a BOS token, so prompt truncation has one to keep): built from a config in well
under a second, never downloaded, and real enough for PEFT prompt tuning to learn on it.
"""

from __future__ import annotations

import random
from pathlib import Path

from granite_tuner.data import Example

WORDS = [
    *("the", "a", "dog", "cat", "groomer", "salon", "staff", "service", "price"),
    *("was", "were", "is", "very", "quite", "really"),
    *("good", "great", "lovely", "friendly", "clean", "happy"),
    *("bad", "awful", "rude", "dirty", "slow", "late", "sad"),
    *("review", ":", "satisfied", "?", "input", "output", "yes", "no", "1", "0", ".", ","),
]

POSITIVE = ["good", "great", "lovely", "friendly", "clean", "happy"]
NEGATIVE = ["bad", "awful", "rude", "dirty", "slow", "sad"]
SUBJECTS = ["the dog", "the cat", "the groomer", "the salon", "the staff", "the service"]


def build_tiny_model(folder: Path) -> None:
    """Save a tokenizer and a randomly initialised tiny Llama into `folder`."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["[UNK]", "[PAD]", "[BOS]", "[EOS]"]
    vocab = {word: index for index, word in enumerate([*specials, *WORDS])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[BOS] $A", special_tokens=[("[BOS]", vocab["[BOS]"])]
    )
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # unannotated __init__
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=vocab["[PAD]"],
        bos_token_id=vocab["[BOS]"],
        eos_token_id=vocab["[EOS]"],
        tie_word_embeddings=True,
        # Larger than the usual 0.02, so that a 4-token soft prompt has enough leverage over a
        # random 2-layer model for learning to show within a few epochs.
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def review_examples(count: int, *, seed: int = 0) -> list[Example]:
    """A small sentiment task over the tiny vocabulary: '1' for praise, '0' for complaints."""
    rng = random.Random(seed)
    examples = []
    for index in range(count):
        positive = index % 2 == 0
        words = rng.choices(POSITIVE if positive else NEGATIVE, k=rng.randint(1, 6))
        text = f"{rng.choice(SUBJECTS)} was {' '.join(words)} ."
        examples.append(Example(input=text, output="1" if positive else "0"))
    return examples


def constant_examples(count: int, *, seed: int = 0) -> list[Example]:
    """A trivially learnable task: whatever the input, the answer is 'yes'."""
    return [
        Example(input=example.input, output="yes") for example in review_examples(count, seed=seed)
    ]

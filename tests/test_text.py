"""The small text rules shared across the package: verbalizer, prompt cutting, generated names."""

from __future__ import annotations

import re

from granite_tuner._names import generated_name
from granite_tuner._text import apply_verbalizer, keep_last_tokens


def test_apply_verbalizer() -> None:
    assert apply_verbalizer("Input: {{input}} Output:", "great film") == "Input: great film Output:"
    assert apply_verbalizer(None, "great film") == "great film"
    assert apply_verbalizer("", "great film") == "great film"


def test_keep_last_tokens_keeps_the_end_and_the_leading_special_tokens() -> None:
    bos = 0
    assert keep_last_tokens([bos, 1, 2, 3, 4, 5], 4, {bos}) == [bos, 3, 4, 5]
    assert keep_last_tokens([1, 2, 3, 4, 5], 3, {bos}) == [3, 4, 5]
    assert keep_last_tokens([bos, 1, 2], 3, {bos}) == [bos, 1, 2]  # short enough: unchanged
    assert keep_last_tokens([bos, 1, 2], 1, {bos}) == [2]  # no room for the BOS
    assert keep_last_tokens([bos, bos, bos, 1], 2, {bos}) == [bos, 1]  # at most limit - 1 kept


def test_generated_names_share_one_format() -> None:
    assert re.fullmatch(
        r"granite-tuner-classification-\d{8}-\d{6}", generated_name("classification")
    )
    cli = generated_name("deployment", prefix="granite-tuner-cli-")
    assert re.fullmatch(r"granite-tuner-cli-deployment-\d{8}-\d{6}", cli)

"""Two small text rules shared by training and serving, so both read a prompt the same way.

A tuned soft prompt only helps when the model sees its inputs as it did in training: the
same verbalizer around the input, and the same end of a too-long prompt kept. No torch here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

__all__ = ["INPUT_PLACEHOLDER", "apply_verbalizer", "keep_last_tokens"]

#: Where a verbalizer template puts the example's input.
INPUT_PLACEHOLDER = "{{input}}"


def apply_verbalizer(template: str | None, text: str) -> str:
    """`text` put into the template's placeholder; the text itself without a template."""
    return template.replace(INPUT_PLACEHOLDER, text) if template else text


def keep_last_tokens(ids: Sequence[int], limit: int, special: Collection[int]) -> list[int]:
    """The last `limit` token ids, keeping the leading special tokens (BOS) in front.

    Prompts are cut at the start because the end is where a task's question usually is; the
    leading BOS stays so the model has its usual first token. At most `limit - 1` are kept.
    """
    ids = list(ids)
    if len(ids) <= limit:
        return ids
    lead = 0
    while lead < len(ids) and ids[lead] in special:
        lead += 1
    lead = min(lead, limit - 1) if limit > 1 else 0
    return ids[:lead] + ids[len(ids) - (limit - lead) :]

"""Decoding for the local server: one left-padded batch through one `model.generate` call.

Everything here is synchronous torch work that the server's batcher (`_batching`) runs in a
worker thread (which is also where this module, and with it transformers, is first imported);
nothing here knows about deployments, queues or event loops. The settings and answers it deals in
(`DecodeSettings`, `Decoded`) are defined in `_decode_types`, the logits processors in `_logits`,
and reading a saved soft prompt in `_adapter`.

Why the soft prompt is applied by hand instead of through `peft.PeftModel`:

- **Correctness.** A prompt-tuning adapter is nothing but a `(virtual tokens, hidden)` tensor
  that is put in front of the input embeddings. Doing exactly that here, `[soft prompt]
  [left padding][prompt tokens]` with the attention mask extended by ones, reproduces a full
  forward pass over the unpadded sequence token for token (the tests check it against a
  recomputation without cache). `PeftModel.generate` does not: with transformers 5.x it passes
  the KV cache to the model under the new name `cache`, PEFT 0.21 still looks for
  `past_key_values`, takes every decoding step for a first one and injects the soft prompt again,
  so from the second new token on its answers drift from the model's real ones.
- **Sharing.** Wrapping patches `prepare_inputs_for_generation` of the model it wraps while it
  generates. Here one base model, loaded once, serves the plain base-model "deployment" and any
  number of tuned deployments (and training runs) at the same time; each tuned deployment only
  adds its small prompt tensor, and the base model is never touched.
- **Speed.** It is the same forward pass PEFT would make, without a wrapper per request, and it
  lets requests of different deployments share one batch: each row (`DecodeRow`) brings its
  own soft prompt, of any length, or none.

Layout and positions: each row is its soft prompt followed by its tokens, left-padded. With one
soft prompt in the batch it stays at the front, `[soft prompt][padding][tokens]`, the layout the
local trainer uses; rows of several go `[padding][soft prompt][tokens]`. Position ids are
derived from the attention mask (as `generate` does), so padding shifts nothing and a row gets
the same positions, and the same answer, alone or in any batch. A soft prompt trained at the end
of the input (`soft_prompt_position="end"`) follows its row's tokens instead, `[padding][tokens]
[soft prompt]`, as the trainer placed it; a batch with such a row shares no start (below).
A prefix-tuning soft prompt (`peft_method="prefix_tuning"`) is keys and values, not embeddings:
such rows bring no virtual tokens to the layout, and a KV cache that holds every row's prefix
(`_prefix.prefix_cache`, the one the trainer uses; other rows' columns masked out) goes in front
of the whole batch, `[prefix][padding][tokens]`; their positions then start after the prefix,
as in training. Such a batch shares no start either.

Work shared by rows is done once: when rows of one soft prompt start with the same tokens (the
soft prompt, always, and often an instruction every test prompt begins with), that start is run
once, for one row per soft prompt (one left-padded pass for all soft prompts), and its keys and
values are copied to the rows through a prefilled KV cache; the one `generate` call then runs
only what differs. On a CPU, where a batch's cost is mostly the prompt tokens it reads, this is
worth 10-20 % for the shipped test prompts, and more for tuned deployments whose soft prompt is
at the start. A row's layout becomes `[padding][soft prompt][shared tokens][padding][own tokens]`,
with the same positions as before; rows that share nothing (the plain base model's, or a soft
prompt's only row) have all of their sequence in the second part.

Decoding settings follow watsonx.ai's meanings (`GenerationParameters`). Sampling draws from one
`torch.Generator` per request, seeded from its `random_seed`, so a seeded request gives the same
answer however it was batched; requests with different seeds can therefore share a batch. The
repetition penalty counts the prompt's tokens as well as the generated ones, as watsonx.ai and
`transformers` do for plain token input.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from transformers import (
    GenerationConfig,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)

from granite_tuner._text import keep_last_tokens
from granite_tuner.backends.local._decode_types import (
    Decoded,
    DecodeRow,
    DecodeSettings,
    LocalStopReason,
)
from granite_tuner.backends.local._logits import PerRowSampler, PromptAwareRepetitionPenalty
from granite_tuner.backends.local._models import cache_argument
from granite_tuner.backends.local._prefix import PrefixLayout, prefix_cache
from granite_tuner.errors import ConfigurationError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["TextSink", "decode_batch"]

#: Receives, after each decoding step, `(row, new text)` for the streamed rows whose text grew.
TextSink = Callable[[list[tuple[int, str]]], None]

# Tokens decoded at the end of each unfinished sequence to look for a stop sequence: one token
# is at least one character except for special and partial-character tokens, so this many more
# than the longest stop sequence is enough to see one that the newest token completed.
_STOP_WINDOW_SLACK = 8
# Shared leading tokens (soft prompt included) times the other rows of a batch: from this many
# tokens of saved work on, the shared part is run once for all rows (`_shared_length`).
_MIN_SHARED_SAVING = 32
# Models whose cache `_prefilled_cache` found it cannot reuse.
_CACHE_NOT_REUSABLE: weakref.WeakSet[Any] = weakref.WeakSet()


def decode_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[DecodeRow],
    settings: DecodeSettings,
    *,
    should_abort: Callable[[], bool] | None = None,
    on_text: TextSink | None = None,
    streamed_rows: Sequence[int] = (),
) -> list[Decoded]:
    """Generate for every row in one `model.generate` call; one `Decoded` per row, in order.

    Each row brings its own text, sampling seed (ignored for greedy decoding), soft prompt (or
    none) and truncation; `settings.truncate_input_tokens` is not read. `should_abort` is
    polled after every decoding step; when it answers true the batch stops there and every
    answer has `stop_reason="cancelled"`.

    `on_text` (with `streamed_rows`) streams: after every decoding step it gets the text the
    streamed rows gained, and at the end what is left of each row's final answer, so that the
    pieces of a row always add up to its `Decoded.text`.
    """
    streamer = (
        _Streamer(tokenizer, settings, set(streamed_rows), on_text)
        if on_text is not None and streamed_rows
        else None
    )
    with torch.inference_mode():
        answers = _decode(model, tokenizer, rows, settings, should_abort, streamer)
    if streamer is not None:
        streamer.finish(answers)
    return answers


def _decode(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[DecodeRow],
    settings: DecodeSettings,
    should_abort: Callable[[], bool] | None,
    streamer: _Streamer | None = None,
) -> list[Decoded]:
    prompts = _encode(tokenizer, rows)
    if settings.max_new_tokens == 0:
        return [Decoded("", 0, len(ids), "max_tokens") for ids in prompts]
    embedding = model.get_input_embeddings()
    weight = embedding.weight
    assert isinstance(weight, torch.Tensor)
    device = weight.device
    pad_id = _pad_id(tokenizer)
    size = len(prompts)
    # Soft prompts as keys and values (prefix tuning), apart from those that are embeddings.
    kv_prompts = [row.soft_prompt if row.peft_method == "prefix_tuning" else None for row in rows]
    soft_prompts = [None if row.peft_method == "prefix_tuning" else row.soft_prompt for row in rows]
    virtual = [0 if soft is None else int(soft.shape[0]) for soft in soft_prompts]
    groups = _groups(soft_prompts)
    at_end = [
        soft is not None and row.soft_prompt_position == "end"
        for soft, row in zip(soft_prompts, rows, strict=True)
    ]
    if any(at_end) or any(p is not None for p in kv_prompts):
        # A soft prompt after the tokens, or keys and values before them, leaves no common
        # start to share: rows run in full.
        prefix, shared = [0] * size, False
    else:
        prefix, shared = _prefix_lengths(prompts, virtual, groups)
    # Each row is its soft prompt then its tokens, cut in two: its prefix (the soft prompt, and
    # when shared, the tokens its group starts with) and the rest. Layout per row:
    # [padding][prefix][padding][rest], so that every prefix ends, and every row ends, in the
    # same column. Position ids follow the attention mask, so padding shifts nothing.
    lengths = [v + len(ids) for v, ids in zip(virtual, prompts, strict=True)]
    width_prefix = max(prefix)
    width = width_prefix + max(n - p for n, p in zip(lengths, prefix, strict=True))
    pad = embedding(torch.tensor([pad_id], dtype=torch.long, device=device))[0]
    inputs_embeds = pad.expand(size, width, -1).clone()
    attention_mask = torch.zeros((size, width), dtype=torch.long, device=device)
    for row, ids in enumerate(prompts):
        sequence = embedding(torch.tensor(ids, dtype=torch.long, device=device))
        soft = soft_prompts[row]
        if soft is not None:
            soft = soft.to(sequence.dtype)
            sequence = torch.cat((sequence, soft) if at_end[row] else (soft, sequence))
        head, tail = prefix[row], lengths[row] - prefix[row]
        inputs_embeds[row, width_prefix - head : width_prefix] = sequence[:head]
        attention_mask[row, width_prefix - head : width_prefix] = 1
        inputs_embeds[row, width - tail :] = sequence[head:]
        attention_mask[row, width - tail :] = 1
    cache_arguments: dict[str, Any] = {}
    if shared:
        cache_arguments = _prefilled_cache(
            model, inputs_embeds[:, :width_prefix], attention_mask[:, :width_prefix], groups
        )
    elif any(p is not None for p in kv_prompts):
        # `generate` is given the prefix's columns (padding embeddings, never run) and the
        # cache that holds them, and runs only what follows, as for a shared start.
        cache, prefix_mask = prefix_cache(kv_prompts, PrefixLayout.of(model), inputs_embeds.dtype)
        columns = prefix_mask.shape[1]
        inputs_embeds = torch.cat((pad.expand(size, columns, -1), inputs_embeds), dim=1)
        attention_mask = torch.cat((prefix_mask.to(attention_mask.device), attention_mask), dim=1)
        cache_arguments = {cache_argument(model): cache}

    eos_ids = _eos_ids(model, tokenizer)
    processors = LogitsProcessorList()
    if settings.repetition_penalty is not None:
        token_ids, token_mask = _left_padded(prompts, pad_id, device)
        processors.append(
            PromptAwareRepetitionPenalty(token_ids, token_mask, settings.repetition_penalty)
        )
    if settings.sample:
        processors.append(PerRowSampler(settings, [row.seed for row in rows], device))
    stop = _Stop(
        tokenizer,
        settings.stop_sequences,
        min_new_tokens=settings.min_new_tokens,
        eos_ids=eos_ids,
        time_limit_ms=settings.time_limit_ms,
        should_abort=should_abort,
        size=size,
        streamer=streamer,
    )
    if streamer is not None:
        streamer.eos_ids = eos_ids
    config = GenerationConfig(  # type: ignore[no-untyped-call]  # its __init__ is **kwargs
        max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens or None,
        # Sampling, when asked for, happens in `_PerRowSampler`; `generate` itself then only
        # takes the one token that sampler left. transformers' defaults, set explicitly, keep
        # the model's own suggestions (its generation_config.json) out of the decoding.
        do_sample=False,
        num_beams=1,
        temperature=1.0,
        top_p=1.0,
        top_k=50,
        repetition_penalty=1.0,
        pad_token_id=pad_id,
        eos_token_id=sorted(eos_ids) if eos_ids else None,
    )
    output = model.generate(  # type: ignore[operator]  # transformers types it loosely
        inputs_embeds=inputs_embeds,
        attention_mask=attention_mask,
        generation_config=config,
        logits_processor=processors,
        stopping_criteria=StoppingCriteriaList([stop]),
        **cache_arguments,
    )
    sequences = output if isinstance(output, torch.Tensor) else output.sequences
    # With embeddings as input, `generate` returns the new tokens only.
    return [
        _finish(tokenizer, sequences[row].tolist(), len(prompts[row]), row, settings, stop, eos_ids)
        for row in range(size)
    ]


def _encode(tokenizer: PreTrainedTokenizerBase, rows: Sequence[DecodeRow]) -> list[list[int]]:
    """Token ids of each row's text (special tokens as the tokenizer adds them, as in training).

    A row's `truncate_input_tokens` keeps the end of a longer prompt, and its leading special
    tokens (BOS), as watsonx.ai does. An empty prompt without a soft prompt in front gets one
    BOS (or EOS) token, so that it has something to attend to.
    """
    encoded: list[list[int]] = tokenizer([row.text for row in rows], add_special_tokens=True)[
        "input_ids"
    ]
    special = set(tokenizer.all_special_ids)
    prompts: list[list[int]] = []
    for row, ids in zip(rows, encoded, strict=True):
        if row.truncate_input_tokens is not None:
            ids = keep_last_tokens(ids, row.truncate_input_tokens, special)
        if not ids and row.soft_prompt is None:
            start = tokenizer.bos_token_id
            if not isinstance(start, int):
                start = tokenizer.eos_token_id
            if not isinstance(start, int):
                raise ConfigurationError(
                    "An empty prompt cannot be answered by a model without BOS/EOS."
                )
            ids = [start]
        prompts.append(ids)
    return prompts


def _groups(soft_prompts: Sequence[torch.Tensor | None]) -> list[list[int]]:
    """The rows of each soft prompt (the plain base model's too), in order of first row."""
    groups: dict[int | None, list[int]] = {}
    for row, soft in enumerate(soft_prompts):
        groups.setdefault(None if soft is None else id(soft), []).append(row)
    return list(groups.values())


def _prefix_lengths(
    prompts: Sequence[list[int]], virtual: Sequence[int], groups: Sequence[list[int]]
) -> tuple[list[int], bool]:
    """Each row's prefix length, and whether prefixes are computed once per soft prompt.

    The prefix is the row's soft prompt (see `plain` below); when it pays, it also takes the
    leading tokens every
    row of its soft prompt's group shares, and each group's prefix is then run once, for one
    row, with its keys and values copied to the group's rows (`_prefilled_cache`). That saves
    `(rows - 1) * prefix` tokens of work per group and costs one more, small, forward pass, so
    it is done from `_MIN_SHARED_SAVING` tokens saved on. Rows with a soft prompt of their own
    gain nothing from it and take no part. Every row keeps at least one position of its own
    after its prefix, so that `generate` has something to run for it.
    """
    lengths = [v + len(ids) for v, ids in zip(virtual, prompts, strict=True)]
    # Without a shared prefix, one soft prompt stays at the front ([soft prompt][padding]
    # [tokens]); rows of several go as they come ([padding][soft prompt][tokens]): fewer
    # columns, and any order of the two gives every row the same positions and answer.
    one = len(groups) == 1
    plain = [min(v, n - 1) if one else 0 for v, n in zip(virtual, lengths, strict=True)]
    shared = [0] * len(prompts)
    saving = 0
    for group in groups:
        if len(group) < 2:
            continue
        first, v = prompts[group[0]], virtual[group[0]]
        limit = min(lengths[row] for row in group) - 1
        length = min(v, limit)
        while length < limit and all(
            prompts[row][length - v] == first[length - v] for row in group
        ):
            length += 1
        for row in group:
            shared[row] = length
        saving += (len(group) - 1) * length
    if saving < _MIN_SHARED_SAVING:
        return plain, False
    return shared, True


def _prefilled_cache(
    model: PreTrainedModel,
    prefix_embeds: torch.Tensor,
    prefix_mask: torch.Tensor,
    groups: Sequence[list[int]],
) -> dict[str, Any]:
    """`generate`'s keyword arguments for a KV cache that already holds every row's prefix.

    Each group's prefix goes through the model once, for its first row (all groups' first rows
    in one left-padded pass), and its cache is copied to every row of the group; rows with no
    prefix get any row's cache, all masked out. `generate`, given the whole sequences and this
    cache, then runs only what follows. Only a plain full-attention `DynamicCache` is reused
    this way (sliding-window, recurrent or static caches are not): for any other the answer is
    `{}`, and the batch runs in full.
    """
    from transformers import DynamicCache

    if model in _CACHE_NOT_REUSABLE:
        return {}
    keyword = cache_argument(model)
    firsts = [group[0] for group in groups if prefix_mask[group[0]].any()]
    mask = prefix_mask[firsts]
    if bool(mask.all()):  # no padding: as plain a pass as generating for one prompt
        output = model(inputs_embeds=prefix_embeds[firsts], use_cache=True)
    else:
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
        output = model(
            inputs_embeds=prefix_embeds[firsts],
            attention_mask=mask,
            position_ids=positions,
            use_cache=True,
        )
    cache = getattr(output, keyword, None)
    layers = getattr(cache, "layers", None)
    if type(cache) is not DynamicCache or (
        layers is not None and any(type(layer).__name__ != "DynamicLayer" for layer in layers)
    ):
        _CACHE_NOT_REUSABLE.add(model)  # not worth another try for this model
        return {}
    if len(groups) == 1:
        cache.batch_repeat_interleave(len(groups[0]))
    else:
        source = [0] * len(prefix_mask)
        for group in groups:
            if group[0] in firsts:
                for row in group:
                    source[row] = firsts.index(group[0])
        cache.batch_select_indices(torch.tensor(source, device=prefix_mask.device))
    return {keyword: cache}


def _left_padded(
    prompts: Sequence[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts' token ids, left-padded into one matrix, and the mask of real tokens."""
    width = max(len(ids) for ids in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    for row, own in enumerate(prompts):
        if own:
            ids[row, width - len(own) :] = torch.tensor(own, dtype=torch.long)
            mask[row, width - len(own) :] = 1
    return ids, mask


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    pad = tokenizer.pad_token_id
    if isinstance(pad, int):
        return pad
    eos = tokenizer.eos_token_id
    if isinstance(eos, int):
        return eos
    raise ConfigurationError("The tokenizer has neither a pad nor an end-of-sequence token.")


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Every token that ends a sequence: the model's generation config's and the tokenizer's."""
    ids: set[int] = set()
    configured: Any = getattr(model.generation_config, "eos_token_id", None)
    for value in configured if isinstance(configured, list | tuple) else [configured]:
        if isinstance(value, int):
            ids.add(value)
    if isinstance(tokenizer.eos_token_id, int):
        ids.add(tokenizer.eos_token_id)
    return ids


class _Stop(StoppingCriteria):
    """Ends rows at a stop sequence, and the whole batch at its time limit or when aborted.

    Records where each row met a stop sequence, so its answer can be cut there afterwards.
    Stop sequences count once `min_new_tokens` tokens have been generated.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        stop_sequences: tuple[str, ...],
        *,
        min_new_tokens: int,
        eos_ids: set[int],
        time_limit_ms: int | None,
        should_abort: Callable[[], bool] | None,
        size: int,
        streamer: _Streamer | None = None,
    ) -> None:
        self._streamer = streamer
        self._tokenizer = tokenizer
        self._stops = stop_sequences
        self._window = max((len(s) for s in stop_sequences), default=0) + _STOP_WINDOW_SLACK
        self._min_new_tokens = min_new_tokens
        self._eos = torch.tensor(sorted(eos_ids), dtype=torch.long)
        self._deadline = (
            time.monotonic() + time_limit_ms / 1000 if time_limit_ms is not None else None
        )
        self._should_abort = should_abort
        self.stopped_at: list[int | None] = [None] * size
        self.timed_out_at: int | None = None
        self.aborted = False

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor | None, **kwargs: Any
    ) -> torch.BoolTensor:
        size, length = input_ids.shape
        done = torch.zeros(size, dtype=torch.bool, device=input_ids.device)
        if self._should_abort is not None and self._should_abort():
            self.aborted = True
            return done.fill_(True)  # type: ignore[return-value]
        if self._deadline is not None and time.monotonic() >= self._deadline:
            self.timed_out_at = length
            return done.fill_(True)  # type: ignore[return-value]
        if self._stops and length >= self._min_new_tokens:
            ended = torch.isin(input_ids, self._eos.to(input_ids.device)).any(dim=1).tolist()
            tails = input_ids[:, max(0, length - self._window) :].tolist()
            for row in range(size):
                if self.stopped_at[row] is not None:
                    done[row] = True
                elif not ended[row]:
                    tail = _text(self._tokenizer, tails[row])
                    if any(stop in tail for stop in self._stops):
                        self.stopped_at[row] = length
                        done[row] = True
        if self._streamer is not None:
            self._streamer.step(input_ids, self.stopped_at)
        return done  # type: ignore[return-value]


@dataclass(eq=False)
class _Streamer:
    """Turns the tokens of streamed rows into text pieces as they are decoded.

    A piece never has to be taken back: text that may still change is held back until it
    cannot -- a trailing partial character (decoded as U+FFFD), and while stop sequences are
    set, as many characters as the longest one minus one (they could be the start of a stop
    sequence, which the final answer cuts off). Rows that ended (end of sequence, stop
    sequence) send nothing more until `finish`, which sends the rest of the final answers.
    """

    tokenizer: PreTrainedTokenizerBase
    settings: DecodeSettings
    rows: set[int]
    sink: TextSink
    eos_ids: set[int] = field(default_factory=set)
    sent: dict[int, str] = field(default_factory=dict)
    ended: set[int] = field(default_factory=set)

    def step(self, input_ids: torch.Tensor, stopped_at: Sequence[int | None]) -> None:
        hold = max((len(s) for s in self.settings.stop_sequences), default=1) - 1
        pieces: list[tuple[int, str]] = []
        tokens = input_ids.tolist()
        for row in sorted(self.rows - self.ended):
            ids = tokens[row]
            for index, token in enumerate(ids):
                if token in self.eos_ids:
                    ids = ids[: index + 1]
                    self.ended.add(row)
                    break
            if stopped_at[row] is not None:
                self.ended.add(row)
            if row in self.ended:
                continue  # its end is cut by `_finish`; `finish` sends what is left
            text = _text(self.tokenizer, ids).rstrip("\ufffd")
            if hold:
                text = text[: max(0, len(text) - hold)]
            sent = self.sent.get(row, "")
            if len(text) > len(sent) and text.startswith(sent):
                pieces.append((row, text[len(sent) :]))
                self.sent[row] = text
        if pieces:
            self.sink(pieces)

    def finish(self, answers: Sequence[Decoded]) -> None:
        pieces: list[tuple[int, str]] = []
        for row in sorted(self.rows):
            text, sent = answers[row].text, self.sent.get(row, "")
            if len(text) > len(sent) and text.startswith(sent):
                pieces.append((row, text[len(sent) :]))
        if pieces:
            self.sink(pieces)


def _finish(
    tokenizer: PreTrainedTokenizerBase,
    tokens: list[int],
    input_token_count: int,
    row: int,
    settings: DecodeSettings,
    stop: _Stop,
    eos_ids: set[int],
) -> Decoded:
    """One row's answer: its tokens up to where it ended, as text, cut at a stop sequence."""
    end = len(tokens)
    reason: LocalStopReason = "max_tokens"
    for index, token in enumerate(tokens):
        if token in eos_ids:
            end, reason = index + 1, "eos_token"
            break
    stopped_at = stop.stopped_at[row]
    if stopped_at is not None and stopped_at <= end:
        end, reason = stopped_at, "stop_sequence"
    if reason == "max_tokens" and end < settings.max_new_tokens:
        # Cut short without a reason of its own: the batch's time limit or an abort.
        reason = "cancelled" if stop.aborted else "time_limit"
    text = _text(tokenizer, tokens[:end])
    cut = _first_stop(text, settings.stop_sequences)
    if cut is not None:
        position, sequence = cut
        text = text[: position + (len(sequence) if settings.include_stop_sequence else 0)]
        reason = "stop_sequence"
    return Decoded(text, end, input_token_count, reason)


def _text(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    """The text of `ids`, without special tokens (EOS, padding)."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    assert isinstance(text, str)  # one sequence in, one string out
    return text


def _first_stop(text: str, stops: tuple[str, ...]) -> tuple[int, str] | None:
    """Where the earliest stop sequence starts in `text`, and which one (the longest on ties)."""
    best: tuple[int, str] | None = None
    for stop in stops:
        position = text.find(stop)
        if position < 0:
            continue
        if best is None or position < best[0] or (position == best[0] and len(stop) > len(best[1])):
            best = (position, stop)
    return best

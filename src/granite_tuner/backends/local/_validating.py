"""Scoring the soft prompt on validation data between training steps: loss, and accuracy.

Why it is shaped this way:

- It must cost seconds, not minutes, so it runs on whole batches laid out exactly as training
  and serving lay them out (left padding, the soft prompt in front, positions counted over
  real tokens), with no gradients, and reuses the trainer's forward pass.
- One teacher-forced pass per batch gives both figures: the loss over the target tokens, and
  the model's greedy choice at every target position. Greedy decoding follows the target for
  as long as the model agrees with it, so for every row whose greedy answer is the target (most
  rows, once the model has learned the task) that pass *is* its greedy decoding. Only rows that
  part from the target are decoded further, a token at a time, up to `answer_tokens` tokens.
- The answer is read with the Evaluator's own parser (`TokenLabelParser`, the labels of the
  data), so the accuracy here is the accuracy `Evaluator` would report for a deployment of the
  soft prompt as it is now, with greedy decoding of `answer_tokens` new tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from granite_tuner.backends.local._training_data import (
    IGNORE_INDEX,
    Batch,
    EncodedExample,
    collate,
)
from granite_tuner.data import Example
from granite_tuner.metrics import TokenLabelParser

__all__ = ["ValidationScore", "Validator", "improved"]

#: Rows per validation batch: no gradients are kept, so larger than a training batch is fine.
_BATCH_SIZE = 32
#: Longest greedy answer decoded for accuracy (labels are a word or two).
_MAX_ANSWER_TOKENS = 8

#: `logits(batch, keep)`: the vocabulary logits of the last `keep` positions of `batch`.
LogitsFn = Callable[[Batch, int], torch.Tensor]


@dataclass(frozen=True)
class ValidationScore:
    """Mean loss per target token, and the share of answers parsed as the right label."""

    loss: float
    accuracy: float | None


class Validator:
    """Scores one validation set; `accuracy` is measured for classification data only."""

    def __init__(
        self,
        examples: Sequence[Example],
        encoded: Sequence[EncodedExample],
        *,
        labels: Sequence[str],
        classification: bool,
        pad_token_id: int,
        eos_token_id: int | None,
        decode: Callable[[list[int]], str],
    ) -> None:
        self.examples = list(examples)
        self.encoded = list(encoded)
        self._expected = [example.output for example in examples]
        self._parser = TokenLabelParser(labels) if classification else None
        self._pad = pad_token_id
        self._eos = eos_token_id
        self._decode = decode
        longest = max(len(e.target_ids) for e in self.encoded)
        self.answer_tokens = min(longest, _MAX_ANSWER_TOKENS)
        # Longest first, so each batch is padded little.
        self._order = sorted(range(len(self.encoded)), key=lambda i: -self.encoded[i].length)

    def __len__(self) -> int:
        return len(self.encoded)

    @torch.no_grad()
    def score(self, logits: LogitsFn) -> ValidationScore:
        """The loss and accuracy of the model behind `logits` on the whole set."""
        loss_sum = 0.0
        tokens = 0
        answers: dict[int, list[int]] = {}
        unfinished: dict[int, list[int]] = {}
        for start in range(0, len(self._order), _BATCH_SIZE):
            indices = self._order[start : start + _BATCH_SIZE]
            batch = collate([self.encoded[i] for i in indices], self._pad)
            width = batch.target_width
            out = logits(batch, width + 1)[:, :-1, :].float()
            labels = batch.labels[:, -width:].to(out.device)
            loss_sum += float(
                F.cross_entropy(
                    out.reshape(-1, out.shape[-1]),
                    labels.reshape(-1),
                    ignore_index=IGNORE_INDEX,
                    reduction="sum",
                )
            )
            tokens += int((labels != IGNORE_INDEX).sum())
            if self._parser is None:
                continue
            chosen = out.argmax(dim=-1).tolist()
            for row, index in enumerate(indices):
                target = self.encoded[index].target_ids
                # Greedy choices at the target's positions, aligned to the target's start.
                picks = chosen[row][width - len(target) :]
                answer, done = self._follow(target, picks)
                (answers if done else unfinished)[index] = answer
        if unfinished:
            answers.update(self._continue(unfinished, logits))
        accuracy = None
        if self._parser is not None:
            right = sum(
                self._parser.parse(self._decode(answers[i])) == self._expected[i]
                for i in range(len(self.encoded))
            )
            accuracy = right / len(self.encoded)
        return ValidationScore(loss=loss_sum / max(tokens, 1), accuracy=accuracy)

    def _follow(self, target: Sequence[int], picks: Sequence[int]) -> tuple[list[int], bool]:
        """The greedy answer as far as the teacher-forced pass tells it, and if it is complete."""
        answer: list[int] = []
        for wanted, pick in zip(target, picks, strict=True):
            if pick == self._eos:
                return answer, True
            answer.append(pick)
            if len(answer) >= self.answer_tokens:
                return answer, True
            if pick != wanted:
                return answer, False  # parted from the target: decode on from here
        return answer, False  # the target had no EOS (cut by max_output_tokens)

    def _continue(self, pending: dict[int, list[int]], logits: LogitsFn) -> dict[int, list[int]]:
        """Greedy decoding, a token per pass, of the rows whose answer is not complete yet."""
        finished: dict[int, list[int]] = {}
        while pending:
            order = sorted(pending, key=lambda i: -len(self.encoded[i].prompt_ids))
            for start in range(0, len(order), _BATCH_SIZE):
                indices = order[start : start + _BATCH_SIZE]
                rows = [
                    EncodedExample(self.encoded[i].prompt_ids, tuple(pending[i])) for i in indices
                ]
                batch = collate(rows, self._pad)
                picks = logits(batch, 1)[:, -1, :].argmax(dim=-1).tolist()
                for index, pick in zip(indices, picks, strict=True):
                    answer = pending[index]
                    if pick == self._eos:
                        finished[index] = pending.pop(index)
                        continue
                    answer.append(pick)
                    if len(answer) >= self.answer_tokens:
                        finished[index] = pending.pop(index)
        return finished


def improved(
    score: ValidationScore, best: ValidationScore | None, metric: str, *, tolerance: float = 0.0
) -> bool:
    """Whether `score` beats `best` on `metric` ("accuracy": ties go to the lower loss)."""
    if best is None:
        return True
    if (
        metric == "accuracy"
        and score.accuracy is not None
        and best.accuracy is not None
        and not math.isclose(score.accuracy, best.accuracy)
    ):
        return score.accuracy > best.accuracy
    return score.loss < best.loss - tolerance

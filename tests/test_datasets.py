"""The shipped dog-grooming review set: sizes, balance, format, no leaks, and reproducible."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from types import ModuleType

import pytest

from granite_tuner import datasets
from granite_tuner.data import load_examples
from tests.module_files import load_module_file

TRAIN_FORMAT = re.compile(r"Comment: (?P<review>.+)\nSatisfaction:\n", re.DOTALL)
TEST_FORMAT = re.compile(
    r"Classify the customer review as satisfied \(1\) or unsatisfied \(0\)\.\n"
    r"Comment: (?P<review>.+)\nSatisfaction:\n",
    re.DOTALL,
)
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_grooming_dataset.py"


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as file:
        return [json.loads(line) for line in file]


def _reviews(rows: list[dict[str, str]], form: re.Pattern[str]) -> list[str]:
    reviews = []
    for row in rows:
        match = form.fullmatch(row["input"])
        assert match is not None, row["input"]
        reviews.append(match["review"])
    return reviews


# `datasets.test_path` is used through its module: imported by name, pytest would collect it.


@pytest.fixture(scope="module")
def train() -> list[dict[str, str]]:
    return _rows(datasets.train_path())


@pytest.fixture(scope="module", name="test")
def test_rows() -> list[dict[str, str]]:
    return _rows(datasets.test_path())


def test_sizes_and_balance(train: list[dict[str, str]], test: list[dict[str, str]]) -> None:
    assert len(train) >= 300
    assert len(test) >= 100
    for rows in (train, test):
        counts = Counter(row["output"] for row in rows)
        assert set(counts) == {"0", "1"}
        assert min(counts.values()) / max(counts.values()) >= 0.9


def test_every_row_has_the_documented_format(
    train: list[dict[str, str]], test: list[dict[str, str]]
) -> None:
    for rows, form in ((train, TRAIN_FORMAT), (test, TEST_FORMAT)):
        for row in rows:
            assert set(row) == {"input", "output"}
            assert row["output"] in {"0", "1"}
        reviews = _reviews(rows, form)
        assert all(review == review.strip() and "\n" not in review for review in reviews)


def test_lengths(train: list[dict[str, str]], test: list[dict[str, str]]) -> None:
    for rows, form in ((train, TRAIN_FORMAT), (test, TEST_FORMAT)):
        assert all(40 <= len(row["input"]) <= 420 for row in rows)
        assert all(len(review) >= 40 for review in _reviews(rows, form))
    # Both short and long reviews are there.
    lengths = [len(review) for review in _reviews(train, TRAIN_FORMAT)]
    assert min(lengths) < 60
    assert max(lengths) > 250


def test_no_duplicates_and_no_test_review_in_training(
    train: list[dict[str, str]], test: list[dict[str, str]]
) -> None:
    train_reviews = _reviews(train, TRAIN_FORMAT)
    test_reviews = _reviews(test, TEST_FORMAT)
    assert len(set(train_reviews)) == len(train_reviews)
    assert len(set(test_reviews)) == len(test_reviews)
    assert not set(train_reviews) & set(test_reviews)
    assert not {row["input"] for row in train} & {row["input"] for row in test}


def test_the_set_has_the_hard_cases(train: list[dict[str, str]]) -> None:
    """Mixed verdicts and sarcasm are there, labelled by their meaning."""
    reviews = _reviews(train, TRAIN_FORMAT)
    labelled = {review: row["output"] for review, row in zip(reviews, train, strict=True)}
    mixed_happy = [r for r, label in labelled.items() if " But honestly," in r and label == "1"]
    sarcastic = [
        r for r in labelled if r.endswith(("Truly a five-star experience. Not.", "Bravo."))
    ]
    assert mixed_happy
    assert sarcastic
    assert all(labelled[review] == "0" for review in sarcastic)


def test_loadable_with_the_package_loader() -> None:
    training = load_examples(datasets.train_path(), task_id="classification")
    assert not training.warnings
    assert training.label_counts().keys() == {"0", "1"}
    evaluation = load_examples(datasets.test_path(), purpose="evaluation", task_id="classification")
    assert not evaluation.warnings
    assert len(evaluation) >= 100


def _generator() -> ModuleType:
    return load_module_file(SCRIPT, "make_grooming_dataset")


def test_the_committed_files_are_what_the_generator_writes() -> None:
    files = _generator().build()
    assert files["grooming_train.jsonl"] == datasets.train_path().read_text(encoding="utf-8")
    assert files["grooming_test.jsonl"] == datasets.test_path().read_text(encoding="utf-8")

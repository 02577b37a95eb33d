"""The examples a run reads: open any supported data source, and check each item read lazily.

Why a module of its own: a run takes a `LabelledSet`, anything `load_examples` reads, or a lazy
(async) iterable of 100,000 examples; deciding which, and whether the labels are known before
the run starts, is separate from running. Imports nothing from this package.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from pydantic import ValidationError

from granite_tuner.data import Example, LabelledSet, aload_examples
from granite_tuner.errors import ConfigurationError, DataProblem, InvalidDataError

if TYPE_CHECKING:
    import pandas as pd


#: Where the examples come from: a checked set, anything `load_examples` reads, or an
#: iterable / async iterable of `Example` (read lazily, for inputs too large to hold; a plain
#: iterator is read on the event loop, so it should be cheap to advance). A string alias, so
#: that pandas is imported only by callers who use it.
EvaluationData: TypeAlias = (
    "LabelledSet | str | os.PathLike[str] | Sequence[Mapping[str, Any] | Example]"
    " | pd.DataFrame | Iterable[Example] | AsyncIterable[Example]"
)


async def _open_data(
    data: EvaluationData,
) -> tuple[Iterable[Any] | AsyncIterable[Any], list[str] | None]:
    """The examples to read, and their labels when they are all known before the run starts."""
    if isinstance(data, LabelledSet):
        return data.examples, sorted({e.output for e in data.examples})
    pandas = sys.modules.get("pandas")  # a DataFrame means pandas is imported already
    if (
        isinstance(data, str | os.PathLike | Mapping | bytes | bytearray | Sequence)
        or (pandas is not None and isinstance(data, pandas.DataFrame))
    ):  # fmt: skip
        loaded = await aload_examples(cast(Any, data), purpose="evaluation")
        return loaded.examples, sorted({e.output for e in loaded.examples})
    if isinstance(data, AsyncIterable | Iterable):
        return data, None
    raise ConfigurationError(
        "The evaluation data must be a LabelledSet, a file path, a list of examples, a "
        f"DataFrame or an (async) iterable of Example, not {type(data).__name__}."
    )


def _as_example(raw: object, index: int) -> Example:
    if isinstance(raw, Example):
        return raw
    problem = f"item {index + 1} is a {type(raw).__name__}, not an Example"
    if isinstance(raw, Mapping):
        try:
            return Example.model_validate(raw)
        except ValidationError as exc:
            problem = f"item {index + 1} is not an example: {exc.errors()[0]['msg']}"
    raise InvalidDataError(
        f"The evaluation data cannot be used: {problem}. Give Example(input=..., output=...) "
        "objects or {'input': ..., 'output': ...} mappings.",
        problems=(DataProblem(code="invalid_example", message=problem, line=index + 1),),
    )

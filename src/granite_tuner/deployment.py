"""`Deployment`: serve a tuned model, wait until it is ready, generate with it, delete it.

```python
async with await Deployment.create(client, result, delete_on_exit=True) as tuned:
    answer = await tuned.generate("Comment: lovely groomer!\\nSatisfaction:\\n")
```

`create` checks every argument and validates (or generates) the serving name before sending
anything, never creates two deployments for one call (the client looks a lost create up
before repeating it) nor for the caller's own retry of a call whose create may have landed
(the same arguments on the same client reuse the earlier call's request tag, and the
deployment is looked up by it first), and waits until the service reports `ready` — polling
with growing intervals, riding out network faults, within `timeout`. A deployment that fails
raises `DeploymentFailedError` with the service's message. `Deployment.attach` picks up an
existing deployment by id.
"""

from __future__ import annotations

import re
import uuid
import weakref
from collections.abc import Mapping
from contextlib import aclosing
from types import TracebackType
from typing import Any, Self

import anyio

from granite_tuner._polling import (
    PollDeadline,
    Poller,
    checked_poll_interval,
    checked_timeout,
)
from granite_tuner._retry import look_up_before_resend
from granite_tuner._secrets import get_logger
from granite_tuner.backends.base import (
    SERVING_NAME_PATTERN,
    DeploymentInfo,
    ServingBackend,
    check_id,
    check_request_tag,
    check_serving_name,
    new_request_tag,
)
from granite_tuner.errors import (
    APIError,
    ConfigurationError,
    DeploymentFailedError,
    DeploymentTimeoutError,
    UnsupportedFeatureError,
)
from granite_tuner.generation import GenerationParameters, GenerationResult
from granite_tuner.runs import TuningResult

__all__ = ["SERVING_NAME_PATTERN", "Deployment", "make_serving_name"]

logger = get_logger("granite_tuner.deployment")

_NOT_SERVING_NAME = re.compile(r"[^a-z0-9_]+")
_DELETE_GRACE_SECONDS = 30.0

#: (model id, name, serving name as given) of a create that may have reached the service
#: without an answer, per client -> its request tag. The caller's retry of the same call
#: looks the deployment up by that tag before it creates anything.
_CreateKey = tuple[str, str, str | None]
_uncertain_creates: weakref.WeakKeyDictionary[ServingBackend, dict[_CreateKey, str]] = (
    weakref.WeakKeyDictionary()
)


def make_serving_name(hint: str | None = None) -> str:
    """A valid serving name that is unique with overwhelming likelihood: `<hint>_<8 hex>`."""
    stem = _NOT_SERVING_NAME.sub("_", (hint or "granite_tuner").lower()).strip("_")[:27]
    return f"{stem or 'gt'}_{uuid.uuid4().hex[:8]}"


class Deployment:
    """A deployed (tuned) model on a serving backend."""

    def __init__(
        self, client: ServingBackend, info: DeploymentInfo, *, delete_on_exit: bool = False
    ) -> None:
        self.client = client
        self.info = info
        self.delete_on_exit = delete_on_exit
        self._deleted = False

    @classmethod
    async def create(
        cls,
        client: ServingBackend,
        source: TuningResult | str,
        *,
        name: str | None = None,
        serving_name: str | None = None,
        wait: bool = True,
        timeout: float | None = 900.0,
        poll_interval: tuple[float, float] = (1.0, 15.0),
        delete_on_exit: bool = False,
        request_tag: str | None = None,
        checkpoint: int | None = None,
    ) -> Deployment:
        """Deploy a tuned model (a `TuningResult` or a model id) and, by default, wait until
        it serves. `checkpoint=step` deploys that kept checkpoint of a local run (see
        `TuningResult.checkpoints`) instead of the run's kept soft prompt, which is the best
        epoch's when the run validated, else the last. Every argument is checked before
        anything is sent. On failure or timeout the error says which deployment it was; a
        failed deployment is deleted, a slow one is left for you to attach to or delete —
        unless `delete_on_exit`, which deletes it on any failure or cancellation after the
        create. A create whose answer was lost is never
        repeated: calling `create` again with the same arguments on the same client (or with
        `request_tag=error.request_tag`, from any process) finds the deployment it made."""
        if not isinstance(client, ServingBackend):
            raise ConfigurationError(
                "client must be a serving backend such as WatsonxClient, "
                f"got {type(client).__name__}."
            )
        model_id, default_name = _model_of(source, checkpoint)
        name = name or default_name
        if not isinstance(name, str) or not name.strip():
            raise ConfigurationError(f"name={name!r} must be a non-empty string.")
        if serving_name is not None:
            check_serving_name(serving_name)
        timeout = checked_timeout(timeout)
        poll_interval = checked_poll_interval(poll_interval)
        key: _CreateKey = (model_id, name, serving_name)
        uncertain = _uncertain_creates.setdefault(client, {})
        tag = check_request_tag(request_tag) if request_tag is not None else uncertain.get(key)
        info = await client.find_deployment_by_tag(tag) if tag is not None else None
        if info is not None:
            logger.info("Found deployment %s, made by an earlier create", info.id)
        else:
            tag = tag or new_request_tag()
            info = await cls._create(client, key, tag, uncertain, delete_on_exit)
        uncertain.pop(key, None)
        logger.info("Deployment %s (%s) of model %s", info.id, info.serving_name, model_id)
        deployment = cls(client, info, delete_on_exit=delete_on_exit)
        if wait:
            try:
                await deployment.wait_until_ready(timeout=timeout, poll_interval=poll_interval)
            except BaseException:
                if delete_on_exit:  # the caller will never hold it: it goes now
                    await deployment._delete_quietly()
                raise
        return deployment

    @staticmethod
    async def _create(
        client: ServingBackend,
        key: _CreateKey,
        tag: str,
        uncertain: dict[_CreateKey, str],
        delete_on_exit: bool,
    ) -> DeploymentInfo:
        """Send the one create; keep its tag in `uncertain` while its outcome is unknown."""
        model_id, name, serving_name = key
        if serving_name is not None and not await client.serving_name_available(serving_name):
            raise ConfigurationError(
                f"serving_name={serving_name!r} is already used by another deployment; "
                "choose another, or leave it out to get a generated one."
            )
        uncertain[key] = tag
        try:
            # With delete_on_exit, a create once begun is seen through: a cancellation that
            # came while it was in flight then lands after it, with the deployment known.
            with anyio.CancelScope(shield=delete_on_exit):
                info = await client.deploy(
                    model_id,
                    name=name,
                    serving_name=serving_name or make_serving_name(name),
                    request_tag=tag,
                )
        except Exception as exc:
            if not look_up_before_resend(exc):  # certainly made nothing: forget the tag
                uncertain.pop(key, None)
            elif isinstance(exc, APIError):
                exc.add_request_tag(
                    tag,
                    "The deployment may have been created: call Deployment.create again with "
                    f"the same arguments, or with request_tag={tag!r}, to find it.",
                )
            raise
        return info

    @classmethod
    async def attach(
        cls,
        client: ServingBackend,
        deployment_id: str,
        *,
        wait: bool = True,
        timeout: float | None = 900.0,
        delete_on_exit: bool = False,
    ) -> Deployment:
        """An existing deployment, by id (waiting until it is ready, by default)."""
        check_id(deployment_id, "deployment_id")
        timeout = checked_timeout(timeout)
        deployment = cls(
            client, await client.get_deployment(deployment_id), delete_on_exit=delete_on_exit
        )
        if wait:
            await deployment.wait_until_ready(timeout=timeout)
        return deployment

    def __repr__(self) -> str:
        return (
            f"Deployment(id={self.id!r}, serving_name={self.serving_name!r}, state={self.state!r})"
        )

    @property
    def id(self) -> str:
        return self.info.id

    @property
    def state(self) -> str:
        return self.info.state

    @property
    def serving_name(self) -> str | None:
        return self.info.serving_name

    @property
    def model_id(self) -> str | None:
        return self.info.model_id

    async def refresh(self) -> DeploymentInfo:
        self.info = await self.client.get_deployment(self.id)
        return self.info

    async def wait_until_ready(
        self, *, timeout: float | None = 900.0, poll_interval: tuple[float, float] = (1.0, 15.0)
    ) -> Self:
        """Poll until `ready`; `DeploymentFailedError` / `DeploymentTimeoutError` otherwise."""
        timeout = checked_timeout(timeout)
        poll_interval = checked_poll_interval(poll_interval)
        if self.info.is_ready:
            return self
        poller = Poller(
            lambda: self.client.get_deployment(self.id),
            poll_interval=poll_interval,
            timeout=timeout,
            what=f"deployment {self.id}",
        )
        try:
            async with aclosing(poller.snapshots()) as snapshots:
                async for info in snapshots:
                    if info.state != self.info.state:
                        logger.info("Deployment %s is %s", self.id, info.state)
                        poller.reset_interval()
                    self.info = info
                    if info.is_ready:
                        return self
                    if info.has_failed:
                        await self._delete_quietly()
                        raise DeploymentFailedError(
                            f"Deployment {self.id} failed: "
                            f"{info.failure_message or 'the service gave no reason'}.",
                            deployment_id=self.id,
                        )
        except PollDeadline:
            raise DeploymentTimeoutError(
                f"Deployment {self.id} was not ready within {timeout} s (state: {self.state}). "
                f"It may still become ready: Deployment.attach(client, {self.id!r}), or delete it.",
                deployment_id=self.id,
            ) from None
        raise AssertionError("unreachable: the poller ends only by a deadline")  # pragma: no cover

    async def generate(
        self, prompt: str, parameters: GenerationParameters | Mapping[str, Any] | None = None
    ) -> GenerationResult:
        """One completion from the deployed model."""
        return await self.client.generate(prompt, deployment_id=self.id, parameters=parameters)

    async def delete(self) -> None:
        """Stop serving and remove the deployment."""
        await self.client.delete_deployment(self.id)
        self._deleted = True

    async def _delete_quietly(self) -> None:
        with anyio.CancelScope(shield=True), anyio.move_on_after(_DELETE_GRACE_SECONDS):
            try:
                await self.delete()
            except Exception as exc:
                logger.warning("Could not delete deployment %s: %s", self.id, exc)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.delete_on_exit and not self._deleted:
            await self._delete_quietly()


def _model_of(source: TuningResult | str, checkpoint: int | None = None) -> tuple[str, str]:
    """(model id, default deployment name) of what is to be deployed."""
    if checkpoint is not None:
        return _checkpoint_of(source, checkpoint)
    if isinstance(source, TuningResult):
        if source.model_id is None:
            raise ConfigurationError(
                f"Tuning run {source.run_id} has no model to deploy (state: {source.state})."
            )
        return source.model_id, f"{source.name or source.run_id} (tuned)"
    if isinstance(source, str) and source.strip():
        return source, f"granite-tuner {source[:40]}"
    raise ConfigurationError(f"Deploy a TuningResult or a model id, not {type(source).__name__}.")


def _checkpoint_of(source: TuningResult | str, step: object) -> tuple[str, str]:
    """(model id, default name) of one checkpoint of a run; checked before anything is sent."""
    if isinstance(step, bool) or not isinstance(step, int):
        raise ConfigurationError(
            f"checkpoint={step!r} must be the step number of a kept checkpoint "
            "(see result.checkpoints)."
        )
    if not isinstance(source, TuningResult):
        raise ConfigurationError(
            "checkpoint= needs the run's TuningResult (which lists its checkpoints), not a "
            "model id."
        )
    if source.backend != "local":
        raise UnsupportedFeatureError(
            f"The {source.backend} backend keeps no checkpoints of a run, so checkpoint= "
            "cannot be used; deploy the run's model (leave checkpoint out)."
        )
    try:
        kept = source.checkpoint(step)
    except LookupError as exc:
        raise ConfigurationError(str(exc)) from None
    return kept.model_id, f"{source.name or source.run_id} (step {step})"

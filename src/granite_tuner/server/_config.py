"""What `granite-tuner serve` serves and how: one settings object, checked when it is made."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from granite_tuner.errors import ConfigurationError

__all__ = ["ServeConfig", "is_loopback"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServeConfig(BaseModel):
    """Settings of a server; see `docs/serving.md` for what each limit protects.

    `runs` name tuned runs of the local run store (id or name), each optionally
    `RUN=SERVING_NAME`; every one becomes a deployment.
    """

    model_config = ConfigDict(defer_build=True, frozen=True, extra="forbid")

    model: str = "smollm2-135m-instruct"
    home: Path | None = None
    device: str | None = None
    runs: tuple[str, ...] = ()
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    api_keys: tuple[SecretStr, ...] = ()
    insecure_no_auth: bool = False
    token_ttl: Annotated[int, Field(ge=60, le=86_400)] = 3600
    #: Largest request body accepted (bytes); larger ones get 413.
    max_request_bytes: Annotated[int, Field(ge=1024)] = 1_048_576
    #: Most new tokens one request may ask for; more gets 400.
    max_new_tokens: Annotated[int, Field(ge=1, le=32_768)] = 1024
    #: New tokens of a chat or OpenAI request that does not say (watsonx generation: 20).
    default_chat_max_tokens: Annotated[int, Field(ge=1, le=32_768)] = 256
    #: Most prompts one `/v1/completions` request may carry.
    max_prompts_per_request: Annotated[int, Field(ge=1, le=1024)] = 32
    rate_limit: Annotated[float | None, Field(gt=0)] = None  # requests/s per key
    rate_limit_burst: Annotated[int | None, Field(ge=1)] = None
    max_concurrency_per_key: Annotated[int | None, Field(ge=1)] = 64
    #: Seconds in-flight requests get to finish after SIGINT/SIGTERM.
    graceful_shutdown: Annotated[float, Field(gt=0)] = 60.0
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None

    if not TYPE_CHECKING:  # hidden so that the pydantic plugin keeps checking keyword names

        def __init__(self, **data: Any) -> None:
            try:
                super().__init__(**data)
            except ValidationError as exc:
                raise _configuration_error(exc) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Like `BaseModel.model_validate`, raising `ConfigurationError`."""
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise _configuration_error(exc) from None

    @model_validator(mode="after")
    def _check(self) -> ServeConfig:
        if not self.api_keys and not self.insecure_no_auth:
            raise ConfigurationError(
                "No API key is configured, so anyone who can reach the server could use it. "
                "Set GRANITE_TUNER_SERVE_API_KEYS (comma-separated) or --api-key-file, or pass "
                "--insecure-no-auth to serve without keys on a loopback address."
            )
        if self.insecure_no_auth and not is_loopback(self.host):
            raise ConfigurationError(
                f"--insecure-no-auth is only allowed on a loopback address, not {self.host!r}: "
                "configure API keys to listen on other interfaces."
            )
        if any(not key.get_secret_value().strip() for key in self.api_keys):
            raise ConfigurationError("An API key is empty; remove it or give it a value.")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ConfigurationError("Give both ssl_certfile and ssl_keyfile, or neither.")
        return self

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_certfile is not None else "http"


def _configuration_error(exc: ValidationError) -> ConfigurationError:
    """Pydantic's error as ours: our own rule's message as it is, others with their field."""
    problems = []
    for error in exc.errors():
        cause = (error.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigurationError):
            problems.append(cause.message)
        else:
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            problems.append(f"{where}: {error['msg']}")
    return ConfigurationError("Server settings: " + " ".join(problems))

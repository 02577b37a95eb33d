"""Secret hygiene in one place: API keys and bearer tokens never reach logs or errors.

The clients register every secret they hold (`register_secret`); `redact` replaces those
values, and anything shaped like a credential (a JWT, an `Authorization` value, an
`apikey=` pair), with `[REDACTED]`. Every logger of this package carries a filter that
applies `redact` to the final message, and every `GraniteTunerError` message passes through
it, so even a service that echoes a token back cannot leak it through us.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict

__all__ = ["REDACTED", "get_logger", "redact", "register_secret"]

REDACTED = "[REDACTED]"

# Shorter strings would turn ordinary words into "[REDACTED]"; real keys and tokens are long.
_MIN_SECRET_LENGTH = 8
# Tokens are replaced hourly; remembering the last few hundred bounds the memory used.
_MAX_REMEMBERED = 512

_lock = threading.Lock()
_secrets: OrderedDict[str, None] = OrderedDict()

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # JSON Web Tokens (IAM access tokens): three base64url parts, the first one '{"' encoded.
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), REDACTED),
    # Authorization header values.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    # key=value or "key": "value" pairs naming a credential. No space after "=": our own
    # advice ("pass api_key= (or set WATSONX_APIKEY)") must read as written.
    (
        re.compile(
            r"(?i)\b(api_?key|access_token|refresh_token|password)(=[\"']?|[\"']?\s*:\s*[\"']?)"
            r"[^\s\"'&,;}]+"
        ),
        rf"\1\2{REDACTED}",
    ),
)


def register_secret(value: str | None) -> None:
    """Remember `value` so that `redact` removes it from any text from now on."""
    if value is None or len(value) < _MIN_SECRET_LENGTH:
        return
    with _lock:
        _secrets[value] = None
        _secrets.move_to_end(value)
        while len(_secrets) > _MAX_REMEMBERED:
            _secrets.popitem(last=False)


def redact(text: str) -> str:
    """Return `text` with every registered secret and credential-shaped value removed."""
    with _lock:
        known = list(_secrets)
    for secret in known:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class _RedactingFilter(logging.Filter):
    """Rewrites each record's message through `redact` before any handler sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        return True


_FILTER = _RedactingFilter()


def get_logger(name: str) -> logging.Logger:
    """A logger under `granite_tuner` with the redacting filter attached.

    Filters on a parent logger do not apply to records of its children, so each module's
    logger gets its own reference to the one shared filter.
    """
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger

"""Names given to runs and deployments when the caller gives none: one format for all.

`{prefix}{what}-YYYYMMDD-HHMMSS` (UTC), so a listing sorts them by time and a cleanup can find
its own by prefix.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["DEFAULT_NAME_PREFIX", "generated_name"]

#: The prefix of names the library itself generates (the CLI uses its own, longer one).
DEFAULT_NAME_PREFIX = "granite-tuner-"


def generated_name(what: str, *, prefix: str = DEFAULT_NAME_PREFIX) -> str:
    """A name such as ``granite-tuner-classification-20260105-093000``."""
    return f"{prefix}{what}-{datetime.now(UTC):%Y%m%d-%H%M%S}"

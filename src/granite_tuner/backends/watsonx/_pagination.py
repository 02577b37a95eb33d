"""Reading every page of a watsonx.ai list (`{"resources": [...], "next": {"href": ...}}`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from granite_tuner.backends.watsonx._endpoints import Endpoint
from granite_tuner.backends.watsonx._transport import Transport

__all__ = ["list_all"]

T = TypeVar("T")

# A service that keeps answering with a `next` link must not keep us looping forever.
_MAX_PAGES = 1000


async def list_all(
    transport: Transport,
    endpoint: Endpoint,
    parse_item: Callable[[dict[str, Any]], T],
    *,
    params: Mapping[str, Any] | None = None,
    operation: str,
    limit: int = 200,
) -> list[T]:
    """Every item of a paginated list, following `next.href` until it is absent."""
    items: list[T] = []
    query: dict[str, Any] = {"limit": limit, **(params or {})}
    for _ in range(_MAX_PAGES):
        page = await transport.request_json(
            "GET", endpoint, params=query, parse=_page, operation=operation
        )
        resources, next_href = page
        items.extend(parse_item(r) for r in resources)
        if not next_href or not resources:
            return items
        # `next.href` may be absolute or relative; only its query (the cursor) matters to us.
        cursor = {k: v[-1] for k, v in parse_qs(urlsplit(next_href).query).items()}
        cursor.pop("version", None)
        cursor.pop("project_id", None)
        cursor.pop("space_id", None)
        query = {**query, **cursor}
    return items


def _page(body: Any) -> tuple[list[dict[str, Any]], str | None]:
    if not isinstance(body, dict) or not isinstance(body.get("resources", []), list):
        raise TypeError("a list answer needs a `resources` array")
    resources = [r for r in body.get("resources", []) if isinstance(r, dict)]
    next_link = body.get("next")
    href = next_link.get("href") if isinstance(next_link, dict) else None
    return resources, href if isinstance(href, str) else None

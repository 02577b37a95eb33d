"""The two endpoints that list the fake's foundation models and tuning tasks (see `_models`).

``GET /ml/v1/foundation_model_specs`` is how a client learns which base models can be prompt
tuned (``filters=function_prompt_tune_trainable,!lifecycle_withdrawn:and``, protocol §4 step 8)
and whether one is deprecated; ``GET /ml/v1/foundation_model_tasks`` lists the task ids a
training may name (§10).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._http import Request, Response
from ._models import TASKS, FakeModel

if TYPE_CHECKING:
    from ._view import FakeView


def matches_filters(model: FakeModel, filters: str | None) -> bool:
    """Evaluate a ``filters`` expression: ``f1,!f2[:and|:or]`` (without a combinator: or)."""
    if not filters:
        return True
    expression, combinator = filters, "or"
    for suffix in (":and", ":or"):
        if filters.endswith(suffix):
            expression, combinator = filters[: -len(suffix)], suffix[1:]
    results = []
    for term in filter(None, (part.strip() for part in expression.split(","))):
        negate = term.startswith("!")
        results.append(model.has(term.lstrip("!")) != negate)
    if not results:
        return True
    return all(results) if combinator == "and" else any(results)


def paginate(req: Request, items: list[Any], default_limit: int = 100) -> dict[str, Any]:
    """A list page: ``resources`` + ``limit`` + ``first``/``next`` hrefs (absolute).

    ``start`` is an offset into the full list; the ``next.href`` repeats every query
    parameter of the request, so a client can follow it as is.
    """
    limit = req.int_param("limit", default_limit, 1, 200)
    start = req.int_param("start", 0, 0, 10**9)
    page = items[start : start + limit]
    body: dict[str, Any] = {
        "total_count": len(items),
        "limit": limit,
        "first": {"href": req.url_with(limit=str(limit), start="0")},
        "resources": page,
    }
    if start + limit < len(items):
        body["next"] = {"href": req.url_with(limit=str(limit), start=str(start + limit))}
    return body


async def get_model_specs(fake: FakeView, req: Request) -> Response:
    """``GET /ml/v1/foundation_model_specs``."""
    filters = req.param("filters")
    specs = [model.spec() for model in fake.models if matches_filters(model, filters)]
    return Response.json(paginate(req, specs))


async def get_model_tasks(fake: FakeView, req: Request) -> Response:
    """``GET /ml/v1/foundation_model_tasks``."""
    tasks = [
        {"task_id": task_id, "label": label, "description": f"{label} tasks."}
        for task_id, label in TASKS.items()
    ]
    return Response.json(paginate(req, tasks))

"""IAM, projects, spaces, and where each request is scoped.

IBM Cloud IAM turns an API key into a bearer token (protocol §3.1); the data platform describes
projects and spaces (§4, §12). Scoping (§2): most calls name their project or space in the
query string, a few creates put it in the JSON body; an id the fake does not know gets 403.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from ._http import ApiError, Request, Response
from ._state import Container, iso

# When the fake's project and space were "created" (2024-01-01T00:00:00Z).
CREATED_AT = iso(1704067200.0)

if TYPE_CHECKING:
    from ._view import FakeView

APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"


# --- scoping ---------------------------------------------------------------------------------


def _known(fake: FakeView, project_id: str | None, space_id: str | None) -> Container:
    if project_id and space_id:
        raise ApiError(400, "Only one of project_id and space_id may be given.", "invalid_request")
    if project_id:
        if project_id != fake.project_id:
            raise ApiError(
                403, f"You are not a member of project '{project_id}' or it does not exist."
            )
        return Container("project", project_id)
    if space_id:
        if space_id != fake.space_id:
            raise ApiError(403, f"You are not a member of space '{space_id}' or it does not exist.")
        return Container("space", space_id)
    raise ApiError(400, "Either project_id or space_id has to be provided.", "missing_scope")


def container_from_query(fake: FakeView, req: Request) -> Container:
    """The project/space named in the query string (400 if none, 403 if unknown)."""
    return _known(fake, req.param("project_id"), req.param("space_id"))


def container_from_body(fake: FakeView, body: dict[str, Any]) -> Container:
    """The project/space named in a JSON body (400 if none, 403 if unknown)."""
    project_id, space_id = body.get("project_id"), body.get("space_id")
    if project_id is not None and not isinstance(project_id, str):
        raise ApiError(400, "Field 'project_id' must be a string.", "invalid_type")
    if space_id is not None and not isinstance(space_id, str):
        raise ApiError(400, "Field 'space_id' must be a string.", "invalid_type")
    return _known(fake, project_id, space_id)


# --- IAM -------------------------------------------------------------------------------------


def _iam_error(req: Request, code: str, message: str) -> Response:
    """IAM's own error shape, which differs from the watsonx one."""
    now = iso(time.time())
    return Response.json(
        {
            "errorCode": code,
            "errorMessage": message,
            "context": {
                "requestId": req.trace,
                "requestType": "incoming.Identity_Token",
                "url": req.base_url,
                "startTime": now,
                "endTime": now,
                "elapsedTime": "0",
                "locale": "en_US",
            },
        },
        status=400,
    )


async def iam_token(fake: FakeView, req: Request) -> Response:
    """``POST /identity/token`` with an ``apikey`` grant (form-encoded)."""
    form = parse_qs(req.body.decode("utf-8", errors="replace"), keep_blank_values=True)
    grant_type = (form.get("grant_type") or [""])[0]
    api_key = (form.get("apikey") or [""])[0]
    if grant_type != APIKEY_GRANT:
        return _iam_error(req, "BXNIM0103E", "Grant type is missing or not supported.")
    if not api_key:
        return _iam_error(req, "BXNIM0109E", "Property missing or empty. Property: apikey")
    if fake.api_keys is not None and api_key not in fake.api_keys:
        return _iam_error(req, "BXNIM0415E", "Provided API key could not be found.")
    subject = "ServiceId-" + hashlib.sha256(api_key.encode()).hexdigest()[:12]
    token, expires = fake._tokens.issue(fake.token_lifetime, subject=subject)
    with fake._store.lock:
        fake._store.iam_exchanges += 1
    return Response.json(
        {
            "access_token": token,
            "refresh_token": "not-used",
            "token_type": "Bearer",
            "expires_in": round(fake.token_lifetime),
            "expiration": expires,
            "scope": "ibm openid",
            "ims_user_id": 1234567,
        }
    )


# --- projects and spaces ---------------------------------------------------------------------


def _storage(req: Request, container: Container) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "bucket_name": f"fake-bucket-{container.id}",
        "bucket_region": "us-south",
        "endpoint_url": f"{req.base_url}/_fake_cos",
        "shared": False,
    }
    if "credentials" in (req.param("include") or "").split(","):
        # Made-up keys: the official SDK needs them to exist, nothing checks them.
        keys = {"access_key_id": "fake-access-key", "secret_access_key": "fake-secret-key"}
        properties["credentials"] = {"admin": dict(keys), "editor": dict(keys), "viewer": keys}
    return {
        "type": "bmcos_object_storage",
        "guid": f"storage-{container.id}",
        "properties": properties,
    }


async def get_project(fake: FakeView, req: Request) -> Response:
    """``GET /v2/projects/{project_id}`` (``include=everything,credentials`` adds COS keys)."""
    container = _known(fake, req.path_params["project_id"], None)
    return Response.json(
        {
            "metadata": {
                "guid": container.id,
                "url": f"/v2/projects/{container.id}",
                "created_at": CREATED_AT,
                "updated_at": CREATED_AT,
                "creator_iam_id": "IBMid-fake0000",
            },
            "entity": {
                "name": "Fake project",
                "description": "A project of the fake watsonx.ai server.",
                "public": False,
                "type": "wx",
                "generator": "granite-tuner-fake",
                "storage": _storage(req, container),
                "scope": {"bss_account_id": "fake-account"},
            },
        }
    )


async def get_space(fake: FakeView, req: Request) -> Response:
    """``GET /v2/spaces/{space_id}``."""
    container = _known(fake, None, req.path_params["space_id"])
    return Response.json(
        {
            "metadata": {
                "id": container.id,
                "url": f"/v2/spaces/{container.id}",
                "created_at": CREATED_AT,
                "updated_at": CREATED_AT,
                "creator_id": "IBMid-fake0000",
            },
            "entity": {
                "name": "Fake space",
                "description": "A deployment space of the fake watsonx.ai server.",
                "stage": {"production": False},
                "status": {"state": "active"},
                "storage": _storage(req, container),
                "type": "wx",
            },
        }
    )


async def not_supported(fake: FakeView, req: Request) -> Response:
    """Endpoints the fake knows of but does not implement (fine tunings, prompt templates)."""
    raise ApiError(404, f"Resource '{req.path}' does not exist in this fake.", "not_found")

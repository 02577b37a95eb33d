"""Data assets: the four-step upload of a training file (protocol §5) and its bookkeeping.

1. ``POST /v2/assets`` creates the asset (metadata only);
2. ``POST /v2/assets/{id}/attachments`` creates an attachment and returns ``url1``, a
   "pre-signed" upload URL: here a ``/_fake_cos/...`` URL of this same server with a random
   signature, that takes the raw bytes with ``PUT`` and no ``Authorization``;
3. ``PUT url1`` uploads the bytes;
4. ``POST .../attachments/{att}/complete`` marks the upload done: only then can a training
   use the asset.

An asset exists from step 1 on, so a test can see assets whose upload never completed.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from ._http import ApiError, Request, Response
from ._platform import container_from_query
from ._state import AssetRecord, AttachmentRecord, Container

if TYPE_CHECKING:
    from ._view import FakeView


def _asset(fake: FakeView, asset_id: str, container: Container) -> AssetRecord:
    """The live asset record (call with the store lock held); 404 outside its container."""
    asset = fake._store.assets.get(asset_id)
    if asset is None or asset.container != container:
        raise ApiError(404, f"Asset '{asset_id}' was not found.", "asset_not_found")
    return asset


def _attachment(asset: AssetRecord, attachment_id: str) -> AttachmentRecord:
    for attachment in asset.attachments:
        if attachment.id == attachment_id:
            return attachment
    raise ApiError(404, f"Attachment '{attachment_id}' was not found.", "attachment_not_found")


def _cos_url(req: Request, asset: AssetRecord, attachment: AttachmentRecord) -> str:
    return f"{req.base_url}/_fake_cos/{asset.id}/{attachment.id}?signature={attachment.signature}"


def _text(body: dict[str, Any], *keys: str) -> str | None:
    value: Any = body
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, str) else None


async def create_asset(fake: FakeView, req: Request) -> Response:
    """``POST /v2/assets`` (``duplicate_action=REJECT`` gives 409 for a name in use)."""
    container = container_from_query(fake, req)
    body = req.json_body()
    name = _text(body, "metadata", "name")
    if not name:
        raise ApiError(400, "Field 'metadata.name' is required.", "missing_field")
    asset_type = _text(body, "metadata", "asset_type") or "data_asset"
    if asset_type != "data_asset":
        raise ApiError(400, f"Asset type '{asset_type}' is not supported by this fake.")
    mime_type = _text(body, "entity", "data_asset", "mime_type") or "application/octet-stream"
    now = time.time()
    with fake._store.lock:
        if (req.param("duplicate_action") or "").upper() == "REJECT" and any(
            a.name == name and a.container == container for a in fake._store.assets.values()
        ):
            raise ApiError(409, f"An asset named '{name}' already exists.", "asset_exists")
        asset = AssetRecord(
            id=fake._store.new_id(),
            name=name,
            description=_text(body, "metadata", "description") or "",
            mime_type=mime_type,
            container=container,
            created_at=now,
            modified_at=now,
        )
        fake._store.assets[asset.id] = asset
        wire = asset.wire()
    return Response.json(wire, status=201)


async def get_asset(fake: FakeView, req: Request) -> Response:
    """``GET /v2/assets/{asset_id}``."""
    container = container_from_query(fake, req)
    with fake._store.lock:
        wire = _asset(fake, req.path_params["asset_id"], container).wire()
    return Response.json(wire)


async def delete_asset(fake: FakeView, req: Request) -> Response:
    """``DELETE /v2/assets/{asset_id}`` (``purge_on_delete`` accepted; the asset is gone)."""
    container = container_from_query(fake, req)
    with fake._store.lock:
        asset = _asset(fake, req.path_params["asset_id"], container)
        del fake._store.assets[asset.id]
    return Response.empty(204)


async def create_attachment(fake: FakeView, req: Request) -> Response:
    """``POST /v2/assets/{asset_id}/attachments`` -> ``attachment_id`` + upload URL ``url1``."""
    container = container_from_query(fake, req)
    body = req.json_body()
    with fake._store.lock:
        asset = _asset(fake, req.path_params["asset_id"], container)
        attachment = AttachmentRecord(
            id=fake._store.new_id(),
            name=_text(body, "name") or asset.name,
            mime=_text(body, "mime") or asset.mime_type,
            signature=secrets.token_hex(16),
            created_at=time.time(),
        )
        asset.attachments.append(attachment)
        asset.modified_at = attachment.created_at
        url1 = _cos_url(req, asset, attachment)
    return Response.json(
        {
            "attachment_id": attachment.id,
            "asset_type": "data_asset",
            "name": attachment.name,
            "mime": attachment.mime,
            "is_partitioned": False,
            "url1": url1,
            "href": f"/v2/assets/{asset.id}/attachments/{attachment.id}",
        },
        status=201,
    )


async def complete_attachment(fake: FakeView, req: Request) -> Response:
    """``POST /v2/assets/{asset_id}/attachments/{attachment_id}/complete``."""
    container = container_from_query(fake, req)
    with fake._store.lock:
        asset = _asset(fake, req.path_params["asset_id"], container)
        attachment = _attachment(asset, req.path_params["attachment_id"])
        if attachment.data is None:
            raise ApiError(
                400, f"Attachment '{attachment.id}' has no uploaded content.", "upload_missing"
            )
        attachment.completed = True
        asset.modified_at = time.time()
        size = len(attachment.data)
    return Response.json(
        {"attachment_id": attachment.id, "asset_id": asset.id, "complete": True, "size": size}
    )


async def get_attachment(fake: FakeView, req: Request) -> Response:
    """``GET /v2/assets/{asset_id}/attachments/{attachment_id}`` (with a download ``url``)."""
    container = container_from_query(fake, req)
    with fake._store.lock:
        asset = _asset(fake, req.path_params["asset_id"], container)
        attachment = _attachment(asset, req.path_params["attachment_id"])
        body = {
            "attachment_id": attachment.id,
            "asset_id": asset.id,
            "asset_type": "data_asset",
            "name": attachment.name,
            "mime": attachment.mime,
            "is_partitioned": False,
            "complete": attachment.completed,
            "size": len(attachment.data or b""),
            "url": _cos_url(req, asset, attachment),
            "is_remote": False,
        }
    return Response.json(body)


def _signed(fake: FakeView, req: Request) -> tuple[AssetRecord, AttachmentRecord]:
    """The attachment a ``/_fake_cos`` URL points at; 403 unless the signature matches."""
    asset = fake._store.assets.get(req.path_params["asset_id"])
    if asset is None:
        raise ApiError(404, "No such object.", "no_such_key")
    attachment = _attachment(asset, req.path_params["attachment_id"])
    if not secrets.compare_digest(req.param("signature") or "", attachment.signature):
        raise ApiError(403, "The request signature does not match.", "signature_does_not_match")
    return asset, attachment


async def cos_upload(fake: FakeView, req: Request) -> Response:
    """``PUT /_fake_cos/{asset_id}/{attachment_id}?signature=...``: the raw bytes, no auth."""
    with fake._store.lock:
        asset, attachment = _signed(fake, req)
        attachment.data = req.body
        asset.modified_at = time.time()
    return Response(200, b"", {"etag": f'"{secrets.token_hex(8)}"'}, None)


async def cos_download(fake: FakeView, req: Request) -> Response:
    """``GET /_fake_cos/{asset_id}/{attachment_id}?signature=...``: the uploaded bytes."""
    with fake._store.lock:
        _, attachment = _signed(fake, req)
        data, mime = attachment.data, attachment.mime
    if data is None:
        raise ApiError(404, "The object has no content yet.", "no_such_key")
    return Response(200, data, {}, mime)


_NAME_QUERY = re.compile(r'^asset\.name:"?(?P<name>.*?)"?$')


async def search_assets(fake: FakeView, req: Request) -> Response:
    """``POST /v2/asset_types/data_asset/search`` with ``{"query": "asset.name:<name>" | "*:*"}``.

    Only an exact name match and ``*:*`` (everything) are understood.
    """
    container = container_from_query(fake, req)
    body = req.json_body()
    query = str(body.get("query", "*:*")).strip()
    limit = body.get("limit", 200)
    if not isinstance(limit, int) or not 1 <= limit <= 200:
        raise ApiError(400, "Field 'limit' must be an integer between 1 and 200.")
    match = _NAME_QUERY.match(query)
    if query != "*:*" and match is None:
        raise ApiError(400, f"Query '{query}' is not supported by this fake.", "invalid_query")
    with fake._store.lock:
        found = [
            asset.wire()
            for asset in sorted(fake._store.assets.values(), key=lambda a: a.created_at)
            if asset.container == container and (match is None or asset.name == match["name"])
        ]
    return Response.json({"total_rows": len(found), "results": found[:limit]})

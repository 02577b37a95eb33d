"""Data assets: the four-step upload of a training file, lookup and delete (protocol §5).

An upload is create asset -> create attachment -> PUT the bytes to the URL the service
hands out -> complete. If any step after the first fails, the half-made asset is deleted
before the error is raised, so a failed upload leaves nothing behind.
"""

from __future__ import annotations

import mimetypes
import uuid
from typing import Any

import anyio

from granite_tuner._secrets import get_logger
from granite_tuner.backends.watsonx import _endpoints as ep
from granite_tuner.backends.watsonx._transport import Transport
from granite_tuner.backends.watsonx.models import DataAsset
from granite_tuner.errors import APIError, ConfigurationError

__all__ = ["Assets"]

logger = get_logger("granite_tuner.watsonx")

_REQUEST_MARK = "granite-tuner request "


def _attachment_upload(body: Any) -> tuple[str, str]:
    if not isinstance(body, dict):
        raise TypeError("attachment answer is not an object")
    attachment_id, url = body.get("attachment_id"), body.get("url1")
    if not isinstance(attachment_id, str) or not isinstance(url, str):
        raise KeyError("attachment_id/url1")
    return attachment_id, url


class Assets:
    """`client.assets`: data assets of the client's project or space."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    async def upload(
        self, content: bytes, *, name: str, file_name: str | None = None, description: str = ""
    ) -> DataAsset:
        """Store `content` as a data asset called `name` and return it once complete."""
        if not content:
            raise ConfigurationError(f"Refusing to upload {name!r}: the file is empty.")
        file_name = file_name or name
        mime = mimetypes.guess_type(file_name)[0] or "application/octet-stream"
        request_mark = _REQUEST_MARK + uuid.uuid4().hex
        asset = await self._create(name, mime, f"{description} ({request_mark})".strip())
        try:
            attachment_id, upload_url = await self._transport.request_json(
                "POST",
                ep.ASSET_ATTACHMENTS,
                path={"asset_id": asset.id},
                json={"asset_type": "data_asset", "name": file_name, "mime": mime},
                parse=_attachment_upload,
                expect=frozenset({200, 201}),
                operation=f"Creating the attachment of asset {asset.id}",
            )
            if upload_url.startswith("/"):
                upload_url = self._transport.platform_url + upload_url
            await self._transport.put_bytes(
                upload_url, content, operation=f"Uploading {file_name} ({len(content)} bytes)"
            )
            await self._transport.request_no_content(
                "POST",
                ep.ASSET_ATTACHMENT_COMPLETE,
                path={"asset_id": asset.id, "attachment_id": attachment_id},
                expect=frozenset({200, 201, 204}),
                safe_to_repeat=True,
                operation=f"Completing the upload of asset {asset.id}",
            )
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._delete_quietly(asset.id)
            raise
        return await self.get(asset.id)

    async def _create(self, name: str, mime: str, description: str) -> DataAsset:
        body = {
            "metadata": {
                "name": name,
                "description": description,
                "asset_type": "data_asset",
                "origin_country": "us",
                "asset_category": "USER",
            },
            "entity": {"data_asset": {"mime_type": mime}},
        }

        async def find_existing() -> DataAsset | None:
            for candidate in await self.find_by_name(name):
                if description and candidate.description == description:
                    return candidate
            return None

        return await self._transport.request_json(
            "POST",
            ep.ASSETS,
            json=body,
            parse=DataAsset.from_wire,
            expect=frozenset({201}),
            find_existing=find_existing,
            operation=f"Creating data asset {name!r}",
        )

    async def _delete_quietly(self, asset_id: str) -> None:
        try:
            await self.delete(asset_id)
        except APIError as exc:
            logger.warning("Could not delete the half-made asset %s: %s", asset_id, exc)

    async def get(self, asset_id: str) -> DataAsset:
        return await self._transport.request_json(
            "GET",
            ep.ASSET,
            path={"asset_id": asset_id},
            parse=DataAsset.from_wire,
            operation=f"Reading data asset {asset_id}",
        )

    async def find_by_name(self, name: str) -> list[DataAsset]:
        """Data assets whose name is exactly `name`."""

        def parse(body: Any) -> list[DataAsset]:
            results = body.get("results", []) if isinstance(body, dict) else None
            if not isinstance(results, list):
                raise TypeError("search answer has no results array")
            return [DataAsset.from_wire(r) for r in results if isinstance(r, dict)]

        found = await self._transport.request_json(
            "POST",
            ep.ASSET_SEARCH,
            json={"query": f"asset.name:{name}", "limit": 200},
            parse=parse,
            safe_to_repeat=True,
            operation=f"Searching data assets named {name!r}",
        )
        return [a for a in found if a.name == name]

    async def delete(self, asset_id: str, *, purge: bool = True) -> None:
        """Delete an asset (purged by default, instead of moved to the trash)."""
        await self._transport.request_no_content(
            "DELETE",
            ep.ASSET,
            path={"asset_id": asset_id},
            params={"purge_on_delete": "true"} if purge else None,
            operation=f"Deleting data asset {asset_id}",
        )

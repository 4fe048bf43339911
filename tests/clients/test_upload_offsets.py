"""The tus client (clients/upload.py) against a loopback server that answers with an
Upload-Offset no relay would send: missing, not a number, negative, or past the end. Each
is one clear error, not a crash, a wrong resume or a loop until `patience` runs out."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from clients.common import UserError
from clients.upload import Uploader

LENGTH = 100
BAD = {"missing": None, "not a number": "soon", "negative": "-1", "not ascii": "\u00b2",
       "past the end": str(LENGTH + 1), "empty": ""}  # fmt: skip


def relay(head_offset: str | None, patch_offset: str | None) -> web.Application:
    """HEAD answers `head_offset`, a PATCH 204 with `patch_offset` (None: no header)."""

    def answer(status: int, offset: str | None) -> web.Response:
        headers = {"Tus-Resumable": "1.0.0"}
        if offset is not None:
            headers["Upload-Offset"] = offset
        return web.Response(status=status, headers=headers)

    async def head(request: web.Request) -> web.Response:
        return answer(200, head_offset)

    async def patch(request: web.Request) -> web.Response:
        await request.read()
        return answer(204, patch_offset)

    app = web.Application()
    app.router.add_route("HEAD", "/uploads/1", head)
    app.router.add_patch("/uploads/1", patch)
    return app


async def send(app: web.Application, tmp_path: Path) -> list[int]:
    """Sends a file of LENGTH bytes; returns the offsets handed to on_offset."""
    heard: list[int] = []
    path = tmp_path / "drop.age"
    path.write_bytes(bytes(LENGTH))
    async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession() as session:
        uploader = Uploader(session, str(server.make_url("/uploads")), lambda _, n: heard.append(n))
        await uploader.send(str(server.make_url("/uploads/1")), path, LENGTH)
    return heard


async def test_a_well_answered_upload_ends(tmp_path: Path) -> None:
    assert await send(relay("0", str(LENGTH)), tmp_path) == [0, LENGTH]


@pytest.mark.parametrize("offset", BAD.values(), ids=BAD.keys())
async def test_a_bad_offset_on_head_is_a_clear_error(tmp_path: Path, offset: str | None) -> None:
    with pytest.raises(UserError, match="no valid Upload-Offset"):
        await send(relay(offset, str(LENGTH)), tmp_path)


@pytest.mark.parametrize("offset", BAD.values(), ids=BAD.keys())
async def test_a_bad_offset_after_patch_is_a_clear_error(
    tmp_path: Path, offset: str | None
) -> None:
    with pytest.raises(UserError, match="no valid Upload-Offset"):
        await send(relay("0", offset), tmp_path)

"""The journalist API (JSON), on its own port. Described in docs/openapi.yaml.

    GET  /api/v1/directory                     the signed contact directory
    POST /api/v1/auth/challenge                {verify_key} -> {challenge, expires_in}
    POST /api/v1/auth/token                    {verify_key, challenge, signature} -> {token}
    GET  /api/v1/drops                         drops waiting for the caller's contact
    GET  /api/v1/drops/{id}                    one drop
    GET  /api/v1/drops/{id}/blobs/{name}       a sealed blob (Range supported, to resume)
    POST /api/v1/drops/{id}/ack                received and stored: delete when all have
    POST /api/v1/replies/{handle}              a reply, sealed to the source by the contact

Rules: every route but the directory needs `Authorization: Bearer TOKEN`; the token's
member must still be registered on every request (removal revokes at once); a drop that
is not addressed to the caller's contact is answered exactly as one that does not exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import secrets
import time
from typing import Any

from aiohttp import web

from crypto import format as age_format
from crypto.errors import HeaderError

from .. import blobs, ingest
from ..auth import canonical_key
from ..errors import ClientError, LimitExceeded, NotFound, Unauthorized
from ..store import Blob, Contact, Drop, Member, Reply
from .common import CONTEXT, SECURITY_HEADERS, RelayContext, boundary

_DROP_ID = re.compile(r"[0-9a-f]{32}")
# `sealed`: the one blob of a drop sealed on the source's device (relay/sealed.py).
_BLOB_NAME = re.compile(r"manifest|message|sealed|(item|original)-[1-9][0-9]{0,3}")


def _context(request: web.Request) -> RelayContext:
    return request.app[CONTEXT]


def _json_error(request: web.Request, status: int, message: str) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="amanah"'} if status == 401 else None
    return web.json_response({"error": message}, status=status, headers=headers)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise ClientError("send a JSON body (Content-Type: application/json)")
    try:
        body = json.loads(await request.read())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ClientError("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ClientError("the body must be a JSON object")
    return body


def _string(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ClientError(f"missing string field {name!r}")
    return value


def _b64(value: str, name: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ClientError(f"{name!r} is not base64") from None


async def _member(request: web.Request) -> Member:
    context = _context(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("missing bearer token")
    session = context.auth.session(token.strip(), time.time())
    member = await context.store.member_by_verify_key(session.verify_key)
    if member is None:
        context.auth.revoke(session.verify_key)
        raise Unauthorized("this member is no longer registered")
    return member


async def _drop_for(request: web.Request, member: Member) -> Drop:
    drop_id = request.match_info["drop_id"]
    store = _context(request).store
    if not _DROP_ID.fullmatch(drop_id) or not await store.drop_is_addressed_to(
        drop_id, member.contact
    ):
        raise NotFound("no such drop")
    return await store.get_drop(drop_id)


def _visible_blobs(contact: Contact, drop: Drop) -> list[Blob]:
    """A drop's blobs as this contact may fetch them: originals (sealed only to contacts
    that accept them) are neither listed nor served to any other contact."""
    return [
        b for b in drop.blobs if contact.accepts_originals or not b.name.startswith("original-")
    ]


async def _drop_json(request: web.Request, contact: Contact, drop: Drop) -> dict[str, Any]:
    blobs = _visible_blobs(contact, drop)
    # A drop sealed on the device cannot carry the reply handle (the relay makes it when
    # it registers the source), so the listing gives it; the reply key is in the drop.
    source = None
    if drop.source_login is not None:
        source = await _context(request).store.get_source(drop.source_login)
    return {
        "id": drop.id,
        "created_at": drop.created_at,
        "sealed_on": drop.sealed_on,
        "size": sum(b.size for b in blobs),
        "blobs": [{"name": b.name, "size": b.size, "sha256": b.sha256} for b in blobs],
        "reply_handle": None if source is None else source[2],
    }


async def directory(request: web.Request) -> web.Response:
    latest = await _context(request).store.latest_directory()
    if latest is None:
        raise NotFound("no directory has been published")
    return web.Response(body=latest[1], content_type="application/json")


async def challenge(request: web.Request) -> web.Response:
    context = _context(request)
    body = await _json_body(request)
    value = context.auth.challenge(_string(body, "verify_key"), time.time())
    return web.json_response(
        {
            "challenge": base64.b64encode(value).decode(),
            "relay_key": str(context.keys.directory_key.verify_key),
            "expires_in": context.auth.challenge_seconds,
        }
    )


async def token(request: web.Request) -> web.Response:
    context = _context(request)
    body = await _json_body(request)
    verify_key = canonical_key(_string(body, "verify_key"))
    challenge_bytes = _b64(_string(body, "challenge"), "challenge")
    signature = _b64(_string(body, "signature"), "signature")
    member = await context.store.member_by_verify_key(verify_key)
    value = context.auth.answer(
        verify_key, challenge_bytes, signature, time.time(), member is not None
    )
    return web.json_response({"token": value, "expires_in": context.auth.token_seconds})


async def list_drops(request: web.Request) -> web.Response:
    member = await _member(request)
    store = _context(request).store
    drops = await store.list_drops(member.contact)
    contact = await store.get_contact(member.contact)  # once, not once per drop
    listed = [await _drop_json(request, contact, d) for d in drops]
    return web.json_response({"contact": member.contact, "drops": listed})


async def get_drop(request: web.Request) -> web.Response:
    member = await _member(request)
    drop = await _drop_for(request, member)
    contact = await _context(request).store.get_contact(member.contact)
    return web.json_response(await _drop_json(request, contact, drop))


async def get_blob(request: web.Request) -> web.StreamResponse:
    member = await _member(request)
    drop = await _drop_for(request, member)
    name = request.match_info["name"]
    contact = await _context(request).store.get_contact(member.contact)
    blob = next((b for b in _visible_blobs(contact, drop) if b.name == name), None)
    if not _BLOB_NAME.fullmatch(name) or blob is None:
        raise NotFound("no such blob")
    path = _context(request).drops_root / drop.id / name
    size = blob.size
    try:
        requested = request.http_range
    except ValueError:
        requested = slice(None)  # a malformed Range is ignored, as RFC 9110 allows
    start = requested.start
    if start is not None and (start >= size if start >= 0 else size == 0):
        return web.json_response(
            {"error": "the requested range starts beyond the end of the blob"},
            status=416,
            headers={"Content-Range": f"bytes */{size}"},
        )
    # FileResponse streams from disk and answers Range requests (206), so an interrupted
    # download resumes where it stopped.
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


async def ack(request: web.Request) -> web.Response:
    member = await _member(request)
    drop = await _drop_for(request, member)
    context = _context(request)
    deleted = await context.store.ack_drop(drop.id, member.contact, int(time.time()))
    if deleted:
        await asyncio.to_thread(blobs.delete_tree, context.config.blobs, ingest.drop_path(drop.id))
    return web.json_response({"id": drop.id, "deleted": deleted})


async def reply(request: web.Request) -> web.Response:
    member = await _member(request)
    context = _context(request)
    handle = request.match_info["handle"]
    source = None
    if _DROP_ID.fullmatch(handle):
        source = await context.store.source_for_reply(handle, member.contact)
    if source is None:
        raise NotFound("no source with that reply handle has written to your contact")
    limit = context.config.limits.max_reply_bytes
    if request.content_length is not None and request.content_length > limit:
        raise LimitExceeded("the reply is too large")
    received = bytearray()
    async for piece in request.content.iter_chunked(64 * 1024):  # to the end, however sent
        received += piece
        if len(received) > limit:
            raise LimitExceeded("the reply is too large")
    body = bytes(received)
    try:  # the relay cannot read a reply, but it can refuse what is not an age file
        end = age_format.find_header_end(body)
        if end is None:
            raise HeaderError("incomplete header")
        age_format.parse_header(body[:end])
    except HeaderError:
        raise ClientError(
            "the reply must be an age file sealed to the source's reply key"
        ) from None
    reply_id = secrets.token_hex(16)

    def write() -> None:
        ingest.write_blob(context.config.blobs, f"replies/{reply_id}", lambda f: f.write(body))

    await asyncio.to_thread(write)
    await context.store.add_reply(
        Reply(reply_id, source[0], None, member.contact, int(time.time()), len(body))
    )
    return web.json_response({"id": reply_id}, status=201)


def make_app(context: RelayContext) -> web.Application:
    app = web.Application(
        middlewares=[boundary(_json_error, SECURITY_HEADERS)],
        client_max_size=context.config.limits.max_reply_bytes + 64 * 1024,
    )
    app[CONTEXT] = context
    app.router.add_get("/api/v1/directory", directory)
    app.router.add_post("/api/v1/auth/challenge", challenge)
    app.router.add_post("/api/v1/auth/token", token)
    app.router.add_get("/api/v1/drops", list_drops)
    app.router.add_get("/api/v1/drops/{drop_id}", get_drop)
    app.router.add_get("/api/v1/drops/{drop_id}/blobs/{name}", get_blob)
    app.router.add_post("/api/v1/drops/{drop_id}/ack", ack)
    app.router.add_post("/api/v1/replies/{handle}", reply)
    return app

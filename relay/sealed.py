"""Drops sealed on the source's device (`amanah-drop send`): checked, then stored as they
came. The relay cannot open them, and does not try.

Such a drop arrives through tus at `/uploads` as ONE age file, sealed on the device to
every member key of the addressed contacts (as the device read them from the signed
directory, which the source service also serves at `/directory`). Upload-Metadata:

    sealed      "1"
    contacts    comma-separated contact names (none: every contact)
    recipients  comma-separated fingerprints of the member keys the file is sealed to
    login       the source's login id (64 hex digits), derived on the device from a
                codename the relay never sees
    reply       the source's reply recipient (age1...), derived on the device likewise
    sha256      of the whole file (hex), checked when the last byte is in
    returning   "1" when the source typed an existing codename: refused if it is unknown

Rules:
- at creation, and again at completion (a member may be rotated during a long upload),
  `recipients` must be exactly the current member keys of the addressed contacts; an
  unknown contact or any other set of keys means the device's copy of the directory is
  stale: Conflict (409), "fetch it again". Better refused than sealed to a removed member
  or to nobody a contact still holds;
- at completion the file must have a well-formed age v1 header with exactly as many
  X25519 stanzas as `recipients` and no other stanza, a payload shaped like age's STREAM
  (a nonce, then 64 KiB chunks with their tags), and the SHA-256 it was announced with.
  Otherwise the drop is refused and nothing is stored. What the relay cannot check, that
  each stanza opens for the key it claims, the contact's client does;
- nothing is sanitized or re-sealed: the staged file's own layer (the RAM-only staging
  key) is removed and the source's ciphertext is stored byte for byte as the drop's one
  blob, `sealed`;
- the source is registered (login id, reply recipient, a new reply handle) with its first
  drop, in the same transaction; a known login id must come with the reply recipient
  recorded for it, so nobody can redirect a source's replies.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

from aiohttp import web

from crypto import format as age_format
from crypto.age import NONCE_SIZE, X25519_TYPE, check_x25519_stanza
from crypto.errors import HeaderError
from crypto.keys import Recipient
from crypto.primitives import TAG_SIZE
from crypto.stream import SEALED_CHUNK_SIZE

from . import blobs, ingest
from .errors import ClientError, Conflict, NotFound
from .staging import StagedFile
from .store import Drop, NewSource, Store
from .web.common import CONTEXT, RelayContext

BLOB_NAME = "sealed"
STALE = "your copy of the directory is out of date; fetch it again"
COPY_SIZE = 1 << 20
_FINGERPRINT = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class SealedUpload:
    """What a device-sealed upload says about itself, parsed and checked for form."""

    contacts: tuple[str, ...]
    fingerprints: frozenset[str]
    login: str
    reply: str
    sha256: str
    returning: bool


def is_sealed(metadata: Mapping[str, str]) -> bool:
    return metadata.get("sealed") == "1"


def parse(metadata: Mapping[str, str]) -> SealedUpload:
    """Raises ClientError for a missing or malformed field."""
    fingerprints = [f for f in metadata.get("recipients", "").split(",") if f]
    if not fingerprints or not all(_FINGERPRINT.fullmatch(f) for f in fingerprints):
        raise ClientError("a sealed upload names the keys it is sealed to (recipients)")
    if len(set(fingerprints)) != len(fingerprints):
        raise ClientError("a sealed upload names a key twice")
    login, sha256 = metadata.get("login", ""), metadata.get("sha256", "")
    if not _HEX64.fullmatch(login) or not _HEX64.fullmatch(sha256):
        raise ClientError("a sealed upload carries a login id and a SHA-256, in hex")
    try:
        reply = str(Recipient.parse(metadata.get("reply", "")))
    except ValueError:
        raise ClientError("a sealed upload carries a reply recipient (age1...)") from None
    names = tuple(n.strip() for n in metadata.get("contacts", "").split(",") if n.strip())
    return SealedUpload(
        names, frozenset(fingerprints), login, reply, sha256, metadata.get("returning") == "1"
    )


async def check(store: Store, upload: SealedUpload) -> ingest.Routing:
    """The routing of a sealed upload, if the relay would store it now. Raises Conflict
    when the device's directory is stale, NotFound for a returning source the relay does
    not know, Conflict for a known one with another reply recipient, ClientError."""
    registered = await store.list_contacts()
    if not set(upload.contacts) <= {c.name for c in registered}:
        raise Conflict(STALE)
    routing = ingest.route(registered, list(upload.contacts))
    if {fingerprint for _, fingerprint in routing.keys} != upload.fingerprints:
        raise Conflict(STALE)
    known = await store.get_source(upload.login)
    if known is None and upload.returning:
        raise NotFound("no drop was sent with that codename")
    if known is not None and known[1] != upload.reply:
        raise Conflict("that codename's reply key differs from the one this relay knows")
    return routing


def _check_header(prefix: bytes, size: int, stanzas: int) -> None:
    """Raises ClientError unless `prefix` (the file's first bytes, up to the header's
    limit and a nonce) starts an age file of `size` bytes sealed to `stanzas` X25519
    keys and nothing else."""
    try:
        end = age_format.find_header_end(prefix)
        if end is None:
            raise HeaderError("the header is incomplete")
        header = age_format.parse_header(prefix[:end])
        for stanza in header.stanzas:
            if stanza.type != X25519_TYPE:
                raise HeaderError("a stanza is not an X25519 one")
            check_x25519_stanza(stanza)  # what a decryptor would refuse, refused now
    except HeaderError as exc:
        raise ClientError(f"the sealed file's age header is not valid: {exc}") from None
    if len(header.stanzas) != stanzas:
        raise ClientError("the sealed file is not sealed to exactly the keys it names")
    # The payload: a nonce, then full chunks, then a last chunk of at least its tag (only
    # an empty plaintext has a bare tag). A file cut short is caught here or by SHA-256.
    payload = size - end - NONCE_SIZE
    last = payload % SEALED_CHUNK_SIZE
    if payload < TAG_SIZE or (payload > TAG_SIZE and 0 < last <= TAG_SIZE):
        raise ClientError("the sealed file is truncated")


def _copy_checked(staged: StagedFile, upload: SealedUpload, sink: BinaryIO) -> None:
    """Blocking: the source's ciphertext from under the staging layer into `sink`, checked
    on the way (see the module rules). Raises ClientError; `sink` is then discarded."""
    digest = hashlib.sha256()
    with staged.open() as reader:
        prefix = reader.read(age_format.MAX_HEADER_SIZE + NONCE_SIZE)
        _check_header(prefix, reader.size, len(upload.fingerprints))
        block = prefix
        while block:
            digest.update(block)
            sink.write(block)
            block = reader.read(COPY_SIZE)
    if digest.hexdigest() != upload.sha256:
        raise ClientError("the sealed file arrived damaged (SHA-256 mismatch); send it again")


async def complete(context: RelayContext, staged: StagedFile, upload: SealedUpload) -> str:
    """Stores a finished sealed upload as a new drop and returns its id. Raises what
    `check` raises (the directory may have changed during the upload), ClientError for a
    file that fails the checks; nothing is stored then."""
    routing = await check(context.store, upload)
    drop_id = ingest.new_drop_id()
    relpath = f"{ingest.drop_path(drop_id)}/{BLOB_NAME}"
    async with context.sealing:
        try:
            _, size, sha256 = await asyncio.to_thread(
                blobs.write_file,
                context.config.blobs,
                relpath,
                lambda sink: _copy_checked(staged, upload, sink),
            )
        except BaseException:  # write_file removed its file; the drop's folder goes too
            await asyncio.to_thread(
                blobs.delete_tree, context.config.blobs, ingest.drop_path(drop_id)
            )
            raise
    now = int(time.time())
    blob = ingest.SealedBlob(BLOB_NAME, size, sha256)
    drop = ingest.drop_record(drop_id, upload.login, ingest.hour(now), [blob], routing, "device")
    try:
        await _record(context.store, drop, upload, now)
    except BaseException:
        await asyncio.to_thread(blobs.delete_tree, context.config.blobs, ingest.drop_path(drop_id))
        raise
    return drop_id


async def _record(store: Store, drop: Drop, upload: SealedUpload, now: int) -> None:
    """Records the drop, registering its source if new. Two first drops of one new
    source finishing at once: the second finds the source registered and tries again."""
    for attempt in (1, 2):
        known = await store.get_source(upload.login)
        if known is not None and known[1] != upload.reply:
            raise Conflict("that codename's reply key differs from the one this relay knows")
        new_source = None
        if known is None:
            new_source = NewSource(upload.login, upload.reply, ingest.new_drop_id(), now)
        try:
            await store.add_drop(drop, new_source)
            return
        except Conflict:
            if new_source is None or attempt == 2:
                raise


async def directory(request: web.Request) -> web.Response:
    """GET /directory on the source service: the signed directory, for `amanah-drop`."""
    latest = await request.app[CONTEXT].store.latest_directory()
    if latest is None:
        raise NotFound("no directory has been published")
    return web.Response(body=latest[1], content_type="application/json")

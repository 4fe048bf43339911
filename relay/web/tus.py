"""Resumable uploads on the source service: the tus protocol 1.0.0 at `/uploads`.

    OPTIONS /uploads          what this server speaks (versions, extensions, max size)
    POST    /uploads          create an upload (Upload-Length, Upload-Metadata) -> 201 Location
    HEAD    /uploads/{id}     how much has arrived (Upload-Offset): where to resume
    PATCH   /uploads/{id}     append at Upload-Offset (application/offset+octet-stream)
    DELETE  /uploads/{id}     abandon it

Extensions: creation, termination, expiration. Sources upload video over circuits that
drop every few minutes: every byte that arrived before a connection broke is kept, and a
HEAD tells the client where to carry on.

Rules:
- every byte is sealed to the RAM-only staging key as it arrives (relay/staging.py): a
  partial upload is never plaintext on disk; a restart abandons every upload in flight,
  because the key that could open them is gone;
- an upload id is 128 random bits: knowing it is what lets a client resume, so it is never
  logged; uploads expire `UPLOAD_SECONDS` after their last byte;
- a complete upload with no metadata becomes a drop of that one file addressed to every
  contact (metadata `contacts` = comma-separated names addresses some); nothing a client
  says about the file (its name, its type) is kept;
- the offset a client sends must be the one the server has (409 otherwise), one PATCH at
  a time per upload, and never past the declared length;
- a HEAD or PATCH for an upload whose PATCH is still reading means the client gave up on
  that connection (a circuit that went silent, which the relay cannot tell from a slow
  one): after a short grace the old PATCH is cut, keeps what arrived, and the new request
  answers from there. Answering 409 instead would block the upload for as long as the
  dead connection stays open, and a browser sends each refused PATCH's body before it
  reads the refusal;
- an upload created with metadata `held` = "1" (the source page's script) is not a drop
  by itself: once complete it waits, sealed to the staging key and expiring like any
  upload, until the page's form names it (`upload` fields of POST /submit, which claims
  and consumes it). It belongs to the browser session that created it: creating one needs
  a live session cookie, and every later request about it (HEAD, PATCH, DELETE, the form)
  must carry the same cookie, or the upload does not exist for it (404).
"""

from __future__ import annotations

import asyncio
import base64
import enum
import secrets
import time
from dataclasses import dataclass, field
from email.utils import formatdate

from aiohttp import web

from .. import ingest
from .. import sealed as on_device
from ..errors import (
    ClientError,
    Conflict,
    Forbidden,
    LimitExceeded,
    NotFound,
    PreconditionFailed,
    RelayError,
    UnsupportedMediaType,
)
from ..staging import StagedFile
from .common import CONTEXT, RelayContext, store_drop
from .sessions import COOKIE

TUS_VERSION = "1.0.0"
UPLOAD_ID = "[0-9a-f]{32}"  # an upload's id, the path part after /uploads/ (token_hex(16))
EXTENSIONS = "creation,termination,expiration"
# Kept after the last byte: long enough to outlast a lost circuit and a new one, short
# enough that abandoned uploads do not pile up.
UPLOAD_SECONDS = 24 * 3600
MAX_UPLOADS = 1000  # in flight at once, all sources together: bounds RAM and disk
MAX_METADATA = 4096
READ_SIZE = 1 << 20
MAX_USED = 10_000  # ids of consumed held uploads remembered, to say "already sent"
# How a finished upload ended, kept after the upload itself is gone so that a client whose
# connection broke with the last byte can still learn it (HEAD): `Amanah-Outcome: stored`
# with the full offset, or `refused` with 410 and the reason. Ids only, RAM only.
OUTCOME_HEADER = "Amanah-Outcome"
MAX_OUTCOMES = 10_000
# A new request first lets the old PATCH finish on its own (a connection that closed
# cleanly ends as soon as its last bytes are read: cutting it would drop them), then cuts
# it, and waits for it to let go (it only has to notice).
GRACE_SECONDS = 2.0
TAKEOVER_SECONDS = 10.0


@dataclass
class Upload:
    length: int
    staged: StagedFile
    contacts: tuple[str, ...]
    expires_at: float
    # What the client said in Upload-Metadata, parsed; kept in RAM only, never logged.
    metadata: dict[str, str] = field(default_factory=dict)
    offset: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # A held upload: the session cookie that created it (RAM only, like the sessions).
    owner: str | None = None
    claimed: bool = False  # named by a form being stored right now
    # The PATCH reading into this upload now, if any: a newer request cuts it.
    receiving: web.Request | None = None

    @property
    def held(self) -> bool:
        return self.owner is not None


class Unclaimable(enum.Enum):
    """Why a form cannot have a held upload (the source page says it in words)."""

    USED = "already part of a drop, or of a form being sent"
    GONE = "unknown: never made, expired, lost in a restart, or another session's"
    UNFINISHED = "still receiving bytes"


@dataclass(frozen=True)
class Outcome:
    """How a finished upload ended: stored (refusal None) or refused, and until when
    this is remembered."""

    length: int
    refusal: str | None
    expires_at: float


class Uploads:
    """The uploads in flight, in this process's memory only."""

    def __init__(self) -> None:
        self._uploads: dict[str, Upload] = {}
        self._used: dict[str, None] = {}  # consumed held uploads, oldest first
        self._outcomes: dict[str, Outcome] = {}  # oldest first

    def finished(self, upload_id: str, length: int, refusal: str | None) -> None:
        self._outcomes[upload_id] = Outcome(length, refusal, time.time() + UPLOAD_SECONDS)
        while len(self._outcomes) > MAX_OUTCOMES:
            self._outcomes.pop(next(iter(self._outcomes)))

    def outcome(self, upload_id: str, now: float) -> Outcome | None:
        outcome = self._outcomes.get(upload_id)
        if outcome is not None and outcome.expires_at < now:
            del self._outcomes[upload_id]
            return None
        return outcome

    def add(self, upload: Upload) -> str:
        upload_id = secrets.token_hex(16)
        self._uploads[upload_id] = upload
        return upload_id

    def get(self, upload_id: str, now: float) -> Upload:
        self.expire(now)
        upload = self._uploads.get(upload_id)
        if upload is None:
            raise NotFound("no such upload (it may have expired, or the relay restarted)")
        return upload

    def remove(self, upload_id: str) -> None:
        upload = self._uploads.pop(upload_id, None)
        if upload is not None:
            upload.staged.discard()

    def expire(self, now: float) -> None:
        expired = [i for i, u in self._uploads.items() if u.expires_at < now and not u.claimed]
        for upload_id in expired:
            self.remove(upload_id)

    def claim(self, upload_id: str, owner: str, now: float) -> Upload | Unclaimable:
        """The complete held upload `upload_id` of session `owner`, reserved for one form;
        or why it cannot be (another session's upload is GONE, as an unknown one is)."""
        self.expire(now)
        upload = self._uploads.get(upload_id)
        if upload_id in self._used or (upload is not None and upload.claimed):
            return Unclaimable.USED
        if upload is None or not _same(upload.owner, owner):
            return Unclaimable.GONE
        if upload.offset != upload.length or upload.lock.locked():
            return Unclaimable.UNFINISHED
        upload.claimed = True
        return upload

    def release(self, upload_id: str) -> None:
        """A claimed upload whose form failed: kept, so that the form can be sent again."""
        upload = self._uploads.get(upload_id)
        if upload is not None:
            upload.claimed = False
            upload.expires_at = max(upload.expires_at, time.time() + UPLOAD_SECONDS)

    def consume(self, upload_id: str) -> None:
        """A claimed upload whose drop is stored: gone, and its id remembered as used."""
        self.remove(upload_id)
        self._used[upload_id] = None
        while len(self._used) > MAX_USED:
            self._used.pop(next(iter(self._used)))

    def rehome(self, old_owner: str, new_owner: str) -> None:
        """The browser's session ended and a new one began (same browser: it still sent
        the old cookie): its held uploads follow it, so a long outage does not lose them."""
        for upload in self._uploads.values():
            if upload.owner is not None and _same(upload.owner, old_owner):
                upload.owner = new_owner

    def __len__(self) -> int:
        return len(self._uploads)


UPLOADS = web.AppKey("uploads", Uploads)


def _same(owner: str | None, cookie: str | None) -> bool:
    return owner is not None and cookie is not None and secrets.compare_digest(owner, cookie)


def _visible(request: web.Request, upload: Upload) -> Upload:
    """A held upload exists only for the session that created it (others get a 404, as
    for an unknown id); the session is kept alive while its upload is worked on."""
    if upload.held:
        cookie = request.cookies.get(COOKIE)
        if not _same(upload.owner, cookie):
            raise NotFound("no such upload (it may have expired, or the relay restarted)")
        request.app[CONTEXT].sessions.get(cookie, time.time())
    return upload


def _held_owner(request: web.Request, metadata: dict[str, str]) -> str | None:
    """The session cookie a `held` upload is bound to (None for other uploads). Raises
    ClientError for a `held` value other than "1" or with `sealed`; Forbidden without a
    live session."""
    if "held" not in metadata:
        return None
    if metadata["held"] != "1" or on_device.is_sealed(metadata):
        raise ClientError("Upload-Metadata held must be 1, and not with sealed")
    cookie = request.cookies.get(COOKIE)
    if request.app[CONTEXT].sessions.get(cookie, time.time()) is None:
        raise Forbidden("a held upload needs the page's session; reload the page")
    return cookie


def _headers(**extra: str) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, **extra}


def _expires(upload: Upload) -> str:
    return formatdate(upload.expires_at, usegmt=True)


def _check_version(request: web.Request) -> None:
    if request.headers.get("Tus-Resumable") != TUS_VERSION:
        raise PreconditionFailed(f"this server speaks tus {TUS_VERSION} only")


def parse_metadata(header: str) -> dict[str, str]:
    """`key base64value,key2 base64value`. Raises ClientError."""
    if len(header) > MAX_METADATA:
        raise ClientError("Upload-Metadata is too long")
    metadata: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in header.split(","))):
        key, _, value = pair.partition(" ")
        if not key or key in metadata or not key.isascii() or not key.isprintable():
            raise ClientError("Upload-Metadata is malformed")
        try:
            metadata[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except ValueError:  # binascii.Error, UnicodeDecodeError, or a value not ASCII
            raise ClientError("Upload-Metadata values must be base64 of UTF-8") from None
    return metadata


async def options(request: web.Request) -> web.Response:
    limit = request.app[CONTEXT].config.limits.max_total_bytes
    return web.Response(
        status=204,
        headers=_headers(
            **{"Tus-Version": TUS_VERSION, "Tus-Extension": EXTENSIONS, "Tus-Max-Size": str(limit)}
        ),
    )


async def create(request: web.Request) -> web.Response:
    _check_version(request)
    context: RelayContext = request.app[CONTEXT]
    uploads = request.app[UPLOADS]
    try:
        length = int(request.headers["Upload-Length"])
    except (KeyError, ValueError):
        raise ClientError(
            "Upload-Length is required (deferred lengths are not supported)"
        ) from None
    if length <= 0:
        raise ClientError("Upload-Length must be positive")
    if length > context.config.limits.max_total_bytes:
        raise LimitExceeded("the file is larger than this relay accepts")
    metadata = parse_metadata(request.headers.get("Upload-Metadata", ""))
    # Everything else a client may send (a filename, a type) is deliberately not read.
    requested = [n.strip() for n in metadata.get("contacts", "").split(",") if n.strip()]
    if on_device.is_sealed(metadata):  # sealed on the source's device: relay/sealed.py
        await on_device.check(context.store, on_device.parse(metadata))
    ingest.route(await context.store.list_contacts(), requested)  # refuse unknown names now
    owner = _held_owner(request, metadata)
    uploads.expire(time.time())
    if len(uploads) >= MAX_UPLOADS:
        raise RelayError("the relay is busy; try again in a few minutes")
    staged = context.staging.create()
    upload = Upload(length, staged, tuple(requested), time.time() + UPLOAD_SECONDS, metadata)
    upload.owner = owner
    upload_id = uploads.add(upload)
    location = f"/uploads/{upload_id}"
    return web.Response(
        status=201, headers=_headers(Location=location, **{"Upload-Expires": _expires(upload)})
    )


async def _take_over(upload: Upload) -> None:
    """Acquires the upload's lock. If a PATCH is still reading into it, waits a moment for
    it to end by itself, then cuts its connection (what it wrote stays). Raises Conflict if
    the lock is held by other work (a completing upload) or is not let go in time."""
    old = upload.receiving
    if upload.lock.locked() and old is None:
        raise Conflict("this upload is already receiving data")
    for cut, seconds in ((False, GRACE_SECONDS), (True, TAKEOVER_SECONDS)):
        if cut and old is not None and old.transport is not None:
            old.transport.abort()
        try:
            async with asyncio.timeout(seconds):
                await upload.lock.acquire()
            return
        except TimeoutError:
            pass
    raise Conflict("this upload is already receiving data")


async def status(request: web.Request) -> web.Response:
    _check_version(request)
    outcome = request.app[UPLOADS].outcome(request.match_info["upload_id"], time.time())
    if outcome is not None:
        return _finished(outcome)
    upload = request.app[UPLOADS].get(request.match_info["upload_id"], time.time())
    _visible(request, upload)
    if upload.receiving is not None:  # the client asks where to resume: it gave up on it
        await _take_over(upload)
        upload.lock.release()
    return web.Response(
        status=200,
        headers=_headers(
            **{
                "Upload-Offset": str(upload.offset),
                "Upload-Length": str(upload.length),
                "Upload-Expires": _expires(upload),
                "Cache-Control": "no-store",
            }
        ),
    )


def _finished(outcome: Outcome) -> web.Response:
    """HEAD of an upload that is no longer in flight: how it ended. (A HEAD answer has no
    body, so a refusal's reason travels in a header; the reasons are the relay's own
    fixed sentences, nothing of the upload's.)"""
    expires = formatdate(outcome.expires_at, usegmt=True)
    if outcome.refusal is None:
        headers = {
            "Upload-Offset": str(outcome.length),
            "Upload-Length": str(outcome.length),
            OUTCOME_HEADER: "stored",
        }
        return web.Response(status=200, headers=_headers(**headers, **{"Upload-Expires": expires}))
    reason = outcome.refusal.encode("ascii", "replace").decode("ascii").replace("\n", " ")
    headers = {OUTCOME_HEADER: "refused", "Amanah-Reason": reason[:500]}
    return web.Response(status=410, headers=_headers(**headers))


async def append(request: web.Request) -> web.Response:
    _check_version(request)
    if request.content_type != "application/offset+octet-stream":
        raise UnsupportedMediaType("PATCH bodies are application/offset+octet-stream")
    upload_id = request.match_info["upload_id"]
    uploads = request.app[UPLOADS]
    upload = _visible(request, uploads.get(upload_id, time.time()))
    try:
        claimed = int(request.headers["Upload-Offset"])
    except (KeyError, ValueError):
        raise ClientError("Upload-Offset is required") from None
    await _take_over(upload)
    try:
        if claimed != upload.offset:
            raise Conflict(f"the upload is at offset {upload.offset}")
        upload.receiving = request
        try:
            while chunk := await request.content.read(READ_SIZE):
                if upload.offset + len(chunk) > upload.length:
                    raise ClientError("more data than the declared Upload-Length")
                # Sealed inline, as in the form path: a thread per piece gains nothing on
                # two cores and costs memory (one malloc arena per thread).
                upload.staged.write(chunk)
                upload.offset += len(chunk)
                upload.expires_at = time.time() + UPLOAD_SECONDS
                if upload.held:  # an hour-long PATCH must not outlive its session
                    request.app[CONTEXT].sessions.get(upload.owner, time.time())
        except (ConnectionResetError, asyncio.IncompleteReadError):
            # The circuit dropped: what arrived is kept, the client resumes from HEAD.
            pass
        finally:
            upload.receiving = None
        if upload.offset == upload.length and upload.held:
            upload.staged.close()  # complete; it waits for the form that names it
        elif upload.offset == upload.length:
            await _complete(request, upload_id, upload)
    finally:
        upload.lock.release()
    return web.Response(
        status=204,
        headers=_headers(
            **{"Upload-Offset": str(upload.offset), "Upload-Expires": _expires(upload)}
        ),
    )


async def _complete(request: web.Request, upload_id: str, upload: Upload) -> None:
    """A finished upload becomes a drop of that one file (the normal path: sanitize,
    seal, store). It has no codename: nothing was shown to a person who could keep one."""
    context: RelayContext = request.app[CONTEXT]
    uploads = request.app[UPLOADS]
    try:
        await _store(context, upload)
    except RelayError as refused:
        uploads.finished(upload_id, upload.length, str(refused))
        raise
    else:
        uploads.finished(upload_id, upload.length, None)
    finally:
        uploads.remove(upload_id)


async def _store(context: RelayContext, upload: Upload) -> None:
    """The finished upload stored as a drop. Raises RelayError when it is refused."""
    upload.staged.close()
    if on_device.is_sealed(upload.metadata):  # stored as it came (relay/sealed.py)
        await on_device.complete(context, upload.staged, on_device.parse(upload.metadata))
        return
    routing = ingest.route(await context.store.list_contacts(), list(upload.contacts))
    await store_drop(context, routing, [upload.staged])


async def terminate(request: web.Request) -> web.Response:
    _check_version(request)
    upload_id = request.match_info["upload_id"]
    upload = _visible(request, request.app[UPLOADS].get(upload_id, time.time()))
    if upload.lock.locked() or upload.claimed:
        raise Conflict("this upload is receiving data")
    request.app[UPLOADS].remove(upload_id)
    return web.Response(status=204, headers=_headers())


def error(status: int, message: str) -> web.Response:
    """An error answer for a tus client: the message as plain text, with tus's header."""
    return web.Response(status=status, text=message + "\n", headers=_headers())


def add_routes(app: web.Application) -> None:
    app[UPLOADS] = Uploads()
    app.router.add_route("OPTIONS", "/uploads", options)
    app.router.add_post("/uploads", create)
    upload = f"/uploads/{{upload_id:{UPLOAD_ID}}}"
    app.router.add_route("HEAD", upload, status)
    app.router.add_patch(upload, append)
    app.router.add_delete(upload, terminate)
    app.router.add_get("/directory", on_device.directory)  # for amanah-drop (relay/sealed.py)

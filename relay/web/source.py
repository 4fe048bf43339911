"""The source's side: pages that work with JavaScript off, and the streaming form upload.

    GET  /          what this relay is, who receives, the submission form
    POST /submit    message and files (multipart), streamed into staging as they arrive;
                    with JavaScript, `upload` fields name held tus uploads instead of files
    GET  /login     the codename form
    POST /login     codename -> replies (decrypted in memory for this response only)
    POST /logout

Rules:
- the body of a submission is never held whole in memory: each file part is read 1 MiB at
  a time and sealed before it is written: to the RAM-only staging key, or, for a type the
  sanitizer passes on unchanged (its first 64 KiB say), straight to the drop's contacts;
- the CSRF token must be the first field of a form, so a forged upload is refused before
  any of its files is read; the contacts are settled when the first file part arrives
  (a browser sends the fields in the page's order, contacts first), and a contact field
  after a file is refused;
- limits are checked before reading where the request says enough (Content-Length), and
  while reading otherwise; a refused or broken submission leaves nothing behind;
- nothing a browser says about a file (name, type) is read; nothing a source sends is
  logged;
- an `upload` field stands for a file part: the same limits (count, total size) and the
  same sanitize-and-seal path. It must name a complete held upload of this very session
  (relay/web/tus.py); it is consumed when the drop is stored, and kept for another try
  when the form fails.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import BodyPartReader, MultipartReader, web

from crypto import age
from crypto.codename import derive_codename_keys, generate_codename, normalize_codename
from crypto.errors import AgeError, CodenameError

from .. import ingest
from ..errors import ClientError, Forbidden, LimitExceeded, RelayError, Unauthorized
from ..sanitize import SNIFF_BYTES, detect
from ..staging import Final, StagedFile
from ..store import NewSource
from . import i18n, tus
from .common import (
    CONTEXT,
    SOURCE_HEADERS,
    RelayContext,
    boundary,
    store_drop,
)
from .i18n import Language
from .sessions import COOKIE, Session

STATIC = Path(__file__).parent / "static"
# Multipart framing around the files: boundaries, part headers, the small fields.
FORM_OVERHEAD = 1 << 20
MAX_CONTACT_FIELDS = 64  # far more than any relay registers; bounds a list built in RAM
UPLOAD_ID = re.compile(tus.UPLOAD_ID)
# This request's (session id, Session), looked up once.
SESSION = web.RequestKey("session", tuple[str, Session])
READ_SIZE = 1 << 20  # measured: 1 MiB reads of multipart parts are ~60% faster than 64 KiB


def _context(request: web.Request) -> RelayContext:
    return request.app[CONTEXT]


def _session(request: web.Request) -> tuple[str, Session]:
    """The request's session, made once per request. A browser whose session ended (it
    still sends the old cookie) gets a new one, and its held uploads follow it there."""
    if SESSION not in request:
        cookie = request.cookies.get(COOKIE)
        found = _context(request).sessions.get_or_create(cookie, time.time())
        if cookie and found[0] != cookie:
            request.app[tus.UPLOADS].rehome(cookie, found[0])
        request[SESSION] = found
    return request[SESSION]


def _language(request: web.Request) -> Language:
    return _context(request).templates.choose(
        request.query.get("lang"),
        request.cookies.get(i18n.COOKIE),
        request.headers.get("Accept-Language"),
    )


def _page(request: web.Request, template: str, status: int = 200, **values: object) -> web.Response:
    context = _context(request)
    session_id, session = _session(request)
    contacts = values.pop("contacts", None)
    language = _language(request)
    # The language switch reloads a page asked for with GET; a page that answers a form
    # (a receipt with its codename, replies) cannot be asked for again, so the switch
    # opens the start page in a new tab and leaves this one as it is.
    again = request.method == "GET" and template != "error.html"
    html = context.templates.render(
        template,
        language,
        csrf=session.csrf,
        logged_in=session.login_id is not None,
        contacts=contacts or [],
        switch_path=request.path if again else "/",
        switch_new_tab=not again,
        **values,
    )
    response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="Strict", path="/")
    if request.query.get("lang") == language.code:
        # A session cookie (no Expires, no Max-Age): the choice dies with the browser.
        response.set_cookie(i18n.COOKIE, language.code, httponly=True, samesite="Strict", path="/")
    return response


def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    if request.path == "/uploads" or request.path.startswith("/uploads/"):
        response = tus.error(status, message)  # machine clients: plain text, tus headers
        if request.method == "PATCH":
            # Refused before its body was read (a stale offset, say): closing the
            # connection stops the client sending the rest of the body for nothing. A
            # browser resends a PATCH by itself on a fresh connection after a reset.
            response.force_close()
        return response
    return _page(request, "error.html", status=status, message=message)


async def index(request: web.Request) -> web.Response:
    contacts = await _context(request).store.list_contacts()
    return _page(request, "index.html", contacts=contacts)


async def _read_field(
    part: BodyPartReader, limit: int, too_long: RelayError, not_text: RelayError
) -> str:
    """A small form field as text. Raises `too_long` past `limit` bytes, `not_text` for
    bytes that are not UTF-8 (whole sentences, so that a source page can translate them)."""
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data += chunk
        if len(data) > limit:
            raise too_long
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise not_text from None


def _require_csrf(request: web.Request, session: Session | None, token: str) -> None:
    """Raises Forbidden unless `token` is the session's CSRF token."""
    if not _context(request).sessions.csrf_ok(session, token):
        raise _form_expired()


def _form_expired() -> Forbidden:
    return Forbidden("this form has expired; reload the page and send it again")


async def _check_csrf(request: web.Request, reader: MultipartReader) -> tuple[str, Session]:
    session_id, session = _session(request)
    part = await reader.next()
    if not isinstance(part, BodyPartReader) or part.name != "csrf":
        raise _form_expired()
    token = await _read_field(part, 256, _form_expired(), _form_expired())
    _require_csrf(request, session, token)
    return session_id, session


def _counted(total: int, more: int, limit: int) -> int:
    total += more
    if total > limit:
        raise LimitExceeded("the files are larger than this relay accepts in one submission")
    return total


async def _stage(part: BodyPartReader, staged: StagedFile, total: int, limit: int) -> int:
    while chunk := await part.read_chunk(READ_SIZE):
        total = _counted(total, len(chunk), limit)
        # Sealed inline, written and hashed by staging's one writer thread: measured here,
        # a thread pool for the cipher gained nothing on two cores and doubled the memory
        # of concurrent uploads (one malloc arena per thread).
        staged.write(chunk)
    return total


@dataclass
class _Form:
    """A submission as its fields are read."""

    session_id: str
    message: str | None = None
    requested: list[str] = field(default_factory=list)
    send_originals: bool = False
    # Settled when the first file part arrives (contact fields after it are refused), so
    # that a file can be sealed to its contacts as it arrives.
    routing: ingest.Routing | None = None
    staged: list[StagedFile] = field(default_factory=list)  # file parts, staged here
    claimed: list[str] = field(default_factory=list)  # held tus uploads named by the form
    items: list[StagedFile] = field(default_factory=list)  # every file, in form order
    total: int = 0  # every byte of every part counts against the limit, not only files


async def submit(request: web.Request) -> web.Response:
    context = _context(request)
    limits = context.config.limits
    if (
        request.content_length is not None
        and request.content_length > limits.max_total_bytes + FORM_OVERHEAD
    ):
        raise LimitExceeded("the files are larger than this relay accepts in one submission")
    try:
        reader = await request.multipart()
    except (AssertionError, ValueError, KeyError):
        raise ClientError("the submission was not a form upload") from None
    uploads = request.app[tus.UPLOADS]
    form: _Form | None = None
    stored = False
    try:
        session_id, session = await _check_csrf(request, reader)
        form = _Form(session_id)
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise ClientError("nested multipart is not accepted")
            await _read_part(request, form, part)
            if form.total > limits.max_total_bytes:
                raise LimitExceeded("the submission is larger than this relay accepts")
        for each in form.staged:
            each.close()
        response = await _store_drop(
            request,
            session,
            form.message,
            form.requested,
            form.items,
            form.send_originals,
            form.routing,
        )
        stored = True
        return response
    except (ValueError, AssertionError, asyncio.IncompleteReadError, ConnectionResetError):
        raise ClientError("the upload was cut off or malformed; nothing was kept") from None
    finally:
        if form is not None:
            for each in form.staged:
                each.discard()
            for upload_id in form.claimed:  # used by the stored drop, or kept for a retry
                (uploads.consume if stored else uploads.release)(upload_id)


async def _read_part(request: web.Request, form: _Form, part: BodyPartReader) -> None:
    """One field of the submission into `form`. Raises ClientError for what the form
    may not hold."""
    limits = _context(request).config.limits
    if part.name == "message":
        if form.message is not None:
            raise ClientError("the form has more than one message field")
        form.message = await _read_field(
            part,
            limits.max_message_chars * 4,
            LimitExceeded("the message is too long"),
            ClientError("the message is not valid text"),
        )
        if len(form.message) > limits.max_message_chars:
            raise LimitExceeded("the message is too long")
        form.total += len(form.message.encode("utf-8"))
    elif part.name == "contact":
        if form.routing is not None:
            raise ClientError("the form names its contacts after its files; send it again")
        if len(form.requested) >= MAX_CONTACT_FIELDS:
            raise ClientError("the drop is addressed to too many contacts")
        name = await _read_field(
            part,
            128,
            LimitExceeded("a contact name in the form is too long"),
            ClientError("a contact name in the form is not valid text"),
        )
        form.requested.append(name)
        form.total += len(name)
    elif part.name == "originals":
        choice = await _read_field(
            part,
            16,
            LimitExceeded("the choice about originals is not one this form offers"),
            ClientError("the choice about originals is not one this form offers"),
        )
        form.send_originals = choice == "yes"
    elif part.name in ("files", "upload"):
        if len(form.items) >= limits.max_files:
            max_files = limits.max_files
            raise LimitExceeded(f"at most {max_files} files can be sent at once")
        if part.name == "files":
            await _read_file(request, form, part)
        else:
            await _claim_upload(request, form, part)
    else:
        # Not read to its end (that would let any amount through): refused.
        raise ClientError("the form has a field this relay does not know")


async def _read_file(request: web.Request, form: _Form, part: BodyPartReader) -> None:
    """A file part, staged. Its first bytes say its type: a file the sanitizer would pass
    on unchanged is sealed to the drop's contacts as it arrives (staging.py), the others to
    the staging key."""
    context = _context(request)
    limit = context.config.limits.max_total_bytes
    if form.routing is None:
        form.routing = ingest.route(await context.store.list_contacts(), form.requested)
    head = b""
    while len(head) < SNIFF_BYTES and (chunk := await part.read_chunk(READ_SIZE)):
        form.total = _counted(form.total, len(chunk), limit)
        head += chunk
    if not head:  # an empty file input: browsers send an empty part
        return
    detected = detect(head[:SNIFF_BYTES])
    final = None
    if context.sanitizer.unchanged(detected) is not None and context.staging.seals_final():
        final = Final(detected.mime, form.routing.recipients)
    staged = context.staging.create(final)
    form.staged.append(staged)
    staged.write(head)
    form.total = await _stage(part, staged, form.total, limit)
    form.items.append(staged)


async def _claim_upload(request: web.Request, form: _Form, part: BodyPartReader) -> None:
    """An `upload` field: the id of a complete held tus upload of this session, which
    takes the place of a file part (the page's script sent the file that way)."""
    unknown = ClientError("the form refers to an upload this relay does not know")
    upload_id = await _read_field(part, 64, unknown, unknown)
    if not UPLOAD_ID.fullmatch(upload_id):
        raise unknown
    upload = request.app[tus.UPLOADS].claim(upload_id, form.session_id, time.time())
    if upload is tus.Unclaimable.USED:
        raise ClientError("a file of this form was already sent; reload the page")
    if upload is tus.Unclaimable.UNFINISHED:
        raise ClientError("a file of this form has not finished uploading; wait, then send again")
    if not isinstance(upload, tus.Upload):
        raise ClientError(
            "a file of this form is no longer on the relay (it may have expired, or the relay "
            "restarted); choose it again and send the form again"
        )
    form.claimed.append(upload_id)
    form.items.append(upload.staged)
    form.total += upload.length


async def _store_drop(
    request: web.Request,
    session: Session,
    message: str | None,
    requested: list[str],
    staged: list[StagedFile],
    send_originals: bool = False,
    routing: ingest.Routing | None = None,
) -> web.Response:
    """Stores the drop; `routing` is the one settled when the first file arrived, if any
    (files may already be sealed to it)."""
    context = _context(request)
    text = ingest.normalise_message(message).strip() if message else ""
    if not text and not staged:
        raise ClientError("nothing to send: write a message or choose a file")
    if routing is None:
        routing = ingest.route(await context.store.list_contacts(), requested)
    codename, new_source = None, None
    if session.login_id is None:
        codename = generate_codename()
        async with context.derivations:
            keys = await asyncio.to_thread(
                derive_codename_keys, codename, context.keys.codename_salt
            )
        login_id, reply_recipient = keys.login_id, str(keys.reply_identity.recipient)
        reply_handle = ingest.new_drop_id()
        new_source = NewSource(login_id, reply_recipient, reply_handle, int(time.time()))
    else:
        login_id = session.login_id
        source = await context.store.get_source(login_id)
        if source is None:
            raise Unauthorized("your session has ended; log in again")
        _, reply_recipient, reply_handle = source
    _, sealed_drop = await store_drop(
        context,
        routing,
        staged,
        message=text or None,
        reply_to=ingest.ReplyTo(reply_recipient, reply_handle),
        send_originals=send_originals,
        source_login=login_id,
        new_source=new_source,
    )
    session.login_id = login_id
    return _page(
        request,
        "receipt.html",
        codename=codename,
        contacts_sent=routing.contacts,
        refused=[r.for_source() for r in sealed_drop.refusals],
        # The form and held tus uploads are both sealed here (the device-sealed path of
        # amanah-drop never renders a page).
        sealed_on="relay",
    )


async def login_form(request: web.Request) -> web.Response:
    return _page(request, "login.html")


async def login(request: web.Request) -> web.Response:
    context = _context(request)
    if request.content_length is not None and request.content_length > 4096:
        raise LimitExceeded("the form is too large")
    form = await request.post()
    _, session = _session(request)
    _require_csrf(request, session, str(form.get("csrf", "")))
    try:
        codename = normalize_codename(str(form.get("codename", "")))
    except CodenameError as exc:
        return _page(request, "login.html", status=400, error=str(exc))
    async with context.derivations:
        keys = await asyncio.to_thread(derive_codename_keys, codename, context.keys.codename_salt)
    source = await context.store.get_source(keys.login_id)
    if source is None:
        return _page(request, "login.html", status=401, error="no drop was sent with that codename")
    session.login_id = keys.login_id
    replies = []
    for reply in await context.store.list_replies(keys.login_id):
        path = context.replies_root / reply.id
        try:
            sealed = await asyncio.to_thread(path.read_bytes)
            text = (await asyncio.to_thread(age.decrypt, sealed, [keys.reply_identity])).decode(
                "utf-8", "replace"
            )
        except (OSError, AgeError):
            text = None
        replies.append({"contact": reply.contact, "created_at": reply.created_at, "text": text})
    contacts = await context.store.list_contacts()
    return _page(request, "replies.html", replies=replies, contacts=contacts)


async def logout(request: web.Request) -> web.Response:
    context = _context(request)
    form = await request.post()
    session = context.sessions.get(request.cookies.get(COOKIE), time.time())
    _require_csrf(request, session, str(form.get("csrf", "")))
    context.sessions.end(request.cookies.get(COOKIE))
    raise web.HTTPSeeOther("/")


def make_app(context: RelayContext) -> web.Application:
    app = web.Application(
        middlewares=[boundary(_error_page, SOURCE_HEADERS)],
        # Form uploads are streamed by the handler; this bounds only request.post() forms.
        client_max_size=64 * 1024,
    )
    app[CONTEXT] = context
    app.router.add_get("/", index)
    app.router.add_post("/submit", submit)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    tus.add_routes(app)
    return app

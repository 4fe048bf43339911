"""What both web apps share: the context object, security headers, the one place that
turns exceptions into responses, and the one way a drop sealed on the relay is stored
(the form and a tus upload both end there).

Rules:
- every response carries a strict Content-Security-Policy, `frame-ancestors 'none'`, no
  referrer, `Cache-Control: no-store`. The journalist API's loads nothing but this relay's
  stylesheet; the source pages' adds exactly what their one optional script needs: itself
  (`script-src 'self'`, no inline script) and uploads to this origin (`connect-src 'self'`);
- a RelayError becomes its status hint with its message (written for the person who caused
  it); anything else becomes a 500 that says nothing, and is logged by its type only:
  an exception's text may hold a filename or a byte of a form.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from .. import blobs, ingest
from ..auth import Authenticator
from ..config import Config
from ..datadir import RelayKeys
from ..errors import RelayError
from ..sanitize import Sanitizer
from ..staging import StagedFile, StagingArea
from ..store import NewSource, Store
from .i18n import Pages
from .sessions import Sessions

log = logging.getLogger("amanah.web")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    # Not aiohttp's "Python/3.x aiohttp/3.y": no software versions for a visitor to probe.
    "Server": "Amanah",
}
SOURCE_HEADERS = {
    **SECURITY_HEADERS,
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


@dataclass
class RelayContext:
    """Everything a handler may use, made once by the server and passed explicitly."""

    config: Config
    keys: RelayKeys
    store: Store
    staging: StagingArea
    sanitizer: Sanitizer
    sessions: Sessions
    auth: Authenticator
    templates: Pages
    # Codename derivations (Argon2id, 8 MiB each) and drop sealing (CPU-bound, ~3 MiB of
    # buffers per thread) run in worker threads; more at once than there are cores only
    # adds memory. Each relay, and so each event loop, has its own.
    derivations: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))
    sealing: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(2))

    @property
    def drops_root(self) -> Path:
        return self.config.blobs / "drops"

    @property
    def replies_root(self) -> Path:
        return self.config.blobs / "replies"


CONTEXT = web.AppKey("context", RelayContext)


async def store_drop(
    context: RelayContext,
    routing: ingest.Routing,
    staged: Sequence[StagedFile],
    *,
    message: str | None = None,
    reply_to: ingest.ReplyTo | None = None,
    send_originals: bool = False,
    source_login: str | None = None,
    new_source: NewSource | None = None,
) -> tuple[str, ingest.SealedDrop]:
    """Sanitizes and seals a drop on the relay (in a worker thread, `context.sealing` at a
    time), then records it, with its new source if it has one. Returns the drop's id and
    what was sealed and refused. Raises what `ingest.seal_drop` and
    `Store.add_drop` raise; nothing of the drop is left on disk then."""
    drop_id = ingest.new_drop_id()
    created = ingest.hour(int(time.time()))
    async with context.sealing:
        sealed = await asyncio.to_thread(
            ingest.seal_drop,
            context.config.blobs,
            drop_id,
            created,
            message,
            staged,
            routing,
            context.sanitizer,
            reply_to,
            send_originals,
        )
    record = ingest.drop_record(drop_id, source_login, created, sealed.blobs, routing)
    try:
        await context.store.add_drop(record, new_source)
    except BaseException:
        await asyncio.to_thread(blobs.delete_tree, context.config.blobs, ingest.drop_path(drop_id))
        raise
    return drop_id, sealed


def templates() -> Pages:
    """The source pages in every language of relay/web/locale/ (read once, at start-up)."""
    return Pages.load()


async def _record(request: web.Request, kind: str) -> None:
    """Keeps the error for `amanah status`: its type and the route, never the request."""
    route = request.match_info.route.resource
    where = route.canonical if route is not None else "unrouted"
    try:
        await request.app[CONTEXT].store.add_event(
            "internal", f"{kind} in {where}", int(time.time())
        )
    except Exception:  # noqa: S110 - the store itself may be what failed; the log has it
        pass


def boundary(
    render: Callable[[web.Request, int, str], web.Response], headers: dict[str, str]
) -> Callable[..., Awaitable[web.StreamResponse]]:
    """An app's one middleware: maps exceptions to responses with `render(request, status,
    message)`, and puts `headers` on every response, answer or error."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except RelayError as exc:
            response = render(request, exc.status, str(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = render(request, exc.status, exc.reason)
            if "Allow" in exc.headers:  # a 405 must say what is allowed (RFC 9110)
                response.headers["Allow"] = exc.headers["Allow"]
        except Exception as exc:  # the web error boundary: nothing escapes unanswered
            kind = type(exc).__name__
            log.error("internal error handling a request: %s", kind)
            await _record(request, kind)
            response = render(request, 500, "the relay could not complete this request")
        response.headers.update(headers)
        return response

    return middleware

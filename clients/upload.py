"""A tus 1.0.0 client (creation; core) for one file, over aiohttp: what `amanah-drop send`
uploads a sealed drop with.

aiohttp rather than tuspy: the same transport as the rest of the clients (tor's SOCKS
port with names resolved by tor, through onion/client), asyncio like them, and no second
HTTP stack; tuspy stays what the tests judge the relay with.

Rules:
- the relay's `HEAD` is the only truth about how much arrived: after any failure the
  client asks, and sends from there (a PATCH streams the rest of the file in one body;
  the relay keeps every byte that arrived before a connection broke);
- the upload URL and the offset last heard are handed to `on_offset` as soon as they are
  known, so a later run can carry on (clients/outbox.py keeps them);
- a failure is retried with growing pauses while it is a transport failure or the relay
  is still busy with the broken connection (409), for at most `patience` seconds without
  a byte of progress; a refusal (4xx with a reason) is final and is raised at once;
- every request goes to the relay the person named and nowhere else: no redirect is
  followed (a 3xx is an error), and the upload URL a relay answers with (`Location`) must
  be on the same scheme, host and port, one plain name under its tus path; otherwise the
  client stops before a byte of the file, its metadata or its timing goes anywhere.
  A hostile relay, or anything on the way to a loopback one, could otherwise send the
  ciphertext to another host.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import SplitResult, urljoin, urlsplit

import aiohttp

from onion import client as tor_client

from .common import UserError, error_body, progress, relay_said, unreachable

TUS = {"Tus-Resumable": "1.0.0"}
PIECE = 256 * 1024  # read and sent per step; a Tor stream's window is far smaller anyway
FIRST_PAUSE, LONGEST_PAUSE = 1.0, 30.0


class Refused(UserError):
    """The relay answered with a refusal that trying again will not change. `reason` is
    the relay's text as it came; the message shows it only through relay_said."""

    def __init__(self, status: int, reason: str, hint: str | None = None) -> None:
        said = relay_said(reason)
        super().__init__(
            f"the relay refused the drop; {said}"
            if said
            else f"the relay refused the drop ({status})",
            hint,
        )
        self.status = status
        self.reason = reason


class Unknown(UserError):
    """The connection broke after the last byte and the relay has forgotten the upload:
    it stored the drop or refused it, and its answer was lost."""


class Misdirected(UserError):
    """The relay answered with a redirect, or named an upload URL on another server or
    outside its upload path. Nothing was sent there; the state is kept, so once the
    relay (or what stands in front of it) is fixed, the same command carries on. (An
    upload URL remembered from an earlier run that breaks the rule is forgotten by
    clients/drop.py instead, before anything is sent: see remembered_upload.)"""


class Gone(Exception):
    """The relay no longer has the upload (expired, or the relay restarted)."""


@dataclass
class Transfer:
    """Bytes sent over the wire by this run, for the progress line and the re-sent count."""

    sent: int = 0
    last_line: float = 0.0
    at_end: bool = False  # the last PATCH body went out whole


def encode_metadata(metadata: Mapping[str, str]) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in metadata.items()
    )


# The relay's own header on HEAD of a finished upload (relay/web/tus.py): "stored", or
# "refused" with the reason in Amanah-Reason. A relay without it forgets finished uploads.
OUTCOME_HEADER = "Amanah-Outcome"


def _upload_offset(response: aiohttp.ClientResponse, length: int) -> int:
    """The relay's Upload-Offset: how much of the `length` bytes it has. Raises UserError
    for none, or one that is not a number from 0 to `length`."""
    text = response.headers.get("Upload-Offset", "")
    if not (text.isascii() and text.isdigit() and int(text) <= length):
        raise UserError(f"the relay's answer has no valid Upload-Offset ({response.status})")
    return int(text)


# One path segment as an upload's name: the relay's ids are 32 hex digits (relay/web/tus.py);
# anything with a slash, a dot segment, an escape or a query could lead elsewhere.
_UPLOAD_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _server(parts: SplitResult) -> tuple[str, str, int | None]:
    """(scheme, host, port) of a URL, the port filled in from the scheme. Raises
    ValueError for a port that is not a number from 0 to 65535."""
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme)


def upload_url(endpoint: str, location: str) -> str:
    """The upload URL `location` names, resolved against the tus `endpoint` (…/uploads).
    Raises Misdirected unless it is on the endpoint's scheme, host and port, and is one
    plain name under the endpoint's path (no user, query or fragment)."""
    try:
        url = urljoin(endpoint, location)
        parts, relay = urlsplit(url), urlsplit(endpoint)
        same_server = _server(parts) == _server(relay)
    except ValueError:  # a port out of range, a bracketed host left open (`http://[::1`)
        same_server = False
    if not same_server or parts.username is not None or parts.password is not None:
        raise Misdirected(
            "the relay named an upload URL on another server; nothing was sent there",
            "check --relay; if it is right, the relay (or a proxy in front of it) is "
            "misconfigured or hostile: tell its operator",
        )
    prefix = relay.path.rstrip("/") + "/"
    name = parts.path[len(prefix) :]
    if not parts.path.startswith(prefix) or not _UPLOAD_NAME.fullmatch(name):
        raise Misdirected("the relay named an upload URL outside its upload path")
    if parts.query or parts.fragment:
        raise Misdirected("the relay named an upload URL with a query or fragment")
    return url


def remembered_upload(endpoint: str, url: object) -> str | None:
    """An upload URL remembered from an earlier run (clients/outbox.py), resolved, if it
    is one of the tus `endpoint`'s uploads by upload_url's rule; None if it is not (a
    state file written before that rule, or edited): the caller forgets it and starts
    again, and nothing is sent where it pointed."""
    if not isinstance(url, str):
        return None
    try:
        return upload_url(endpoint, url)
    except Misdirected:
        return None


def _refuse_redirect(response: aiohttp.ClientResponse) -> None:
    """Raises Misdirected for a 3xx answer: never followed (see the rules above)."""
    if 300 <= response.status < 400:
        raise Misdirected(
            f"the relay answered {response.method} with a redirect ({response.status}); "
            "not followed, nothing was sent elsewhere",
            "check --relay; a relay does not redirect uploads: tell its operator",
        )


async def _reason(response: aiohttp.ClientResponse) -> str:
    """The first line of a refusal's body (read up to common.ERROR_BODY_LIMIT), as the
    relay wrote it: shown only through relay_said (Refused)."""
    text = (await error_body(response)).decode("utf-8", errors="replace").strip()
    return text.splitlines()[0] if text else ""


class Uploader:
    """Uploads through `session` to the tus endpoint `endpoint` (…/uploads)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        endpoint: str,
        on_offset: Callable[[str, int], None],
        patience: float = 300.0,
    ) -> None:
        self.session = session
        self.endpoint = endpoint
        self.on_offset = on_offset
        self.patience = patience
        self.transfer = Transfer()

    async def create(self, length: int, metadata: Mapping[str, str]) -> str:
        """POSTs a new upload; returns its absolute URL. Raises Refused, or Misdirected
        for a redirect or an upload URL elsewhere (then nothing is remembered)."""
        headers = {**TUS, "Upload-Length": str(length)}
        headers["Upload-Metadata"] = encode_metadata(metadata)
        async with self.session.post(
            self.endpoint, headers=headers, allow_redirects=False
        ) as response:
            _refuse_redirect(response)
            if response.status != 201 or "Location" not in response.headers:
                raise Refused(response.status, await _reason(response))
            url = upload_url(self.endpoint, response.headers["Location"])
        self.on_offset(url, 0)
        return url

    async def offset(self, url: str, length: int) -> int:
        """How much of the upload (of `length` bytes) the relay has. Raises Gone, Refused,
        UserError (Misdirected for a redirect), or _Stored when the relay already stored
        the drop (its answer to the last PATCH was lost)."""
        async with self.session.head(url, headers=TUS, allow_redirects=False) as response:
            _refuse_redirect(response)
            outcome = response.headers.get(OUTCOME_HEADER)
            if response.status == 410 and outcome == "refused":
                raise Refused(409, response.headers.get("Amanah-Reason", ""))
            if response.status == 200 and outcome == "stored":
                self.on_offset(url, _upload_offset(response, length))
                raise _Stored()
            if response.status in (404, 410):
                raise Gone()
            if response.status != 200:
                raise Refused(response.status, await _reason(response))
            offset = _upload_offset(response, length)
        self.on_offset(url, offset)
        return offset

    async def _body(self, path: Path, start: int, length: int) -> AsyncIterator[bytes]:
        self.transfer.at_end = False
        with path.open("rb") as f:
            f.seek(start)
            position = start
            while block := f.read(PIECE):
                yield block
                position += len(block)
                self.transfer.sent += len(block)
                self._show(position, length)
        self.transfer.at_end = position == length

    def _show(self, position: int, length: int, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.transfer.last_line > 0.5 or position == length:
            percent = position * 100 // max(length, 1)
            progress(f"uploading: {percent}% of {length / 1e6:.1f} MB")
            self.transfer.last_line = now

    async def _patch(self, url: str, path: Path, offset: int, length: int) -> int:
        """One PATCH from `offset` to the end. Returns the relay's new offset. Raises
        Gone, Refused, UserError (Misdirected for a redirect), a transport error, or
        _Busy."""
        headers = {
            **TUS,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
            "Content-Length": str(length - offset),
        }
        body = self._body(path, offset, length)
        async with self.session.patch(
            url, data=body, headers=headers, allow_redirects=False
        ) as response:
            _refuse_redirect(response)
            if response.status == 204:
                new_offset = _upload_offset(response, length)
                self.on_offset(url, new_offset)
                return new_offset
            if response.status in (404, 410):
                raise Gone()
            reason = await _reason(response)
            if response.status == 409:
                raise _Busy(reason)
            raise Refused(response.status, reason)

    async def send(self, url: str, path: Path, length: int) -> None:
        """Sends the file until the relay has all of it and has stored the drop. Raises
        Refused (final), Gone (start again with `create`), UserError when no progress
        was made for `patience` seconds (the state is kept: run again to carry on),
        Misdirected for a `url` that is not one of this relay's uploads (checked again
        here; clients/drop.py forgets such a remembered URL before calling) or a
        redirect."""
        upload_url(self.endpoint, url)
        pause = FIRST_PAUSE
        best, stalled_since = -1, time.monotonic()
        conflict: str | None = None  # the 409 reason of the last PATCH, if it got one
        reached_end = False  # every byte went out (or the relay had them all)
        while True:
            try:
                try:
                    offset = await self.offset(url, length)
                except _Stored:
                    return
                if offset > best:
                    best, stalled_since, pause = offset, time.monotonic(), FIRST_PAUSE
                if offset == length:
                    # Every byte is in, yet the upload still exists: the relay is still
                    # storing it (a broken connection hid its answer). Ask again shortly.
                    reached_end = True
                    raise _Busy("")
                self._show(offset, length, force=True)
                conflict, reached_end = None, False
                if await self._patch(url, path, offset, length) == length:
                    return
            except _Busy as busy:
                conflict = busy.reason or conflict
                reached_end = reached_end or self.transfer.at_end
            except Gone:
                self._after_gone(conflict, reached_end or self.transfer.at_end)
                raise
            except tor_client.TRANSPORT_ERRORS as exc:
                explained = tor_client.explain(exc)
                if explained is not None and not explained.retryable:
                    raise unreachable(exc) from None
                reached_end = reached_end or self.transfer.at_end
            if time.monotonic() - stalled_since > self.patience:
                raise UserError(
                    f"the upload made no progress for {self.patience:.0f} seconds",
                    "run the same command again to carry on from where it stopped",
                )
            progress(f"connection lost; trying again in {pause:.0f} s")
            await asyncio.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)

    @staticmethod
    def _after_gone(conflict: str | None, reached_end: bool) -> None:
        """The relay removed an upload this run was sending. After the last byte, the
        relay removes it whether it stored the drop or refused it: a 409 heard then was
        the refusal; with no answer heard, the outcome is unknown."""
        if reached_end and conflict:
            raise Refused(409, conflict)
        if reached_end:
            raise Unknown(
                "the connection broke just after the last byte, and the relay no longer "
                "has the upload: it was most likely stored, but its answer was lost",
                "to be sure, send the drop again (the contacts may then get it twice)",
            )


class _Stored(Exception):
    """The relay remembers storing this upload's drop."""


class _Busy(Exception):
    """409: the relay is still reading the last (broken) connection, or the offsets
    disagree; asking HEAD again after a pause settles both."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

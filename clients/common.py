"""What `amanah-inbox` and `amanah-drop` share: the error a person can act on, progress
lines, reaching the relay, and the signed directory checked against a pin kept here.

Rules:
- a `.onion` URL is reached through tor's SOCKS port, names resolved by tor (onion/client);
  a loopback URL (the relay's `--no-tor` mode, tests) directly; what else a client may
  reach is the client's decision (`amanah-drop` refuses anything else: a source's
  address must never reach a relay's host);
- the directory is trusted on first use, then only along its signed rotation chain
  (crypto.directory): a fork, a rollback or another key is refused, and the pin is left
  as it was. The pin is replaced atomically, so a crash never leaves half a pin;
- text the relay sent (a JSON `error`, a reason in a body or a header, what aiohttp quotes
  of a broken answer) reaches the terminal only through `relay_said` (or `printable`):
  one line, no control or format character, at most RELAY_TEXT_LIMIT characters. A
  hostile relay could otherwise clear the screen, rewrite earlier lines, retitle the
  window, plant a link or reverse the text (terminal escapes, bidi overrides), or bury
  the message under megabytes; and a refusal's body is read only up to ERROR_BODY_LIMIT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from crypto.directory import Directory, DirectoryPin, verify_directory
from crypto.errors import CryptoError
from onion import client as tor_client
from onion.errors import OnionError
from onion.tor import is_loopback_host


class UserError(Exception):
    """A failure the person running the command can act on: printed as `PROG: error: ...`,
    with `hint` on a second line."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


# What the relay says is shown up to this many characters: a reason is a sentence; more
# would only push the rest of the message off the screen.
RELAY_TEXT_LIMIT = 300
# A refusal's body is read up to this many bytes (a JSON error of any sensible length fits)
# and no further, so that an endless one cannot fill the memory.
ERROR_BODY_LIMIT = 1 << 20
# A JSON answer or the directory, read whole: a listing of 10,000 drops is ~4 MB.
ANSWER_LIMIT = 16 << 20
# Characters that are not text to show: controls (Cc: C0 such as ESC, NUL and BEL, DEL,
# and C1 such as the one-byte CSI), formats (Cf: the bidi embeddings, overrides and
# isolates U+202A-U+202E and U+2066-U+2069, zero-width characters), and lone surrogates
# (Cs: what undecodable bytes of a header become). Line breaks and other whitespace
# become one space first (str.isspace), so that words stay apart on the one line.
_NOT_SHOWN = frozenset({"Cc", "Cf", "Cs"})


def printable(text: str, limit: int = RELAY_TEXT_LIMIT) -> str:
    """`text` as one line that is safe on a terminal: every run of whitespace (line
    breaks and tabs included) one space, every other control, format or surrogate
    character removed, cut to `limit` characters with an ellipsis. Stops reading once
    the limit is passed, however long `text` is."""
    shown: list[str] = []
    space = False
    for char in text:
        if char.isspace():
            space = bool(shown)
        elif unicodedata.category(char) not in _NOT_SHOWN:
            if space:
                shown.append(" ")
                space = False
            shown.append(char)
            if len(shown) > limit:
                return "".join(shown[:limit]).rstrip() + "…"
    return "".join(shown)


def relay_said(text: str) -> str:
    """`the relay said: "…"`: the relay's `text` through `printable`, quoted (a quote
    or backslash in it escaped, so it cannot seem to end early), or "" when nothing of
    it is left to show. The one way the relay's words reach a message."""
    shown = printable(text)
    return f"the relay said: {json.dumps(shown, ensure_ascii=False)}" if shown else ""


async def read_at_most(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """The body, up to `limit` bytes (the rest is not read)."""
    body = bytearray()
    while len(body) < limit:
        chunk = await response.content.read(limit - len(body))
        if not chunk:
            break
        body += chunk
    return bytes(body)


async def error_body(response: aiohttp.ClientResponse) -> bytes:
    """The body of a refusal, up to ERROR_BODY_LIMIT bytes (the rest is not read)."""
    return await read_at_most(response, ERROR_BODY_LIMIT)


async def bounded_answer(response: aiohttp.ClientResponse) -> bytes | None:
    """The body of a relay's answer that is read whole (JSON, the directory), or None when
    it is larger than ANSWER_LIMIT: a broken or hostile relay cannot fill the memory of
    the person's machine. A declared length over the limit is not read at all."""
    if (response.content_length or 0) > ANSWER_LIMIT:
        return None
    body = await read_at_most(response, ANSWER_LIMIT + 1)
    return body if len(body) <= ANSWER_LIMIT else None


_progress_open = False  # a progress line is on the terminal, not yet ended


def progress(text: str) -> None:
    """One line of progress on stderr: rewritten in place on a terminal."""
    global _progress_open
    _progress_open = sys.stderr.isatty()
    print(
        f"\r{text}\033[K" if _progress_open else text,
        end="" if _progress_open else "\n",
        file=sys.stderr,
    )


def end_progress() -> None:
    """Ends the progress line on a terminal, if one is open, so the next line is its own."""
    global _progress_open
    if _progress_open:
        print(file=sys.stderr)
        _progress_open = False


def run_command(prog: str, args: argparse.Namespace, interrupted: str | None = None) -> int:
    """The clients' dispatcher: runs `args.run(args)` (a coroutine under asyncio.run), and
    turns what it raises into `PROG: error: ...` and `PROG: hint: ...` lines and an exit
    code: 1 for a failure the person can act on, 2 for a bug (never a traceback), 130
    when interrupted (then `interrupted`, if given, is said)."""
    try:
        result = args.run(args)
        return asyncio.run(result) if asyncio.iscoroutine(result) else int(result)
    except KeyboardInterrupt:
        end_progress()
        if interrupted:
            print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except (UserError, OnionError) as exc:
        end_progress()
        print(f"{prog}: error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"{prog}: hint: {exc.hint}", file=sys.stderr)
        return 1
    except Exception as exc:  # the dispatcher: a bug is reported, never a traceback
        print(f"{prog}: error: unexpected {type(exc).__name__}", file=sys.stderr)
        return 2


def is_loopback_url(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


def unreachable(exc: Exception) -> UserError:
    """A transport failure (aiohttp, aiohttp-socks), explained. aiohttp quotes what it
    could not parse of the relay's answer (a status line, a header), so its words go
    through `printable`."""
    explained = tor_client.explain(exc)
    if explained is not None:
        return UserError(
            f"cannot reach the relay through Tor: {printable(str(explained))}", explained.hint
        )
    return UserError(
        f"cannot reach the relay: {printable(str(exc))}",
        "check --relay, and that the relay is running",
    )


async def fetch_bytes(session: aiohttp.ClientSession, url: str, what: str) -> bytes:
    """GET `url`. Raises UserError for an answer other than 200, a redirect included:
    none is followed, so nothing of the request goes to a host the person did not name."""
    async with session.get(url, allow_redirects=False) as response:
        if response.status != 200:
            raise UserError(f"the relay did not give its {what} ({response.status})")
        body = await bounded_answer(response)
    if body is None:
        raise UserError(
            f"the relay's {what} is larger than {ANSWER_LIMIT >> 20} MiB; it was not read",
            "check --relay; tell the relay's operator",
        )
    return body


def write_private(path: Path, data: bytes) -> None:
    """Replaces `path` atomically with `data` (0600): written beside it, fsynced, renamed."""
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def verify_pinned(document: bytes, pin_path: Path) -> Directory:
    """The directory in `document`, verified against the pin stored at `pin_path` (none
    yet: this document's root key is pinned). Stores the new pin. Raises UserError."""
    try:
        pin = DirectoryPin.from_json(pin_path.read_text()) if pin_path.exists() else None
        directory, new_pin = verify_directory(document, pin)
    except CryptoError as exc:
        raise UserError(
            f"the relay's directory does not verify against the key pinned in {pin_path}: {exc}",
            "do not trust this relay until its operator confirms a key change",
        ) from None
    except OSError as exc:
        raise UserError(f"cannot read the directory pin: {exc.strerror}") from None
    write_private(pin_path, new_pin.to_json().encode())
    return directory


async def fetch_directory(
    session: aiohttp.ClientSession,
    url: str,
    pin_path: Path,
    wait: float,
    say: Callable[[str], None],
) -> Directory:
    """The relay's signed directory at `url`, verified against the pin (see
    verify_pinned), retried while tor says "not yet" (a descriptor not published, an
    introduction that failed) for at most `wait` seconds, each wait told to `say`.
    Raises UserError."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return verify_pinned(await fetch_bytes(session, url, "directory"), pin_path)
        except tor_client.TRANSPORT_ERRORS as exc:
            explained = tor_client.explain(exc)
            if explained is None or not explained.retryable or time.monotonic() > deadline:
                raise unreachable(exc) from None
            say(f"waiting for the onion service: {explained}")
            await asyncio.sleep(3)

"""What a relay says reaches the terminal only as one safe, bounded line: a hostile relay
answering `amanah-inbox` and `amanah-drop` with a JSON error, a body, an Amanah-Reason
header or a broken status line that holds terminal escapes (ESC [2J clears the screen,
OSC 0 retitles the window, OSC 8 plants a link, a cursor-up rewrites an earlier line), a
bidi override, a NUL and 100 KB of text gets one error line per message: no control or
format character but the newline that ends it, a bounded length, and the relay's words
still readable and marked as the relay's (`the relay said: "…"`).

Two fakes stand in for the hostile relay (a real relay never answers like this, which is
the point): for amanah-inbox, a loopback aiohttp app that passes every request on to the
real relay (so that the login is real) and answers the one path a test names itself;
for amanah-drop, a loopback TCP server writing HTTP by hand, because aiohttp's own server
refuses (rightly) to send a control character in a header, and a hostile relay would
not. It serves the real relay's signed directory, so that the command gets as far as
the upload."""

from __future__ import annotations

import asyncio
import json
import re
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from hypothesis import given
from hypothesis import strategies as st

from clients.common import RELAY_TEXT_LIMIT, printable, relay_said
from clients.upload import Refused
from crypto.card import MemberIdentity
from tests.clients.harness import DROP, Setup
from tests.relayharness import INBOX, child_env

# What must still be readable (an OSC 8 link leaves its inert `]8;;URL\\` between them).
WORDS = ("Your upload is refused: the ", "relay", " is full")
BULK = "A" * 100_000
# The relay's words with every kind of escape in and around them, then 100 KB on the
# same line, then a second line that would move the cursor up and overwrite the first.
HOSTILE = (
    "\x1b[2J\x1b[H"  # clear the screen, cursor home
    "\x1b]0;owned\x07"  # retitle the window
    "\u202eYour upload\u202c is refused\x00: the "  # a bidi override, a NUL
    "\x1b]8;;https://evil.example/\x1b\\relay\x1b]8;;\x1b\\ is full"  # an OSC 8 link
    "\u2066\u200b\x9b2J\x7f "  # an isolate, a zero-width space, a C1 CSI, DEL
    + BULK
    + "\r\n\x1b[1A\x1b[2Kamanah-drop: the relay has your drop"
)
# What a header can carry: no NUL or line break (aiohttp's parser refuses those), and
# less than its 8190-byte line limit.
HOSTILE_HEADER = HOSTILE.split("\x00")[0] + ": the relay is full " + "A" * 4000


def shown_badly(text: str) -> list[str]:
    """The characters of `text` that a terminal would act on rather than show."""
    return [c for c in text if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")]


def assert_safe(stderr: str, words: tuple[str, ...] = WORDS) -> None:
    """Every line of `stderr` is free of control and format characters and bounded, the
    whole is bounded, and (if `words`) the relay's words are there, marked as its own."""
    assert stderr.endswith("\n"), stderr
    lines = stderr[:-1].split("\n")
    for line in lines:
        assert not shown_badly(line), ascii(line)
        assert len(line) < 3 * RELAY_TEXT_LIMIT, ascii(line)
    assert len(stderr) < 2000 + 1000 * len(lines)
    assert "A" * (RELAY_TEXT_LIMIT + 1) not in stderr
    assert "the relay has your drop" not in stderr  # the second line is not shown at all
    if words:
        said = [line for line in lines if 'the relay said: "' in line]
        assert len(said) == 1, stderr
        assert all(w in said[0] for w in words), stderr
        assert said[0].endswith('…"'), stderr  # cut, and the cut is shown


async def command(*argv: str | Path) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *map(str, argv),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


# --- the function itself --------------------------------------------------------------


def test_printable_keeps_the_words_and_drops_the_escapes() -> None:
    shown = printable(HOSTILE)
    assert not shown_badly(shown)
    assert "Your upload is refused: the ]8;;https://evil.example/\\relay]8;;\\ is full" in shown
    assert shown.startswith("[2J[H]0;ownedYour upload")  # what is left of an escape is inert
    assert len(shown) == RELAY_TEXT_LIMIT + 1 and shown.endswith("A…")


def test_printable_makes_one_line_and_leaves_short_text_whole() -> None:
    assert printable("  first line\r\nsecond\tline\u2028third\x85fourth  ") == (
        "first line second line third fourth"
    )
    assert printable("a" * RELAY_TEXT_LIMIT) == "a" * RELAY_TEXT_LIMIT  # not cut at the limit
    assert printable("a" * (RELAY_TEXT_LIMIT + 1)) == "a" * RELAY_TEXT_LIMIT + "…"
    assert printable("\u0627\u0644\u0645\u0644\u0641 \u0645\u0631\u0641\u0648\u0636") == (
        "\u0627\u0644\u0645\u0644\u0641 \u0645\u0631\u0641\u0648\u0636"  # Arabic stays
    )
    assert printable("x\udc9by") == "xy"  # a lone surrogate (an undecodable header byte)


def test_relay_said_marks_and_quotes_the_relays_text() -> None:
    assert relay_said("the directory is out of date") == (
        'the relay said: "the directory is out of date"'
    )
    # A quote cannot end the relay's words early and make the rest look like ours.
    assert relay_said('x" -- amanah-drop: the drop was stored') == (
        'the relay said: "x\\" -- amanah-drop: the drop was stored"'
    )
    assert relay_said("") == ""
    assert relay_said("\x1b\x00\u202e \r\n") == ""  # nothing left to show: nothing said


@given(st.text())
def test_printable_output_is_always_one_safe_bounded_line(text: str) -> None:
    shown = printable(text)
    assert not shown_badly(shown)
    assert not any(c.isspace() and c != " " for c in shown)
    assert len(shown) <= RELAY_TEXT_LIMIT + 1
    assert shown == shown.strip()


def test_refused_keeps_the_raw_reason_but_shows_it_safely() -> None:
    refused = Refused(409, HOSTILE)
    assert refused.reason == HOSTILE  # clients/drop.py decides on the relay's own words
    assert not shown_badly(str(refused))
    assert str(refused).startswith('the relay refused the drop; the relay said: "[2J')
    assert str(Refused(400, "\x1b[2J\x00")) == 'the relay refused the drop; the relay said: "[2J"'
    assert str(Refused(400, "\x00")) == "the relay refused the drop (400)"


# --- amanah-inbox, behind a fake that answers one path itself ----------------------------


@asynccontextmanager
async def inbox_fake(target: str, path: str, answer: web.Response) -> AsyncIterator[str]:
    """The fake: answers `path` (a prefix) with `answer`; passes anything else on to the
    real relay at `target`. Yields its URL."""

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if request.path.startswith(path):
            return answer
        headers = {k: v for k, v in request.headers.items() if k in ("Authorization",)}
        if request.content_type:
            headers["Content-Type"] = request.content_type
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method, target + request.path_qs, data=body, headers=headers
            ) as real,
        ):
            data = await real.read()
            return web.Response(status=real.status, body=data, content_type=real.content_type)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield str(server.make_url("")).rstrip("/")


def json_error(status: int) -> web.Response:
    return web.json_response({"error": HOSTILE}, status=status)


@pytest.mark.parametrize(
    ("path", "status"),
    [("/api/v1/auth/challenge", 403), ("/api/v1/drops", 500)],
    ids=["login refused", "listing refused"],
)
async def test_inbox_fetch_shows_a_hostile_json_error_safely(
    setup: Setup, tmp_path: Path, path: str, status: int
) -> None:
    async with inbox_fake(setup.relay.journalist_url, path, json_error(status)) as url:
        code, stdout, stderr = await command(
            INBOX, "fetch", "--relay", url, "--identity", setup.alice.identity_file,
            "--out", tmp_path / "out", "--wait", "5",
        )  # fmt: skip
    assert code == 1, stderr
    assert stdout == ""
    assert f"amanah-inbox: error: the relay refused {path}: {status}; the relay said: " in stderr
    assert_safe(stderr)


async def test_inbox_reply_shows_a_hostile_json_error_safely(setup: Setup, tmp_path: Path) -> None:
    out, drop, handle = tmp_path / "out", "ab" * 16, "cd" * 16
    (out / drop).mkdir(parents=True)
    recipient = str(MemberIdentity.generate().identity.recipient)
    manifest = {"reply": {"recipient": recipient, "handle": handle}}
    (out / drop / "manifest.json").write_text(json.dumps(manifest))
    async with inbox_fake(setup.relay.journalist_url, "/api/v1/replies/", json_error(400)) as url:
        code, _, stderr = await command(
            INBOX, "reply", drop, "-m", "thank you", "--relay", url,
            "--identity", setup.alice.identity_file, "--out", out,
        )  # fmt: skip
    assert code == 1, stderr
    assert "amanah-inbox: error: the relay refused the reply: 400; the relay said: " in stderr
    assert_safe(stderr)


# --- amanah-drop, against a fake that writes HTTP by hand --------------------------------


def http(status: bytes, headers: dict[bytes, bytes] | None = None, body: bytes = b"") -> bytes:
    """One HTTP/1.1 answer, written out by hand (so nothing in it is checked)."""
    lines = [b"HTTP/1.1 " + status]
    lines += [name + b": " + value for name, value in (headers or {}).items()]
    lines += [b"Content-Length: %d" % len(body), b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


TUS = {b"Tus-Resumable": b"1.0.0"}
CREATED = http(b"201 Created", {**TUS, b"Location": b"/uploads/" + b"0f" * 16})


class HandWrittenRelay:
    """The fake: a TCP server on 127.0.0.1 that reads each request (its head and its
    Content-Length body) and writes `answers[method]` back, byte for byte, then closes
    the connection. `methods` lists the requests it got."""

    def __init__(self, answers: dict[str, bytes]) -> None:
        self.answers = answers
        self.methods: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if length:
                await reader.readexactly(int(length.group(1)))
            method = head.split(b" ", 1)[0].decode()
            self.methods.append(method)
            writer.write(self.answers[method])
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def directory_answer(setup: Setup) -> bytes:
    """The real relay's signed directory, as the fake's answer to GET /directory."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(setup.relay.source_url + "/directory") as real,
    ):
        assert real.status == 200
        body = await real.read()
    return http(b"200 OK", {b"Content-Type": b"application/json"}, body)


HTML_PAGE = (
    "<html><head><title>413</title></head><body><h1>" + HOSTILE + "</h1></body></html>"
).encode()
REFUSALS = {
    "POST refused, text body": (
        {"POST": http(b"400 Bad Request", TUS, HOSTILE.encode())},
        ["GET", "POST"],
    ),
    "HEAD refused, Amanah-Reason": (
        {
            "POST": CREATED,
            "HEAD": http(
                b"410 Gone",
                {**TUS, b"Amanah-Outcome": b"refused", b"Amanah-Reason": HOSTILE_HEADER.encode()},
            ),
        },
        ["GET", "POST", "HEAD"],
    ),
    "PATCH refused, HTML page": (
        {
            "POST": CREATED,
            "HEAD": http(b"200 OK", {**TUS, b"Upload-Offset": b"0"}),
            "PATCH": http(b"413 Too Large", {**TUS, b"Content-Type": b"text/html"}, HTML_PAGE),
        },
        ["GET", "POST", "HEAD", "PATCH"],
    ),
}


async def send_to(fake: HandWrittenRelay, tmp_path: Path) -> tuple[int, str]:
    """`amanah-drop send` of a message to `fake`: its exit code and standard error."""
    url = await fake.start()
    try:
        code, _, stderr = await command(
            DROP, "send", "--relay", url, "-m", "a message", "--state", tmp_path / "state",
            "--wait", "5",
        )  # fmt: skip
    finally:
        await fake.stop()
    return code, stderr


@pytest.mark.parametrize(("answers", "methods"), REFUSALS.values(), ids=REFUSALS)
async def test_drop_send_shows_a_hostile_refusal_safely(
    setup: Setup, tmp_path: Path, answers: dict[str, bytes], methods: list[str]
) -> None:
    fake = HandWrittenRelay({"GET": await directory_answer(setup), **answers})
    code, stderr = await send_to(fake, tmp_path)
    assert code == 1, stderr
    assert fake.methods == methods  # a refusal is final: nothing is tried again
    assert "amanah-drop: error: the relay refused the drop; the relay said: " in stderr
    assert_safe(stderr)


BROKEN = {
    "status line with escapes": (
        b"HTTP/1.1 2\x1b[2J00 \x1b]0;owned\x07OK"
        + b"\x1b[1A\x1b[2K" * 500
        + b"\r\nContent-Length: 0\r\n\r\n"
    ),
    "100 KB header of escapes": (
        b"HTTP/1.1 200 OK\r\nX-Junk: " + b"\x1b[2J\xe2\x80\xae" * 15_000 + b"\r\n\r\n"
    ),
}


@pytest.mark.parametrize("answer", BROKEN.values(), ids=BROKEN)
async def test_drop_shows_what_aiohttp_quotes_of_a_broken_answer_safely(
    tmp_path: Path, answer: bytes
) -> None:
    """aiohttp's error for an answer it cannot parse quotes the relay's bytes (over
    several lines); the directory is the first request, so no real relay is needed."""
    fake = HandWrittenRelay({"GET": answer})
    code, stderr = await send_to(fake, tmp_path)
    assert code == 1, stderr
    assert "amanah-drop: error: cannot reach the relay: " in stderr
    assert_safe(stderr, words=())

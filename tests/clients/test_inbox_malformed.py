"""`amanah-inbox fetch` against a relay whose answers are malformed: not JSON, JSON that
is not an object, a missing or mistyped field, a size that is a string or negative, a blob
name that climbs out, is absolute or empty, a redirect. Each is one clear error naming
the answer and the field (exit 1, never "unexpected" or a traceback), nothing is written
outside --out (inside it only the directory pin), nothing is acknowledged, and the drop
stays on the relay.

The relay is real (`amanah serve --no-tor`, from the module's setup); between it and the
client stands a fake: a loopback aiohttp app that passes every request on to the real
relay and rewrites the one answer a test names, as a broken or hostile relay would."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from clients.common import ANSWER_LIMIT
from clients.inbox import PIN_NAME
from tests.clients.harness import Setup, listing
from tests.relayharness import INBOX, child_env, form, fresh_csrf, source_session, submit

DROPS, CHALLENGE, TOKEN = "/api/v1/drops", "/api/v1/auth/challenge", "/api/v1/auth/token"
Rewrite = Callable[[Any], "bytes | web.Response"]  # the real answer's JSON -> what is sent


@dataclass
class RewritingRelay:
    """The fake: forwards to `target`, rewriting the answer to `path` with `rewrite`, and
    counts the acknowledgements that went through."""

    target: str
    path: str
    rewrite: Rewrite
    acks: int = 0
    seen: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(f"{request.method} {request.path}")
        if request.path.endswith("/ack"):
            self.acks += 1
        headers = {k: v for k, v in request.headers.items() if k in ("Authorization", "Range")}
        if request.content_type:
            headers["Content-Type"] = request.content_type
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.target + request.path_qs,
                data=await request.read(),
                headers=headers,
                allow_redirects=False,
            ) as answer,
        ):
            body = await answer.read()
            if request.path == self.path and answer.status == 200:
                rewritten = self.rewrite(json.loads(body))
                if isinstance(rewritten, web.Response):
                    return rewritten
                return web.Response(body=rewritten, content_type="application/json")
            return web.Response(status=answer.status, body=body, content_type=answer.content_type)


@asynccontextmanager
async def fake_in_front(
    setup: Setup, path: str, rewrite: Rewrite
) -> AsyncIterator[tuple[RewritingRelay, str]]:
    fake = RewritingRelay(setup.relay.journalist_url, path, rewrite)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    async with TestServer(app, host="127.0.0.1") as server:
        yield fake, str(server.make_url("")).rstrip("/")


async def waiting_drop(setup: Setup) -> str:
    """The id of a drop waiting for "the-daily" (submitted through the form if none)."""
    drops = await listing(setup.relay, setup.alice)
    if not drops:
        async with source_session() as session:
            csrf = await fresh_csrf(session, setup.relay.source_url)
            page = form(csrf, "a drop the malformed relay tests leave waiting", ["the-daily"])
            status, text = await submit(session, setup.relay.source_url, page)
            assert status == 200, text
        drops = await listing(setup.relay, setup.alice)
    return str(drops[0]["id"])


async def fetch_through(url: str, setup: Setup, out: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        INBOX, "fetch", "--relay", url, "--identity", str(setup.alice.identity_file),
        "--out", str(out), "--wait", "5",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=child_env(),
    )  # fmt: skip
    _, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if not p.is_dir()]


def first_drop(change: Callable[[dict[str, Any]], None]) -> Rewrite:
    """A rewrite of the listing that changes its first drop (a copy) with `change`."""

    def rewrite(answer: Any) -> bytes:
        answer = copy.deepcopy(answer)
        change(answer["drops"][0])
        return json.dumps(answer).encode()

    return rewrite


def first_blob(key: str, value: object) -> Rewrite:
    """Sets (or, for value DELETE, removes) `key` of the first drop's first blob."""

    def change(drop: dict[str, Any]) -> None:
        if value is DELETE:
            del drop["blobs"][0][key]
        else:
            drop["blobs"][0][key] = value

    return first_drop(change)


def whole(transform: Callable[[Any], Any]) -> Rewrite:
    return lambda answer: json.dumps(transform(copy.deepcopy(answer))).encode()


def endless_json(size: int) -> web.Response:
    """`size` bytes of spaces then `{}`, sent in pieces with no Content-Length (chunked)."""

    async def pieces() -> AsyncIterator[bytes]:
        sent = 0
        while sent < size:
            piece = b" " * min(1 << 20, size - sent)
            sent += len(piece)
            yield piece
        yield b"{}"

    payload = aiohttp.payload.AsyncIterablePayload(pieces())
    return web.Response(body=payload, content_type="application/json")


def without(key: str) -> Callable[[Any], Any]:
    return lambda answer: {k: v for k, v in answer.items() if k != key}


DELETE = object()
BLOB = r"drops\[0\]\.blobs\[0\]"
CASES: dict[str, tuple[str, Rewrite, str]] = {
    "listing not JSON": (DROPS, lambda _: b"<html>busy</html>", "it is not JSON"),
    "listing not UTF-8": (DROPS, lambda _: b'{"drops": "\xff"}', "it is not JSON"),
    "listing a list": (DROPS, lambda a: json.dumps([a]).encode(), "it is not a JSON object"),
    "listing null": (DROPS, lambda _: b"null", "it is not a JSON object"),
    "no drops": (DROPS, whole(without("drops")), "drops is missing"),
    "drops an object": (DROPS, whole(lambda a: {**a, "drops": {}}), "drops is not a list"),
    "no contact": (DROPS, whole(without("contact")), "contact is missing"),
    "contact with a line break": (
        DROPS,
        whole(lambda a: {**a, "contact": "the-daily\n\x1b[2J"}),
        "contact is not a contact name",
    ),
    "drop a string": (
        DROPS,
        whole(lambda a: {**a, "drops": ["x"]}),
        r"drops\[0\] is not a JSON object",
    ),
    "no drop id": (DROPS, first_drop(lambda d: d.pop("id")), r"drops\[0\]\.id is missing"),
    "no blobs": (DROPS, first_drop(lambda d: d.pop("blobs")), r"drops\[0\]\.blobs is missing"),
    "no sealed_on": (
        DROPS,
        first_drop(lambda d: d.pop("sealed_on")),
        r"drops\[0\]\.sealed_on is missing",
    ),
    "blobs empty": (DROPS, first_drop(lambda d: d.update(blobs=[])), "has no manifest blob"),
    "blob a number": (
        DROPS,
        first_drop(lambda d: d.update(blobs=[7])),
        f"{BLOB} is not a JSON object",
    ),
    "no name": (DROPS, first_blob("name", DELETE), rf"{BLOB}\.name is missing"),
    "no size": (DROPS, first_blob("size", DELETE), rf"{BLOB}\.size is missing"),
    "no sha256": (DROPS, first_blob("sha256", DELETE), rf"{BLOB}\.sha256 is missing"),
    "size a string": (DROPS, first_blob("size", "12"), rf"{BLOB}\.size is not a whole number"),
    "size a float": (DROPS, first_blob("size", 12.0), rf"{BLOB}\.size is not a whole number"),
    "size true": (DROPS, first_blob("size", True), rf"{BLOB}\.size is not a whole number"),
    "size negative": (DROPS, first_blob("size", -1), rf"{BLOB}\.size is negative"),
    "sha256 short": (DROPS, first_blob("sha256", "ab"), rf"{BLOB}\.sha256 is not a SHA-256"),
    "name climbing out": (
        DROPS,
        first_blob("name", "../x"),
        rf"{BLOB}\.name is not a plain blob name",
    ),
    "name absolute": (
        DROPS,
        first_blob("name", "/tmp/x"),
        rf"{BLOB}\.name is not a plain blob name",
    ),
    "name empty": (DROPS, first_blob("name", ""), rf"{BLOB}\.name is not a plain blob name"),
    "name twice": (
        DROPS,
        first_drop(lambda d: d.update(blobs=d["blobs"] * 2)),
        r"drops\[0\]\.blobs names a blob twice",
    ),
    "reply handle not hex": (
        DROPS,
        first_drop(lambda d: d.update(reply_handle="../x")),
        r"drops\[0\]\.reply_handle is not",
    ),
    "challenge not JSON": (
        CHALLENGE,
        lambda _: b"ok",
        "answer to POST /api/v1/auth/challenge was malformed: it is not JSON",
    ),
    "no challenge": (CHALLENGE, whole(without("challenge")), "challenge is missing"),
    "challenge not base64": (
        CHALLENGE,
        whole(lambda a: {**a, "challenge": "!" * 44}),
        "challenge is not 32 bytes",
    ),
    "relay key not a key": (
        CHALLENGE,
        whole(lambda a: {**a, "relay_key": "amanah-sig1x"}),
        "relay_key is not a signing key",
    ),
    "no token": (
        TOKEN,
        whole(without("token")),
        "answer to POST /api/v1/auth/token was malformed: token is missing",
    ),
    "token with a line break": (
        TOKEN,
        whole(lambda a: {**a, "token": "a\r\nX-Evil: 1"}),
        "token is not a token",
    ),
    # Valid JSON if read whole ({} after the spaces), so only the limit refuses these.
    "listing too large": (
        DROPS,
        lambda _: b" " * ANSWER_LIMIT + b"{}",
        "answer to GET /api/v1/drops was malformed: it is larger than 16 MiB",
    ),
    "listing too large, no length": (
        DROPS,
        lambda _: endless_json(ANSWER_LIMIT + 1),
        "answer to GET /api/v1/drops was malformed: it is larger than 16 MiB",
    ),
    "listing redirected": (
        DROPS,
        lambda _: web.Response(status=302, headers={"Location": "http://127.0.0.2:9/"}),
        r"answered /api/v1/drops with a redirect \(302\); not followed",
    ),
}


@pytest.mark.parametrize(("path", "rewrite", "message"), CASES.values(), ids=CASES)
async def test_a_malformed_answer_is_a_clear_error(
    setup: Setup, tmp_path: Path, path: str, rewrite: Rewrite, message: str
) -> None:
    drop_id = await waiting_drop(setup)
    out = tmp_path / "room" / "out"
    async with fake_in_front(setup, path, rewrite) as (fake, url):
        code, stderr = await fetch_through(url, setup, out)
    assert code == 1, stderr
    assert "unexpected" not in stderr and "Traceback" not in stderr, stderr
    [error, *_] = [line for line in stderr.splitlines() if line.startswith("amanah-inbox: error:")]
    if "redirect" not in message:
        assert "the relay's answer to" in error and "was malformed" in error, error
    assert re.search(message, error), error
    assert fake.acks == 0 and not any("/blobs/" in s for s in fake.seen), fake.seen
    assert files_under(tmp_path) == [out / PIN_NAME]
    assert drop_id in [d["id"] for d in await listing(setup.relay, setup.alice)]


async def test_the_fake_passes_a_good_relay_on(setup: Setup, tmp_path: Path) -> None:
    """The control: through the same fake, rewriting nothing, the drop is fetched,
    saved and acknowledged (so the failures above come from the rewrites alone)."""
    drop_id = await waiting_drop(setup)
    async with fake_in_front(setup, DROPS, lambda a: json.dumps(a).encode()) as (fake, url):
        code, stderr = await fetch_through(url, setup, tmp_path / "out")
    assert code == 0, stderr
    assert (tmp_path / "out" / drop_id / "message.txt").exists()
    assert fake.acks >= 1
    assert drop_id not in [d["id"] for d in await listing(setup.relay, setup.alice)]


async def test_a_directory_too_large_is_not_read(setup: Setup, tmp_path: Path) -> None:
    """The directory is read whole too: one over 16 MiB (valid JSON if read whole) is
    refused before anything is pinned, listed or acknowledged."""
    drop_id = await waiting_drop(setup)
    out = tmp_path / "out"

    def huge(_: Any) -> bytes:
        return b" " * ANSWER_LIMIT + b"{}"

    async with fake_in_front(setup, "/api/v1/directory", huge) as (fake, url):
        code, stderr = await fetch_through(url, setup, out)
    assert code == 1, stderr
    assert "amanah-inbox: error: the relay's directory is larger than 16 MiB" in stderr, stderr
    assert fake.acks == 0 and f"GET {DROPS}" not in fake.seen, fake.seen
    assert files_under(tmp_path) == []
    assert drop_id in [d["id"] for d in await listing(setup.relay, setup.alice)]

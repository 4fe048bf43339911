"""Hostile requests against a running relay: each gets a clear 4xx with a message, and
none changes anything stored (blob files, the drop, source and reply tables, staging),
nor makes the relay log an error.

The relay runs as a real `amanah serve --no-tor` process, one for the module, with small
limits; requests that no browser or client would send go over raw sockets. The expiry of
challenges and tokens is checked against an in-process relay (`relay.server.start`) whose
clock the test moves.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import time
import types
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from crypto import age
from crypto.card import MemberIdentity
from relay import contacts
from relay.config import Auth, Config, Limits, Server
from relay.datadir import initialise
from relay.server import start
from relay.store import Store
from relay.web import journalist
from tests.relayharness import (
    Member,
    RawResponse,
    RelayPool,
    RelayProcess,
    add_contact,
    api_json,
    codename_of,
    error_of,
    form,
    fresh_csrf,
    init_data,
    keygen,
    multipart_body,
    raw_request,
    request_head,
    session_cookie,
    set_limits,
    signed_answer,
    source_session,
    submit,
    table_rows,
    token_for,
    tree_snapshot,
)

MAX_TOTAL = 2 * 1024 * 1024
FORM_OVERHEAD = 1 << 20  # what the relay allows for multipart framing above MAX_TOTAL
MAX_FILES = 3
MAX_MESSAGE = 1000
TABLES = ("drops", "drop_blobs", "drop_contacts", "drop_keys", "sources", "replies", "events")
BOUNDARY = "----AmanahHostile" + secrets.token_hex(8)
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


@dataclass
class Relay:
    process: RelayProcess
    data: Path
    members: dict[str, Member]
    beta_only: str  # a drop addressed to contact beta alone
    both: str  # a drop addressed to alpha and beta
    beta_handle: str  # the reply handle of the source who wrote only to beta

    def state(self) -> dict[str, Any]:
        staging = self.data / "staging"
        return {
            "blobs": tree_snapshot(self.data / "blobs"),
            "rows": table_rows(self.data / "amanah.db", TABLES),
            "staging": sorted(os.listdir(staging)),
        }

    @property
    def source_port(self) -> int:
        return self.process.source_port

    @property
    def journalist_port(self) -> int:
        return self.process.journalist_port

    @property
    def api(self) -> str:
        return self.process.journalist_url


async def _seed(process: RelayProcess, members: dict[str, Member]) -> tuple[str, str, str]:
    """Two drops through the form; returns their ids and the beta-only source's handle."""
    for addressed in (["beta"], ["alpha", "beta"]):
        async with source_session() as session:
            csrf = await fresh_csrf(session, process.source_url)
            status, page = await submit(
                session, process.source_url, form(csrf, f"seed for {addressed}", addressed)
            )
            assert status == 200, page
            codename_of(page)
    async with aiohttp.ClientSession() as session:
        seen, tokens = {}, {}
        for name in ("alpha-1", "beta-1"):
            tokens[name] = await token_for(session, process.journalist_url, members[name].identity)
            _, listing = await api_json(
                session, process.journalist_url + "/api/v1/drops", token=tokens[name]
            )
            seen[name] = {d["id"] for d in listing["drops"]}
        (both,) = seen["alpha-1"]
        (beta_only,) = seen["beta-1"] - {both}
        beta = members["beta-1"].identity
        url = f"{process.journalist_url}/api/v1/drops/{beta_only}/blobs/manifest"
        headers = {"Authorization": f"Bearer {tokens['beta-1']}"}
        async with session.get(url, headers=headers) as response:
            manifest = json.loads(age.decrypt(await response.read(), [beta.identity]))
    return beta_only, both, manifest["reply"]["handle"]


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    root = tmp_path_factory.mktemp("hostile")
    data = root / "data"
    init_data(data)
    set_limits(data, max_total_bytes=MAX_TOTAL, max_files=MAX_FILES, max_message_chars=MAX_MESSAGE)
    members = {name: keygen(root / f"{name}.txt") for name in ("alpha-1", "alpha-2", "beta-1")}
    add_contact(data, "alpha", [members["alpha-1"], members["alpha-2"]])
    add_contact(data, "beta", [members["beta-1"]])
    with RelayPool(root) as pool:
        process = pool.new(data)
        beta_only, both, handle = asyncio.run(_seed(process, members))
        yield Relay(process, data, members, beta_only, both, handle)


@dataclass
class Visit:
    """A source's browser session: its cookie header and the form's CSRF token."""

    cookie: str
    csrf: str


async def visit(relay: Relay) -> Visit:
    async with source_session() as session:
        csrf = await fresh_csrf(session, relay.process.source_url)
        return Visit(session_cookie(session), csrf)


async def post_submit(
    relay: Relay,
    body: bytes | AsyncIterator[bytes],
    headers: dict[str, str],
    **kwargs: Any,
) -> RawResponse:
    return await raw_request(
        relay.source_port, request_head("POST", "/submit", headers), body, **kwargs
    )


def form_headers(v: Visit, length: int | None, content_type: str = MULTIPART) -> dict[str, str]:
    headers = {"Content-Type": content_type, "Cookie": v.cookie}
    if length is None:
        headers["Transfer-Encoding"] = "chunked"
    else:
        headers["Content-Length"] = str(length)
    return headers


async def chunked(
    first: bytes, filler: bytes, repeat: int, last: bytes = b""
) -> AsyncIterator[bytes]:
    """A chunked transfer body: `first`, then `filler` `repeat` times, then `last`."""
    for piece in (first, *([filler] * repeat), last):
        if piece:
            yield b"%x\r\n%s\r\n" % (len(piece), piece)
    yield b"0\r\n\r\n"


def file_part_head(filename: str) -> bytes:
    """The opening of a file part whose content follows."""
    return (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; "
        f'name="files"; filename="{filename}"\r\n\r\n'
    ).encode()


class Unchanged:
    """Asserts that nothing stored changed and no error was logged across a block."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def __aenter__(self) -> Unchanged:
        self.before = self.relay.state()
        self.logs = len(self.relay.process.logs)
        return self

    async def __aexit__(self, kind: object, *_: object) -> None:
        if kind is not None:
            return
        for _attempt in range(100):  # up to 5 s: a handler may still be cleaning up after a cut
            if self.relay.state() == self.before:
                break
            await asyncio.sleep(0.05)
        assert self.relay.state() == self.before
        new_logs = self.relay.process.logs[self.logs :]
        assert "ERROR" not in new_logs and "Traceback" not in new_logs, new_logs


def assert_refused(response: RawResponse, status: int, *, page: bool = True) -> str:
    """The response has `status` and says why: an error page, or a JSON error."""
    assert response.status == status, (response.status, response.text[:2000])
    if page:
        message = error_of(response.text)
        assert response.headers["content-type"].startswith("text/html")
    else:
        message = json.loads(response.body)["error"]
    assert message, response.text[:2000]
    return message


# --- the source form ------------------------------------------------------------------------


def fields(v: Visit, *rest: tuple[str, bytes, str | None]) -> list[tuple[str, bytes, str | None]]:
    return [("csrf", v.csrf.encode(), None), *rest]


FILE = ("files", os.urandom(5000), "evidence.bin")
MESSAGE = ("message", b"what happened", None)

Case = Callable[[Visit], tuple[bytes, str]]  # -> body, content type
FORM_CASES: list[tuple[str, Case, int]] = [
    (
        "cut-mid-file",
        lambda v: (multipart_body(BOUNDARY, fields(v, MESSAGE, FILE))[:-2600], MULTIPART),
        400,
    ),
    (
        "no-closing-boundary",
        lambda v: (multipart_body(BOUNDARY, fields(v, MESSAGE, FILE), close=False), MULTIPART),
        400,
    ),
    (
        "too-many-files",
        lambda v: (
            multipart_body(
                BOUNDARY, fields(v, MESSAGE, *[("files", b"x" * 10, f"{n}.txt") for n in range(4)])
            ),
            MULTIPART,
        ),
        413,
    ),
    (
        "missing-boundary",
        lambda v: (multipart_body(BOUNDARY, fields(v, MESSAGE)), "multipart/form-data"),
        400,
    ),
    (
        "urlencoded",
        lambda v: (f"csrf={v.csrf}&message=hello".encode(), "application/x-www-form-urlencoded"),
        400,
    ),
    ("text-plain", lambda v: (b"hello", "text/plain"), 400),
    (
        "csrf-missing",
        lambda v: (multipart_body(BOUNDARY, [MESSAGE, FILE]), MULTIPART),
        403,
    ),
    (
        "csrf-wrong",
        lambda v: (
            multipart_body(BOUNDARY, [("csrf", secrets.token_urlsafe(32).encode(), None), MESSAGE]),
            MULTIPART,
        ),
        403,
    ),
    (
        "csrf-not-first",
        lambda v: (
            multipart_body(BOUNDARY, [MESSAGE, ("csrf", v.csrf.encode(), None)]),
            MULTIPART,
        ),
        403,
    ),
    (
        "unknown-contact",
        lambda v: (
            multipart_body(BOUNDARY, fields(v, ("contact", b"nobody", None), MESSAGE, FILE)),
            MULTIPART,
        ),
        400,
    ),
    (
        "known-and-unknown-contact",
        lambda v: (
            multipart_body(
                BOUNDARY,
                fields(v, ("contact", b"alpha", None), ("contact", b"../beta", None), MESSAGE),
            ),
            MULTIPART,
        ),
        400,
    ),
    (
        # The contacts are settled when the first file arrives (it may be sealed to them
        # as it does): a browser sends the page's contact boxes first.
        "contact-after-file",
        lambda v: (
            multipart_body(BOUNDARY, fields(v, MESSAGE, FILE, ("contact", b"alpha", None))),
            MULTIPART,
        ),
        400,
    ),
    ("empty", lambda v: (multipart_body(BOUNDARY, fields(v)), MULTIPART), 400),
    (
        "empty-fields",
        lambda v: (
            multipart_body(BOUNDARY, fields(v, ("message", b"  \r\n ", None), ("files", b"", ""))),
            MULTIPART,
        ),
        400,
    ),
    (
        "message-too-long",
        lambda v: (
            multipart_body(BOUNDARY, fields(v, ("message", b"a" * (MAX_MESSAGE + 1), None))),
            MULTIPART,
        ),
        413,
    ),
    (
        "message-control-characters",
        lambda v: (
            multipart_body(BOUNDARY, fields(v, ("message", b"hello\x1b[2Jworld", None))),
            MULTIPART,
        ),
        400,
    ),
    (
        "message-not-utf8",
        lambda v: (
            multipart_body(BOUNDARY, fields(v, ("message", b"\xff\xfe\xc3", None))),
            MULTIPART,
        ),
        400,
    ),
    (
        "contact-name-too-long",
        lambda v: (
            multipart_body(BOUNDARY, fields(v, ("contact", b"a" * 4096, None), MESSAGE)),
            MULTIPART,
        ),
        413,
    ),
    (
        "nested-multipart",
        lambda v: (
            multipart_body(BOUNDARY, fields(v, MESSAGE)).replace(
                b'name="message"\r\n',
                b'name="message"\r\nContent-Type: multipart/mixed; boundary=inner\r\n',
            ),
            MULTIPART,
        ),
        400,
    ),
]


@pytest.mark.parametrize(
    ("case", "status"), [(c, s) for _, c, s in FORM_CASES], ids=[i for i, _, _ in FORM_CASES]
)
async def test_hostile_form_is_refused_and_changes_nothing(
    relay: Relay, case: Case, status: int
) -> None:
    v = await visit(relay)
    body, content_type = case(v)
    async with Unchanged(relay):
        response = await post_submit(relay, body, form_headers(v, len(body), content_type))
        assert_refused(response, status)


async def test_no_cookie_is_refused(relay: Relay) -> None:
    v = await visit(relay)
    body = multipart_body(BOUNDARY, fields(v, MESSAGE))
    async with Unchanged(relay):
        response = await post_submit(
            relay, body, {"Content-Type": MULTIPART, "Content-Length": str(len(body))}
        )
        assert_refused(response, 403)


async def test_another_sessions_token_is_refused(relay: Relay) -> None:
    mine, theirs = await visit(relay), await visit(relay)
    body = multipart_body(BOUNDARY, fields(theirs, MESSAGE))
    async with Unchanged(relay):
        response = await post_submit(relay, body, form_headers(mine, len(body)))
        assert_refused(response, 403)


async def test_oversize_content_length_is_refused_before_the_body(relay: Relay) -> None:
    v = await visit(relay)
    async with Unchanged(relay):
        async with asyncio.timeout(5):  # no body is ever sent: the answer cannot wait for it
            response = await post_submit(relay, b"", form_headers(v, MAX_TOTAL + FORM_OVERHEAD + 1))
        assert "larger" in assert_refused(response, 413)


async def test_oversize_chunked_body_is_refused_while_reading(relay: Relay) -> None:
    v = await visit(relay)
    head = multipart_body(BOUNDARY, fields(v, MESSAGE), close=False)
    head += file_part_head("a.bin")
    # Four times the limit, sent as it is read; the relay must answer before the end.
    body = chunked(head, os.urandom(64 * 1024), 4 * MAX_TOTAL // (64 * 1024))
    async with Unchanged(relay):
        response = await post_submit(relay, body, form_headers(v, None))
        assert_refused(response, 413)


async def test_oversize_chunked_unknown_field_is_refused_unread(relay: Relay) -> None:
    # A field the form does not have is refused at its header, before its body is read:
    # otherwise any amount could pass through it uncounted.
    v = await visit(relay)
    head = multipart_body(BOUNDARY, fields(v, MESSAGE), close=False)
    head += f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="padding"\r\n\r\n'.encode()
    body = chunked(
        head, b"p" * (64 * 1024), 3 * MAX_TOTAL // (64 * 1024), f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    async with Unchanged(relay):
        response = await post_submit(relay, body, form_headers(v, None))
        assert_refused(response, 400)


async def test_endless_contact_fields_are_refused(relay: Relay) -> None:
    v = await visit(relay)
    head = multipart_body(BOUNDARY, fields(v, MESSAGE), close=False)
    # "alpha" is a registered contact: without a bound, the list would just grow.
    one = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="contact"\r\n\r\nalpha\r\n'
    body = chunked(head, one.encode(), 10_000, f"--{BOUNDARY}--\r\n".encode())
    async with Unchanged(relay):
        response = await post_submit(relay, body, form_headers(v, None))
        assert_refused(response, 400)


async def test_forged_upload_is_refused_before_its_files_are_read(relay: Relay) -> None:
    """A file before the CSRF token: refused on the first part, not after the upload."""
    v = await visit(relay)
    start = file_part_head("first.bin") + os.urandom(100)
    async with Unchanged(relay):
        async with asyncio.timeout(5):  # the rest of the declared 2 MiB never comes
            response = await post_submit(relay, start, form_headers(v, MAX_TOTAL))
        assert_refused(response, 403)


LOGIN_CASES = [
    ("no-csrf", lambda v: {"codename": "abacus " * 7}, 403),
    ("wrong-csrf", lambda v: {"csrf": "x" * 43, "codename": "abacus " * 7}, 403),
    ("not-a-codename", lambda v: {"csrf": v.csrf, "codename": "no such words here at all x"}, 400),
    ("too-few-words", lambda v: {"csrf": v.csrf, "codename": "abacus abdomen"}, 400),
    ("unknown-codename", lambda v: {"csrf": v.csrf, "codename": "abacus " * 7}, 401),
    ("too-large", lambda v: {"csrf": v.csrf, "codename": "abacus " * 2000}, 413),
]


@pytest.mark.parametrize(
    ("case", "status"), [(c, s) for _, c, s in LOGIN_CASES], ids=[i for i, _, _ in LOGIN_CASES]
)
async def test_hostile_login_is_refused(
    relay: Relay, case: Callable[[Visit], dict[str, str]], status: int
) -> None:
    v = await visit(relay)
    body = urlencode(case(v)).encode()
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Content-Length": str(len(body)),
        "Cookie": v.cookie,
    }
    async with Unchanged(relay):
        response = await raw_request(
            relay.source_port, request_head("POST", "/login", headers), body
        )
        assert response.status == status, response.text[:2000]
        assert '<article class="reply">' not in response.text
        assert error_of(response.text) or "error" in response.text


async def test_chunked_login_flood_is_refused(relay: Relay) -> None:
    v = await visit(relay)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Transfer-Encoding": "chunked",
        "Cookie": v.cookie,
    }
    body = chunked(f"csrf={v.csrf}&codename=".encode(), b"a" * 64 * 1024, 64)
    async with Unchanged(relay):
        response = await raw_request(
            relay.source_port, request_head("POST", "/login", headers), body
        )
        assert_refused(response, 413)


async def test_upload_cut_by_the_sender_leaves_nothing(relay: Relay) -> None:
    """Content-Length promises more than is sent, then the connection closes (or only
    half-closes): there is no one to answer, and nothing may stay behind."""
    for half_close in (False, True):
        v = await visit(relay)
        body = multipart_body(
            BOUNDARY, fields(v, MESSAGE, ("files", os.urandom(MAX_TOTAL // 2), "a"))
        )
        async with Unchanged(relay):
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.source_port)
            writer.write(request_head("POST", "/submit", form_headers(v, len(body))))
            writer.write(body[: len(body) // 2])
            await writer.drain()
            await asyncio.sleep(0.2)
            if half_close:
                writer.write_eof()
                async with asyncio.timeout(10):
                    answer = await reader.read()
                if answer:  # the relay may answer a half-closed request, or just close
                    assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
            writer.close()
            await writer.wait_closed()
        # The relay still serves after the cut.
        assert (await visit(relay)).csrf


# --- the journalist API ---------------------------------------------------------------------


async def api(
    relay: Relay,
    method: str,
    target: str,
    token: str | None = None,
    body: bytes = b"",
    content_type: str | None = None,
    authorization: str | None = None,
) -> RawResponse:
    headers = {"Content-Length": str(len(body))}
    if content_type:
        headers["Content-Type"] = content_type
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if authorization is not None:
        headers["Authorization"] = authorization
    return await raw_request(relay.journalist_port, request_head(method, target, headers), body)


async def member_token(relay: Relay, name: str) -> str:
    async with aiohttp.ClientSession() as session:
        return await token_for(session, relay.api, relay.members[name].identity)


def guarded_routes(relay: Relay) -> list[tuple[str, str]]:
    drop = relay.both
    return [
        ("GET", "/api/v1/drops"),
        ("GET", f"/api/v1/drops/{drop}"),
        ("GET", f"/api/v1/drops/{drop}/blobs/manifest"),
        ("POST", f"/api/v1/drops/{drop}/ack"),
        ("POST", f"/api/v1/replies/{relay.beta_handle}"),
    ]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic YWxpY2U6c2VjcmV0",
        "Bearer !!!not-base64!!!",
        "Bearer " + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="),
        "Bearer " + "A" * 5000,
        "Bearer é",
    ],
    ids=[
        "none",
        "empty",
        "scheme-only",
        "scheme-space",
        "basic",
        "garbage",
        "forged",
        "long",
        "non-ascii",
    ],
)
async def test_missing_or_forged_token_is_refused(relay: Relay, authorization: str | None) -> None:
    async with Unchanged(relay):
        for method, target in guarded_routes(relay):
            response = await api(
                relay,
                method,
                target,
                authorization=authorization,
                body=b"x",
                content_type="application/octet-stream",
            )
            assert_refused(response, 401, page=False)
            assert response.headers.get("www-authenticate", "").startswith("Bearer")


async def test_replayed_answer_is_refused(relay: Relay) -> None:
    async with aiohttp.ClientSession() as session:
        answer = await signed_answer(session, relay.api, relay.members["alpha-1"].identity)
        status, body = await api_json(
            session, relay.api + "/api/v1/auth/token", "POST", body=answer
        )
        assert status == 200, body
        status, body = await api_json(
            session, relay.api + "/api/v1/auth/token", "POST", body=answer
        )
        assert status == 401, body
        assert body["error"]


async def test_failed_answer_burns_the_challenge(relay: Relay) -> None:
    """A wrong signature uses the challenge up: a right one after it is refused too."""
    member = relay.members["alpha-1"].identity
    async with aiohttp.ClientSession() as session:
        answer = await signed_answer(session, relay.api, member)
        wrong = dict(answer, signature=base64.b64encode(bytes(64)).decode())
        url = relay.api + "/api/v1/auth/token"
        assert (await api_json(session, url, "POST", body=wrong))[0] == 401
        assert (await api_json(session, url, "POST", body=answer))[0] == 401


async def test_non_member_signatures_are_refused(relay: Relay) -> None:
    outsider = MemberIdentity.generate()
    member = relay.members["alpha-1"].identity
    other_member = relay.members["beta-1"].identity
    url = relay.api + "/api/v1/auth/token"
    async with aiohttp.ClientSession() as session:
        # An outsider answering its own challenge: well formed, correctly signed, not a member.
        own = await signed_answer(session, relay.api, outsider)
        # An outsider answering a challenge issued for a member's key.
        claimed = await signed_answer(
            session, relay.api, outsider, str(member.signing_key.verify_key)
        )
        # A member answering a challenge issued to another member.
        crossed = await signed_answer(
            session, relay.api, other_member, str(member.signing_key.verify_key)
        )
        # A member's valid answer presented under another member's key.
        swapped = await signed_answer(session, relay.api, member)
        swapped["verify_key"] = str(other_member.signing_key.verify_key)
        for answer in (own, claimed, crossed, swapped):
            status, body = await api_json(session, url, "POST", body=answer)
            assert status == 401, body
            assert body["error"]


async def test_another_contacts_drop_is_answered_as_nonexistent(relay: Relay) -> None:
    token = await member_token(relay, "alpha-1")
    missing = secrets.token_hex(16)
    async with Unchanged(relay):
        for method, suffix in (
            ("GET", ""),
            ("GET", "/blobs/manifest"),
            ("GET", "/blobs/message"),
            ("POST", "/ack"),
        ):
            theirs = await api(relay, method, f"/api/v1/drops/{relay.beta_only}{suffix}", token)
            nothing = await api(relay, method, f"/api/v1/drops/{missing}{suffix}", token)
            assert theirs.status == nothing.status == 404
            assert theirs.body == nothing.body
            assert_refused(theirs, 404, page=False)
        listing = await api(relay, "GET", "/api/v1/drops", token)
        assert relay.beta_only not in listing.text and relay.both in listing.text
        # Nor may alpha reply to a source that wrote only to beta.
        sealed = age.encrypt(b"hello", [str(MemberIdentity.generate().identity.recipient)])
        response = await api(
            relay,
            "POST",
            f"/api/v1/replies/{relay.beta_handle}",
            token,
            sealed,
            "application/octet-stream",
        )
        assert_refused(response, 404, page=False)


PATH_TRICKS = [
    "/api/v1/drops/{drop}/blobs/..",
    "/api/v1/drops/{drop}/blobs/%2e%2e",
    "/api/v1/drops/{drop}/blobs/%2E%2E",
    "/api/v1/drops/{drop}/blobs/..%2fmessage",
    "/api/v1/drops/{drop}/blobs/..%2F..%2F..%2Famanah.db",
    "/api/v1/drops/{drop}/blobs/%2e%2e%2f%2e%2e%2f%2e%2e%2fkeys%2fdirectory.key",
    "/api/v1/drops/{drop}/blobs/../../../amanah.db",
    "/api/v1/drops/{drop}/blobs/item-1%2f..%2fmanifest",
    "/api/v1/drops/{drop}/blobs/manifest%00",
    "/api/v1/drops/{drop}/blobs/.tmp-0000",
    "/api/v1/drops/{drop}/blobs/item-01",
    "/api/v1/drops/{drop}/../{other}/blobs/manifest",
    "/api/v1/drops/{drop}%2f..%2f{other}/blobs/manifest",
    "/api/v1/drops/..%2f..%2fkeys/blobs/directory.key",
    "/api/v1/drops/%2e%2e/blobs/manifest",
    "/api/v1/drops/{other}/blobs/manifest",
    "/api/v1/drops/{other_upper}/blobs/manifest",
]


@pytest.mark.parametrize("template", PATH_TRICKS)
async def test_path_tricks_in_the_api_find_nothing(relay: Relay, template: str) -> None:
    token = await member_token(relay, "alpha-1")
    target = template.format(
        drop=relay.both, other=relay.beta_only, other_upper=relay.beta_only.upper()
    )
    secrets_on_disk = [
        (relay.data / "keys" / "directory.key").read_text().strip(),
        "SQLite format 3",
        "age-encryption.org",
    ]
    async with Unchanged(relay):
        response = await api(relay, "GET", target, token)
        assert response.status in (400, 404), (target, response.status)
        for secret in secrets_on_disk:
            assert secret not in response.text


@pytest.mark.parametrize(
    "target",
    [
        "/static/../keys/directory.key",
        "/static/%2e%2e/keys/directory.key",
        "/static/..%2fkeys%2fdirectory.key",
        "/static/%2e%2e%2f%2e%2e%2famanah.toml",
        "/static/..%5c..%5camanah.toml",
        "/../amanah.toml",
    ],
)
async def test_path_tricks_on_the_source_pages_find_nothing(relay: Relay, target: str) -> None:
    key = (relay.data / "keys" / "directory.key").read_text().strip()
    response = await raw_request(relay.source_port, request_head("GET", target, {}))
    assert 400 <= response.status < 500
    assert key not in response.text and "[limits]" not in response.text


JSON_CASES: list[tuple[str, bytes, str]] = [
    ("truncated", b'{"verify_key": ', "application/json"),
    ("array", b"[]", "application/json"),
    ("string", b'"verify_key"', "application/json"),
    ("null", b"null", "application/json"),
    ("number", b"1e999999", "application/json"),
    ("nan", b"NaN", "application/json"),
    ("not-utf8", b"\xff\xfe{\x00}\x00", "application/json"),
    ("bom", b'\xef\xbb\xbf{"verify_key": "x"}', "application/json"),
    ("empty", b"", "application/json"),
    ("wrong-type", b'{"verify_key": 5}', "application/json"),
    ("empty-key", b'{"verify_key": ""}', "application/json"),
    ("not-a-key", b'{"verify_key": "amanah-sig1qqqq"}', "application/json"),
    ("long-key", b'{"verify_key": "' + b"q" * 200_000 + b'"}', "application/json"),
    ("not-json-type", b'{"verify_key": "x"}', "text/plain"),
    ("form-type", b"verify_key=x", "application/x-www-form-urlencoded"),
    ("duplicate-keys", b'{"verify_key": 1, "verify_key": [2]}', "application/json"),
]


@pytest.mark.parametrize(
    ("body", "content_type"), [(b, c) for _, b, c in JSON_CASES], ids=[i for i, _, _ in JSON_CASES]
)
async def test_malformed_json_is_a_clear_400(relay: Relay, body: bytes, content_type: str) -> None:
    async with Unchanged(relay):
        for route in ("/api/v1/auth/challenge", "/api/v1/auth/token"):
            response = await api(relay, "POST", route, body=body, content_type=content_type)
            assert_refused(response, 400, page=False)


async def test_malformed_answers_are_refused(relay: Relay) -> None:
    member = relay.members["alpha-1"].identity
    async with aiohttp.ClientSession() as session:
        for change in (
            {"challenge": "not base64!"},
            {"signature": "not base64!"},
            {"signature": base64.b64encode(b"short").decode()},
            {"challenge": base64.b64encode(b"short").decode()},
            {"verify_key": "amanah-sig1qqqq"},
            {"verify_key": None},
            {"signature": 12},
        ):
            answer: dict[str, Any] = dict(await signed_answer(session, relay.api, member))
            answer.update(change)
            status, body = await api_json(
                session, relay.api + "/api/v1/auth/token", "POST", body=answer
            )
            assert status in (400, 401), (change, status, body)
            assert body["error"]


async def test_deeply_nested_json_is_a_clear_400(relay: Relay) -> None:
    async with Unchanged(relay):
        for body in (b"[" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
            response = await api(
                relay, "POST", "/api/v1/auth/challenge", body=body, content_type="application/json"
            )
            assert_refused(response, 400, page=False)


async def test_hostile_replies_are_refused(relay: Relay) -> None:
    token = await member_token(relay, "beta-1")
    target = f"/api/v1/replies/{relay.beta_handle}"
    recipient = str(MemberIdentity.generate().identity.recipient)
    async with Unchanged(relay):
        for body, status in (
            (b"", 400),
            (b"plain text, not sealed", 400),
            (b"age-encryption.org/v1\n-> X25519 AAAA\n", 400),
            (age.encrypt(b"x", [recipient])[:40], 400),
            (b"\x00" * (1024 * 1024 + 1), 413),
        ):
            response = await api(relay, "POST", target, token, body, "application/octet-stream")
            assert_refused(response, status, page=False)
        for handle in ("..", "%2e%2e", "0" * 32, relay.both, "x" * 5000):
            sealed = age.encrypt(b"hello", [recipient])
            response = await api(
                relay,
                "POST",
                f"/api/v1/replies/{handle}",
                token,
                sealed,
                "application/octet-stream",
            )
            assert response.status == 404, (handle, response.status)


# --- expiry, against an in-process relay whose clock the test moves --------------------------


@dataclass
class InProcess:
    base: str
    member: MemberIdentity
    auth: Auth


@pytest.fixture
async def in_process(tmp_path: Path) -> AsyncIterator[InProcess]:
    data = tmp_path / "data"
    keys = initialise(data)
    # Port 0: the system picks free ports, read back from the runners.
    config = Config(
        data_dir=data,
        server=Server(source_port=0, journalist_port=0),
        limits=Limits(max_total_bytes=MAX_TOTAL),
        auth=Auth(challenge_seconds=60, token_seconds=900),
    )
    member = MemberIdentity.generate()
    async with await Store.open(config.database) as store:
        now = int(time.time())
        await contacts.add_contact(store, "alpha", [member.card.encode()], "", False, now)
        await contacts.publish_directory(store, keys.directory_key, now)
        _, runners = await start(config, keys, store)
        try:
            port = runners[1].addresses[0][1]
            yield InProcess(f"http://127.0.0.1:{port}", member, config.auth)
        finally:
            for runner in runners:
                await runner.cleanup()


def shift_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Moves the journalist API's clock (only its own), `seconds` ahead of real time."""
    real = time.time
    monkeypatch.setattr(journalist, "time", types.SimpleNamespace(time=lambda: real() + seconds))


async def test_expired_challenge_is_refused(
    in_process: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = in_process.base + "/api/v1/auth/token"
    async with aiohttp.ClientSession() as session:
        answer = await signed_answer(session, in_process.base, in_process.member)
        shift_clock(monkeypatch, in_process.auth.challenge_seconds + 1)
        status, body = await api_json(session, url, "POST", body=answer)
        assert status == 401 and "expired" in body["error"], body
        # A fresh challenge, answered in time (on the moved clock), is accepted.
        answer = await signed_answer(session, in_process.base, in_process.member)
        status, body = await api_json(session, url, "POST", body=answer)
        assert status == 200, body


async def test_expired_token_is_refused(
    in_process: InProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with aiohttp.ClientSession() as session:
        token = await token_for(session, in_process.base, in_process.member)
        drops = in_process.base + "/api/v1/drops"
        assert (await api_json(session, drops, token=token))[0] == 200
        shift_clock(monkeypatch, in_process.auth.token_seconds + 1)
        status, body = await api_json(session, drops, token=token)
        assert status == 401 and body["error"], body

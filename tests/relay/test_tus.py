"""Resumable uploads (tus 1.0.0) against a real relay process: the protocol's rules, an
independent client (tuspy), and uploads whose connection is cut at random offsets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import random
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tusclient import client as tus_client

from crypto.keys import Identity
from relay.errors import ClientError
from relay.staging import StagingArea
from relay.web import tus
from tests.relayharness import (
    AGE,
    Member,
    RelayPool,
    RelayProcess,
    ack_all,
    add_contact,
    codename_of,
    error_of,
    forward_unsupported,
    fresh_csrf,
    init_data,
    keygen,
    request_head,
    session_cookie,
    set_limits,
    source_session,
    submit,
    waiting_drops,
)

TUS = {"Tus-Resumable": "1.0.0"}
MAX_TOTAL = 8 * 1024 * 1024


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RelayProcess, Member, Path]]:
    root = tmp_path_factory.mktemp("tus")
    data = root / "data"
    init_data(data)
    set_limits(data, max_total_bytes=MAX_TOTAL)
    forward_unsupported(data)  # random bytes: forwarded flagged, so they can be compared
    member = keygen(root / "alice.txt")
    add_contact(data, "alpha", [member])
    add_contact(data, "beta", [keygen(root / "bob.txt")])
    with RelayPool(root) as pool:
        yield pool.new(data), member, data


def cut_off(port: int, request: bytes, body: bytes, cut_after: int) -> None:
    """Sends a request by hand and closes the connection after `cut_after` body bytes, as
    a dropped circuit would."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.sendall(body[:cut_after])
        sock.shutdown(socket.SHUT_RDWR)


async def call(
    relay: RelayProcess, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[int, dict[str, str], str]:
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method, relay.source_url + path, headers=headers, data=body or None
        ) as response:
            return response.status, dict(response.headers), await response.text()


async def create(relay: RelayProcess, length: int, metadata: str = "") -> str:
    headers = {**TUS, "Upload-Length": str(length)}
    if metadata:
        headers["Upload-Metadata"] = metadata
    status, answer, text = await call(relay, "POST", "/uploads", headers)
    assert status == 201, text
    assert answer["Tus-Resumable"] == "1.0.0"
    assert answer["Location"].startswith("/uploads/")
    return answer["Location"]


async def offset(relay: RelayProcess, location: str) -> int:
    status, answer, _ = await call(relay, "HEAD", location, TUS)
    assert status == 200
    assert answer["Cache-Control"] == "no-store"
    return int(answer["Upload-Offset"])


def opened_blob(data: Path, drop_id: str, name: str, member: Member) -> bytes:
    """A blob of a stored drop, opened by the real age tool."""
    sealed = data / "blobs" / "drops" / drop_id / name
    done = subprocess.run(
        [AGE, "-d", "-i", str(member.identity_file), str(sealed)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return done.stdout


def opened_item(data: Path, drop_id: str, member: Member) -> bytes:
    """The file of a one-file drop."""
    return opened_blob(data, drop_id, "item-1", member)


# --- the protocol ---------------------------------------------------------------------------


async def test_options_says_what_the_server_speaks(
    setup: tuple[RelayProcess, Member, Path],
) -> None:
    relay, _, _ = setup
    status, headers, _ = await call(relay, "OPTIONS", "/uploads", {})
    assert status == 204
    assert headers["Tus-Version"] == "1.0.0"
    assert set(headers["Tus-Extension"].split(",")) == {"creation", "termination", "expiration"}
    assert int(headers["Tus-Max-Size"]) == MAX_TOTAL
    assert "default-src 'none'" in headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Upload-Length": "10"}, 412),  # no Tus-Resumable
        ({"Tus-Resumable": "0.2.2", "Upload-Length": "10"}, 412),
        (TUS, 400),  # no length
        ({**TUS, "Upload-Length": "-5"}, 400),
        ({**TUS, "Upload-Length": "ten"}, 400),
        ({**TUS, "Upload-Length": str(MAX_TOTAL + 1)}, 413),
        ({**TUS, "Upload-Length": "10", "Upload-Metadata": "contacts !!!"}, 400),
        ({**TUS, "Upload-Length": "10", "Upload-Metadata": "a YQ==,a YQ=="}, 400),
        ({**TUS, "Upload-Length": "10", "Upload-Metadata": "contacts \u00e9t\u00e9"}, 400),
        (
            {
                **TUS,
                "Upload-Length": "10",
                "Upload-Metadata": "contacts " + base64.b64encode(b"nobody").decode(),
            },
            400,
        ),
    ],
)
async def test_bad_creations_are_refused(
    setup: tuple[RelayProcess, Member, Path], headers: dict[str, str], status: int
) -> None:
    relay, _, data = setup
    before = sorted((data / "staging").iterdir())
    got, answer, text = await call(relay, "POST", "/uploads", headers)
    assert got == status, text
    assert text.strip()  # says what is wrong
    assert answer["Tus-Resumable"] == "1.0.0"
    assert sorted((data / "staging").iterdir()) == before


async def test_patch_rules(setup: tuple[RelayProcess, Member, Path]) -> None:
    relay, _, data = setup
    location = await create(relay, 10)
    patch = {**TUS, "Content-Type": "application/offset+octet-stream"}
    assert (await call(relay, "PATCH", location, {**patch, "Upload-Offset": "3"}, b"abc"))[0] == 409
    assert (await call(relay, "PATCH", location, {**TUS, "Upload-Offset": "0"}, b"abc"))[0] == 415
    assert (await call(relay, "PATCH", location, {**patch, "Upload-Offset": "0"}, b"x" * 11))[
        0
    ] == 400
    status, answer, _ = await call(
        relay, "PATCH", location, {**patch, "Upload-Offset": "0"}, b"abc"
    )
    assert status == 204 and answer["Upload-Offset"] == "3"
    assert "Upload-Expires" in answer
    assert await offset(relay, location) == 3
    # Staged bytes are sealed: the plaintext appears nowhere on disk.
    assert all(b"abc" not in p.read_bytes() for p in (data / "staging").iterdir())
    assert (await call(relay, "DELETE", location, TUS))[0] == 204
    assert (await call(relay, "HEAD", location, TUS))[0] == 404
    assert (await call(relay, "PATCH", location, {**patch, "Upload-Offset": "3"}, b"d"))[0] == 404
    unknown = "/uploads/" + "0" * 32
    assert (await call(relay, "HEAD", unknown, TUS))[0] == 404
    assert (await call(relay, "DELETE", unknown, TUS))[0] == 404


async def test_bad_patches_and_requests_are_refused(
    setup: tuple[RelayProcess, Member, Path],
) -> None:
    """Offsets that are missing or not numbers, requests without the tus version, ids that
    are not ids: a clear refusal each, and the upload is untouched."""
    relay, _, _ = setup
    location = await create(relay, 10)
    patch = {**TUS, "Content-Type": "application/offset+octet-stream"}
    for headers, status in (
        (patch, 400),  # no Upload-Offset
        ({**patch, "Upload-Offset": "three"}, 400),
        ({**patch, "Upload-Offset": "-1"}, 409),
        ({**patch, "Upload-Offset": "99999999999999999999999"}, 409),
        ({"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}, 412),
    ):
        got, _, text = await call(relay, "PATCH", location, headers, b"abc")
        assert got == status and text.strip(), (headers, got, text)
    assert (await call(relay, "HEAD", location, {}))[0] == 412
    assert (await call(relay, "DELETE", location, {}))[0] == 412
    assert await offset(relay, location) == 0
    for path in ("/uploads/" + "0" * 31, "/uploads/" + "G" * 32, location + "/x"):
        assert (await call(relay, "HEAD", path, TUS))[0] == 404, path
    assert (await call(relay, "DELETE", location, TUS))[0] == 204


@given(st.text(max_size=300))
def test_upload_metadata_parses_or_is_refused(header: str) -> None:
    """Any header: a dict of text, or ClientError (400), never another exception."""
    try:
        parsed = tus.parse_metadata(header)
    except ClientError:
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items())


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("", {}),
        ("held MQ==,contacts YWxwaGEsYmV0YQ==", {"held": "1", "contacts": "alpha,beta"}),
        ("filename", {"filename": ""}),  # a key without a value (tus allows it)
        (" held MQ== , ,", {"held": "1"}),
        ("held MQ", None),  # not padded base64
        ("held /w==", None),  # base64 of a byte that is not UTF-8
        ("h\u00e9ld MQ==", None),  # a key that is not ASCII
        ("he\x00ld MQ==", None),
        ("held MQ==,held MQ==", None),
        ("held MQ== MQ==", None),  # two values
        ("contacts " + "QUFB" * 1100, None),  # over 4 KiB
    ],
)
def test_upload_metadata_cases(header: str, expected: dict[str, str] | None) -> None:
    if expected is None:
        with pytest.raises(ClientError):
            tus.parse_metadata(header)
    else:
        assert tus.parse_metadata(header) == expected


async def test_a_refused_patch_closes_its_connection(
    setup: tuple[RelayProcess, Member, Path],
) -> None:
    """A PATCH refused before its body is read (here a stale offset) is answered with
    `Connection: close`: the client stops sending a body that would be thrown away, and
    sends its next request on a fresh connection."""
    relay, _, _ = setup
    location = await create(relay, 1 << 20)
    head = request_head(
        "PATCH",
        location,
        {
            **TUS,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "5",
            "Content-Length": str(1 << 20),
        },
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.source_port)
    try:
        writer.write(head + b"x" * 1000)  # and the rest of the body never comes
        await writer.drain()
        async with asyncio.timeout(5):
            answer = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            assert answer.startswith("http/1.1 409"), answer
            assert "\r\nconnection: close\r\n" in answer, answer
    finally:
        writer.close()
    assert (await call(relay, "DELETE", location, TUS))[0] == 204


# --- an independent client, and cut connections ---------------------------------------------


async def test_tuspy_uploads_a_drop(
    setup: tuple[RelayProcess, Member, Path], tmp_path: Path
) -> None:
    relay, member, data = setup
    await ack_all(relay, member)
    payload = os.urandom(3 * 1024 * 1024 + 17)
    stream = io.BytesIO(payload)  # tuspy leaves a file it opened itself unclosed
    uploader = tus_client.TusClient(relay.source_url + "/uploads").uploader(
        file_stream=stream,
        chunk_size=1024 * 1024,
        metadata={"contacts": "alpha", "filename": "secret-name.bin"},
    )
    await asyncio.to_thread(uploader.upload)
    drops = await waiting_drops(relay, member)
    assert len(drops) == 1
    assert opened_item(data, str(drops[0]["id"]), member) == payload
    # The client's filename was not kept anywhere.
    for stored in (data / "blobs").rglob("*"):
        if stored.is_file():
            assert b"secret-name" not in stored.read_bytes()
    await ack_all(relay, member)


async def test_cut_connections_resume_byte_identical(
    setup: tuple[RelayProcess, Member, Path], tmp_path: Path
) -> None:
    relay, member, data = setup
    await ack_all(relay, member)
    rng = random.Random(20261121)
    payload = os.urandom(5 * 1024 * 1024 + 123)
    location = await create(relay, len(payload))
    for _ in range(4):  # four dropped circuits at random places
        at = await offset(relay, location)
        remaining = payload[at:]
        cut = rng.randrange(1, len(remaining) // 2)
        head = (
            f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
            f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: {at}\r\n"
            f"Content-Length: {len(remaining)}\r\n\r\n"
        ).encode()
        await asyncio.to_thread(cut_off, relay.source_port, head, remaining, cut)
        for _ in range(50):  # the relay notices the cut and keeps what arrived
            now = await offset(relay, location)
            if now > at:
                break
            await asyncio.sleep(0.05)
        assert at < now <= at + cut
    # The independent client resumes from wherever the relay says it is.
    uploader = tus_client.TusClient(relay.source_url + "/uploads").uploader(
        file_stream=io.BytesIO(payload), url=relay.source_url + location, chunk_size=1024 * 1024
    )
    await asyncio.to_thread(uploader.upload)
    drops = await waiting_drops(relay, member)
    assert len(drops) == 1
    received = opened_item(data, str(drops[0]["id"]), member)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    await ack_all(relay, member)


# --- held uploads: the source page's script, then its form ------------------------------------

HELD = "held " + base64.b64encode(b"1").decode()


async def page_session(relay: RelayProcess) -> tuple[aiohttp.ClientSession, str]:
    """A browser's session: its cookie (in the session's jar) and the form's CSRF token."""
    session = source_session()
    return session, await fresh_csrf(session, relay.source_url)


async def held_upload(
    session: aiohttp.ClientSession, relay: RelayProcess, payload: bytes, *, finish: bool = True
) -> str:
    """Creates a held upload in `session` and sends `payload` (all of it, or half)."""
    headers = {**TUS, "Upload-Length": str(len(payload)), "Upload-Metadata": HELD}
    async with session.post(relay.source_url + "/uploads", headers=headers) as response:
        assert response.status == 201, await response.text()
        location = response.headers["Location"]
    body = payload if finish else payload[: len(payload) // 2]
    patch = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    async with session.patch(relay.source_url + location, headers=patch, data=body) as response:
        assert response.status == 204, await response.text()
        assert response.headers["Upload-Offset"] == str(len(body))
    return location.rsplit("/", 1)[1]


def held_form(
    csrf: str,
    upload_ids: list[str],
    files: Sequence[bytes] = (),
    message: str | None = None,
) -> aiohttp.FormData:
    """The form as the page's script posts it: csrf first, then `upload` fields in order
    (and any file parts, before them)."""
    data = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
    data.add_field("csrf", csrf)
    if message is not None:
        data.add_field("message", message)
    for content in files:
        data.add_field(
            "files", io.BytesIO(content), filename="x.bin", content_type="application/octet-stream"
        )
    for upload_id in upload_ids:
        data.add_field("upload", upload_id)
    return data


def drop_count(data: Path) -> int:
    drops = data / "blobs" / "drops"
    return sum(1 for p in drops.iterdir() if p.is_dir()) if drops.exists() else 0


async def head_status(session: aiohttp.ClientSession, relay: RelayProcess, upload_id: str) -> int:
    async with session.head(f"{relay.source_url}/uploads/{upload_id}", headers=TUS) as response:
        return response.status


async def test_a_held_upload_needs_a_live_session(
    setup: tuple[RelayProcess, Member, Path],
) -> None:
    relay, member, data = setup
    headers = {**TUS, "Upload-Length": "10", "Upload-Metadata": HELD}
    status, _, text = await call(relay, "POST", "/uploads", headers)  # no cookie at all
    assert status == 403 and "session" in text
    forged = {**headers, "Cookie": "amanah_session=" + "A" * 43}
    assert (await call(relay, "POST", "/uploads", forged))[0] == 403
    # Sealed on a device, and well formed as such: refused for being held as well.
    sealed = {
        "sealed": "1",
        "contacts": "alpha",
        "recipients": member.identity.identity.recipient.fingerprint,
        "login": secrets.token_hex(32),
        "reply": str(Identity.generate().recipient),
        "sha256": "0" * 64,
    }
    sealed_metadata = ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in sealed.items()
    )
    session, _ = await page_session(relay)
    async with session:
        for metadata in ("held " + base64.b64encode(b"yes").decode(), HELD + "," + sealed_metadata):
            wrong = {**TUS, "Upload-Length": "10", "Upload-Metadata": metadata}
            async with session.post(relay.source_url + "/uploads", headers=wrong) as response:
                text = await response.text()
                assert response.status == 400 and "held must be 1" in text, text
    assert not list((data / "staging").iterdir())  # nothing was staged for any of them


async def test_held_upload_waits_for_the_form_and_belongs_to_its_session(
    setup: tuple[RelayProcess, Member, Path],
) -> None:
    relay, member, data = setup
    await ack_all(relay, member)
    before = drop_count(data)
    first = os.urandom(300_000)
    second = os.urandom(200_000)
    part = os.urandom(100_000)
    session, csrf = await page_session(relay)
    other, other_csrf = await page_session(relay)
    async with session, other:
        ids = [await held_upload(session, relay, first), await held_upload(session, relay, second)]
        assert drop_count(data) == before  # complete, but no drop of its own
        # Another browser neither sees nor can claim them; nothing is stored.
        assert await head_status(other, relay, ids[0]) == 404
        assert (await call(relay, "HEAD", f"/uploads/{ids[0]}", TUS))[0] == 404
        status, page = await submit(other, relay.source_url, held_form(other_csrf, ids[:1]))
        assert status == 400 and "no longer on the relay" in error_of(page)
        assert drop_count(data) == before
        assert await head_status(session, relay, ids[0]) == 200
        # Its own form: a file part first, then the two uploads, in the form's order.
        status, page = await submit(
            session, relay.source_url, held_form(csrf, ids, [part], "with uploads")
        )
        assert status == 200, page
        assert "sealed on the relay on arrival" in page
        assert len(codename_of(page).split()) >= 7
        (drop,) = await waiting_drops(relay, member)
        drop_id = str(drop["id"])
        assert opened_blob(data, drop_id, "item-1", member) == part
        assert opened_blob(data, drop_id, "item-2", member) == first
        assert opened_blob(data, drop_id, "item-3", member) == second
        assert opened_blob(data, drop_id, "message", member) == b"with uploads"
        # Consumed: gone from tus, and a second form naming it is refused.
        assert await head_status(session, relay, ids[0]) == 404
        status, page = await submit(
            session, relay.source_url, held_form(await fresh_csrf(session, relay.source_url), ids)
        )
        assert status == 400 and "already sent" in error_of(page)
        assert drop_count(data) == before + 1
    await ack_all(relay, member)


@pytest.mark.parametrize(
    "case", ["unknown", "malformed", "unfinished", "twice", "too-many", "too-large"]
)
async def test_a_form_naming_a_bad_upload_stores_nothing_and_keeps_the_upload(
    setup: tuple[RelayProcess, Member, Path], case: str
) -> None:
    relay, member, data = setup
    await ack_all(relay, member)
    before = drop_count(data)
    session, csrf = await page_session(relay)
    async with session:
        good = await held_upload(session, relay, os.urandom(50_000))
        ids, files, expected = [good], [], 400
        if case == "unknown":
            ids.append("0" * 32)
        elif case == "malformed":
            ids.append("../../etc/passwd")
        elif case == "unfinished":
            ids.append(await held_upload(session, relay, os.urandom(50_000), finish=False))
        elif case == "twice":
            ids.append(good)
        elif case == "too-many":  # the relay's default: 20 files at most, parts and uploads
            files, expected = [b"x"] * 20, 413
        elif case == "too-large":  # 8 MiB in all: the upload's length counts
            files, expected = [os.urandom(MAX_TOTAL - 40_000)], 413
        status, page = await submit(session, relay.source_url, held_form(csrf, ids, files))
        assert status == expected, page
        assert error_of(page)  # says what is wrong
        assert drop_count(data) == before
        # The good upload was not used up by the failed form: the next form takes it.
        status, page = await submit(
            session,
            relay.source_url,
            held_form(await fresh_csrf(session, relay.source_url), [good]),
        )
        assert status == 200, page
        assert drop_count(data) == before + 1
    await ack_all(relay, member)


async def test_a_held_upload_cannot_be_deleted_or_patched_by_another_session(
    setup: tuple[RelayProcess, Member, Path],
) -> None:
    relay, _, _ = setup
    session, _ = await page_session(relay)
    other, _ = await page_session(relay)
    async with session, other:
        upload_id = await held_upload(session, relay, os.urandom(10_000), finish=False)
        url = f"{relay.source_url}/uploads/{upload_id}"
        patch = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "5000"}
        async with other.patch(url, headers=patch, data=b"y" * 10) as response:
            assert response.status == 404
        async with other.delete(url, headers=TUS) as response:
            assert response.status == 404
        assert await head_status(session, relay, upload_id) == 200
        async with session.delete(url, headers=TUS) as response:
            assert response.status == 204


async def test_held_uploads_follow_the_browser_into_its_next_session(
    setup: tuple[RelayProcess, Member, Path],
) -> None:
    """The session that made a held upload ended (here by logging out; idling and the
    bound on sessions end one the same way) while the browser kept its cookie: its next
    page opens a new session, and the upload comes along to that session's form."""
    relay, member, data = setup
    await ack_all(relay, member)
    before = drop_count(data)
    session, csrf = await page_session(relay)
    async with session:
        upload_id = await held_upload(session, relay, os.urandom(20_000))
        old_cookie = session_cookie(session)
        logout = {"csrf": csrf}
        async with session.post(
            relay.source_url + "/logout", data=logout, allow_redirects=False
        ) as response:
            assert response.status == 303
        fresh = await fresh_csrf(session, relay.source_url)  # sent the old cookie
        assert fresh != csrf and session_cookie(session) != old_cookie
        status, page = await submit(session, relay.source_url, held_form(fresh, [upload_id]))
        assert status == 200, page
        assert drop_count(data) == before + 1
    await ack_all(relay, member)


def test_held_uploads_in_memory(tmp_path: Path) -> None:
    """The bookkeeping without a server: a claim reserves, a release gives back, a consumed
    id stays known as used, a claimed upload outlives its expiry, and a renewed session
    (same browser, new cookie) takes its uploads with it."""
    staging = StagingArea(tmp_path)
    uploads = tus.Uploads()
    upload = tus.Upload(3, staging.create(), (), expires_at=100.0, owner="old-cookie")
    upload.staged.write(b"abc")
    upload.staged.close()
    upload.offset = 3
    upload_id = uploads.add(upload)
    assert uploads.claim(upload_id, "someone-else", 0) is tus.Unclaimable.GONE
    uploads.rehome("old-cookie", "new-cookie")
    assert uploads.claim(upload_id, "old-cookie", 0) is tus.Unclaimable.GONE
    assert uploads.claim(upload_id, "new-cookie", 0) is upload
    assert uploads.claim(upload_id, "new-cookie", 0) is tus.Unclaimable.USED
    uploads.expire(1000.0)  # claimed: a form is sealing it right now
    assert len(uploads) == 1 and upload.staged.path.exists()
    uploads.release(upload_id)
    assert uploads.claim(upload_id, "new-cookie", 0) is upload
    uploads.consume(upload_id)
    assert len(uploads) == 0 and not upload.staged.path.exists()
    assert uploads.claim(upload_id, "new-cookie", 0) is tus.Unclaimable.USED
    unfinished = tus.Upload(9, staging.create(), (), expires_at=100.0, owner="new-cookie")
    assert uploads.claim(uploads.add(unfinished), "new-cookie", 0) is tus.Unclaimable.UNFINISHED
    uploads.expire(1000.0)  # not claimed: expired, and its staged file removed
    assert len(uploads) == 0 and not unfinished.staged.path.exists()


def test_outcomes_and_used_ids_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """How finished uploads ended is remembered for as long as an upload would have been
    kept, then forgotten; that memory, and the one of consumed held uploads, is bounded
    (the oldest go first)."""
    monkeypatch.setattr(tus, "MAX_OUTCOMES", 3)
    monkeypatch.setattr(tus, "MAX_USED", 2)
    uploads = tus.Uploads()
    uploads.finished("stored", 10, None)
    uploads.finished("refused", 20, "file 1: damaged")
    now = time.time()
    stored, refused = uploads.outcome("stored", now), uploads.outcome("refused", now)
    assert stored is not None and (stored.length, stored.refusal) == (10, None)
    assert now + tus.UPLOAD_SECONDS - 5 < stored.expires_at <= now + tus.UPLOAD_SECONDS
    assert refused is not None and refused.refusal == "file 1: damaged"
    assert uploads.outcome("never", now) is None
    later = now + tus.UPLOAD_SECONDS + 10
    assert uploads.outcome("stored", later) is None
    assert uploads.outcome("stored", now) is None  # forgotten, not only hidden
    for name in ("a", "b", "c", "d"):
        uploads.finished(name, 1, None)
    kept = [n for n in ("refused", "a", "b", "c", "d") if uploads.outcome(n, now) is not None]
    assert kept == ["b", "c", "d"]
    for name in ("x", "y", "z"):
        uploads.consume(name)
    assert uploads.claim("x", "cookie", now) is tus.Unclaimable.GONE  # forgotten: oldest
    assert uploads.claim("y", "cookie", now) is tus.Unclaimable.USED
    assert uploads.claim("z", "cookie", now) is tus.Unclaimable.USED


async def test_a_silent_connection_does_not_block_the_resume(
    setup: tuple[RelayProcess, Member, Path],
) -> None:
    """A PATCH whose connection went silent (no more bytes, never closed: a dead circuit)
    still holds the upload. The client's HEAD and PATCH on a new connection take over: the
    silent one is cut, what it brought is kept, and the upload completes from there."""
    relay, member, data = setup
    await ack_all(relay, member)
    payload = os.urandom(2 * 1024 * 1024 + 5)
    location = await create(relay, len(payload))
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: 127.0.0.1\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.source_port)
    try:
        writer.write(head + payload[:700_000])  # then nothing more, and no close
        await writer.drain()
        for _ in range(100):  # the relay has read what came (it is still "receiving")
            status, answer, _ = await call(relay, "HEAD", location, TUS)
            if status == 200 and int(answer["Upload-Offset"]) == 700_000:
                break
            await asyncio.sleep(0.05)
        assert int(answer["Upload-Offset"]) == 700_000
        patch = {
            **TUS,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": "700000",
        }
        async with aiohttp.ClientSession() as session:
            rest = io.BytesIO(payload[700_000:])
            async with session.patch(relay.source_url + location, headers=patch, data=rest) as r:
                assert r.status == 204, await r.text()
        assert await reader.read() == b""  # the silent connection was cut, not answered
    finally:
        writer.close()
    (drop,) = await waiting_drops(relay, member)
    assert opened_item(data, str(drop["id"]), member) == payload
    await ack_all(relay, member)


async def test_head_after_the_last_byte_says_how_the_upload_ended(
    setup: tuple[RelayProcess, Member, Path],
) -> None:
    """A client whose connection broke with the last byte asks HEAD: the relay remembers
    whether it stored the drop or refused it (it no longer has the upload itself)."""
    relay, member, _ = setup
    await ack_all(relay, member)
    patch = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    payload = os.urandom(4096)
    location = await create(relay, len(payload))
    assert (await call(relay, "PATCH", location, patch, payload))[0] == 204
    status, answer, _ = await call(relay, "HEAD", location, TUS)
    assert status == 200, answer
    assert answer["Amanah-Outcome"] == "stored"
    assert answer["Upload-Offset"] == answer["Upload-Length"] == str(len(payload))
    assert len(await waiting_drops(relay, member)) == 1
    # Nothing more can be appended to it, and it was stored once.
    assert (await call(relay, "PATCH", location, {**patch, "Upload-Offset": "4096"}, b"x"))[
        0
    ] == 404
    assert len(await waiting_drops(relay, member)) == 1

    # A JPEG that does not parse: refused by the sanitizer when the last byte is in.
    broken = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    broken += os.urandom(2048)
    location = await create(relay, len(broken))
    status, _, text = await call(relay, "PATCH", location, patch, broken)
    assert status == 400 and "file 1" in text
    status, answer, _ = await call(relay, "HEAD", location, TUS)
    assert status == 410
    assert answer["Amanah-Outcome"] == "refused"
    assert "file 1" in answer["Amanah-Reason"]
    assert len(await waiting_drops(relay, member)) == 1  # the stored drop is untouched
    await ack_all(relay, member)

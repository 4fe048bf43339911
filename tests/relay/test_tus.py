"""Resumable uploads (tus 1.0.0) against a real relay process: the protocol's rules, an
independent client (tuspy), and uploads whose connection is cut at random offsets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
import random
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from tusclient import client as tus_client

from tests.relayharness import (
    AGE,
    Member,
    RelayPool,
    RelayProcess,
    add_contact,
    api_json,
    forward_unsupported,
    init_data,
    keygen,
    set_limits,
    token_for,
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


def raw(port: int, request: bytes, body: bytes = b"", cut_after: int | None = None) -> bytes:
    """Sends a request by hand; with `cut_after`, closes the connection after that many
    body bytes, as a dropped circuit would. Returns the raw answer (empty if cut)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        if cut_after is not None:
            sock.sendall(body[:cut_after])
            sock.shutdown(socket.SHUT_RDWR)
            return b""
        sock.sendall(body)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


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


async def waiting_drops(relay: RelayProcess, member: Member) -> list[dict[str, object]]:
    async with aiohttp.ClientSession() as session:
        token = await token_for(session, relay.journalist_url, member.identity)
        status, listing = await api_json(
            session, relay.journalist_url + "/api/v1/drops", token=token
        )
        assert status == 200
        return list(listing["drops"])


async def ack_all(relay: RelayProcess, member: Member) -> None:
    async with aiohttp.ClientSession() as session:
        token = await token_for(session, relay.journalist_url, member.identity)
        for drop in await waiting_drops(relay, member):
            url = f"{relay.journalist_url}/api/v1/drops/{drop['id']}/ack"
            await api_json(session, url, "POST", token=token)


def opened_item(data: Path, drop_id: str, member: Member) -> bytes:
    """The file of a one-file drop, opened by the real age tool."""
    sealed = data / "blobs" / "drops" / drop_id / "item-1"
    done = subprocess.run(
        [AGE, "-d", "-i", str(member.identity_file), str(sealed)],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return done.stdout


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
        await asyncio.to_thread(raw, relay.source_port, head, remaining, cut)
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

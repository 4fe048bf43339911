"""Drops sealed on the source's device, as the relay sees them (relay/sealed.py): tus
uploads with `sealed` metadata against a real relay process. The relay checks routing at
creation and again at completion, checks the age header, shape and SHA-256 of what
arrived, stores it byte for byte, and registers the source; anything else is refused
with nothing stored."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from crypto import age
from crypto.directory import verify_directory
from crypto.keys import Identity, Recipient
from relay import contacts, datadir
from relay.store import Store
from tests.relayharness import (
    AGE,
    AMANAH,
    Member,
    RelayPool,
    RelayProcess,
    add_contact,
    api_json,
    init_data,
    keygen,
    run,
    token_for,
)

TUS = {"Tus-Resumable": "1.0.0"}
STALE = "your copy of the directory is out of date; fetch it again"


@dataclass
class Relay:
    process: RelayProcess
    data: Path
    root: Path
    alice: Member  # contact "alpha"
    bob: Member  # contact "beta", with carol
    carol: Member


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    root = tmp_path_factory.mktemp("sealed")
    data = root / "data"
    init_data(data)
    alice, bob, carol = (keygen(root / f"{n}.txt") for n in ("alice", "bob", "carol"))
    add_contact(data, "alpha", [alice])
    add_contact(data, "beta", [bob, carol])
    with RelayPool(root) as pool:
        yield Relay(pool.new(data), data, root, alice, bob, carol)


def fingerprint(member: Member) -> str:
    return member.identity.identity.recipient.fingerprint


def recipient(member: Member) -> Recipient:
    return member.identity.identity.recipient


def encode(metadata: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in metadata.items())


def metadata_for(
    sealed: bytes, contacts: str, keys: list[Member], login: str | None = None, **extra: str
) -> dict[str, str]:
    return {
        "sealed": "1",
        "contacts": contacts,
        "recipients": ",".join(fingerprint(m) for m in keys),
        "login": login or secrets.token_hex(32),
        "reply": str(Identity.generate().recipient),
        "sha256": hashlib.sha256(sealed).hexdigest(),
        **extra,
    }


async def create(relay: Relay, length: int, metadata: dict[str, str]) -> tuple[int, str, str]:
    """POST /uploads: (status, Location, body text)."""
    headers = {**TUS, "Upload-Length": str(length), "Upload-Metadata": encode(metadata)}
    async with aiohttp.ClientSession() as session:
        url = relay.process.source_url + "/uploads"
        async with session.post(url, headers=headers) as response:
            return response.status, response.headers.get("Location", ""), await response.text()


async def patch(relay: Relay, location: str, body: bytes, offset: int = 0) -> tuple[int, str]:
    headers = {
        **TUS,
        "Upload-Offset": str(offset),
        "Content-Type": "application/offset+octet-stream",
    }
    async with aiohttp.ClientSession() as session:
        url = relay.process.source_url + location
        async with session.patch(url, data=body, headers=headers) as response:
            return response.status, await response.text()


async def upload(relay: Relay, body: bytes, metadata: dict[str, str]) -> tuple[int, str]:
    status, location, text = await create(relay, len(body), metadata)
    assert status == 201, text
    return await patch(relay, location, body)


async def drops_of(relay: Relay, member: Member) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        token = await token_for(session, relay.process.journalist_url, member.identity)
        url = relay.process.journalist_url + "/api/v1/drops"
        status, body = await api_json(session, url, token=token)
        assert status == 200, body
        return list(body["drops"])


def stored_state(relay: Relay) -> tuple[Any, ...]:
    """What a refused upload must not change: rows, drop folders, staged files."""
    connection = sqlite3.connect(relay.data / "amanah.db")
    try:
        rows = tuple(
            connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
            for table in ("drops", "drop_blobs", "sources", "source_contacts")
        )
    finally:
        connection.close()
    folders = relay.data / "blobs" / "drops"
    drops = sorted(p.name for p in folders.iterdir()) if folders.exists() else []
    return rows, drops, sorted(p.name for p in (relay.data / "staging").iterdir())


def sealed_to(*members: Member, size: int = 1000) -> bytes:
    return age.encrypt(os.urandom(size), [recipient(m) for m in members])


# --- the directory on the source service ------------------------------------------------------


async def test_the_source_service_serves_the_signed_directory_with_the_salt(relay: Relay) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(relay.process.source_url + "/directory") as response:
            assert response.status == 200
            document = await response.read()
        async with session.get(relay.process.journalist_url + "/api/v1/directory") as response:
            assert await response.read() == document
    directory, _ = verify_directory(document, None)
    assert directory.codename_salt == datadir.load_keys(relay.data).codename_salt
    assert {c.name for c in directory.contacts} == {"alpha", "beta"}


async def test_an_older_data_directory_gets_its_salt_signed_in_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    init_data(data)
    keys = datadir.load_keys(data)
    async with await Store.open(data / "amanah.db") as store:  # as a relay before the salt
        old = await contacts.publish_directory(store, keys.directory_key, 1_700_000_000)
    with RelayPool(tmp_path) as pool:
        process = pool.new(data)
        async with aiohttp.ClientSession() as session:
            async with session.get(process.source_url + "/directory") as response:
                directory, _ = verify_directory(await response.read(), None)
    assert directory.version == old + 1
    assert directory.codename_salt == keys.codename_salt
    assert "signed the codename salt into the contact directory" in process.logs


async def test_a_directory_signed_meanwhile_elsewhere_is_followed_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`amanah keys rotate` and the running relay may each sign a directory at the same
    moment, on two connections to one database. The one that loses signs the next version
    instead of failing."""
    data = tmp_path / "data"
    init_data(data)
    keys = datadir.load_keys(data)
    async with (
        await Store.open(data / "amanah.db") as command,
        await Store.open(data / "amanah.db") as relay,
    ):
        first = await contacts.publish_directory(command, keys.directory_key, 1_700_000_000)
        read_latest = command.latest_directory

        async def relay_signs_meanwhile() -> tuple[int, bytes] | None:
            latest = await read_latest()
            monkeypatch.setattr(command, "latest_directory", read_latest)  # once only
            await contacts.publish_directory(relay, keys.directory_key, 1_700_000_001)
            return latest

        monkeypatch.setattr(command, "latest_directory", relay_signs_meanwhile)
        version = await contacts.publish_directory(command, keys.directory_key, 1_700_000_002)
        latest = await relay.latest_directory()
    assert version == first + 2
    assert latest is not None and latest[0] == version
    directory, _ = verify_directory(latest[1], None)
    assert directory.version == version and directory.issued_at == 1_700_000_002


# --- a good one ---------------------------------------------------------------------------------


async def test_a_sealed_drop_is_stored_byte_for_byte(relay: Relay) -> None:
    body = sealed_to(relay.bob, relay.carol, size=200_000)
    login = secrets.token_hex(32)
    metadata = metadata_for(body, "beta", [relay.carol, relay.bob], login)
    status, text = await upload(relay, body, metadata)
    assert status == 204, text
    [drop] = await drops_of(relay, relay.bob)
    assert drop["sealed_on"] == "device"
    assert drop["blobs"] == [
        {"name": "sealed", "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
    ]
    stored = relay.data / "blobs" / "drops" / drop["id"] / "sealed"
    assert stored.read_bytes() == body
    opened = await asyncio.to_thread(
        subprocess.run,
        [AGE, "-d", "-i", str(relay.carol.identity_file), str(stored)],
        capture_output=True,
    )
    assert opened.returncode == 0  # the real age opens it for either member
    # The source is registered, and a second drop with the same login joins it.
    again = sealed_to(relay.bob, relay.carol)
    same = {**metadata_for(again, "beta", [relay.bob, relay.carol], login)}
    same["reply"] = metadata["reply"]
    status, text = await upload(relay, again, {**same, "returning": "1"})
    assert status == 204, text
    drops = await drops_of(relay, relay.bob)
    assert len(drops) == 2 and drops[0]["reply_handle"] == drops[1]["reply_handle"]
    connection = sqlite3.connect(relay.data / "amanah.db")
    try:
        rows = connection.execute(
            "SELECT reply_recipient FROM sources WHERE login_id = ?", (login,)
        ).fetchall()
    finally:
        connection.close()
    assert rows == [(metadata["reply"],)]
    # Nobody may redirect that source's replies with another reply key.
    other = metadata_for(again, "beta", [relay.bob, relay.carol], login)
    status, _, text = await create(relay, len(again), other)
    assert status == 409 and "reply key differs" in text
    async with aiohttp.ClientSession() as session:
        token = await token_for(session, relay.process.journalist_url, relay.bob.identity)
        for each in drops:
            url = f"{relay.process.journalist_url}/api/v1/drops/{each['id']}/ack"
            await api_json(session, url, "POST", token=token)
    assert await drops_of(relay, relay.carol) == []


# --- refused at creation --------------------------------------------------------------------


CREATION = {
    "a member key missing": lambda r, b: metadata_for(b, "beta", [r.bob]),
    "a key too many": lambda r, b: metadata_for(b, "beta", [r.bob, r.carol, r.alice]),
    "another contact's key": lambda r, b: metadata_for(b, "alpha", [r.bob]),
    "an unknown contact": lambda r, b: metadata_for(b, "gamma", [r.alice]),
}


@pytest.mark.parametrize("build", CREATION.values(), ids=CREATION.keys())
async def test_stale_routing_is_refused_at_creation(relay: Relay, build: Any) -> None:
    body = sealed_to(relay.bob)
    before = stored_state(relay)
    status, _, text = await create(relay, len(body), build(relay, body))
    assert status == 409
    assert STALE in text
    assert stored_state(relay) == before


MALFORMED = {
    "no recipients": {"recipients": ""},
    "a recipient twice": {"recipients": "ab" * 16 + "," + "ab" * 16},
    "a recipient that is no fingerprint": {"recipients": "not-hex"},
    "no login": {"login": ""},
    "a login in capitals": {"login": "AB" * 32},
    "a reply that is no age recipient": {"reply": "age1nope"},
    "no sha256": {"sha256": ""},
}


@pytest.mark.parametrize("change", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_metadata_is_refused(relay: Relay, change: dict[str, str]) -> None:
    body = sealed_to(relay.alice)
    metadata = {**metadata_for(body, "alpha", [relay.alice]), **change}
    before = stored_state(relay)
    status, _, text = await create(relay, len(body), metadata)
    assert status == 400, text
    assert "sealed upload" in text
    assert stored_state(relay) == before


async def test_a_returning_codename_the_relay_does_not_know_is_refused(relay: Relay) -> None:
    body = sealed_to(relay.alice)
    metadata = metadata_for(body, "alpha", [relay.alice], returning="1")
    status, _, text = await create(relay, len(body), metadata)
    assert status == 404 and "no drop was sent with that codename" in text


# --- refused at completion ------------------------------------------------------------------


def with_foreign_stanza(sealed: bytes) -> bytes:
    """A header with an extra, non-X25519 stanza (its MAC no longer verifies; the relay
    cannot check a MAC anyway, only the shape)."""
    first = sealed.index(b"\n-> ") + 1
    return sealed[:first] + b"-> ssh-ed25519 AAAA\nAAAA\n" + sealed[first:]


def with_malformed_x25519_stanza(sealed: bytes) -> bytes:
    """The first X25519 stanza with a third argument, which age refuses outright."""
    start = sealed.index(b"\n-> X25519 ") + 1
    end = sealed.index(b"\n", start)
    return sealed[:end] + b" extra" + sealed[end:]


def payload_cut(sealed: bytes, keep: int = 10) -> bytes:
    """The header and nonce whole, then only `keep` bytes of the payload."""
    end = sealed.index(b"\n---") + 1
    end = sealed.index(b"\n", end) + 1 + 16
    return sealed[: end + keep]


COMPLETION = {
    "not age at all": (lambda r: os.urandom(5000), "age header is not valid", None),
    "a truncated header": (lambda r: sealed_to(r.alice)[:60], "age header is not valid", None),
    "too few stanzas": (lambda r: sealed_to(r.bob), "not sealed to exactly", "beta"),
    "too many stanzas": (
        lambda r: sealed_to(r.bob, r.carol, r.alice),
        "not sealed to exactly",
        "beta",
    ),
    "a foreign stanza": (
        lambda r: with_foreign_stanza(sealed_to(r.bob)),
        "not an X25519 one",
        "beta",
    ),
    "a malformed X25519 stanza": (
        lambda r: with_malformed_x25519_stanza(sealed_to(r.bob, r.carol)),
        "exactly two arguments",
        "beta",
    ),
    "a payload cut short": (lambda r: payload_cut(sealed_to(r.alice)), "truncated", None),
    # Whole chunks, then a last one too short to hold its tag, or a bare tag (an empty last
    # chunk after data): the shape alone shows these were cut.
    "a last chunk shorter than its tag": (
        lambda r: payload_cut(sealed_to(r.alice, size=100_000), 65536 + 16 + 10),
        "truncated",
        None,
    ),
    "a bare tag after whole chunks": (
        lambda r: payload_cut(sealed_to(r.alice, size=100_000), 65536 + 16 + 16),
        "truncated",
        None,
    ),
}


@pytest.mark.parametrize(("build", "reason", "contact"), COMPLETION.values(), ids=COMPLETION.keys())
async def test_a_bad_sealed_file_is_refused_and_nothing_stored(
    relay: Relay, build: Any, reason: str, contact: str | None
) -> None:
    body = build(relay)
    keys = [relay.bob, relay.carol] if contact == "beta" else [relay.alice]
    before = stored_state(relay)
    status, text = await upload(relay, body, metadata_for(body, contact or "alpha", keys))
    assert status == 400, text
    assert reason in text
    assert stored_state(relay) == before


async def test_a_file_that_differs_from_its_announced_sha256_is_refused(relay: Relay) -> None:
    whole = sealed_to(relay.alice, size=300_000)
    cut = whole[: len(whole) - 65536 - 16]  # a whole chunk short: its shape still passes
    metadata = metadata_for(whole, "alpha", [relay.alice])
    before = stored_state(relay)
    status, text = await upload(relay, cut, metadata)
    assert status == 400 and "SHA-256 mismatch" in text
    assert stored_state(relay) == before


async def test_a_key_rotated_during_the_upload_is_caught_at_completion(
    relay: Relay, tmp_path: Path
) -> None:
    dave = keygen(tmp_path / "dave.txt")
    add_contact(relay.data, "delta", [dave])
    body = sealed_to(dave, size=100_000)
    status, location, text = await create(relay, len(body), metadata_for(body, "delta", [dave]))
    assert status == 201, text
    status, _ = await patch(relay, location, body[:50_000])
    assert status == 204
    erin = keygen(tmp_path / "erin.txt")
    rotated = f"{dave.card}={erin.card}"
    await asyncio.to_thread(
        run, AMANAH, "contact", "rotate", "delta", "--member", rotated, "--data", relay.data
    )
    before = stored_state(relay)
    status, text = await patch(relay, location, body[50_000:], 50_000)
    assert status == 409 and STALE in text
    assert stored_state(relay)[:2] == before[:2]
    assert await drops_of(relay, erin) == []

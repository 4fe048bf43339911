"""Files sealed to their contacts as they arrive: a type the sanitizer passes on unchanged
(here: random bytes, forwarded by the operator's choice) is sealed by the form handler
straight to the addressed contacts' member keys, hashed on the way, and moved into the drop
as it is; every other file still goes through staging and the sanitizer.

A real `amanah serve --no-tor`; the real `age` tool opens what was stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from crypto import age
from crypto.errors import NoIdentityMatchError
from tests.relayharness import (
    AGE,
    ServedRelay,
    Upload,
    api_json,
    codename_of,
    form,
    fresh_csrf,
    served_relay,
    source_session,
    submit,
    token_for,
)

RANDOM_SIZE = 3 * 1024 * 1024 + 17  # more than one read of the form, not a whole chunk


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRelay]:
    root = tmp_path_factory.mktemp("arrival")
    contacts = {"alpha": ["alpha-1", "alpha-2"], "beta": ["beta-1"]}
    with served_relay(root, contacts) as served:
        yield served


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(out, "JPEG", quality=90)
    return out.getvalue()


def stanzas(blob: bytes) -> list[str]:
    """The recipient stanza lines of an age file's header."""
    header = blob.split(b"\n--- ", 1)[0].decode("ascii")
    return [line for line in header.splitlines() if line.startswith("-> ")]


async def fetch_drop(relay: ServedRelay, member: str) -> tuple[dict[str, object], dict[str, bytes]]:
    """The only drop waiting for `member`: its listing entry and its blobs, as stored."""
    identity = relay.members[member].identity
    base = relay.process.journalist_url
    async with aiohttp.ClientSession() as session:
        token = await token_for(session, base, identity)
        _, listing = await api_json(session, base + "/api/v1/drops", token=token)
        (drop,) = listing["drops"]
        found = {}
        for blob in drop["blobs"]:
            url = f"{base}/api/v1/drops/{drop['id']}/blobs/{blob['name']}"
            async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as answer:
                assert answer.status == 200
                found[blob["name"]] = await answer.read()
    return drop, found


def age_open(identity_file: Path, blob: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [AGE, "-d", "-i", str(identity_file)], input=blob, capture_output=True, check=False
    )


async def test_a_forwarded_file_is_sealed_to_its_contacts_as_it_arrives(relay: ServedRelay) -> None:
    forwarded = os.urandom(RANDOM_SIZE)
    picture = jpeg()
    async with source_session() as session:
        csrf = await fresh_csrf(session, relay.process.source_url)
        files = [
            Upload("a.bin", io.BytesIO(forwarded)),
            Upload("b.jpg", io.BytesIO(picture), "image/jpeg"),
        ]
        status, page = await submit(
            session, relay.process.source_url, form(csrf, "two files", ["alpha"], files)
        )
    assert status == 200, page
    codename_of(page)
    assert os.listdir(relay.data / "staging") == []

    drop, blobs = await fetch_drop(relay, "alpha-1")
    listed = {b["name"]: b for b in drop["blobs"]}  # type: ignore[attr-defined]
    for name, blob in blobs.items():  # what the listing says is what is served
        assert listed[name]["sha256"] == hashlib.sha256(blob).hexdigest(), name
        assert listed[name]["size"] == len(blob), name
    # Sealed to alpha's two members only: no stanza for the staging key, none for beta.
    assert len(stanzas(blobs["item-1"])) == 2
    for member in ("alpha-1", "alpha-2"):
        opened = age_open(relay.members[member].identity_file, blobs["item-1"])
        assert opened.returncode == 0, opened.stderr
        assert opened.stdout == forwarded
    assert age_open(relay.members["beta-1"].identity_file, blobs["item-1"]).returncode != 0

    identity = relay.members["alpha-2"].identity.identity
    manifest = json.loads(age.decrypt(blobs["manifest"], [identity]))
    first, second = manifest["files"]
    digest = hashlib.sha256(forwarded).hexdigest()
    assert (first["sha256"], first["original_sha256"]) == (digest, digest)
    assert (first["size"], first["original_size"]) == (RANDOM_SIZE, RANDOM_SIZE)
    assert first["metadata"]["stripped"] is False
    assert first["metadata"]["note"].startswith("NOT STRIPPED")
    assert first["name"] == "file-1.bin"
    # The picture went the other way: staged, cleaned, sealed afterwards.
    assert second["metadata"]["stripped"] is True
    assert second["original_sha256"] == hashlib.sha256(picture).hexdigest()
    cleaned = age.decrypt(blobs["item-2"], [identity])
    assert second["sha256"] == hashlib.sha256(cleaned).hexdigest()
    assert Image.open(io.BytesIO(cleaned)).size == (64, 48)


async def test_a_drop_to_every_contact_is_sealed_to_every_member(relay: ServedRelay) -> None:
    """No contact field before the file: the drop goes to all, sealed on arrival to all."""
    forwarded = os.urandom(70_000)
    async with source_session() as session:
        csrf = await fresh_csrf(session, relay.process.source_url)
        status, page = await submit(
            session,
            relay.process.source_url,
            form(csrf, None, (), [Upload("x", io.BytesIO(forwarded))]),
        )
    assert status == 200, page
    _, blobs = await fetch_drop(relay, "beta-1")
    assert len(stanzas(blobs["item-1"])) == 3
    opened = age_open(relay.members["beta-1"].identity_file, blobs["item-1"])
    assert opened.stdout == forwarded


def test_final_sealing_needs_the_destination_on_the_same_file_system(tmp_path: Path) -> None:
    from relay.staging import StagingArea  # noqa: PLC0415

    (tmp_path / "staging").mkdir()
    (tmp_path / "blobs").mkdir()
    assert StagingArea(tmp_path / "staging", tmp_path / "blobs").seals_final()
    assert not StagingArea(tmp_path / "staging", tmp_path / "missing").seals_final()
    assert not StagingArea(tmp_path / "staging").seals_final()
    shm = Path("/dev/shm")
    if shm.is_dir() and shm.stat().st_dev != tmp_path.stat().st_dev:
        assert not StagingArea(tmp_path / "staging", shm).seals_final()


async def test_while_it_arrives_the_file_is_sealed_to_the_members_not_to_staging(
    relay: ServedRelay,
) -> None:
    """Mid-upload, the staged file of a forwarded type opens with a member's key (and has
    one stanza per member); a picture's opens with no member's key (the staging key)."""
    paused, resume = asyncio.Event(), asyncio.Event()

    async def slow(head: bytes) -> AsyncIterator[bytes]:
        yield head
        for _ in range(8):
            yield os.urandom(256 * 1024)
        paused.set()
        await resume.wait()
        yield os.urandom(1024)

    seen = {}
    for label, head in (("forwarded", os.urandom(100_000)), ("picture", jpeg())):
        paused.clear()
        resume.clear()
        async with source_session() as session:
            csrf = await fresh_csrf(session, relay.process.source_url)
            data = form(csrf, None, ["alpha"])
            data.add_field("files", slow(head), filename="f", content_type="image/jpeg")
            sending = asyncio.create_task(submit(session, relay.process.source_url, data))
            await asyncio.wait_for(paused.wait(), 30)
            await asyncio.sleep(0.3)  # the relay takes in what was sent
            (staged,) = (relay.data / "staging").iterdir()
            prefix = staged.read_bytes()[:65536]
            resume.set()
            status, page = await sending
        seen[label] = prefix
        assert status == 200, page
    members = [relay.members[m].identity.identity for m in ("alpha-1", "alpha-2")]
    assert len(stanzas(seen["forwarded"])) == 2
    for identity in members:
        age.open_payload(seen["forwarded"], [identity])
    assert len(stanzas(seen["picture"])) == 1
    with pytest.raises(NoIdentityMatchError):
        age.open_payload(seen["picture"], members)

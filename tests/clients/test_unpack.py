"""A drop sealed on a device is hostile input to the contact's client: a valid age file
(sealed to the contact's real key) around a tar that tries to write elsewhere, link, grow,
repeat, or lie about itself. `amanah-inbox` refuses each clearly and writes nothing outside
the drop's folder; the relay keeps the drop (unacknowledged), and the others still come."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import secrets
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from tusclient import client as tus_client

from clients.common import UserError
from clients.unpack import UnsafeDrop, unpack
from crypto import age
from crypto.keys import Identity
from tests.clients.harness import (
    Setup,
    device_manifest,
    fetch,
    file_entry,
    listing,
    member,
    tar_bytes,
)
from tests.relayharness import all_files

JPEG = b"\xff\xd8\xff\xe0" + b"not really a picture" * 10
MESSAGE = b"hello"
ESCAPED = f"amanah-escaped-{secrets.token_hex(4)}"


def good_members() -> list[tuple[tarfile.TarInfo, bytes | None]]:
    files = [file_entry("item-1.jpg", "photo-1.jpg", JPEG)]
    return [
        member("message.txt", MESSAGE),
        member("item-1.jpg", JPEG),
        member("manifest.json", device_manifest(files, MESSAGE)),
    ]


def with_manifest(
    extra: list[tuple[tarfile.TarInfo, bytes | None]], files: list[dict[str, object]]
) -> bytes:
    return tar_bytes([*extra, member("manifest.json", device_manifest(files))])


def huge_member() -> bytes:
    info = tarfile.TarInfo("item-1.jpg")
    info.size = 10 * 1024**3  # claims 10 GiB, carries 1 KiB
    return info.tobuf(tarfile.GNU_FORMAT) + bytes(1024) + bytes(1024)


def pax_member() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info, data = member("item-1.jpg", JPEG)
        info.pax_headers = {"comment": "hi"}
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


HOSTILE: dict[str, tuple[str, Callable[[], bytes]]] = {
    "path traversal": (
        "never writes",
        lambda: tar_bytes([member(f"../{ESCAPED}", b"x"), *good_members()]),
    ),
    "absolute path": (
        "never writes",
        lambda: tar_bytes([member(f"/tmp/{ESCAPED}", b"x"), *good_members()]),
    ),
    "long name climbing out": (
        "never writes",
        lambda: tar_bytes([member("a/" * 60 + f"../../{ESCAPED}", b"x"), *good_members()]),
    ),
    "symlink": (
        "other than a plain file",
        lambda: tar_bytes(
            [member("item-1.jpg", b"", type=tarfile.SYMTYPE, linkname="/etc/passwd")]
        ),
    ),
    "hard link": (
        "other than a plain file",
        lambda: tar_bytes(
            [member("item-1.jpg", b"", type=tarfile.LNKTYPE, linkname="message.txt")]
        ),
    ),
    "directory": (
        "other than a plain file",
        lambda: tar_bytes([member("item-1.jpg", b"", type=tarfile.DIRTYPE)]),
    ),
    "fifo": (
        "other than a plain file",
        lambda: tar_bytes([member("item-1.jpg", b"", type=tarfile.FIFOTYPE)]),
    ),
    "huge member": (
        "larger than it can",
        huge_member,
    ),
    "huge manifest": (
        "larger than it can",
        lambda: tar_bytes([member("manifest.json", b" " * (1024 * 1024 + 1))]),
    ),
    "pax extension": (
        "other than a plain file",
        pax_member,
    ),
    "a second manifest": (
        "a second",
        lambda: tar_bytes([*good_members(), good_members()[2]]),
    ),
    "a file the manifest does not list": (
        "does not list",
        lambda: with_manifest(
            [member("item-1.jpg", JPEG), member("item-2.jpg", JPEG)],
            [file_entry("item-1.jpg", "photo-1.jpg", JPEG)],
        ),
    ),
    "a listed file missing": (
        "does not match",
        lambda: with_manifest([], [file_entry("item-1.jpg", "photo-1.jpg", JPEG)]),
    ),
    "a wrong hash": (
        "does not match",
        lambda: with_manifest(
            [member("item-1.jpg", JPEG)], [file_entry("item-1.jpg", "photo-1.jpg", JPEG + b"!")]
        ),
    ),
    "a name climbing out": (
        "names a file unsafely",
        lambda: with_manifest(
            [member("item-1.jpg", JPEG)], [file_entry("item-1.jpg", f"../{ESCAPED}.jpg", JPEG)]
        ),
    ),
    "a name onto another member": (
        "names a file unsafely",
        lambda: with_manifest(
            [member("item-1.jpg", JPEG), member("item-2.jpg", JPEG)],
            [
                file_entry("item-1.jpg", "item-2.jpg", JPEG),
                file_entry("item-2.jpg", "photo-2.jpg", JPEG),
            ],
        ),
    ),
    "a name given twice": (
        "names a file unsafely",
        lambda: with_manifest(
            [member("item-1.jpg", JPEG), member("item-2.jpg", JPEG)],
            [
                file_entry("item-1.jpg", "photo-1.jpg", JPEG),
                file_entry("item-2.jpg", "photo-1.jpg", JPEG),
            ],
        ),
    ),
    "a manifest that is not JSON": (
        "not JSON",
        lambda: tar_bytes([member("manifest.json", b"{nope")]),
    ),
    "no manifest": (
        "no manifest",
        lambda: tar_bytes([member("item-1.jpg", JPEG)]),
    ),
    "not a tar at all": (
        "valid tar",
        lambda: os.urandom(4096),
    ),
    "a truncated tar": (
        "no manifest|valid tar|cut short",
        lambda: tar_bytes(good_members())[:700],
    ),
}


@pytest.fixture
def identity() -> Identity:
    return Identity.generate()


def sealed_file(tmp_path: Path, plaintext: bytes, identity: Identity) -> Path:
    path = tmp_path / "sealed"
    path.write_bytes(age.encrypt(plaintext, [identity.recipient]))
    return path


def test_a_good_drop_unpacks_to_the_relay_layout(tmp_path: Path, identity: Identity) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    manifest = unpack(
        sealed_file(tmp_path, tar_bytes(good_members()), identity), folder, [identity]
    )
    assert sorted(p.name for p in folder.iterdir()) == ["message.txt", "photo-1.jpg"]
    assert (folder / "photo-1.jpg").read_bytes() == JPEG
    assert manifest["files"][0]["name"] == "photo-1.jpg"


@pytest.mark.parametrize(("reason", "build"), HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_contents_are_refused_and_nothing_escapes(
    tmp_path: Path, identity: Identity, reason: str, build: Callable[[], bytes]
) -> None:
    room = tmp_path / "room"
    folder = room / "out" / "drop"
    folder.mkdir(parents=True)
    sealed = sealed_file(tmp_path, build(), identity)
    with pytest.raises(UnsafeDrop, match=reason):
        unpack(sealed, folder, [identity])
    # Whatever it wrote is inside the drop's folder, which the caller removes.
    outside = [p for p in all_files(tmp_path) if folder not in p.parents]
    assert sorted(p.name for p in outside) == ["sealed"]
    assert not [p for p in folder.rglob("*") if p.is_symlink() or p.is_dir()]
    assert not Path(f"/tmp/{ESCAPED}").exists()


def test_a_drop_for_another_key_or_cut_short_cannot_be_decrypted(
    tmp_path: Path, identity: Identity
) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    sealed = sealed_file(tmp_path, tar_bytes(good_members()), identity)
    with pytest.raises(UserError, match="cannot decrypt"):
        unpack(sealed, folder, [Identity.generate()])
    sealed.write_bytes(sealed.read_bytes()[:-40])
    with pytest.raises(UserError, match="cannot decrypt"):
        unpack(sealed, folder, [identity])


def upload_sealed(relay_url: str, sealed: bytes, contact: str, fingerprint: str) -> None:
    """A sealed upload sent with tuspy, an independent tus client."""
    metadata = {
        "sealed": "1",
        "contacts": contact,
        "recipients": fingerprint,
        "login": secrets.token_hex(32),
        "reply": str(Identity.generate().recipient),
        "sha256": hashlib.sha256(sealed).hexdigest(),
    }
    uploader = tus_client.TusClient(relay_url + "/uploads").uploader(
        file_stream=io.BytesIO(sealed), chunk_size=1 << 20, metadata=metadata
    )
    uploader.upload()


async def test_inbox_refuses_a_hostile_drop_and_fetches_the_rest(
    setup: Setup, tmp_path: Path
) -> None:
    relay, alice = setup.relay, setup.alice
    recipient = alice.identity.identity.recipient
    hostile = age.encrypt(HOSTILE["path traversal"][1](), [recipient])
    good = age.encrypt(tar_bytes(good_members()), [recipient])
    for sealed in (hostile, good):
        await asyncio.to_thread(
            upload_sealed, relay.source_url, sealed, "the-daily", recipient.fingerprint
        )
    waiting = await listing(relay, alice)
    assert len(waiting) == 2
    hostile_id = waiting[0]["id"]

    out = tmp_path / "room" / "inbox"
    done = await asyncio.to_thread(fetch, relay, alice, out)
    assert done.returncode == 1
    assert f"drop {hostile_id}: " in done.stderr
    assert "name amanah-drop never writes; nothing of it was saved" in done.stderr
    assert "Traceback" not in done.stderr
    saved = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert saved == [waiting[1]["id"]]
    assert (out / waiting[1]["id"] / "photo-1.jpg").read_bytes() == JPEG
    assert not (out / f"{hostile_id}.partial").exists()
    assert not any(ESCAPED in str(p) for p in all_files(tmp_path))
    # Left on the relay for its operator to look at; the good one was acknowledged.
    [left] = await listing(relay, alice)
    assert left["id"] == hostile_id and left["sealed_on"] == "device"

"""The relay killed with SIGKILL (a power cut, the OOM killer) at the worst moments, then
restarted on the same data directory: no half-written drop is ever visible or delivered,
nothing of an abandoned upload stays on disk, and a drop whose receipt reached the source
is never lost."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.relayharness import (
    INBOX,
    Member,
    RelayPool,
    RelayProcess,
    Upload,
    add_contact,
    all_files,
    api_json,
    codename_of,
    error_of,
    form,
    forward_unsupported,
    fresh_csrf,
    init_data,
    keygen,
    multipart_body,
    request_head,
    run,
    scan_files,
    session_cookie,
    sha256_file,
    source_session,
    submit,
    table_rows,
    token_for,
    write_random_file,
)

MiB = 1024 * 1024
MARKER = f"CRASHMARK{secrets.token_hex(6).upper()}"


@dataclass
class Setup:
    data: Path
    members: list[Member]  # one member of each of the two contacts


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[RelayPool]:
    with RelayPool(tmp_path) as pool:
        yield pool


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    """A data directory with two contacts of one member each, made once with the CLI."""
    root = tmp_path_factory.mktemp("crash-template")
    data = root / "data"
    init_data(data)
    members = [keygen(root / "daily.txt"), keygen(root / "un.txt")]
    add_contact(data, "daily-news", members[:1])
    add_contact(data, "un-inquiry", members[1:])
    forward_unsupported(data)  # these tests send random bytes: no type the sanitizer cleans
    return Setup(data, members)


@pytest.fixture
def setup(tmp_path: Path, template: Setup) -> Setup:
    """A fresh copy of the template for one test (the identity files are only read)."""
    data = tmp_path / "data"
    shutil.copytree(template.data, data)
    return Setup(data, template.members)


def staged_sizes(data: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in (data / "staging").iterdir() if p.is_file()}


def drop_folders(data: Path) -> list[Path]:
    root = data / "blobs" / "drops"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


async def listed(relay: RelayProcess, members: list[Member]) -> list[list[str]]:
    """The drop ids each member's contact sees through the API."""
    result = []
    async with aiohttp.ClientSession() as session:
        for member in members:
            token = await token_for(session, relay.journalist_url, member.identity)
            status, body = await api_json(
                session, relay.journalist_url + "/api/v1/drops", token=token
            )
            assert status == 200, body
            result.append([d["id"] for d in body["drops"]])
    return result


def assert_nothing_stored(relay: RelayProcess, setup: Setup) -> None:
    assert staged_sizes(setup.data) == {}
    assert drop_folders(setup.data) == []
    assert all_files(setup.data / "blobs") == []
    assert table_rows(setup.data / "amanah.db", ["drops", "drop_blobs"]) == {
        "drops": [],
        "drop_blobs": [],
    }
    assert asyncio.run(listed(relay, setup.members)) == [[], []]


def fetch(relay: RelayProcess, member: Member, out: Path) -> None:
    run(
        INBOX,
        "fetch",
        "--relay",
        relay.journalist_url,
        "--identity",
        member.identity_file,
        "--out",
        out,
        timeout=300,
    )


async def upload_until_staging_grows(relay: RelayProcess, data: Path) -> dict[str, int]:
    """Starts a 256 MiB form upload and sends it 1 MiB at a time until a staged file is
    seen growing; then kills the relay (SIGKILL) mid-upload. Returns the staged sizes
    seen just before the kill."""
    async with source_session() as session:
        csrf = await fresh_csrf(session, relay.source_url)
        cookie = session_cookie(session)
    boundary = "crash" + secrets.token_hex(8)
    size = 256 * MiB
    head = multipart_body(
        boundary, [("csrf", csrf.encode(), None), ("message", MARKER.encode(), None)], close=False
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
        'filename="video.mp4"\r\n\r\n'
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    request = request_head(
        "POST",
        "/submit",
        {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": str(len(head) + size + len(tail)),
            "Cookie": cookie,
        },
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", relay.source_port)
    block = (MARKER.encode() + os.urandom(1024)) * (MiB // (len(MARKER) + 1024))
    seen: list[dict[str, int]] = []
    try:
        async with asyncio.timeout(60):
            writer.write(request + head)
            for _sent in range(size // len(block)):
                writer.write(block)
                await writer.drain()
                seen.append(staged_sizes(data))
                if len(seen) >= 2 and any(
                    0 < seen[-2].get(name, 0) < now for name, now in seen[-1].items()
                ):
                    relay.kill()
                    return seen[-1]
        raise AssertionError(f"staging never grew: {seen[-5:]}")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass
        del reader


def test_sigkill_mid_upload_leaves_no_partial_drop(
    tmp_path: Path, relays: RelayPool, setup: Setup
) -> None:
    relay = relays.new(setup.data)
    staged = asyncio.run(upload_until_staging_grows(relay, setup.data))
    assert relay.process is not None and relay.process.returncode is not None

    # What the kill left: a staged file, sealed to a key that died with the process.
    left = all_files(setup.data / "staging")
    assert [p.name for p in left] == list(staged)
    assert left[0].read_bytes()[:22] == b"age-encryption.org/v1\n"
    assert scan_files(left, [MARKER]) == []
    assert drop_folders(setup.data) == []

    relay.start()
    assert_nothing_stored(relay, setup)
    assert "abandoned upload" in relay.logs
    relay.stop()
    assert scan_files(all_files(setup.data, relays.tmpdir), [MARKER]) == []


async def upload_and_kill_while_sealing(
    relay: RelayProcess, data: Path, big: Path
) -> tuple[bool, int | None]:
    """Sends a drop at full speed and kills the relay the moment its drop folder appears
    (the sealing of blobs has begun, the drop is not yet recorded). Returns whether the
    folder was seen before the kill, and the HTTP status if a response came first."""
    async with source_session() as session:
        csrf = await fresh_csrf(session, relay.source_url)
        with big.open("rb") as f:
            sending = asyncio.create_task(
                submit(session, relay.source_url, form(csrf, MARKER, [], [Upload("v.bin", f)]))
            )
            seen = False
            while not sending.done():
                if drop_folders(data):
                    seen = True
                    relay.kill()
                    break
                await asyncio.sleep(0.002)
            try:
                status, _ = await sending
                return seen, status
            except aiohttp.ClientError:
                return seen, None


def test_sigkill_while_sealing_leaves_no_partial_drop(
    tmp_path: Path, relays: RelayPool, setup: Setup
) -> None:
    big = tmp_path / "big.bin"
    digest = write_random_file(big, 96 * MiB, MARKER.encode())
    relay = relays.new(setup.data)
    seen, status = asyncio.run(upload_and_kill_while_sealing(relay, setup.data, big))
    assert seen, "the drop folder never appeared before the response"
    relay.kill()

    relay.start()
    assert staged_sizes(setup.data) == {}
    ids = asyncio.run(listed(relay, setup.members))
    # The folder on disk and the drops listed agree: an unrecorded folder was swept.
    assert [p.name for p in drop_folders(setup.data)] == ids[0] == ids[1]
    if ids[0]:  # the kill came after the drop was recorded: then it must be whole
        out = tmp_path / "inbox"
        fetch(relay, setup.members[0], out)
        (folder,) = (p for p in out.iterdir() if not p.name.startswith("."))
        manifest = json.loads((folder / "manifest.json").read_text())
        assert sha256_file(folder / manifest["files"][0]["name"]) == digest
    else:
        assert status is None  # no receipt was given for a drop that is not there
        assert_nothing_stored(relay, setup)


async def send_and_kill_on_receipt(relay: RelayProcess, big: Path, message: str) -> str:
    async with source_session() as session:
        csrf = await fresh_csrf(session, relay.source_url)
        with big.open("rb") as f:
            data = form(csrf, message, ["daily-news", "un-inquiry"], [Upload("clip.bin", f)])
            async with session.post(relay.source_url + "/submit", data=data) as response:
                page = await response.text()
                relay.kill()  # the instant the receipt is in the source's hands
        assert response.status == 200, page
        return codename_of(page)


def test_drop_with_a_receipt_survives_sigkill(
    tmp_path: Path, relays: RelayPool, setup: Setup
) -> None:
    big = tmp_path / "clip.bin"
    digest = write_random_file(big, 8 * MiB + 7, MARKER.encode())
    message = f"received before the crash {MARKER}"
    relay = relays.new(setup.data)
    started = time.monotonic()
    codename = asyncio.run(send_and_kill_on_receipt(relay, big, message))
    assert relay.process is not None and relay.process.returncode == -9
    assert len(codename.split()) == 7
    assert time.monotonic() - started < 60

    relay.start()
    for member, name in zip(setup.members, ("daily", "un"), strict=True):
        out = tmp_path / f"inbox-{name}"
        fetch(relay, member, out)
        (folder,) = (p for p in out.iterdir() if not p.name.startswith("."))
        assert (folder / "message.txt").read_text() == message
        manifest = json.loads((folder / "manifest.json").read_text())
        (entry,) = manifest["files"]
        assert sha256_file(folder / entry["name"]) == digest
    assert drop_folders(setup.data) == []  # both contacts have it: deleted


def test_restart_sweeps_unrecorded_drop_folders(relays: RelayPool, setup: Setup) -> None:
    """What a kill between writing blobs and recording the drop leaves (made by hand
    here, to be certain of the state): an unrecorded folder, and temporaries."""
    unrecorded = setup.data / "blobs" / "drops" / secrets.token_hex(16)
    unrecorded.mkdir(parents=True)
    (unrecorded / "message").write_bytes(b"age-encryption.org/v1\n...")
    (unrecorded / ".tmp-0123456789abcdef").write_bytes(os.urandom(100))
    (setup.data / "staging" / f"{secrets.token_hex(16)}.staged").write_bytes(os.urandom(100))
    relay = relays.new(setup.data)
    assert_nothing_stored(relay, setup)


def test_restart_sweeps_temporary_reply_blobs(relays: RelayPool, setup: Setup) -> None:
    """A kill while a reply blob was being written leaves a temporary in blobs/replies."""
    replies = setup.data / "blobs" / "replies"
    replies.mkdir(parents=True, exist_ok=True)
    temporary = replies / ".tmp-0123456789abcdef"
    temporary.write_bytes(b"age-encryption.org/v1\n" + os.urandom(100))
    relays.new(setup.data)
    assert not temporary.exists()


async def submit_one(relay: RelayProcess) -> tuple[int, str]:
    async with source_session() as session:
        csrf = await fresh_csrf(session, relay.source_url)
        upload = Upload("a.bin", os.urandom(4096))
        return await submit(session, relay.source_url, form(csrf, MARKER, [], [upload]))


def test_storage_failure_mid_submission_leaves_nothing(relays: RelayPool, setup: Setup) -> None:
    relay = relays.new(setup.data)
    drops = setup.data / "blobs" / "drops"
    drops.mkdir(parents=True, exist_ok=True)
    drops.rmdir()
    drops.write_bytes(b"")  # the disk refuses the drop's folder (root ignores permissions)
    status, page = asyncio.run(submit_one(relay))
    assert status >= 500 and error_of(page), page  # the source is told it did not work
    assert MARKER not in relay.logs
    assert staged_sizes(setup.data) == {}
    assert table_rows(setup.data / "amanah.db", ["drops", "sources"]) == {
        "drops": [],
        "sources": [],
    }

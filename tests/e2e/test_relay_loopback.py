"""The whole relay on loopback, every part its own process, as an operator, a source and
two contacts would run it: `amanah init`, `amanah-inbox keygen`, `amanah contact add`,
`amanah serve --no-tor`, the source form over HTTP, `amanah-inbox fetch` and `reply`.

The judges are independent of our code where they can be: the real `age` binary opens
every stored blob, SHA-256 over the bytes compares what arrived with what was sent, and
a byte scan of the disk and of the relay's own logs looks for what must never be there.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from crypto.codename import derive_codename_keys
from tests.relayharness import (
    AGE,
    AMANAH,
    INBOX,
    USER_AGENT,
    Member,
    RelayPool,
    RelayProcess,
    Upload,
    add_contact,
    all_files,
    api_json,
    codename_of,
    form,
    forward_unsupported,
    fresh_csrf,
    init_data,
    keygen,
    login,
    replies_of,
    run,
    scan_files,
    sha256_file,
    source_session,
    submit,
    token_for,
    waiting_drops,
    write_random_file,
)

BIG_SIZE = 200 * 1024 * 1024 + 12345  # not a multiple of age's 64 KiB chunk
TOKEN = secrets.token_hex(6).upper()
MESSAGE_MARKER = f"MSGMARK{TOKEN}"
FILE_MARKERS = [f"FILEMARK{n}{TOKEN}" for n in range(3)]
NAME_MARKER = f"NAMEMARK{TOKEN}"
REPLY_MARKER = f"REPLYMARK{TOKEN}"


@dataclass(frozen=True)
class Sent:
    path: Path
    sha256: str
    size: int


def age_decrypt_sha256(identity_file: Path, blob: Path) -> tuple[str, bytes]:
    """Runs the real `age -d -i` over a blob; returns the plaintext's SHA-256 and its
    first 64 KiB (enough for a manifest or a message)."""
    digest = hashlib.sha256()
    head = b""
    with subprocess.Popen(
        [AGE, "-d", "-i", str(identity_file), str(blob)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as age:
        assert age.stdout is not None and age.stderr is not None
        while block := age.stdout.read(1 << 20):
            digest.update(block)
            if len(head) < 1 << 16:
                head += block[: (1 << 16) - len(head)]
        error = age.stderr.read()
    assert age.returncode == 0, f"age -d failed on {blob.name}: {error!r}"
    return digest.hexdigest(), head


def drop_folders(data: Path) -> list[Path]:
    root = data / "blobs" / "drops"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def received(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def fetch(relay: RelayProcess, member: Member, out: Path) -> subprocess.CompletedProcess[str]:
    return run(
        INBOX,
        "fetch",
        "--relay",
        relay.journalist_url,
        "--identity",
        member.identity_file,
        "--out",
        out,
        check=False,
        timeout=300,
    )


def inspect_stored_drop(
    folder: Path, members: list[Member], message: str, sent: list[Sent]
) -> dict[str, str]:
    """Every blob of the drop, opened by the real `age` with every addressed member's
    identity file. Returns blob name -> SHA-256 of the sealed file."""
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(["manifest", "message"] + [f"item-{n}" for n in (1, 2, 3)]), names
    manifest: dict[str, Any] | None = None
    for member in members:
        _, head = age_decrypt_sha256(member.identity_file, folder / "manifest")
        manifest = json.loads(head)
        _, text = age_decrypt_sha256(member.identity_file, folder / "message")
        assert text.decode("utf-8") == message
        for position, each in enumerate(sent, start=1):
            digest, _ = age_decrypt_sha256(member.identity_file, folder / f"item-{position}")
            assert digest == each.sha256, f"item-{position} opened by age differs from sent"
    assert manifest is not None
    assert [f["sha256"] for f in manifest["files"]] == [s.sha256 for s in sent]
    assert [f["size"] for f in manifest["files"]] == [s.size for s in sent]
    return {name: sha256_file(folder / name) for name in names}


def check_received(out: Path, drop_id: str, message: str, sent: list[Sent]) -> dict[str, Any]:
    """The drop as `amanah-inbox fetch` saved it: message and every file byte for byte."""
    (folder,) = received(out)
    assert folder.name == drop_id
    manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    assert (folder / "message.txt").read_text(encoding="utf-8") == message
    files = manifest["files"]
    assert len(files) == len(sent)
    for entry, each in zip(files, sent, strict=True):
        path = folder / entry["name"]
        assert NAME_MARKER not in entry["name"]
        assert path.stat().st_size == each.size
        assert sha256_file(path) == each.sha256, f"{entry['name']} differs from what was sent"
    return manifest


async def send_drop(relay: RelayProcess, message: str, uploads: list[Upload]) -> str:
    async with source_session() as session:
        csrf = await fresh_csrf(session, relay.source_url)
        status, page = await submit(
            session,
            relay.source_url,
            form(csrf, message, ["daily-news", "un-inquiry"], uploads),
        )
        assert status == 200, page
        assert "daily-news" in page and "un-inquiry" in page
        return codename_of(page)


async def waiting(relay: RelayProcess, member: Member) -> list[str]:
    return [drop["id"] for drop in await waiting_drops(relay, member)]


async def read_replies(relay: RelayProcess, codename: str) -> list[str]:
    async with source_session() as session:  # a fresh cookie: a new visit
        status, page = await login(session, relay.source_url, codename)
        assert status == 200, page
        return replies_of(page)


@pytest.mark.slow
def test_full_run_on_loopback(tmp_path: Path, relays: RelayPool) -> None:
    data = tmp_path / "data"
    keys = tmp_path / "keys"
    keys.mkdir()
    init_data(data)
    daily = [keygen(keys / "daily-1.txt"), keygen(keys / "daily-2.txt")]
    un = [keygen(keys / "un-1.txt"), keygen(keys / "un-2.txt")]
    add_contact(data, "daily-news", daily)
    add_contact(data, "un-inquiry", un)
    forward_unsupported(data)  # the files below are random bytes: no type to clean

    # What the source sends: a ~200 MB file, a small text file, a small binary; each with
    # a marker, and a browser-side filename with a marker of its own.
    outgoing = tmp_path / "outgoing"
    outgoing.mkdir()
    sent = []
    big = outgoing / "big.bin"
    sent.append(Sent(big, write_random_file(big, BIG_SIZE, FILE_MARKERS[0].encode()), BIG_SIZE))
    notes = outgoing / "notes.txt"
    notes.write_text(f"Notes from the checkpoint.\n{FILE_MARKERS[1]}\nEnd of notes.\n")
    sent.append(Sent(notes, sha256_file(notes), notes.stat().st_size))
    small = outgoing / "small.bin"
    small.write_bytes(bytes(range(256)) + FILE_MARKERS[2].encode() + secrets.token_bytes(3000))
    sent.append(Sent(small, sha256_file(small), small.stat().st_size))
    message = f"شهادة من المدينة\nWhat I saw on the 4th: {MESSAGE_MARKER}.\nالنهاية"

    relay = relays.new(data)
    with big.open("rb") as big_file:
        uploads = [
            Upload(f"VID_{NAME_MARKER}.bin", big_file),
            Upload(f"notes-{NAME_MARKER}.txt", notes.read_bytes(), "text/plain"),
            Upload(f"{NAME_MARKER}.bin", small.read_bytes()),
        ]
        codename = asyncio.run(send_drop(relay, message, uploads))
    assert len(codename.split()) == 7, codename
    assert not any((data / "staging").iterdir()), "staging not cleaned after the drop"

    # While the relay holds the drop: every blob opens with the real age, for every member.
    (folder,) = drop_folders(data)
    drop_id = folder.name
    sealed = inspect_stored_drop(folder, daily + un, message, sent)
    assert asyncio.run(waiting(relay, daily[1])) == [drop_id]
    assert asyncio.run(waiting(relay, un[1])) == [drop_id]

    # The first contact fetches: the drop stays for the second, untouched.
    out_daily = tmp_path / "inbox-daily"
    done = fetch(relay, daily[0], out_daily)
    assert done.returncode == 0, done.stderr
    check_received(out_daily, drop_id, message, sent)
    assert asyncio.run(waiting(relay, daily[1])) == []
    assert drop_folders(data) == [folder]
    assert {n: sha256_file(folder / n) for n in sealed} == sealed
    assert asyncio.run(waiting(relay, un[0])) == [drop_id]

    # The second contact fetches: the last acknowledgement deletes the drop.
    out_un = tmp_path / "inbox-un"
    done = fetch(relay, un[0], out_un)
    assert done.returncode == 0, done.stderr
    manifest = check_received(out_un, drop_id, message, sent)
    assert drop_folders(data) == []
    assert asyncio.run(waiting(relay, un[1])) == []

    # A reply, sealed on the contact's machine; the real age opens it with the reply key
    # the codename derives; the source reads it after logging in with the codename.
    reply_text = f"Thank you. We are verifying it. {REPLY_MARKER} <b>&amp;</b>"
    done = run(
        INBOX,
        "reply",
        drop_id,
        "-m",
        reply_text,
        "--relay",
        relay.journalist_url,
        "--identity",
        daily[0].identity_file,
        "--out",
        out_daily,
    )
    (reply_blob,) = all_files(data / "blobs" / "replies")
    salt = bytes.fromhex((data / "keys" / "codename.salt").read_text().strip())
    reply_keys = derive_codename_keys(codename, salt)
    assert manifest["reply"]["recipient"] == str(reply_keys.reply_identity.recipient)
    reply_identity = tmp_path / "reply-identity.txt"
    reply_identity.write_text(reply_keys.reply_identity.encode() + "\n")
    _, plain = age_decrypt_sha256(reply_identity, reply_blob)
    assert plain.decode("utf-8") == reply_text
    assert asyncio.run(read_replies(relay, codename)) == [reply_text]

    assert relay.stop() == 0

    # Nothing a source sent is anywhere on the relay's disk or in its temp directory, in
    # ASCII/UTF-8 or UTF-16-LE; nor the codename.
    secrets_on_disk = [MESSAGE_MARKER, NAME_MARKER, REPLY_MARKER, codename, *FILE_MARKERS]
    scanned = all_files(data, relays.tmpdir)
    assert any(p.name == "amanah.db" for p in scanned)
    assert scan_files(scanned, secrets_on_disk) == []

    # Nor in its logs: no content, no codename, no member card, no browser user agent.
    logs = relay.logs
    assert "serving sources" in logs  # the logs were captured
    for needle in [*secrets_on_disk, USER_AGENT, "AmanahTest", *(m.card for m in daily + un)]:
        assert needle not in logs, f"the relay logged {needle!r}"
    words = codename.split()
    for first, second in zip(words, words[1:], strict=False):
        for separator in (" ", "-", "+", "%20"):
            assert f"{first}{separator}{second}" not in logs
    assert "Traceback" not in logs
    # The only addresses in the log are the relay's own listening ones, never a client's.
    ports = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", logs)}
    assert ports <= {relay.source_port, relay.journalist_port}, ports


def status_json(data: Path) -> dict[str, Any]:
    done = run(AMANAH, "status", "--json", "--data", data)
    status = json.loads(done.stdout)
    assert isinstance(status, dict)
    return status


async def submit_small(relay: RelayProcess) -> None:
    async with source_session() as session:
        csrf = await fresh_csrf(session, relay.source_url)
        status, page = await submit(session, relay.source_url, form(csrf, "a short note"))
        assert status == 200, page


async def drops_status_with_token(relay: RelayProcess, token: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        return await api_json(session, relay.journalist_url + "/api/v1/drops", token=token)


async def member_token(relay: RelayProcess, member: Member) -> str:
    async with aiohttp.ClientSession() as session:
        return await token_for(session, relay.journalist_url, member.identity)


def test_removed_member_cannot_fetch_and_status_json(tmp_path: Path, relays: RelayPool) -> None:
    data = tmp_path / "data"
    init_data(data)
    daily = keygen(tmp_path / "daily.txt")
    un = keygen(tmp_path / "un.txt")
    add_contact(data, "daily-news", [daily])
    add_contact(data, "un-inquiry", [un])
    relay = relays.new(data)

    asyncio.run(submit_small(relay))  # no contact named: addressed to every contact
    status = status_json(data)
    assert status["contacts"] == {
        "daily-news": {"members": 1, "waiting": 1},
        "un-inquiry": {"members": 1, "waiting": 1},
    }
    assert status["data_dir"] == str(data.resolve())
    assert isinstance(status["directory_version"], int)

    token = asyncio.run(member_token(relay, daily))
    assert asyncio.run(drops_status_with_token(relay, token))[0] == 200

    done = run(AMANAH, "contact", "remove", "daily-news", "--data", data)
    assert "removed daily-news" in done.stdout

    # Removal revokes at once: the token held before is refused, and a fresh login fails.
    refused, body = asyncio.run(drops_status_with_token(relay, token))
    assert refused == 401, body
    out = tmp_path / "inbox-daily"
    done = fetch(relay, daily, out)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert lines and lines[0].startswith("amanah-inbox: error:"), done.stderr
    assert "401" in lines[0]
    assert "Traceback" not in done.stderr
    assert not out.exists() or received(out) == []

    status = status_json(data)
    assert status["contacts"] == {"un-inquiry": {"members": 1, "waiting": 1}}

    # The contact that remains still gets the drop; then nothing waits.
    out = tmp_path / "inbox-un"
    done = fetch(relay, un, out)
    assert done.returncode == 0, done.stderr
    (folder,) = received(out)
    assert (folder / "message.txt").read_text() == "a short note"
    assert status_json(data)["contacts"] == {"un-inquiry": {"members": 1, "waiting": 0}}


def test_the_marker_scan_sees_what_it_looks_for(tmp_path: Path) -> None:
    """The judge of the scans above, judged: markers at the start, middle and end of a
    generated file, and a UTF-16-LE one straddling the scanner's 4 MiB read boundary."""
    marker = f"SELFTEST{TOKEN}"
    generated = tmp_path / "generated.bin"
    write_random_file(generated, 5 * 1024 * 1024 + 3, marker.encode())
    content = generated.read_bytes()
    assert content.startswith(marker.encode()) and content.endswith(marker.encode())
    assert content.count(marker.encode()) == 3
    wide = marker.encode("utf-16-le")
    straddling = tmp_path / "straddling.bin"
    straddling.write_bytes(bytes(4 * 1024 * 1024 - 5) + wide + bytes(10))
    assert scan_files([generated, straddling], [marker, "ABSENT" + TOKEN]) == [
        f"{generated}: {marker}",
        f"{straddling}: {marker} (UTF-16-LE)",
    ]


def gps_photo(path: Path) -> Path:
    """A small JPEG carrying GPS, a camera make and model, and a serial number."""
    Image.new("RGB", (320, 240), (40, 120, 200)).save(path, quality=90)
    run(
        "exiftool",
        "-overwrite_original",
        "-GPSLatitude=33.5138",
        "-GPSLatitudeRef=N",
        "-GPSLongitude=36.2765",
        "-GPSLongitudeRef=E",
        "-Make=MarkerCamMaker",
        "-Model=MarkerModel9000",
        "-SerialNumber=SN0042424242",
        path,
    )
    return path


def test_originals_reach_only_contacts_that_accept_them(tmp_path: Path, relays: RelayPool) -> None:
    """The source ticks "also send the originals": the investigator (accepts originals)
    receives the photo stripped and the original with its GPS, through amanah-inbox; the
    newsroom receives the stripped photo only."""
    data = tmp_path / "data"
    init_data(data)
    un, daily = keygen(tmp_path / "un.txt"), keygen(tmp_path / "daily.txt")
    run(
        AMANAH,
        "contact",
        "add",
        "un-inquiry",
        "--member",
        un.card,
        "--accepts-originals",
        "--data",
        data,
    )
    add_contact(data, "daily-news", [daily])
    photo = gps_photo(tmp_path / "camera.jpg")
    relay = relays.new(data)

    async def send() -> None:
        async with source_session() as session:
            csrf = await fresh_csrf(session, relay.source_url)
            fields = form(
                csrf,
                "see attached",
                ["un-inquiry", "daily-news"],
                [Upload("x.jpg", photo.read_bytes(), "image/jpeg")],
            )
            fields.add_field("originals", "yes")
            status, page = await submit(session, relay.source_url, fields)
            assert status == 200, page

    async def original_as_seen_by(member: Member) -> tuple[bool, int]:
        """(whether the listing names original-1, the status of asking for it anyway)."""
        (drop,) = await waiting_drops(relay, member)
        listed = "original-1" in [blob["name"] for blob in drop["blobs"]]
        async with aiohttp.ClientSession() as session:
            token = await token_for(session, relay.journalist_url, member.identity)
            url = f"{relay.journalist_url}/api/v1/drops/{drop['id']}/blobs/original-1"
            status, _ = await api_json(session, url, token=token)
        return listed, status

    asyncio.run(send())
    assert asyncio.run(original_as_seen_by(un)) == (True, 200)
    assert asyncio.run(original_as_seen_by(daily)) == (False, 404)  # not served either
    for member, expect_original in ((un, True), (daily, False)):
        out = tmp_path / f"out-{member.identity_file.stem}"
        done = fetch(relay, member, out)
        assert done.returncode == 0, done.stderr
        (folder,) = received(out)
        names = sorted(p.name for p in folder.iterdir())
        assert ("original-1.jpg" in names) is expect_original, names
        assert "photo-1.jpg" in names
        assert b"MarkerCamMaker" not in (folder / "photo-1.jpg").read_bytes()
        if expect_original:
            assert (folder / "original-1.jpg").read_bytes() == photo.read_bytes()


def test_the_relay_strips_a_photo_and_refuses_what_it_cannot_clean(
    tmp_path: Path, relays: RelayPool
) -> None:
    """The sanitizer in the relay, at its defaults: a camera photo with GPS arrives without
    it (exiftool judges), and an unknown binary in the same submission is refused by its
    position while the rest of the drop goes through."""
    data = tmp_path / "data"
    init_data(data)
    member = keygen(tmp_path / "daily.txt")
    add_contact(data, "daily-news", [member])
    photo = gps_photo(tmp_path / "camera.jpg")
    relay = relays.new(data)

    async def send() -> str:
        async with source_session() as session:
            csrf = await fresh_csrf(session, relay.source_url)
            uploads = [
                Upload("holiday.jpg", photo.read_bytes(), "image/jpeg"),
                Upload("notes.bin", os.urandom(5000)),
            ]
            status, page = await submit(session, relay.source_url, form(csrf, None, [], uploads))
            assert status == 200, page
            return page

    page = asyncio.run(send())
    assert "Not sent" in page and "file 2" in page  # refused by position, never by name
    assert "notes.bin" not in page
    out = tmp_path / "out"
    assert fetch(relay, member, out).returncode == 0
    (folder,) = received(out)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [f["name"] for f in manifest["files"]] == ["photo-1.jpg"]
    assert manifest["files"][0]["metadata"]["stripped"] is True
    assert any("GPS" in name for name in manifest["files"][0]["metadata"]["removed"])
    tags = json.loads(run("exiftool", "-j", "-a", "-G1", "-s", folder / "photo-1.jpg").stdout)[0]
    leaked = [k for k in tags if "GPS" in k or k.endswith(("Make", "Model", "SerialNumber"))]
    assert leaked == []
    stored = (folder / "photo-1.jpg").read_bytes()
    for marker in (b"MarkerCamMaker", b"MarkerModel9000", b"SN0042424242"):
        assert marker not in stored

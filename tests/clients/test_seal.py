"""`amanah-drop seal`: a drop stripped and sealed on the source's device, judged with the
real `age` and `tar` (a contact needs nothing of ours to open it) and exiftool."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import BinaryIO

import pytest

from clients import sealing
from crypto.keys import Identity
from relay.sanitize import Stripping
from relay.staging import SealedReader
from tests.clients.harness import AGE, Setup, codename_line, run_drop, sha256_file
from tests.relayharness import all_files, scan_files
from tests.sanitize import judge, samples

MESSAGE = "the checkpoint at dawn, AmanahSecretMessage"


def open_with_stock_tools(sealed: Path, identity: Path, into: Path) -> str:
    """`age -d -i identity sealed | tar x` into `into`; returns `tar tv`'s listing."""
    into.mkdir()
    age = subprocess.run(
        [AGE, "-d", "-i", str(identity), str(sealed)], capture_output=True, check=True
    )
    subprocess.run(["tar", "x", "-C", str(into)], input=age.stdout, check=True)
    listing = subprocess.run(["tar", "tv"], input=age.stdout, capture_output=True, check=True)
    return listing.stdout.decode()


def test_sealed_drop_opens_with_age_and_tar(setup: Setup, tmp_path: Path) -> None:
    photo = samples.jpeg(tmp_path)
    script = tmp_path / "AmanahFileName.sh"
    script.write_text("#!/bin/sh\necho AmanahScriptBody\n")
    sealed = tmp_path / "out" / "drop.age"
    sealed.parent.mkdir()
    done = run_drop(
        "seal", "--relay", setup.relay.source_url, "--to", "the-daily", "-m", MESSAGE,
        photo, script, "-o", sealed, state=tmp_path / "state",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    codename = codename_line(done.stdout)
    # The refused file is named by position only, and left out.
    assert "file 2: " in done.stderr and "left out" in done.stderr
    assert "AmanahFileName" not in done.stderr + done.stdout

    opened = tmp_path / "opened"
    listing = open_with_stock_tools(sealed, setup.alice.identity_file, opened)
    assert sorted(p.name for p in opened.iterdir()) == [
        "item-1.jpg",
        "manifest.json",
        "message.txt",
    ]
    # Deterministic headers: root-owned, 0600, the epoch; no names of the source's.
    for line in listing.splitlines():
        assert line.startswith("-rw------- 0/0 "), listing
        assert "1970-01-01 00:00" in line, listing
    assert (opened / "message.txt").read_text() == MESSAGE
    item = opened / "item-1.jpg"
    assert judge.unexpected_tags(item) == {}
    assert not judge.strings_found(item.read_bytes(), set(samples.MARKERS))

    manifest = json.loads((opened / "manifest.json").read_text())
    assert manifest["sealed_on"] == "device"
    assert manifest["reply"]["recipient"].startswith("age1")
    assert manifest["reply"]["handle"] is None
    [entry] = manifest["files"]
    assert entry["blob"] == "item-1.jpg" and entry["name"] == "photo-1.jpg"
    assert entry["detected_type"] == "image/jpeg"
    assert entry["original_sha256"] == sha256_file(photo)
    assert entry["sha256"] == sha256_file(item) and entry["size"] == item.stat().st_size
    assert entry["metadata"]["stripped"] and entry["metadata"]["removed"]
    assert [r["position"] for r in manifest["refused"]] == [2]
    assert "AmanahFileName" not in (opened / "manifest.json").read_text()

    # The route beside it: enough to deliver, nothing to read.
    route = json.loads((tmp_path / "out" / "drop.age.route").read_text())
    assert route["contacts"] == ["the-daily"]
    assert route["recipients"] == [setup.alice.identity.identity.recipient.fingerprint]
    assert route["size"] == sealed.stat().st_size
    # Only alice's key opens it: bob's contact was not addressed.
    other = subprocess.run(
        [AGE, "-d", "-i", str(setup.bob.identity_file), str(sealed)], capture_output=True
    )
    assert other.returncode != 0
    # Nothing written on this device holds the message, the codename, a file name or
    # the photo's metadata: only ciphertext and routing.
    written = all_files(tmp_path / "out", tmp_path / "state")
    needles = [MESSAGE, codename, "AmanahFileName", "AmanahScriptBody", *samples.MARKERS]
    assert scan_files(written, needles) == []


def test_nothing_to_send_writes_nothing(setup: Setup, tmp_path: Path) -> None:
    script = tmp_path / "notes.sh"
    script.write_text("#!/bin/sh\n")
    sealed = tmp_path / "drop.age"
    done = run_drop(
        "seal", "--relay", setup.relay.source_url, script, "-o", sealed, state=tmp_path / "s"
    )
    assert done.returncode == 1
    assert "nothing could be sent: file 1:" in done.stderr
    assert done.stdout == ""  # no codename for a drop that does not exist
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.sh", "s"]
    empty = run_drop("seal", "--relay", setup.relay.source_url, "-o", sealed, state=tmp_path / "s")
    assert empty.returncode == 1 and "nothing to send" in empty.stderr


def test_existing_output_is_never_overwritten(setup: Setup, tmp_path: Path) -> None:
    sealed = tmp_path / "drop.age"
    sealed.write_bytes(b"precious")
    done = run_drop(
        "seal", "--relay", setup.relay.source_url, "-m", "hi", "-o", sealed, state=tmp_path / "s"
    )
    assert done.returncode == 1 and "exists already" in done.stderr
    assert sealed.read_bytes() == b"precious"


def test_unknown_contact_and_bad_message_are_clear_errors(setup: Setup, tmp_path: Path) -> None:
    out = tmp_path / "drop.age"
    relay = setup.relay.source_url
    unknown = run_drop("seal", "--relay", relay, "--to", "nobody", "-m", "x", "-o", out,
                       state=tmp_path / "s")  # fmt: skip
    assert unknown.returncode == 1
    assert "no contact 'nobody'" in unknown.stderr and "the-daily" in unknown.stderr
    control = run_drop("seal", "--relay", relay, "-m", "bell\x07", "-o", out, state=tmp_path / "s")
    assert control.returncode == 1 and "control characters" in control.stderr
    assert not out.exists()
    for done in (unknown, control):
        assert "Traceback" not in done.stderr


def test_a_relay_reached_other_than_through_tor_is_refused(tmp_path: Path) -> None:
    done = run_drop(
        "seal", "--relay", "http://relay.example.org", "-m", "x", "-o", tmp_path / "d.age",
        state=tmp_path / "s",
    )  # fmt: skip
    assert done.returncode == 1
    assert ".onion" in done.stderr and "internet address" in done.stderr


def test_help_answers_with_examples() -> None:
    for command in ("seal", "send"):
        done = run_drop(command, "--help", state=Path("/nonexistent"))
        assert done.returncode == 0
        assert "example" in done.stdout and "--codename-prompt" in done.stdout


def test_a_cleaned_file_waits_sealed_in_an_unnamed_spool(tmp_path: Path) -> None:
    """Before the tar takes it, each cleaned file waits on disk in the spool folder, sealed
    to a key of its own: no plaintext there, nothing left behind, and the drop holds the
    cleaned file whole."""
    video = samples.mp4(tmp_path)
    spool = tmp_path / "spool"
    spool.mkdir()
    contact = Identity.generate()
    seen: list[tuple[str, bytes]] = []

    def look_then_read(file: BinaryIO, identities: list[Identity]) -> SealedReader:
        fd = file.fileno()
        seen.append((os.readlink(f"/proc/self/fd/{fd}"), os.pread(fd, 1 << 24, 0)))
        return SealedReader(file, identities)

    sealed = tmp_path / "drop.age"
    with pytest.MonkeyPatch.context() as patch, sealed.open("wb") as out:
        patch.setattr(sealing, "SealedReader", look_then_read)
        sealing.seal(
            out, [contact.recipient], [video], None, str(contact.recipient), 1, Stripping(), 0,
            spool=spool,
        )  # fmt: skip
    assert list(spool.iterdir()) == []
    [(where, spooled)] = seen
    assert where.startswith(f"{spool}/") and where.endswith("(deleted)"), where

    identity = tmp_path / "identity.txt"
    identity.write_text(f"{contact.encode()}\n")
    opened = tmp_path / "opened"
    open_with_stock_tools(sealed, identity, opened)
    item = (opened / "item-1.mp4").read_bytes()
    [entry] = json.loads((opened / "manifest.json").read_text())["files"]
    assert entry["sha256"] == hashlib.sha256(item).hexdigest() and entry["size"] == len(item)
    assert spooled.startswith(b"age-encryption.org/v1\n")
    assert len(spooled) > len(item)  # the whole file went through the spool
    for start in range(0, len(item) - 64, len(item) // 16):
        assert item[start : start + 64] not in spooled


def test_a_spool_changed_on_disk_stops_the_sealing_clearly(tmp_path: Path) -> None:
    """Hostile: another program of the same user flips a byte of the spool before the tar
    reads it back. The sealing stops with a message that says so; no tampered bytes go in."""
    contact = Identity.generate()

    def tamper_then_read(file: BinaryIO, identities: list[Identity]) -> SealedReader:
        fd = file.fileno()
        middle = os.fstat(fd).st_size // 2
        os.pwrite(fd, bytes([os.pread(fd, 1, middle)[0] ^ 1]), middle)
        return SealedReader(file, identities)

    with (
        pytest.MonkeyPatch.context() as patch,
        (tmp_path / "drop.age").open("wb") as out,
        pytest.raises(sealing.SealError, match="file 1: its cleaned copy was changed on disk"),
    ):
        patch.setattr(sealing, "SealedReader", tamper_then_read)
        sealing.seal(
            out, [contact.recipient], [samples.jpeg(tmp_path)], None, str(contact.recipient),
            1, Stripping(), 0, spool=tmp_path,
        )  # fmt: skip

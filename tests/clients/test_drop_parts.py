"""The parts of `amanah-drop` that need no relay: addressing from a directory, the route
file, the outbox on disk, and the message's normalisation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clients import outbox, sealing
from clients.common import UserError
from clients.drop import DropError, address
from crypto.card import MemberIdentity
from crypto.directory import Contact, Directory

SALT = bytes(16)


def directory(members_per_contact: int, contacts: int = 1, salt: bytes | None = SALT) -> Directory:
    return Directory(
        1,
        0,
        tuple(
            Contact(
                f"desk-{n}",
                "",
                tuple(MemberIdentity.generate().card for _ in range(members_per_contact)),
            )
            for n in range(contacts)
        ),
        {},
        salt,
    )


def test_every_member_key_of_the_named_contacts_is_a_recipient() -> None:
    listed = directory(2, contacts=3)
    chosen = address(listed, ["desk-2", "desk-0", "desk-2"])
    assert chosen.contacts == ("desk-2", "desk-0")
    expected = [c.recipient for name in ("desk-2", "desk-0") for c in listed.contact(name).members]  # type: ignore[union-attr]
    assert list(chosen.recipients) == expected
    assert address(listed, []).contacts == ("desk-0", "desk-1", "desk-2")


def test_addressing_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(DropError, match="codename salt"):
        address(directory(1, salt=None), [])
    with pytest.raises(DropError, match="no contacts yet"):
        address(Directory(1, 0, (), {}, SALT), [])
    with pytest.raises(DropError, match="more than one upload can name"):
        address(directory(90), [])  # the relay reads 4 KiB of upload metadata
    assert len(address(directory(80), []).recipients) == 80


def test_a_damaged_route_file_is_refused(tmp_path: Path) -> None:
    sealed = tmp_path / "drop.age"
    route = outbox.Route(("desk",), ("a" * 32,), 3, "b" * 64, "age1" + "q" * 58, "c" * 64, 10)
    outbox.write_route(sealed, route)
    assert outbox.read_route(sealed) == route
    path = tmp_path / "drop.age.route"
    value = json.loads(path.read_text())
    changes: list[dict[str, object]] = [
        {"login": "short"},
        {"recipients": []},
        {"size": -1},
        {"format": "x"},
    ]
    for change in changes:
        path.write_text(json.dumps({**value, **change}))
        with pytest.raises(UserError, match="damaged"):
            outbox.read_route(sealed)
    path.unlink()
    with pytest.raises(UserError, match="no drop.age.route"):
        outbox.read_route(sealed)


def test_the_outbox_finds_the_same_command_and_drops_damaged_folders(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")
    described = outbox.describe_command("http://127.0.0.1:1", ["b", "a"], "hi", [photo], False)
    pending = outbox.new_pending(tmp_path, "http://127.0.0.1:1", described)
    assert pending.folder.name.startswith(".sealing-")
    assert outbox.pending_uploads(tmp_path) == []  # not yet published
    Path(pending.ciphertext).write_bytes(b"ciphertext")
    outbox.publish(pending)
    [found] = outbox.pending_uploads(tmp_path)
    assert found.folder == pending.folder and Path(found.ciphertext).exists()
    same = outbox.describe_command("http://127.0.0.1:1/", ["a", "b"], "hi", [photo], False)
    assert found.matches(same)
    other_message = outbox.describe_command("http://127.0.0.1:1", ["a", "b"], "ho", [photo], False)
    assert not found.matches(other_message)
    os.utime(photo, ns=(1, 1))  # the file changed since
    changed = outbox.describe_command("http://127.0.0.1:1", ["a", "b"], "hi", [photo], False)
    assert not found.matches(changed)
    # No message, no file name in what is kept.
    kept = (found.folder / "upload.json").read_text()
    assert "hi" not in json.loads(kept).values() and "photo" not in kept
    # One run at a time per upload.
    with found.locked() as first, found.locked() as second:
        assert first and not second
    (found.folder / "upload.json").write_text("{")
    assert outbox.pending_uploads(tmp_path) == []
    assert not found.folder.exists()


def test_messages_are_normalised_and_bounded() -> None:
    assert sealing.normalise_message("  e\u0301te\r\nline  ") == "\u00e9te\nline"
    with pytest.raises(sealing.SealError, match="control"):
        sealing.normalise_message("a\x1b[2Jb")
    with pytest.raises(sealing.SealError, match="longer"):
        sealing.normalise_message("x" * (sealing.MAX_MESSAGE_BYTES + 1))

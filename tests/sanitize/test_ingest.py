"""The sanitizer inside the relay's ingest: a refused file is left out and named by its
position while the rest of the drop is sealed; the manifest records types, hashes and the
names of what was removed; the evidence original goes only to contacts that accept it."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from crypto import age
from crypto.errors import AgeError
from crypto.keys import Identity
from relay import ingest
from relay.errors import ClientError
from relay.sanitize import Stripping
from relay.staging import StagedFile, StagingArea
from relay.store import Contact, Member
from tests.sanitize import samples


def _contact(name: str, identity: Identity, accepts_originals: bool) -> Contact:
    member = Member(f"fp-{name}", name, "card", str(identity.recipient), "verify")
    return Contact(name, "", None, accepts_originals, (member,))


def _stage(area: StagingArea, data: bytes) -> StagedFile:
    staged = area.create()
    staged.write(data)
    staged.close()
    return staged


@pytest.fixture
def parties() -> tuple[Identity, Identity, ingest.Routing]:
    newsroom, investigators = Identity.generate(), Identity.generate()
    contacts = [_contact("daily", newsroom, False), _contact("un", investigators, True)]
    return newsroom, investigators, ingest.route(contacts, [])


def _open(root: Path, drop_id: str, blob: str, identity: Identity) -> bytes:
    sealed = (root / ingest.drop_path(drop_id) / blob).read_bytes()
    return age.decrypt(sealed, [identity])


def test_refusal_originals_and_manifest(
    parties: tuple[Identity, Identity, ingest.Routing], stripping: Stripping, tmp_path: Path
) -> None:
    newsroom, investigators, routing = parties
    area = StagingArea(tmp_path / "staging")
    area.wipe()
    photo = samples.jpeg(tmp_path).read_bytes()
    # Seeded: os.urandom's bytes begin with "MZ" once in 65,536 runs, which libmagic
    # calls a DOS executable (seen in CI).
    staged = [_stage(area, photo), _stage(area, random.Random(2026).randbytes(5000))]
    root = tmp_path / "blobs"
    sealed = ingest.seal_drop(
        root, "d1", 0, "hello", staged, routing, stripping, None, send_originals=True
    )
    assert [r.position for r in sealed.refusals] == [2]
    assert sealed.refusals[0].for_source().startswith("file 2: ")
    names = {b.name for b in sealed.blobs}
    assert names == {"manifest", "message", "item-1", "original-1"}

    document = json.loads(_open(root, "d1", "manifest", newsroom))
    (entry,) = document["files"]
    assert entry["detected_type"] == "image/jpeg" and entry["name"] == "photo-1.jpg"
    assert entry["original_sha256"] == hashlib.sha256(photo).hexdigest()
    assert entry["original_size"] == len(photo)
    assert entry["metadata"]["stripped"] and "GPS GPSLatitude" in entry["metadata"]["removed"]
    assert entry["original"] == {"blob": "original-1", "contacts": ["un"]}
    assert document["refused"] == [
        {"position": 2, "detected_type": "application/octet-stream", "reason": "unsupported"}
    ]
    cleaned = _open(root, "d1", "item-1", newsroom)
    assert hashlib.sha256(cleaned).hexdigest() == entry["sha256"]
    assert not any(m.encode() in cleaned for m in samples.MARKERS)
    assert _open(root, "d1", "original-1", investigators) == photo
    with pytest.raises(AgeError):
        _open(root, "d1", "original-1", newsroom)


def test_the_manifest_gives_the_delivered_type_beside_the_detected_one(
    parties: tuple[Identity, Identity, ingest.Routing], stripping: Stripping, tmp_path: Path
) -> None:
    """A HEIC is delivered as a JPEG: `type` and the name say so, `detected_type` keeps
    what the source sent (the device-sealed manifest says the same)."""
    newsroom, _, routing = parties
    area = StagingArea(tmp_path / "staging")
    area.wipe()
    staged = [_stage(area, samples.heic(tmp_path).read_bytes())]
    root = tmp_path / "blobs"
    ingest.seal_drop(root, "d3", 0, None, staged, routing, stripping, None)
    (entry,) = json.loads(_open(root, "d3", "manifest", newsroom))["files"]
    assert entry["detected_type"] == "image/heic"
    assert entry["type"] == "image/jpeg" and entry["name"] == "photo-1.jpg"
    assert _open(root, "d3", "item-1", newsroom)[:3] == b"\xff\xd8\xff"


def test_originals_are_off_by_default(
    parties: tuple[Identity, Identity, ingest.Routing], stripping: Stripping, tmp_path: Path
) -> None:
    _, _, routing = parties
    area = StagingArea(tmp_path / "staging")
    area.wipe()
    staged = [_stage(area, samples.jpeg(tmp_path).read_bytes())]
    sealed = ingest.seal_drop(tmp_path / "blobs", "d2", 0, None, staged, routing, stripping, None)
    assert {b.name for b in sealed.blobs} == {"manifest", "item-1"}


def test_a_drop_with_nothing_left_is_refused_whole(
    parties: tuple[Identity, Identity, ingest.Routing], stripping: Stripping, tmp_path: Path
) -> None:
    _, _, routing = parties
    area = StagingArea(tmp_path / "staging")
    area.wipe()
    staged = [_stage(area, b"#!/bin/sh\necho hi\n"), _stage(area, os.urandom(100))]
    root = tmp_path / "blobs"
    with pytest.raises(ClientError) as caught:
        ingest.seal_drop(root, "d3", 0, None, staged, routing, stripping, None)
    assert "file 1: " in str(caught.value) and "file 2: " in str(caught.value)
    assert not (root / ingest.drop_path("d3")).exists()

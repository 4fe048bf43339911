"""Ingest: from staged uploads to a stored drop. The decisions are plain functions
(routing, names, the manifest); `seal_items` is the blocking pipeline a worker thread runs.

A drop on disk is a folder of age files, each sealed to every member key of every
addressed contact:

    blobs/drops/<id>/manifest    what the drop holds (JSON): types, sizes, hashes, and
                                 what the sanitizer removed (or that it removed nothing)
    blobs/drops/<id>/message     the source's text, if any (UTF-8, NFC)
    blobs/drops/<id>/item-N      the N-th file, after the sanitizer

Rules:
- nothing is recorded in the database until every blob of the drop is fsynced and renamed
  into place, so a crash leaves at most an unrecorded folder (swept at start-up), never a
  half-written drop that a contact could fetch;
- every name in a drop is generated here; nothing the source's browser said about a file
  (its name, its declared type) is read;
- `created_at` is stored to the hour: the exact second of an upload says more about a
  source than a contact needs.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from crypto.keys import Recipient

from . import blobs
from .errors import ClientError
from .sanitize import SNIFF_BYTES, Detected, Report, Sanitizer, detect
from .staging import SealingWriter, StagedFile
from .store import Blob, Contact, Drop

DROP_FORMAT = "amanah-drop-v1"
T = TypeVar("T")


@dataclass(frozen=True)
class Routing:
    """Who a drop goes to: contact names, and every member key of those contacts."""

    contacts: tuple[str, ...]
    recipients: tuple[Recipient, ...]
    keys: tuple[tuple[str, str], ...]  # (contact, member fingerprint)


def route(registered: Sequence[Contact], requested: Sequence[str]) -> Routing:
    """Addresses a drop. No names requested means every contact. Raises ClientError
    for a name that is not registered, or when there is no contact at all."""
    if not registered:
        raise ClientError("this relay has no contacts yet; nothing can be sent")
    by_name = {c.name: c for c in registered}
    names = list(dict.fromkeys(requested)) or list(by_name)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ClientError("the drop is addressed to a contact this relay does not know")
    chosen = [by_name[n] for n in names]
    members = [(c.name, m) for c in chosen for m in c.members]
    return Routing(
        contacts=tuple(names),
        recipients=tuple(Recipient.parse(m.recipient) for _, m in members),
        keys=tuple((name, m.fingerprint) for name, m in members),
    )


def new_drop_id() -> str:
    return secrets.token_hex(16)


def hour(now: int) -> int:
    return now - now % 3600


def normalise_message(text: str) -> str:
    """NFC, with line endings made LF. Raises ClientError for text that is not text."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n"))
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in text):
        raise ClientError("the message contains control characters")
    return text


@dataclass(frozen=True)
class ReplyTo:
    """How a contact answers the source: seal to `recipient`, post to `handle`."""

    recipient: str
    handle: str


@dataclass(frozen=True)
class SealedBlob:
    name: str
    size: int  # of the sealed file on disk
    sha256: str  # of the sealed file on disk


@dataclass(frozen=True)
class ItemRecord:
    blob: str
    name: str
    detected: Detected
    size: int
    sha256: str  # of the plaintext delivered
    report: Report


class _HashingWriter:
    """Hashes the plaintext on its way into a SealingWriter (which counts it)."""

    def __init__(self, inner: SealingWriter) -> None:
        self._inner = inner
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self._inner.write(data)


def write_blob(root: Path, relpath: str, fill: Callable[[BinaryIO], T]) -> tuple[T, SealedBlob]:
    """Writes one blob atomically (see relay.blobs.write_file)."""
    result, size, digest = blobs.write_file(root, relpath, fill)
    return result, SealedBlob(relpath.rsplit("/", 1)[-1], size, digest)


def _seal_bytes(
    root: Path, relpath: str, data: bytes, recipients: Sequence[Recipient]
) -> SealedBlob:
    def fill(sink: BinaryIO) -> None:
        writer = SealingWriter(sink, recipients)
        writer.write(data)
        writer.finish()

    return write_blob(root, relpath, fill)[1]


def _seal_item(
    root: Path,
    drop_id: str,
    position: int,
    staged: StagedFile,
    sanitizer: Sanitizer,
    recipients: Sequence[Recipient],
) -> tuple[ItemRecord, SealedBlob]:
    blob_name = f"item-{position}"
    with staged.open() as reader:
        detected = detect(reader.read(SNIFF_BYTES))
        reader.seek(0)

        def fill(sink: BinaryIO) -> tuple[Report, int, str]:
            sealing = SealingWriter(sink, recipients)
            hashing = _HashingWriter(sealing)
            report = sanitizer.clean(detected, reader, hashing)  # type: ignore[arg-type]
            sealing.finish()
            return report, sealing.plaintext_size, hashing.digest.hexdigest()

        (report, size, digest), blob = write_blob(root, f"{drop_path(drop_id)}/{blob_name}", fill)
    name = detected.name(position)
    return ItemRecord(blob_name, name, detected, size, digest, report), blob


def manifest(
    drop_id: str,
    created_at: int,
    message: SealedBlob | None,
    message_text: str | None,
    items: Sequence[ItemRecord],
    reply_to: ReplyTo | None,
) -> bytes:
    """The drop's table of contents, sealed with it."""
    document = {
        "format": DROP_FORMAT,
        "drop": drop_id,
        "created_at": created_at,
        "sealed_on": "relay",
        "reply": None
        if reply_to is None
        else {"recipient": reply_to.recipient, "handle": reply_to.handle},
        "message": None
        if message is None or message_text is None
        else {
            "blob": message.name,
            "name": "message.txt",
            "size": len(message_text.encode("utf-8")),
            "sha256": hashlib.sha256(message_text.encode("utf-8")).hexdigest(),
        },
        "files": [
            {
                "blob": item.blob,
                "name": item.name,
                "type": item.detected.mime,
                "size": item.size,
                "sha256": item.sha256,
                "metadata": {
                    "stripped": item.report.stripped,
                    "removed": list(item.report.removed),
                    "note": item.report.note,
                },
            }
            for item in items
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")


def seal_drop(
    root: Path,
    drop_id: str,
    created_at: int,
    message_text: str | None,
    staged: Sequence[StagedFile],
    routing: Routing,
    sanitizer: Sanitizer,
    reply_to: ReplyTo | None,
) -> list[SealedBlob]:
    """Blocking: seals the message and every staged file under `root/drops/<id>/`, then
    the manifest. Returns the blobs, manifest first. On any error, removes what it wrote."""
    folder = drop_path(drop_id)
    written: list[SealedBlob] = []
    try:
        message_blob = None
        if message_text:
            data = message_text.encode("utf-8")
            message_blob = _seal_bytes(root, f"{folder}/message", data, routing.recipients)
            written.append(message_blob)
        items = []
        for position, each in enumerate(staged, start=1):
            item, blob = _seal_item(root, drop_id, position, each, sanitizer, routing.recipients)
            items.append(item)
            written.append(blob)
        document = manifest(drop_id, created_at, message_blob, message_text, items, reply_to)
        written.insert(0, _seal_bytes(root, f"{folder}/manifest", document, routing.recipients))
    except BaseException:
        blobs.delete_tree(root, folder)
        raise
    return written


def drop_record(
    drop_id: str,
    source_login: str | None,
    created_at: int,
    sealed: Sequence[SealedBlob],
    routing: Routing,
) -> Drop:
    """The database row of a drop sealed on the relay, from what `seal_drop` wrote."""
    return Drop(
        id=drop_id,
        source_login=source_login,
        created_at=created_at,
        sealed_on="relay",
        total_size=sum(b.size for b in sealed),
        blobs=tuple(Blob(b.name, b.size, b.sha256) for b in sealed),
        contacts=routing.contacts,
        key_fingerprints=tuple(fp for _, fp in routing.keys),
    )


def drop_path(drop_id: str) -> str:
    """Where a drop's blobs live, relative to the blob root."""
    return f"drops/{drop_id}"

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
import os
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from crypto.keys import Recipient

from .errors import ClientError
from .sanitize import SNIFF_BYTES, Detected, Report, Sanitizer, detect
from .staging import SealingWriter, StagedFile
from .store import Contact

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
    """Counts and hashes the plaintext on its way into a SealingWriter."""

    def __init__(self, inner: SealingWriter) -> None:
        self._inner = inner
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self._inner.write(data)


def write_blob(folder: Path, name: str, fill: Callable[[BinaryIO], T]) -> tuple[T, SealedBlob]:
    """Writes `folder/name` atomically: a temporary name, fsync, rename, fsync of the
    folder. On any error the temporary file is removed and the error propagates."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = folder / f".tmp-{secrets.token_hex(8)}"
    try:
        with temporary.open("xb") as sink:
            os.chmod(temporary, 0o600)
            result = fill(sink)
            sink.flush()
            os.fsync(sink.fileno())
        size = temporary.stat().st_size
        digest = _file_sha256(temporary)
        os.replace(temporary, folder / name)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    directory = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return result, SealedBlob(name, size, digest)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _seal_bytes(
    folder: Path, name: str, data: bytes, recipients: Sequence[Recipient]
) -> SealedBlob:
    def fill(sink: BinaryIO) -> None:
        writer = SealingWriter(sink, recipients)
        writer.write(data)
        writer.finish()

    return write_blob(folder, name, fill)[1]


def _seal_item(
    folder: Path,
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

        (report, size, digest), blob = write_blob(folder, blob_name, fill)
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
    folder: Path,
    drop_id: str,
    created_at: int,
    message_text: str | None,
    staged: Sequence[StagedFile],
    routing: Routing,
    sanitizer: Sanitizer,
    reply_to: ReplyTo | None,
) -> list[SealedBlob]:
    """Blocking: seals the message and every staged file into `folder`, then the
    manifest. Returns the blobs. On error, removes the folder's contents it wrote."""
    blobs: list[SealedBlob] = []
    try:
        message_blob = None
        if message_text:
            message_blob = _seal_bytes(
                folder, "message", message_text.encode("utf-8"), routing.recipients
            )
            blobs.append(message_blob)
        items = []
        for position, each in enumerate(staged, start=1):
            item, blob = _seal_item(folder, position, each, sanitizer, routing.recipients)
            items.append(item)
            blobs.append(blob)
        document = manifest(drop_id, created_at, message_blob, message_text, items, reply_to)
        blobs.insert(0, _seal_bytes(folder, "manifest", document, routing.recipients))
    except BaseException:
        remove_folder(folder)
        raise
    return blobs


def remove_folder(folder: Path) -> None:
    if not folder.exists():
        return
    for path in folder.iterdir():
        path.unlink(missing_ok=True)
    folder.rmdir()

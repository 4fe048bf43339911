"""Ingest: from staged uploads to a stored drop. The decisions are plain functions
(routing, names, the manifest); `seal_items` is the blocking pipeline a worker thread runs.

A drop on disk is a folder of age files, each sealed to every member key of every
addressed contact:

    blobs/drops/<id>/manifest    what the drop holds (JSON): types, sizes, hashes, and
                                 what the sanitizer removed (or that it removed nothing)
    blobs/drops/<id>/message     the source's text, if any (UTF-8, NFC)
    blobs/drops/<id>/item-N      the N-th file, after the sanitizer
    blobs/drops/<id>/original-N  the N-th file as sent, only if the source asked for it, and
                                 sealed only to contacts that accept originals

Rules:
- nothing is recorded in the database until every blob of the drop is fsynced and renamed
  into place, so a crash leaves at most an unrecorded folder (swept at start-up), never a
  half-written drop that a contact could fetch;
- every name in a drop is generated here; nothing the source's browser said about a file
  (its name, its declared type) is read;
- `created_at` is stored to the hour: the exact second of an upload says more about a
  source than a contact needs;
- a file the sanitizer refuses is left out (the manifest and the source's receipt say which
  position and why); the rest of the drop goes on. A drop left with nothing to deliver is
  refused whole, and nothing is stored.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, TypeVar

from crypto.keys import Recipient

from . import blobs
from .errors import ClientError
from .sanitize import SNIFF_BYTES, Detected, Refused, Report, Sanitizer, detect, detect_mime
from .staging import Final, SealedReader, SealingWriter, StagedFile
from .store import Blob, Contact, Drop, SealedOn

DROP_FORMAT = "amanah-drop-v1"
T = TypeVar("T")


@dataclass(frozen=True)
class Routing:
    """Who a drop goes to: contact names, and every member key of those contacts."""

    contacts: tuple[str, ...]
    recipients: tuple[Recipient, ...]
    keys: tuple[tuple[str, str], ...]  # (contact, member fingerprint)
    # The addressed contacts that accept unstripped originals (evidence), and their keys.
    originals_contacts: tuple[str, ...] = ()
    originals_recipients: tuple[Recipient, ...] = ()


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
    evidence = [m for c in chosen if c.accepts_originals for m in c.members]
    return Routing(
        contacts=tuple(names),
        recipients=tuple(Recipient.parse(m.recipient) for _, m in members),
        keys=tuple((name, m.fingerprint) for name, m in members),
        originals_contacts=tuple(c.name for c in chosen if c.accepts_originals),
        originals_recipients=tuple(Recipient.parse(m.recipient) for m in evidence),
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
    original: SealedBlob | None = None  # the file as sent, for contacts accepting originals


@dataclass(frozen=True)
class Refusal:
    """A file the sanitizer would not pass on: its position in the drop, its detected type,
    the reason code and the message for the source (which names no file)."""

    position: int
    detected: Detected
    reason: str
    message: str

    def for_source(self) -> str:
        return f"file {self.position}: {self.message}"


@dataclass(frozen=True)
class SealedDrop:
    blobs: list[SealedBlob]  # manifest first
    refusals: list[Refusal]


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
    routing: Routing,
    send_original: bool,
) -> tuple[ItemRecord, list[SealedBlob]] | Refusal:
    if staged.final is not None:
        return _move_final(root, drop_id, position, staged, staged.final, sanitizer, routing)
    blob_name = f"item-{position}"
    with staged.open() as reader:
        detected = detect(reader.read(SNIFF_BYTES))
        reader.seek(0)

        def fill(sink: BinaryIO) -> tuple[Report, int, str]:
            sealing = SealingWriter(sink, routing.recipients)
            hashing = _HashingWriter(sealing)
            report = sanitizer.clean(detected, reader, hashing)  # type: ignore[arg-type]
            sealing.finish()
            return report, sealing.plaintext_size, hashing.digest.hexdigest()

        try:
            (report, size, digest), blob = write_blob(
                root, f"{drop_path(drop_id)}/{blob_name}", fill
            )
        except Refused as refused:  # nothing was written: write_blob removed its temporary
            return Refusal(position, detected, refused.reason, str(refused))
        written = [blob]
        original = None
        if send_original and routing.originals_recipients and report.stripped:
            original = _seal_original(root, drop_id, position, reader, routing)
            written.append(original)
    name = detected.name(position, report.mime)
    return ItemRecord(blob_name, name, detected, size, digest, report, original), written


def _move_final(
    root: Path,
    drop_id: str,
    position: int,
    staged: StagedFile,
    final: Final,
    sanitizer: Sanitizer,
    routing: Routing,
) -> tuple[ItemRecord, list[SealedBlob]]:
    """A file that was sealed to the contacts as it arrived (it passes unchanged) becomes
    the drop's item as it is: no second pass over its bytes."""
    detected = detect_mime(final.mime)
    report = sanitizer.unchanged(detected)
    if report is None or final.key_set != frozenset(str(r) for r in routing.recipients):
        # The web layer settles the routing and asks the sanitizer before the first file
        # arrives: either differing now is a bug, and nothing is stored rather than a
        # file sealed to the wrong keys.
        raise RuntimeError("a file sealed on arrival no longer matches its drop")
    report = replace(report, original_sha256=staged.plaintext_sha256, original_size=staged.size)
    blob_name = f"item-{position}"
    blobs.move_in(root, f"{drop_path(drop_id)}/{blob_name}", staged.path)
    blob = SealedBlob(blob_name, staged.sealed_size, staged.sealed_sha256)
    name = detected.name(position)
    record = ItemRecord(
        blob_name, name, detected, staged.size, staged.plaintext_sha256, report, None
    )
    return record, [blob]


def _seal_original(
    root: Path, drop_id: str, position: int, reader: SealedReader, routing: Routing
) -> SealedBlob:
    """The file exactly as the source sent it, sealed only to the contacts that accept
    originals: metadata is evidence (where and when a video was filmed)."""

    def fill(sink: BinaryIO) -> None:
        sealing = SealingWriter(sink, routing.originals_recipients)
        reader.seek(0)
        while block := reader.read(1 << 20):
            sealing.write(block)
        sealing.finish()

    return write_blob(root, f"{drop_path(drop_id)}/original-{position}", fill)[1]


def manifest(
    drop_id: str,
    created_at: int,
    message: SealedBlob | None,
    message_text: str | None,
    items: Sequence[ItemRecord],
    reply_to: ReplyTo | None,
    refusals: Sequence[Refusal] = (),
    originals_contacts: Sequence[str] = (),
) -> bytes:
    """The drop's table of contents, sealed with it. Per file: the detected type, SHA-256
    and size of the original and of what is delivered, the names (never the values) of the
    metadata removed, and where the sealed original is if the source sent it."""
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
                "type": item.report.mime or item.detected.mime,  # as delivered
                "size": item.size,
                "sha256": item.sha256,
                "detected_type": item.detected.mime,
                "original_sha256": item.report.original_sha256 or None,
                "original_size": item.report.original_size or None,
                "metadata": {
                    "stripped": item.report.stripped,
                    "removed": list(item.report.removed),
                    "note": item.report.note,
                },
                "original": None
                if item.original is None
                else {"blob": item.original.name, "contacts": list(originals_contacts)},
            }
            for item in items
        ],
        "refused": [
            {
                "position": refusal.position,
                "detected_type": refusal.detected.mime,
                "reason": refusal.reason,
            }
            for refusal in refusals
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
    send_originals: bool = False,
) -> SealedDrop:
    """Blocking: seals the message and every staged file the sanitizer accepts under
    `root/drops/<id>/`, then the manifest. Returns the blobs (manifest first) and the
    refusals. Raises ClientError, with every refusal in its message, when nothing is left
    to deliver; on any error, removes what it wrote."""
    folder = drop_path(drop_id)
    written: list[SealedBlob] = []
    refusals: list[Refusal] = []
    try:
        message_blob = None
        if message_text:
            data = message_text.encode("utf-8")
            message_blob = _seal_bytes(root, f"{folder}/message", data, routing.recipients)
            written.append(message_blob)
        items = []
        for position, each in enumerate(staged, start=1):
            result = _seal_item(root, drop_id, position, each, sanitizer, routing, send_originals)
            if isinstance(result, Refusal):
                refusals.append(result)
                continue
            items.append(result[0])
            written.extend(result[1])
        if not written:
            raise ClientError(
                "nothing could be sent: " + "; ".join(r.for_source() for r in refusals)
            )
        document = manifest(
            drop_id,
            created_at,
            message_blob,
            message_text,
            items,
            reply_to,
            refusals,
            routing.originals_contacts,
        )
        written.insert(0, _seal_bytes(root, f"{folder}/manifest", document, routing.recipients))
    except BaseException:
        blobs.delete_tree(root, folder)
        raise
    return SealedDrop(written, refusals)


def drop_record(
    drop_id: str,
    source_login: str | None,
    created_at: int,
    sealed: Sequence[SealedBlob],
    routing: Routing,
    sealed_on: SealedOn = "relay",
) -> Drop:
    """The database row of a drop, from the blobs written for it (what `seal_drop` wrote,
    or a device-sealed drop's one blob) and its routing."""
    return Drop(
        id=drop_id,
        source_login=source_login,
        created_at=created_at,
        sealed_on=sealed_on,
        total_size=sum(b.size for b in sealed),
        blobs=tuple(Blob(b.name, b.size, b.sha256) for b in sealed),
        contacts=routing.contacts,
        key_fingerprints=tuple(fp for _, fp in routing.keys),
    )


def drop_path(drop_id: str) -> str:
    """Where a drop's blobs live, relative to the blob root."""
    return f"drops/{drop_id}"

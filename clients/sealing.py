"""A drop sealed on the source's device: stripped, packed and sealed in one stream.

The drop is ONE age v1 file, sealed to every member key of every addressed contact. Its
plaintext is a ustar tar, so that a contact can always open it with stock tools
(`age -d -i identity.txt drop.age | tar x`):

    message.txt     the message (UTF-8, NFC, LF line ends), when there is one
    item-N.EXT      the N-th file on the command line, after the sanitizer
    manifest.json   last, because its hashes and sizes are known only once every file is
                    done: the relay's manifest schema where its fields apply, with
                    "sealed_on": "device"; per file the detected type, SHA-256 and size of
                    the original and of the stripped file, the names of the metadata
                    removed; the refused files by position; the reply recipient

Rules:
- no plaintext on disk: each file goes through the relay's own sanitizer (the same
  sandboxed worker), then into the tar, whose output goes straight into the age
  encryptor, whose output alone is written;
- memory stays flat whatever a file's size: a tar header needs the member's size before
  its bytes, so the cleaned copy waits in a spool (`_Spool`) until it is complete, and
  the spool is on disk, sealed as the relay seals its staging files: to a key made for
  that one file that exists only in this process's memory, in a temporary file without
  a name beside the output (gone when closed, or when the process dies);
- the tar says nothing about the source's files or computer: fixed member names, mtime 0,
  uid and gid 0, no user or group names, mode 0600, regular files only, and the names of
  the original files appear nowhere;
- a file the sanitizer refuses is left out and listed by position in "refused"; a drop
  left with nothing to deliver (no message, every file refused) is refused whole.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import tarfile
import tempfile
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from crypto.age import Encryptor
from crypto.errors import AgeError
from crypto.keys import Identity, Recipient
from relay.sanitize import SNIFF_BYTES, Refused, Sanitizer, detect
from relay.staging import SealedReader, SealingWriter

DROP_FORMAT = "amanah-drop-v1"
MANIFEST = "manifest.json"
MESSAGE = "message.txt"
# A message is text a person typed: 1 MiB is a short book. `amanah-inbox` refuses more.
MAX_MESSAGE_BYTES = 1 << 20
MAX_FILES = 9999  # item numbers have at most four digits (the relay's blob names too)
# The tar stream's block, which is what the encryptor is fed at a time, and the size of
# its copies from a spool. (tarfile's stream block is 10 KiB by default: 1 MiB copies into
# it were re-sliced a hundred times each, measured 0.6 s of 2.5 s for a 400 MB video.)
GATHER = 1 << 20
_NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class SealError(Exception):
    """Nothing could be sealed; the message says why (naming files by position only)."""


@dataclass(frozen=True)
class Refusal:
    position: int
    detected_type: str
    reason: str
    message: str


@dataclass(frozen=True)
class SealedDrop:
    size: int  # of the age file
    sha256: str  # of the age file
    items: int
    has_message: bool
    refusals: tuple[Refusal, ...]


def normalise_message(text: str) -> str:
    """NFC, LF line ends, trimmed. Raises SealError for control characters or a message
    over MAX_MESSAGE_BYTES."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n")).strip()
    if any(unicodedata.category(c) == "Cc" and c not in "\n\t" for c in text):
        raise SealError("the message contains control characters")
    if len(text.encode("utf-8")) > MAX_MESSAGE_BYTES:
        raise SealError(f"the message is longer than {MAX_MESSAGE_BYTES // 1024} KiB")
    return text


class _CiphertextSink:
    """Where the tar writes (blocks of GATHER bytes): its bytes are sealed and only the
    ciphertext reaches `out`, counted and hashed on the way (the relay checks that
    SHA-256)."""

    def __init__(self, out: BinaryIO, recipients: Sequence[Recipient]) -> None:
        self._out = out
        self._encryptor = Encryptor(recipients)
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self._emit(self._encryptor.update(data))
        return len(data)

    def finish(self) -> None:
        self._emit(self._encryptor.finalize())

    def _emit(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            self._out.write(piece)
            self.digest.update(piece)
            self.size += len(piece)


class _HashingWriter:
    def __init__(self, inner: SealingWriter) -> None:
        self._inner = inner
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self._inner.write(data)


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o600
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.type = tarfile.REGTYPE
    return info


class _Spool:
    """One cleaned file until it is complete: sealed to a key of its own, held only here,
    into an unnamed temporary file in `directory` (O_TMPFILE where the file system has
    it, else a file removed as soon as it is made). Written through `writer`, then read
    back, decrypted a chunk at a time, through `reader()`."""

    def __init__(self, directory: Path | None) -> None:
        self._identity = Identity.generate()
        self._file = tempfile.TemporaryFile(dir=directory)
        self.writer = SealingWriter(self._file, [self._identity.recipient])

    def reader(self) -> SealedReader:
        """Ends the writing; the plaintext, readable once (closes the spool)."""
        self.writer.finish()
        self._file.flush()
        return SealedReader(self._file, [self._identity])

    def close(self) -> None:
        self._file.close()


def _strip_into_tar(
    tar: tarfile.TarFile, sanitizer: Sanitizer, position: int, source: Path, spool: Path | None
) -> dict[str, Any] | Refusal:
    """Cleans one file into a spool in the folder `spool` and appends it to the tar.
    Returns its manifest entry, or the refusal. Raises OSError if the file cannot be read
    or the spool not written."""
    with source.open("rb") as src:
        detected = detect(src.read(SNIFF_BYTES))
        src.seek(0)
        stripped = _Spool(spool)
        try:
            hashing = _HashingWriter(stripped.writer)
            try:
                report = sanitizer.clean(detected, src, hashing)  # type: ignore[arg-type]
            except Refused as refusal:
                return Refusal(position, detected.mime, refusal.reason, str(refusal))
            size = stripped.writer.plaintext_size
            member = f"item-{position}.{detected.delivered_extension(report.mime)}"
            try:
                with stripped.reader() as cleaned:
                    tar.addfile(_member(member, size), cleaned)
            except AgeError:  # only another program writing into the spool does this
                raise SealError(
                    f"file {position}: its cleaned copy was changed on disk while it waited "
                    "to be sealed; nothing was written"
                ) from None
        finally:
            stripped.close()
    return {
        "blob": member,
        "name": detected.name(position, report.mime),
        "type": report.mime or detected.mime,
        "size": size,
        "sha256": hashing.digest.hexdigest(),
        "detected_type": detected.mime,
        "original_sha256": report.original_sha256 or None,
        "original_size": report.original_size or None,
        "metadata": {
            "stripped": report.stripped,
            "removed": list(report.removed),
            "note": report.note,
        },
        "original": None,
    }


def manifest(
    created_at: int,
    reply_recipient: str,
    directory_version: int,
    message: str | None,
    files: Sequence[dict[str, Any]],
    refusals: Sequence[Refusal],
) -> bytes:
    """The drop's table of contents (see the module docstring). "drop" is null and the
    reply handle is null: the relay makes both when it stores the drop, and the contact's
    listing gives the handle."""
    data = message.encode("utf-8") if message else b""
    document = {
        "format": DROP_FORMAT,
        "drop": None,
        "created_at": created_at,
        "sealed_on": "device",
        "directory_version": directory_version,
        "reply": {"recipient": reply_recipient, "handle": None},
        "message": None
        if not message
        else {
            "blob": MESSAGE,
            "name": MESSAGE,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        },
        "files": list(files),
        "refused": [
            {"position": r.position, "detected_type": r.detected_type, "reason": r.reason}
            for r in refusals
        ],
    }
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")


def seal(
    out: BinaryIO,
    recipients: Sequence[Recipient],
    files: Sequence[Path],
    message: str | None,
    reply_recipient: str,
    directory_version: int,
    sanitizer: Sanitizer,
    created_at: int,
    say: Callable[[str], None] = lambda _: None,
    spool: Path | None = None,
) -> SealedDrop:
    """Blocking: writes the sealed drop to `out` (see the module docstring). `say` gets a
    line of progress per file; each cleaned file waits, sealed, in a temporary file in the
    folder `spool` (the system's temporary folder if None). Raises SealError (nothing to
    send, a file unreadable or too many, no room for a spool); on any error what was
    written to `out` must be discarded."""
    if len(files) > MAX_FILES:
        raise SealError(f"at most {MAX_FILES} files can be sent in one drop")
    if not message and not files:
        raise SealError("nothing to send: give a message or a file")
    sink = _CiphertextSink(out, recipients)
    entries: list[dict[str, Any]] = []
    refusals: list[Refusal] = []
    with tarfile.open(  # type: ignore[call-overload]
        fileobj=sink, mode="w|", format=tarfile.USTAR_FORMAT, bufsize=GATHER, copybufsize=GATHER
    ) as tar:
        if message:
            data = message.encode("utf-8")
            tar.addfile(_member(MESSAGE, len(data)), io.BytesIO(data))
        for position, source in enumerate(files, start=1):
            say(f"file {position} of {len(files)}: removing hidden data")
            try:
                result = _strip_into_tar(tar, sanitizer, position, source, spool)
            except OSError as exc:
                if exc.errno in _NO_ROOM:  # writing the spool: reading a file never says so
                    where = spool or Path(tempfile.gettempdir())
                    raise SealError(
                        f"file {position}: no room for its cleaned copy in {where} "
                        f"({exc.strerror}); it needs about the file's size free"
                    ) from None
                raise SealError(f"file {position} could not be read ({exc.strerror})") from None
            if isinstance(result, Refusal):
                refusals.append(result)
                say(f"file {position}: {result.message}; it is left out")
                continue
            entries.append(result)
            removed = len(result["metadata"]["removed"])
            say(f"file {position}: cleaned ({removed} kind(s) of hidden data removed)")
        if not entries and not message:
            raise SealError(
                "nothing could be sent: "
                + "; ".join(f"file {r.position}: {r.message}" for r in refusals)
            )
        document = manifest(
            created_at, reply_recipient, directory_version, message, entries, refusals
        )
        tar.addfile(_member(MANIFEST, len(document)), io.BytesIO(document))
    sink.finish()
    return SealedDrop(
        sink.size, sink.digest.hexdigest(), len(entries), bool(message), tuple(refusals)
    )

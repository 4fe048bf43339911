"""The metadata sanitizer: what a file really is, and a copy of it that says nothing of
who made it, where, or with what.

This package uses nothing else of Amanah's (sources run it on their own devices through
`amanah-drop strip`), and it is the only place that decides types.

Rules:
- the type comes from the file's bytes (libmagic through python-magic); the name and the
  content type a browser declared are never read;
- output names are generated from the type and a position (`photo-1.jpg`), never taken
  from the source;
- `Sanitizer.clean` reads plaintext from a seekable file object and writes the result to
  a writable one, and reports what it removed; it never sees a path.

Status: detection is real; stripping is not yet built (see issue 4). The only sanitizer
here, `Unstripped`, copies bytes unchanged and says so in its report, so a contact is
never told a file was cleaned when it was not.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import magic

# Enough for libmagic to recognise every container we handle.
SNIFF_BYTES = 64 * 1024

_KINDS = {"image": "photo", "audio": "audio", "video": "video", "text": "text"}
_EXTENSIONS = {
    "image/jpeg": "jpg",
    "image/png": "png",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/tiff": "tif",
    "image/heic": "heic",
    "image/heif": "heif",
    "image/avif": "avif",
    "audio/mpeg": "mp3",
    "audio/flac": "flac",
    "audio/ogg": "ogg",
    "audio/x-wav": "wav",
    "audio/x-m4a": "m4a",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
    "video/3gpp": "3gp",
    "video/x-matroska": "mkv",
    "video/webm": "webm",
    "video/x-msvideo": "avi",
    "text/plain": "txt",
    "application/pdf": "pdf",
}


@dataclass(frozen=True)
class Detected:
    mime: str
    kind: str  # photo, audio, video, text or file
    extension: str

    def name(self, position: int) -> str:
        """A generated name: the kind, the file's position in the drop, the extension."""
        return f"{self.kind}-{position}.{self.extension}"


def detect(head: bytes) -> Detected:
    """The real type of a file from its first bytes (pass SNIFF_BYTES of them)."""
    mime = magic.from_buffer(head, mime=True) if head else "application/x-empty"
    kind = _KINDS.get(mime.split("/", 1)[0], "file")
    return Detected(mime, kind, _EXTENSIONS.get(mime, "bin"))


@dataclass(frozen=True)
class Report:
    """What cleaning did. `stripped` is False when the bytes were passed on unchanged."""

    stripped: bool
    removed: tuple[str, ...] = ()
    note: str = ""


class Sanitizer(Protocol):
    def clean(self, detected: Detected, src: BinaryIO, dst: BinaryIO) -> Report: ...


class Unstripped:
    """Passes files on unchanged. Named for what it does: nothing is removed."""

    def clean(self, detected: Detected, src: BinaryIO, dst: BinaryIO) -> Report:
        src.seek(0)
        shutil.copyfileobj(src, dst, 1 << 20)
        return Report(stripped=False, note="metadata was not stripped (not yet supported)")

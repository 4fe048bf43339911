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

- a file that cannot be cleaned with confidence is refused (`errors.Refused`, whose message
  is written for the source); it is never passed on as if it had been cleaned. An operator
  may choose to forward unsupported types unstripped, and the report then says so.

Modules: `sandbox` (the parent side: memfds or the channel, bubblewrap, timeout), `worker`
(the child: limits, dispatch, checking the result), `channel` (the relay serving a streamed
video's bytes to the worker and taking its result), `jpeg` and `chunks` (byte-wise
rebuilds), `images` (Pillow), `media` (the table of sound and video formats and codecs),
`video` (PyAV: every sound and video format, streamed; `flac`, `ogg`, `mp3`, `aac`,
`wave`, `records`, `rewrites` for what one format needs), `nal` (H.264/HEVC units),
`mpegvideo` (MPEG-1/2/4 Part 2 start codes), `obu` (AV1), `gate` (the last search for tag
values), `errors`. `Stripping` is the sanitizer the relay and
`amanah-drop strip` use; `Unstripped` passes bytes through and says so.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import magic

from .errors import Refused, Unsupported
from .sandbox import SUPPORTED, Sandboxed

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
    "video/3gpp2": "3g2",
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

    def name(self, position: int, delivered: str = "") -> str:
        """A generated name: the kind, the file's position in the drop, the extension of
        the type delivered (`delivered`, the cleaned file's MIME type when cleaning
        changed it: a HEIC delivered as a JPEG is photo-N.jpg), else of the type found."""
        return f"{self.kind}-{position}.{self.delivered_extension(delivered)}"

    def delivered_extension(self, delivered: str = "") -> str:
        return extension_for(delivered) if delivered else self.extension


def detect(head: bytes) -> Detected:
    """The real type of a file from its first bytes (pass SNIFF_BYTES of them)."""
    return detect_mime(magic.from_buffer(head, mime=True) if head else "application/x-empty")


def detect_mime(mime: str) -> Detected:
    """The Detected of a type found earlier (`detect(...).mime`)."""
    kind = _KINDS.get(mime.split("/", 1)[0], "file")
    return Detected(mime, kind, extension_for(mime))


def supported(mime: str) -> bool:
    """Whether the sanitizer can clean files of this type (others are refused, or
    forwarded unstripped where the operator chose that)."""
    return mime in SUPPORTED


def extension_for(mime: str) -> str:
    """The extension a generated name takes for `mime` ("bin" for a type not listed)."""
    return _EXTENSIONS.get(mime, "bin")


@dataclass(frozen=True)
class Report:
    """What cleaning did. `stripped` is False when the bytes were passed on unchanged.
    `mime` is the type of what was written (a HEIC becomes a JPEG), empty if unchanged;
    `original_sha256` and `original_size` describe the file as the source sent it."""

    stripped: bool
    removed: tuple[str, ...] = ()
    note: str = ""
    mime: str = ""
    original_sha256: str = ""
    original_size: int = 0


class Sanitizer(Protocol):
    def clean(self, detected: Detected, src: BinaryIO, dst: BinaryIO) -> Report: ...

    def unchanged(self, detected: Detected) -> Report | None:
        """The report for a file of this type if it is passed on as it was sent, whatever
        its bytes (its hashes and size left for the caller to fill); None if it must go
        through `clean`. The relay then seals such a file to its contacts as it arrives."""
        ...


UNSTRIPPED_NOTE = "metadata was not stripped (not yet supported)"


class Unstripped:
    """Passes files on unchanged. Named for what it does: nothing is removed."""

    def clean(self, detected: Detected, src: BinaryIO, dst: BinaryIO) -> Report:
        src.seek(0)
        shutil.copyfileobj(src, dst, 1 << 20)
        return Report(stripped=False, note=UNSTRIPPED_NOTE)

    def unchanged(self, detected: Detected) -> Report | None:
        return Report(stripped=False, note=UNSTRIPPED_NOTE)


FORWARDED_NOTE = (
    "NOT STRIPPED: this relay cannot clean this type of file and its operator chose to "
    "forward such files as they were sent; it may identify the source"
)


class Stripping:
    """The sanitizer: each file cleaned in its own sandboxed worker (see `sandbox`).
    Raises errors.Refused for a file it cannot clean with confidence, unless the type is
    unsupported and `forward_unsupported` is set: then the bytes pass unchanged and the
    report says so in capitals. With `hash_originals` off, reports leave `original_sha256`
    empty (the caller hashed the file already, or has no use for it): the input is then
    read once, by the worker only."""

    def __init__(
        self,
        sandboxed: Sandboxed | None = None,
        forward_unsupported: bool = False,
        hash_originals: bool = True,
    ):
        self._sandboxed = sandboxed if sandboxed is not None else Sandboxed()
        self._forward_unsupported = forward_unsupported
        self._hash_originals = hash_originals

    def clean(self, detected: Detected, src: BinaryIO, dst: BinaryIO) -> Report:
        try:
            outcome = self._sandboxed.strip(detected.mime, src, dst, self._hash_originals)
        except Unsupported:
            if not self._forward_unsupported:
                raise
            return _forward(src, dst)
        return Report(
            stripped=True,
            removed=outcome.removed,
            mime=outcome.mime,
            original_sha256=outcome.original_sha256,
            original_size=outcome.original_size,
        )

    def unchanged(self, detected: Detected) -> Report | None:
        if self._forward_unsupported and not supported(detected.mime):
            return Report(False, (), FORWARDED_NOTE)
        return None


def _forward(src: BinaryIO, dst: BinaryIO) -> Report:
    digest, size = hashlib.sha256(), 0
    src.seek(0)
    while block := src.read(1 << 20):
        digest.update(block)
        size += len(block)
        dst.write(block)
    return Report(False, (), FORWARDED_NOTE, "", digest.hexdigest(), size)


__all__ = [
    "SNIFF_BYTES",
    "Detected",
    "Refused",
    "Report",
    "Sanitizer",
    "Stripping",
    "Unstripped",
    "detect",
    "detect_mime",
    "extension_for",
    "supported",
]

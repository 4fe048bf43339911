"""Every error the sanitizer raises on purpose, as one tree.

    SanitizeError          never raised itself
    └── Refused            this file cannot be cleaned with confidence; it is not forwarded
        ├── Unsupported    a type the sanitizer has no method for
        ├── Malformed      the file does not parse as the type it claims, or holds no media
        ├── TooDemanding   it needs more memory, time or output than a file of its size may
        └── WorkerFailed   the sandboxed worker died or answered nonsense (a parser crash)

Messages are written for the source, who sees them next to "file N": plain words, no
filename, no metadata value, no parser output. The file's position is added by whoever
knows it (the relay's ingest, `amanah-drop strip`).
"""

from __future__ import annotations


class SanitizeError(Exception):
    """Base of every deliberate sanitizer error. Never raised directly."""


class Refused(SanitizeError):
    """The file was not cleaned and must not be forwarded as if it had been. `reason` is a
    short stable code for manifests and tests; the message is for the source."""

    reason = "refused"


class Unsupported(Refused):
    """The file's real type (from its bytes) is not one the sanitizer can clean."""

    reason = "unsupported"


class Malformed(Refused):
    """The file is damaged, truncated, not what its first bytes claim, or a shell holding
    metadata but no picture or sound."""

    reason = "malformed"


class TooDemanding(Refused):
    """Decoding it would take more memory or time than this relay allows for one file
    (a decompression bomb looks like this)."""

    reason = "too-demanding"


class WorkerFailed(Refused):
    """The isolated process that cleans files crashed or was killed. The file is not kept;
    the relay is unaffected."""

    reason = "worker-failed"


MESSAGES = {
    Unsupported.reason: "this kind of file cannot be cleaned of hidden data here, so it was "
    "not sent; send photos (JPEG, PNG, WebP, HEIC, AVIF, TIFF, GIF), audio (MP3, M4A, FLAC, "
    "Ogg, Opus, WAV) or video (MP4, MOV, 3GP, MKV, WebM, AVI)",
    Malformed.reason: "this file seems damaged or is not the kind of file it looks like, so "
    "it was not sent; try exporting it again from the app that made it",
    TooDemanding.reason: "this file would take too much memory or time to clean safely, so it "
    "was not sent; try a smaller or shorter version",
    WorkerFailed.reason: "this file could not be cleaned of hidden data, so it was not sent; "
    "try exporting it again from the app that made it",
}

_BY_REASON: dict[str, type[Refused]] = {
    cls.reason: cls for cls in (Unsupported, Malformed, TooDemanding, WorkerFailed)
}


def refusal(reason: str) -> Refused:
    """The error for a reason code (an unknown code is a worker failure)."""
    cls = _BY_REASON.get(reason, WorkerFailed)
    return cls(MESSAGES[cls.reason])

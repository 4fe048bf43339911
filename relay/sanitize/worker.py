"""The sandboxed worker: one process per file, started by `sandbox.py`, never imported by
the relay's own process for anything but its constants.

Protocol: argv holds the mode and its descriptors, then the MIME type and the output size
limit:

    files IN OUT MIME LIMIT       IN is the input in an anonymous in-memory file (memfd),
                                  OUT an empty memfd for the result (pictures)
    stream IN OUT MIME LIMIT SIZE IN and OUT are Unix sockets to the relay, which serves the
                                  SIZE bytes of input on request and takes the result as it
                                  is written (channel.py; sound and video: media.FORMATS)
    stream-file IN OUT ...        the same, IN a read-only descriptor of the caller's own
                                  file (amanah-drop strip on a source's device)
    stream-files IN OUT ...       the same, OUT a write-only descriptor of the caller's
                                  own file for the result, written here directly

The worker writes one JSON object on standard output (after closing the sockets):

    {"ok": true, "mime": "...", "removed": [...], "note": "..."}   the result is complete
    {"ok": false, "reason": "malformed"}                           nothing usable was written

Rules:
- resource limits first, set by the worker on itself: address space, CPU seconds, output
  file size, open files, no core dumps;
- nothing the file says is printed: FFmpeg's and Pillow's messages go nowhere, because they
  quote metadata values; the reason codes are from `errors.py`;
- every result is decoded again and compared with the input before "ok" is said.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import socket
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Files:
    """The worker's two memfds (a picture and its result); the input is read again through
    /proc, at an offset of its own."""

    input: int
    output: int

    @property
    def input_path(self) -> str:
        return f"/proc/self/fd/{self.input}"


# 1.5 GiB of address space: a 110-megapixel picture decoded and rotated (two RGB copies,
# ~660 MiB) plus Python and Pillow; a remux needs ~60 MiB. More is a bomb.
MEMORY_LIMIT = 1536 * 1024 * 1024
CPU_SECONDS = 300  # the wall-clock timeout in sandbox.py usually ends things sooner
OPEN_FILES = 64

IMAGE_BYTEWISE = {"image/jpeg", "image/png", "image/webp"}
IMAGE_REENCODE = {"image/tiff", "image/gif", "image/heic", "image/heif", "image/avif"}


def limit_resources(max_output: int) -> None:
    """Limits this process and its children. Raises OSError if a limit cannot be set."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_output, max_output))
    resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))


def _read_input(files: Files) -> bytes:
    with open(files.input_path, "rb") as file:  # reopened: its own offset
        return file.read()


def _write_output(files: Files, data: bytes) -> None:
    os.ftruncate(files.output, 0)
    os.pwrite(files.output, data, 0)


def clean_image(mime: str, files: Files) -> dict[str, Any]:
    """Strips one picture; returns the worker's answer. Raises what the parsers raise
    (`run` classifies it: a decompression bomb is too demanding)."""
    from . import chunks, images, jpeg  # noqa: PLC0415 - only pictures need Pillow

    images.configure(mime)
    data = _read_input(files)
    release_input(files)  # the bytes are here now
    picture = images.inspect(data)
    removed = list(picture.tags)
    frames = picture.frames
    if mime == "image/jpeg":
        # The first image only: a JPEG's further ones (Multi-Picture Format: a camera's
        # preview, a stereo view, a phone's depth or gain map) follow its end, each with
        # its own metadata, and go with what follows it (jpeg.py).
        out, names = jpeg.rebuild(data, picture.orientation)
        names += images.other_images(frames)
        out_mime, frames = mime, 1
    elif mime in ("image/png", "image/webp") and picture.orientation == 1:
        out, names = (chunks.strip_png if mime == "image/png" else chunks.strip_webp)(data)
        out_mime = mime
    else:
        out, out_mime, others = images.reencode(data, mime)
        names = ["all metadata (picture re-encoded from its pixels)", *others]
        frames = 1 if out_mime != mime else frames  # HEIF, AVIF: the primary, as a JPEG
    images.verify(out, picture, frames)
    _write_output(files, out)
    return {"ok": True, "mime": out_mime, "removed": removed + names, "note": ""}


def release_input(files: Files) -> None:
    """Empties the input memfd once nothing reads it again: its pages (the whole file) go
    back to the system while the result is checked, instead of when the worker exits.
    The parent and the worker share one open file, so this frees it for both. Measured on
    a 200 MB MP4 (notes in sandbox.py): input and output memfds together held 379 MiB for
    the 1.6 s of checks after the remux; with this, 190 MiB."""
    os.ftruncate(files.input, 0)


def _classify(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "too-demanding"
    try:
        from PIL import Image  # noqa: PLC0415

        if isinstance(exc, Image.DecompressionBombError | Image.DecompressionBombWarning):
            return "too-demanding"
    except ImportError:
        pass
    return "malformed"


def clean_streamed(mime: str, source_fd: int, results: int, size: int, mode: str) -> dict[str, Any]:
    """Strips one video whose result goes to the relay over a socket; the input comes
    over another socket, or from a read-only file descriptor (modes `stream-file` and
    `stream-files`). In `stream-files` the result goes into a file descriptor instead."""
    from . import channel, video  # noqa: PLC0415 - PyAV only where it is used

    file_link = channel.FileLink(results) if mode == "stream-files" else None
    with contextlib.ExitStack() as closing:
        link: channel.Result
        if file_link is not None:
            # A result past the limit on file size fails its write with EFBIG (Python
            # ignores SIGXFSZ), and is refused as too demanding.
            closing.callback(os.close, results)
            link = file_link
        else:
            link = channel.ResultLink(closing.enter_context(socket.socket(fileno=results)))
        try:
            if mode == "stream":
                source = closing.enter_context(socket.socket(fileno=source_fd))
                answer = video.clean(mime, channel.RemoteInput(source, size), link)
            else:
                with os.fdopen(source_fd, "rb", buffering=0) as file:
                    answer = video.clean(mime, file, link)
        except Exception:
            if file_link is None or not file_link.too_large:
                raise
            answer = {}
        if file_link is not None and file_link.too_large:  # raised, or swallowed by FFmpeg
            return {"ok": False, "reason": "too-demanding"}
        return answer


def run(handler: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Runs a handler; any exception is one refusal."""
    try:
        return handler()
    except Exception as exc:  # noqa: BLE001 - every parser failure is one refusal
        return {"ok": False, "reason": _classify(exc)}


def _handler(argv: list[str]) -> Callable[[], dict[str, Any]] | None:
    """The function that cleans the input `argv` describes, if there is one."""
    from . import media  # noqa: PLC0415

    mode, mime = argv[0], argv[3]
    if mode in ("stream", "stream-file", "stream-files") and mime in media.FORMATS:
        source, results, size = int(argv[1]), int(argv[2]), int(argv[5])
        return lambda: clean_streamed(mime, source, results, size, mode)
    files = Files(int(argv[1]), int(argv[2]))
    if mime in IMAGE_BYTEWISE | IMAGE_REENCODE:
        return lambda: clean_image(mime, files)
    return None


def main(argv: list[str]) -> int:
    max_output = int(argv[4])
    limit_resources(max_output)
    warnings.simplefilter("error")  # a parser's warning is a file we are not sure of
    handler = _handler(argv)
    answer = {"ok": False, "reason": "unsupported"} if handler is None else run(handler)
    sys.stdout.write(json.dumps(answer))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The parent side of stripping: one sandboxed worker process per file.

Rules:
- plaintext never gets a disk path: a video or a sound file (media.FORMATS) is served to
  the worker on request over a socket and its result comes back the same way as it is
  written (see channel.py); a picture is copied into an anonymous in-memory file (memfd)
  and the worker writes its result into another; both die with their descriptors. Only
  the files of a caller's own (amanah-drop strip on a source's device: the source's file
  in, a new file of theirs out) are handed to the worker as descriptors, read-only and
  write-only;
- the worker runs under bubblewrap when `bwrap` is installed: no network (all namespaces
  unshared), read-only system and Python directories, an empty /tmp, no capabilities, a
  cleared environment, killed with its parent; and always in its own session (process
  group), with its own resource limits (worker.py);
- a wall-clock timeout, scaled with the file's size, kills the whole process group;
- the worker's standard error is read and thrown away (it may quote metadata); its answer
  is a small JSON object, and anything else from it is a refusal.

Raises only `errors.Refused` subclasses for a file that is not cleaned; OSError if the
host cannot run a worker at all (no memfd, no Python), which is the operator's problem.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import stat
import subprocess  # noqa: S404 - the worker is our own program, run with fixed arguments
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import channel, media, worker
from .errors import Refused, WorkerFailed, refusal

COPY_SIZE = 1 << 20
# Seconds: start-up (Python, Pillow, PyAV) plus a rate far below what was measured (a 200
# MB remux with the SEI filter took 1.2 s; a FLAC encoded twice, ~0.05 s per MB), so a
# healthy file never times out and a stuck parser is killed within minutes.
TIMEOUT_BASE = 30.0
TIMEOUT_PER_MB = 0.2
# The result may be somewhat larger than the input (a FLAC re-encode, a re-encoded picture).
OUTPUT_FACTOR, OUTPUT_SLACK = 4, 64 * 1024 * 1024

SUPPORTED = frozenset(worker.IMAGE_BYTEWISE | worker.IMAGE_REENCODE | set(media.FORMATS))

# The worker's start: the package `relay.sanitize` is registered without running its
# __init__ (the parent's side: libmagic, which runs `ldconfig -p` twice to find itself,
# and this module), which the worker never uses.
_BOOT = """import sys, types
sys.path.insert(0, sys.argv[1])
package = types.ModuleType("relay.sanitize")
package.__path__ = [sys.argv[1] + "/relay/sanitize"]
sys.modules["relay.sanitize"] = package
from relay.sanitize.worker import main
sys.exit(main(sys.argv[2:]))"""


@dataclass(frozen=True)
class Outcome:
    """A cleaned file: its MIME type, the names of what went, and facts of the original."""

    mime: str
    removed: tuple[str, ...]
    original_sha256: str
    original_size: int


def _package_root() -> str:
    """The directory holding the `relay` package (a checkout or site-packages)."""
    return str(Path(__file__).resolve().parents[2])


def _read_only_paths() -> list[str]:
    paths = {sys.prefix, sys.base_prefix, _package_root(), str(Path(sys.executable).parent)}
    real = {os.path.realpath(p) for p in paths} | paths
    chosen: list[str] = []
    for path in sorted(real):
        if path.startswith("/usr") or not os.path.isdir(path):
            continue
        if any(path == c or path.startswith(c + "/") for c in chosen):
            continue
        chosen.append(path)
    return chosen


def bwrap_prefix() -> list[str]:
    """The bubblewrap command that wraps the worker, or [] where bwrap is not installed."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return []
    command = [bwrap, "--ro-bind", "/usr", "/usr"]
    for link in ("lib", "lib64", "bin", "sbin"):
        if os.path.islink(f"/{link}"):
            command += ["--symlink", os.readlink(f"/{link}"), f"/{link}"]
        elif os.path.isdir(f"/{link}"):
            command += ["--ro-bind", f"/{link}", f"/{link}"]
    # ld.so.cache: library lookup. (/etc/alternatives went in session 15 with the last
    # run of Debian's ffmpeg, which found its BLAS there.)
    if os.path.exists("/etc/ld.so.cache"):
        command += ["--ro-bind", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    # The private /tmp first: a later mount hides what is under it, and the project (or
    # its venv) may itself live under /tmp, as a fresh CI checkout can.
    command += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 - empty, private
    for path in _read_only_paths():
        command += ["--ro-bind", path, path]
    command += ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    command += ["--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--chdir", "/", "--"]
    return command


# Memory, measured (bench/sanitize.py and tests/sanitize/test_memory.py; H.264/AAC MP4s,
# their index at the end as phones write it; every process of the tree polled every 3 ms,
# memfds counted, since their pages show in no process's RSS):
# - videos and sound stream (channel.py, video.py; an AVI that cannot become Matroska, a
#   WAV of compressed sound, muxed twice, and FLAC, encoded once or twice: flac.py): nothing in
#   proportion to the file is held. In all, at 100 MB, 500 MB and 1.5 GB alike:
#   117-120 MiB for amanah-drop strip (its worker and bubblewrap included), 96-98 MiB for
#   the library alone, 105-106 MiB for the relay's own path (staging, the sealed reader,
#   the worker, the sealing writer);
# - pictures take the memfd path: the input and the result are each held whole in memory
#   (a 200 MB MP4 held 498 MiB at its peak that way, 1066 MiB at 500 MB, before videos
#   streamed; FLAC took it until session 15). The worker empties the input memfd as soon
#   as nothing reads it again (worker.release_input), so the checks hold the result only.


def _fill_memfd(src: BinaryIO, hashed: bool) -> tuple[int, str, int]:
    """Copies `src` into a new memfd: (descriptor, SHA-256 or "" unless `hashed`, size)."""
    fd = os.memfd_create("in", 0)
    digest, size = hashlib.sha256() if hashed else None, 0
    src.seek(0)
    try:
        while block := src.read(COPY_SIZE):
            if digest is not None:
                digest.update(block)
            size += len(block)
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd, digest.hexdigest() if digest is not None else "", size


def _copy_out(fd: int, dst: BinaryIO) -> None:
    offset = 0
    while block := os.pread(fd, COPY_SIZE, offset):
        dst.write(block)
        offset += len(block)


class Sandboxed:
    """The real sanitizer: each file cleaned by its own sandboxed worker process.
    `sandbox=False` runs the worker without bubblewrap (it keeps its limits, session and
    timeout); `None` uses bubblewrap where it is installed."""

    def __init__(self, sandbox: bool | None = None, timeout_base: float = TIMEOUT_BASE) -> None:
        prefix = bwrap_prefix() if sandbox is not False else []
        if sandbox and not prefix:
            raise OSError("bubblewrap (bwrap) is not installed")
        self._prefix = prefix
        self._timeout_base = timeout_base

    @property
    def sandboxed(self) -> bool:
        return bool(self._prefix)

    def strip(self, mime: str, src: BinaryIO, dst: BinaryIO, hashed: bool = True) -> Outcome:
        """Cleans `src` (seekable) of type `mime` into `dst`. Raises Refused; then `dst`
        may hold part of a result, which the caller discards. Raises whatever `src` and
        `dst` raise (a staging file that does not decrypt, a full disk). The outcome's
        `original_sha256` is "" unless `hashed`."""
        if mime not in SUPPORTED:
            raise refusal("unsupported")
        if mime in media.FORMATS:
            return self._strip_streamed(mime, src, dst, hashed)
        in_fd, original_sha256, size = _fill_memfd(src, hashed)
        out_fd = os.memfd_create("out", 0)
        try:
            os.lseek(in_fd, 0, os.SEEK_SET)
            limit = size * OUTPUT_FACTOR + OUTPUT_SLACK
            args = ["files", str(in_fd), str(out_fd), mime, str(limit)]
            answer = self._run(args, (in_fd, out_fd), self._deadline(size), None)
            out_mime, removed = _accepted(answer)
            _copy_out(out_fd, dst)
        finally:
            os.close(in_fd)
            os.close(out_fd)
        return Outcome(out_mime, removed, original_sha256, size)

    def _strip_streamed(self, mime: str, src: BinaryIO, dst: BinaryIO, hashed: bool) -> Outcome:
        """A video: the worker reads `src` and sends its result over socket pairs
        (channel.py), so neither the input nor the result is ever held whole in memory.
        When `src` is a file of the caller's own (amanah-drop strip on a source's device;
        never in the relay, whose staged files are sealed), the worker reads it itself
        through a read-only descriptor, and the relay only hashes it meanwhile (if asked);
        when `dst` is one too, the worker also writes the result into it itself."""
        size = src.seek(0, io.SEEK_END)
        limit = size * OUTPUT_FACTOR + OUTPUT_SLACK
        deadline = self._deadline(size)
        local = _read_only_descriptor(src)
        if local is not None:
            target = _write_only_descriptor(dst)
            if target is not None:
                fds = (local, target)
                return self._strip_file_to_file(mime, src, dst, fds, size, deadline, hashed)
        results, their_results = socket.socketpair()
        requests: socket.socket | None = None
        if local is None:
            requests, their_requests = socket.socketpair()
            theirs: tuple[socket.socket, ...] = (their_requests, their_results)
            fds = (their_requests.fileno(), their_results.fileno())
            mode = "stream"
        else:
            theirs, fds, mode = (their_results,), (local, their_results.fileno()), "stream-file"
        served: list[tuple[str, int]] = []

        def serve() -> None:
            served.append(channel.serve(requests, results, src, size, dst, deadline, limit, hashed))

        try:
            args = [mode, *map(str, fds), mime, str(limit), str(size)]
            answer = self._run(args, fds, deadline, serve, theirs)
        finally:
            for link in (results, *theirs, *([requests] if requests else [])):
                link.close()
            if local is not None:
                os.close(local)
        sha256, written = served[0] if served else ("", 0)
        return _streamed_outcome(answer, written, sha256, size)

    def _strip_file_to_file(
        self,
        mime: str,
        src: BinaryIO,
        dst: BinaryIO,
        fds: tuple[int, int],
        size: int,
        deadline: float,
        hashed: bool,
    ) -> Outcome:
        """Both ends are files of the caller's own: the worker reads `fds[0]` (read-only)
        and writes its result through `fds[1]` (write-only, sharing `dst`'s offset), with
        no link between (measured on a 500 MB MP4: the result link and its receiving
        thread took 0.2 of amanah-drop strip's 1.1 s). Its limit on file size bounds the
        result. Both descriptors are closed here. Returns as `_strip_streamed`."""
        start = os.lseek(fds[1], 0, os.SEEK_CUR)
        limit = start + size * OUTPUT_FACTOR + OUTPUT_SLACK
        sha256 = [""]

        def hash_meanwhile() -> None:
            if hashed:
                sha256[0] = channel.digest_of(src, size)

        try:
            args = ["stream-files", *map(str, fds), mime, str(limit), str(size)]
            answer = self._run(args, fds, deadline, hash_meanwhile)
            written = os.lseek(fds[1], 0, os.SEEK_CUR) - start
        finally:
            for fd in fds:
                os.close(fd)
        return _streamed_outcome(answer, written, sha256[0], size)

    def _deadline(self, size: int) -> float:
        return time.monotonic() + self._timeout_base + TIMEOUT_PER_MB * size / 1e6

    def _run(
        self,
        args: Sequence[str],
        fds: Sequence[int],
        deadline: float,
        serve: Callable[[], None] | None,
        links: Sequence[socket.socket] = (),
    ) -> dict[str, object]:
        """Runs one worker with `args`, `fds` open in it, until `deadline`; `serve` (if
        any) runs meanwhile, until the worker closes its ends of `links`."""
        command = [*self._prefix, sys.executable, "-I", "-c", _BOOT, _package_root(), *args]
        with subprocess.Popen(  # noqa: S603 - fixed arguments, our own worker
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            # Read and thrown away, or to nowhere when the relay is busy serving: it may
            # quote metadata, and a full pipe would stop a worker that writes to it.
            stderr=subprocess.DEVNULL if serve else subprocess.PIPE,
            pass_fds=tuple(fds),
            start_new_session=True,
            env={"PATH": "/usr/bin:/bin"},
        ) as process:  # closes the pipes whatever happens
            try:
                for link in links:
                    link.close()  # the worker's ends live in the worker only
                if serve is not None:
                    _serve_worker(serve)
                stdout, _ = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except (subprocess.TimeoutExpired, TimeoutError, channel.OutputTooLarge):
                _kill_group(process)
                process.communicate()
                raise refusal("too-demanding") from None
            finally:
                _kill_group(process)  # nothing of the worker outlives its answer
        if process.returncode != 0:
            raise refusal("worker-failed")
        try:
            answer = json.loads(stdout)
        except ValueError:
            raise refusal("worker-failed") from None
        if not isinstance(answer, dict):
            raise refusal("worker-failed")
        return answer


def _regular_file(file: BinaryIO) -> int | None:
    """The descriptor of `file` when it is a regular file, else None (a staged upload,
    the relay's sealing writer, a buffer)."""
    try:
        fd = file.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return None
    return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None


def _read_only_descriptor(src: BinaryIO) -> int | None:
    """A new read-only descriptor of `src` when it is a regular file (the worker may read
    it, never write it), else None."""
    fd = _regular_file(src)
    return None if fd is None else os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)


def _write_only_descriptor(dst: BinaryIO) -> int | None:
    """A descriptor sharing `dst`'s offset (after flushing it) when `dst` is a regular file
    opened for writing only (the worker may write it, never read it), else None (also for
    a file open for reading too, or for appending)."""
    fd = _regular_file(dst)
    if fd is None:
        return None
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if flags & os.O_ACCMODE != os.O_WRONLY or flags & os.O_APPEND:
        return None
    dst.flush()
    return os.dup(fd)


def _serve_worker(serve: Callable[[], None]) -> None:
    """Serves the worker; a broken link means the worker stopped, and its answer (or its
    exit status) says why. Raises refusals for a worker that breaks the protocol."""
    try:
        serve()
    except ConnectionError:
        pass
    except channel.ProtocolError:
        raise refusal("worker-failed") from None


def _streamed_outcome(answer: dict[str, object], written: int, sha256: str, size: int) -> Outcome:
    """A streamed worker's answer, after `written` bytes of result. Raises Refused."""
    out_mime, removed = _accepted(answer)
    if not written:
        raise refusal("worker-failed")
    return Outcome(out_mime, removed, sha256, size)


def _accepted(answer: dict[str, object]) -> tuple[str, tuple[str, ...]]:
    """The MIME type and removed names of a worker's "ok" answer. Raises Refused."""
    if not answer.get("ok"):
        raise refusal(str(answer.get("reason")))
    out_mime, removed = answer.get("mime"), answer.get("removed")
    if not isinstance(out_mime, str) or not isinstance(removed, list):
        raise refusal("worker-failed")
    return out_mime, tuple(str(r) for r in removed)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


__all__ = ["SUPPORTED", "Outcome", "Refused", "Sandboxed", "WorkerFailed"]

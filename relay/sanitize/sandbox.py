"""The parent side of stripping: one sandboxed worker process per file.

Rules:
- plaintext never gets a disk path: the input is copied into an anonymous in-memory file
  (memfd) and the worker writes its result into another; both die with their descriptors;
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

import hashlib
import json
import os
import shutil
import signal
import subprocess  # noqa: S404 - the worker is our own program, run with fixed arguments
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from . import media, worker
from .errors import Refused, WorkerFailed, refusal

COPY_SIZE = 1 << 20
# Seconds: start-up (Python, Pillow, ffprobe) plus a rate far below what was measured
# (a 200 MB remux with the SEI filter took 1.2 s), so a healthy file never times out and
# a stuck parser is killed within minutes.
TIMEOUT_BASE = 30.0
TIMEOUT_PER_MB = 0.2
# The result may be somewhat larger than the input (a FLAC re-encode, a re-encoded picture).
OUTPUT_FACTOR, OUTPUT_SLACK = 4, 64 * 1024 * 1024

SUPPORTED = frozenset(worker.IMAGE_BYTEWISE | worker.IMAGE_REENCODE | set(media.FORMATS))

_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from relay.sanitize.worker import main; "
_BOOT += "sys.exit(main(sys.argv[2:]))"


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
    # /etc/alternatives: Debian's ffmpeg finds its BLAS there; ld.so.cache: library lookup.
    for etc in ("/etc/alternatives", "/etc/ld.so.cache"):
        if os.path.exists(etc):
            command += ["--ro-bind", etc, etc]
    # The private /tmp first: a later mount hides what is under it, and the project (or
    # its venv) may itself live under /tmp, as a fresh CI checkout can.
    command += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]  # noqa: S108 - empty, private
    for path in _read_only_paths():
        command += ["--ro-bind", path, path]
    command += ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    command += ["--clearenv", "--setenv", "PATH", "/usr/bin:/bin", "--chdir", "/", "--"]
    return command


# Memory, measured (bench/sanitize.py; a 200 MB H.264/AAC MP4, its index at the end as
# phones write it; every process of the tree polled every 3 ms):
# - no process is large: the worker's Python 24 MiB, ffprobe 53, the remux 53, the decode
#   check 71 (VmHWM; 40 of each ffmpeg's is shared libraries), at most 119 MiB summed over
#   the processes alive at one instant, the same at 100 and 500 MB;
# - the size-proportional memory is the two memfds, which no RSS shows (their pages are
#   shmem, mapped by nobody): the input (190 MiB) and the result (190 MiB), 379 MiB
#   together from the end of the remux until the worker exited; 498 MiB in all at the peak,
#   1066 MiB for a 500 MB file. A Python copy of the file, pipes or mmaps were not it.
# Done: the worker empties the input memfd as soon as nothing reads it again
# (worker.release_input): after the remux the result is checked for ~1.6 s (200 MB) with
# only the result held, so two concurrent jobs rarely hold four copies. The peak (input and
# result, at the end of the remux) is still twice the file.
# Why not less, here: ffmpeg must seek in an MP4 whose index is at its end, so the CLI
# needs the plaintext in a seekable file (memfd or tmpfs: the same RAM); the MP4 muxer
# needs a seekable output (it patches the mdat size, and +faststart moves the index) and
# the checks read the result again. The flat design, for when PyAV (or a custom AVIO) is
# a dependency: the worker demuxes from a file object that asks the parent for
# (offset, length) over a socketpair, served from the sealed staging file
# (staging.SealedReader, 64 KiB chunks), and muxes into a file object backed by the
# parent's encrypted spill file (ChaCha20 at an offset, key in RAM only), which the checks
# read back the same way: RAM then flat (~60 MiB per job, notes/performance.md: PyAV remux
# measures like the CLI), plaintext still never on a disk path.


def _fill_memfd(src: BinaryIO) -> tuple[int, str, int]:
    """Copies `src` into a new memfd: (descriptor, SHA-256, size)."""
    fd = os.memfd_create("in", 0)
    digest, size = hashlib.sha256(), 0
    src.seek(0)
    try:
        while block := src.read(COPY_SIZE):
            digest.update(block)
            size += len(block)
            view = memoryview(block)
            while view:
                view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd, digest.hexdigest(), size


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

    def strip(self, mime: str, src: BinaryIO, dst: BinaryIO) -> Outcome:
        """Cleans `src` (seekable) of type `mime` into `dst`. Raises Refused."""
        if mime not in SUPPORTED:
            raise refusal("unsupported")
        in_fd, original_sha256, size = _fill_memfd(src)
        out_fd = os.memfd_create("out", 0)
        try:
            os.lseek(in_fd, 0, os.SEEK_SET)
            limit = size * OUTPUT_FACTOR + OUTPUT_SLACK
            timeout = self._timeout_base + TIMEOUT_PER_MB * size / 1e6
            answer = self._run(in_fd, out_fd, [mime, str(limit)], timeout)
            if not answer.get("ok"):
                raise refusal(str(answer.get("reason")))
            out_mime, removed = answer.get("mime"), answer.get("removed")
            if not isinstance(out_mime, str) or not isinstance(removed, list):
                raise refusal("worker-failed")
            _copy_out(out_fd, dst)
        finally:
            os.close(in_fd)
            os.close(out_fd)
        return Outcome(out_mime, tuple(str(r) for r in removed), original_sha256, size)

    def _run(
        self, in_fd: int, out_fd: int, args: Sequence[str], timeout: float
    ) -> dict[str, object]:
        # The memfds keep their numbers in the worker (pass_fds); bwrap passes them on.
        fds = [str(in_fd), str(out_fd)]
        command = [*self._prefix, sys.executable, "-I", "-c", _BOOT, _package_root(), *fds, *args]
        with subprocess.Popen(  # noqa: S603 - fixed arguments, our own worker
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(in_fd, out_fd),
            start_new_session=True,
            env={"PATH": "/usr/bin:/bin"},
        ) as process:  # closes the pipes whatever happens
            try:
                stdout, _ = process.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
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


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


__all__ = ["SUPPORTED", "Outcome", "Refused", "Sandboxed", "WorkerFailed"]

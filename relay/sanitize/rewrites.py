"""A muxer that goes back over what it wrote (AVI's, WAV's: sizes, frame counts and
indexes filled in at the end) made to write forward only, in two passes.

The first pass muxes into a `Recorder`: nothing is kept but what the muxer writes over
bytes it had already written (`Rewrite`s, a few hundred bytes for a file of any size),
and the file's final size. The second pass muxes the same packets again into an
`Overlay`, which sends each byte forward once, the first pass's rewrites already in
place, and takes what the muxer now writes over as a check: it must be exactly what the
first pass wrote there (FFmpeg's muxers write the same bytes for the same packets with
`+bitexact`). So a result is never held whole, neither by the worker nor by the relay, at
the cost of muxing twice.

Pure bookkeeping on bytes: no I/O, no FFmpeg. Both classes are file objects as PyAV writes
to one (write, seek, tell, seekable).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass

# More than this is no header the muxers above write: the muxer is not one of them.
MAX_REWRITTEN = 16 << 20  # bytes, all rewrites together


class RewriteError(Exception):
    """The second pass differs from the first, or the rewrites pass MAX_REWRITTEN."""


@dataclass(frozen=True)
class Rewrite:
    offset: int
    data: bytes


class _Positioned:
    """A write position over a file that only grows: `end` is its size so far."""

    def __init__(self) -> None:
        self.position = 0
        self.end = 0
        self.rewrites: list[Rewrite] = []
        self._rewritten = 0

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        position = (0, self.position, self.end)[whence] + offset
        if position < 0:
            raise ValueError("negative seek position")
        self.position = position
        return position

    def write(self, data: bytes | memoryview) -> int:
        view = memoryview(data).cast("B")
        over = max(0, min(len(view), self.end - self.position))
        if over:
            self._rewritten += over
            if self._rewritten > MAX_REWRITTEN:
                raise RewriteError("too many rewrites")
            self.rewrites.append(Rewrite(self.position, bytes(view[:over])))
        if over < len(view):
            self._forward(self.position + over, view[over:])
        self.position += len(view)
        self.end = max(self.end, self.position)
        return len(view)

    def _forward(self, offset: int, data: memoryview) -> None:
        """Bytes at `offset` >= `end` (past it: a gap, zeros in a file)."""


class Recorder(_Positioned):
    """The first pass: keeps the rewrites and the size, sends nothing."""

    @classmethod
    def known(cls, rewrites: list[Rewrite]) -> Recorder:
        """A first pass not run: what the muxer will write over is known beforehand
        (flac.py), and its size is not (an `Overlay` of it is not `finish`ed)."""
        recorder = cls()
        recorder.rewrites = list(rewrites)
        return recorder


class Overlay(_Positioned):
    """The second pass: sends the file forward to `send`, `rewrites` (the first pass's) in
    place; `finish` checks that this pass rewrote the same and ended at the same size."""

    def __init__(self, send: Callable[[bytes], object], first: Recorder) -> None:
        super().__init__()
        self._send = send
        self._first = first
        self._starts = sorted({r.offset for r in first.rewrites})
        self._longest = max((len(r.data) for r in first.rewrites), default=0)

    def _forward(self, offset: int, data: memoryview) -> None:
        if offset > self.end:
            self._out(self.end, memoryview(bytes(offset - self.end)))
        self._out(offset, data)

    def _out(self, offset: int, data: memoryview) -> None:
        end = offset + len(data)
        low = bisect.bisect_left(self._starts, offset - self._longest)
        high = bisect.bisect_left(self._starts, end)
        if low == high:
            self._send(bytes(data))
            return
        piece = bytearray(data)
        for rewrite in self._first.rewrites:  # in the order written: the last one stands
            start, stop = max(offset, rewrite.offset), min(end, rewrite.offset + len(rewrite.data))
            if start < stop:
                piece[start - offset : stop - offset] = rewrite.data[
                    start - rewrite.offset : stop - rewrite.offset
                ]
        self._send(bytes(piece))

    def finish(self) -> None:
        """Raises RewriteError unless this pass wrote what the first did."""
        if self.rewrites != self._first.rewrites or self.end != self._first.end:
            raise RewriteError("the second pass wrote otherwise")

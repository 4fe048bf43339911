"""A loopback TCP proxy between the browser and the relay that breaks connections the way
a Tor circuit does: it cuts a connection once it has carried a given number of bytes
towards the relay (the relay sees the stream end, as tor ends it; the browser sees a
reset), or stalls it (bytes from the browser swallowed, nothing forwarded: a circuit that
went silent; reset towards the relay when the browser gives up). It counts every byte it
forwards, so a test can tell how much was sent again after a resume.

It speaks no HTTP: the browser's requests and the relay's answers pass through unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass, field

CHUNK = 64 * 1024


@dataclass
class CutProxy:
    target_port: int
    # Per connection: after this many bytes towards the relay, reset it (`cuts` times).
    cut_after: int | None = None
    cuts: int = 0
    # Per connection: after this many bytes towards the relay, forward nothing more from
    # it (`stalls` times) until the browser gives up on it.
    stall_after: int | None = None
    stalls: int = 0
    upstream: int = 0  # bytes forwarded to the relay, all connections together
    cut_done: int = 0
    stalled: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _connection(
        self, browser_in: asyncio.StreamReader, browser_out: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            relay_in, relay_out = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            _reset(browser_out)
            self._tasks.discard(task)
            return
        down = asyncio.create_task(_pump(relay_in, browser_out))
        try:
            await self._up(browser_in, relay_out, browser_out)
        except (ConnectionError, OSError):
            pass
        finally:
            down.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await down
            for writer in (relay_out, browser_out):
                if not writer.is_closing():
                    writer.close()
            self._tasks.discard(task)

    async def _up(
        self,
        browser_in: asyncio.StreamReader,
        relay_out: asyncio.StreamWriter,
        browser_out: asyncio.StreamWriter,
    ) -> None:
        carried = 0
        stalled = False
        while chunk := await browser_in.read(CHUNK):
            if stalled:
                continue  # swallowed: the relay hears nothing more on this connection
            over = carried + len(chunk)
            if self.stall_after is not None and self.stalls and over > self.stall_after:
                chunk = chunk[: self.stall_after - carried]
                self.stalls -= 1
                stalled = True
                self.stalled.set()
            elif self.cut_after is not None and self.cuts and over > self.cut_after:
                chunk = chunk[: self.cut_after - carried]
                await self._forward(relay_out, chunk)
                self.cuts -= 1
                self.cut_done += 1
                relay_out.close()  # the relay reads what came, then the end of it
                _reset(browser_out)
                return
            carried += len(chunk)
            await self._forward(relay_out, chunk)
        if stalled:  # the browser gave up on it: the relay sees the circuit drop
            _reset(relay_out)

    async def _forward(self, writer: asyncio.StreamWriter, chunk: bytes) -> None:
        if chunk:
            writer.write(chunk)
            await writer.drain()
            self.upstream += len(chunk)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while chunk := await reader.read(CHUNK):
        writer.write(chunk)
        await writer.drain()
    if not writer.is_closing() and writer.can_write_eof():
        writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Closes with a TCP reset (SO_LINGER 0), as a dropped circuit looks to each side."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()

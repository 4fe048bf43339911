"""Helpers for the `amanah-drop` and `amanah-inbox` tests: a relay with two contacts, the
commands as processes, a loopback TCP proxy that cuts, refuses or stalls connections the
way a Tor circuit drops (a real socket proxy, not a fake of anything), and a listener that
counts the connections offered where a misdirected client would go."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import re
import socket
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from tests.relayharness import (
    BIN,
    INBOX,
    Member,
    RelayPool,
    RelayProcess,
    add_contact,
    api_json,
    child_env,
    init_data,
    keygen,
    token_for,
)

DROP = str(BIN / "amanah-drop")
AGE = "/usr/bin/age"


@dataclass
class Setup:
    """A running relay (`amanah serve --no-tor`) with contacts "the-daily" (alice) and
    "ohchr" (bob), in `root`."""

    root: Path
    data: Path
    relay: RelayProcess
    alice: Member
    bob: Member
    pool: RelayPool


def make_setup(root: Path) -> Iterator[Setup]:
    data = root / "data"
    init_data(data)
    alice = keygen(root / "alice.txt")
    bob = keygen(root / "bob.txt")
    add_contact(data, "the-daily", [alice])
    add_contact(data, "ohchr", [bob])
    with RelayPool(root) as pool:
        yield Setup(root, data, pool.new(data), alice, bob, pool)


def run_drop(
    *args: str | Path,
    state: Path,
    stdin: str | None = None,
    timeout: float = 180,
    tmpdir: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """`amanah-drop ARGS --state STATE` (state given for every subcommand but strip)."""
    argv = [DROP, *map(str, args), "--state", str(state)]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin if stdin is not None else "",
        env=child_env(tmpdir),
    )


def fetch(relay: RelayProcess, member: Member, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [INBOX, "fetch", "--relay", relay.journalist_url, "--identity", str(member.identity_file)]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        env=child_env(),
    )


async def listing(relay: RelayProcess, member: Member) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        token = await token_for(session, relay.journalist_url, member.identity)
        status, body = await api_json(session, relay.journalist_url + "/api/v1/drops", token=token)
        assert status == 200, body
        return list(body["drops"])


async def ack_all(relay: RelayProcess, member: Member) -> None:
    """Acknowledges every drop waiting for the member's contact (tidying between tests)."""
    async with aiohttp.ClientSession() as session:
        token = await token_for(session, relay.journalist_url, member.identity)
        status, body = await api_json(session, relay.journalist_url + "/api/v1/drops", token=token)
        assert status == 200, body
        for drop in body["drops"]:
            url = f"{relay.journalist_url}/api/v1/drops/{drop['id']}/ack"
            await api_json(session, url, "POST", token=token)


def codename_line(stdout: str) -> str:
    lines = stdout.strip().splitlines()
    assert len(lines) == 1, stdout
    assert len(lines[0].split()) == 7, stdout
    return lines[0]


def noisy_png(path: Path, side: int) -> Path:
    """A PNG of random pixels (incompressible: about 3 * side * side bytes)."""
    Image.frombytes("RGB", (side, side), os.urandom(3 * side * side)).save(path, compress_level=1)
    return path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tar_bytes(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A tar written by tarfile from prepared headers (hostile ones included)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def member(name: str, data: bytes = b"", **attributes: Any) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o600
    for key, value in attributes.items():
        setattr(info, key, value)
    return info, data


def device_manifest(files: list[dict[str, Any]], message: bytes | None = None) -> bytes:
    document = {
        "format": "amanah-drop-v1",
        "drop": None,
        "created_at": 0,
        "sealed_on": "device",
        "directory_version": 1,
        "reply": None,
        "message": None
        if message is None
        else {
            "blob": "message.txt",
            "name": "message.txt",
            "size": len(message),
            "sha256": hashlib.sha256(message).hexdigest(),
        },
        "files": files,
        "refused": [],
    }
    return json.dumps(document).encode()


def file_entry(blob: str, name: str, data: bytes) -> dict[str, Any]:
    return {
        "blob": blob,
        "name": name,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


# --- where a misdirected client would go ---------------------------------------------------


class Elsewhere:
    """A TCP listener (asyncio) where a misdirected client would go: counts the
    connections it is offered, and answers each with a tus-looking 204 (Upload-Offset
    `length`, Location `upload`), so that a client that followed would carry on."""

    def __init__(self, length: int, upload: str) -> None:
        self.connections = 0
        self.length = length
        self.upload = upload
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._answer, host, port)
        return int(self.server.sockets[0].getsockname()[1])

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.read(65536)
        writer.write(
            b"HTTP/1.1 204 No Content\r\nTus-Resumable: 1.0.0\r\n"
            b"Upload-Offset: %d\r\nLocation: %s\r\nConnection: close\r\n\r\n"
            % (self.length, self.upload.encode())
        )
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


# --- a loopback proxy that breaks connections -----------------------------------------------


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of `target` (a port). What it does to each new
    connection is set between requests:

    - `cut_every`: close a connection once that many bytes went upstream on it;
    - `budget`: after that many upstream bytes in all, refuse (close at once) every new
      connection, and close the ones open;
    - `stall_after`: after that many upstream bytes in all, stop forwarding (hold the
      connections open, as a circuit that hangs);
    - `lose_final_answer`: the relay's answer to the PATCH that completes an upload (its
      `Upload-Offset` equals the `Upload-Length` a client announced) is not passed on:
      the connection closes instead, once; the relay has the whole upload.

    `upstream` counts the bytes forwarded towards the target."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.cut_every: int | None = None
        self.budget: int | None = None
        self.stall_after: int | None = None
        self.lose_final_answer = False
        self.lost_answers = 0
        self._lengths: set[bytes] = set()  # Upload-Length values seen going upstream
        self.upstream = 0
        self.connections = 0
        self.carried: list[int] = []  # upstream bytes of each connection, once closed
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self, target: int | None = None) -> None:
        """Pass-through from now on; closes every open connection."""
        with self._lock:
            self.cut_every = self.budget = self.stall_after = None
            if target is not None:
                self.target = target
            for sock in self._open:
                _close(sock)
            self._open.clear()

    def close(self) -> None:
        self.reset()
        _close(self._listener)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                refused = self.budget is not None and self.upstream >= self.budget
                if not refused:
                    try:
                        server = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                    except OSError:
                        refused = True
                if refused:
                    _close(client)
                    continue
                server.settimeout(None)
                self._open += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        sent_here = 0
        try:
            while data := src.recv(65536):
                if up:
                    self._lengths.update(re.findall(rb"Upload-Length: (\d+)\r\n", data))
                elif self._final_answer(data):
                    break
                if up:
                    admitted = self._admit(data, sent_here)
                    if admitted is None:
                        break
                    data = admitted
                    sent_here += len(data)
                dst.sendall(data)
                if up and self.cut_every is not None and sent_here >= self.cut_every:
                    break
        except OSError:
            pass
        finally:
            _close(src)
            _close(dst)
            if up:
                with self._lock:
                    self.carried.append(sent_here)

    def _final_answer(self, data: bytes) -> bool:
        """True (once, when asked to lose it) for the answer that completes an upload."""
        if not self.lose_final_answer or not data.startswith(b"HTTP/1.1 204"):
            return False
        offset = re.search(rb"Upload-Offset: (\d+)\r\n", data)
        if offset is None or offset.group(1) not in self._lengths:
            return False
        self.lose_final_answer = False
        self.lost_answers += 1
        return True

    def _admit(self, data: bytes, sent_here: int) -> bytes | None:
        """What of `data` may go upstream now (None: close the connection). Blocks while
        stalled."""
        while True:
            with self._lock:
                limit = None
                for bound in (self.budget, self.stall_after):
                    if bound is not None:
                        limit = bound if limit is None else min(limit, bound)
                if self.cut_every is not None:
                    here = self.upstream + self.cut_every - sent_here
                    limit = here if limit is None else min(limit, here)
                room = len(data) if limit is None else max(0, limit - self.upstream)
                if room > 0:
                    data = data[:room]
                    self.upstream += len(data)
                    return data
                if self.stall_after is None or self.upstream < self.stall_after:
                    return None
            threading.Event().wait(0.05)  # stalled: hold the connection, forward nothing


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()

"""Shared test helpers for driving a relay from outside: the console scripts as processes,
a relay subprocess with captured logs, the source form over HTTP, the journalist API by
hand, raw HTTP for requests no well-behaved client would send, and scans of the disk.

Nothing here imports the relay's web code: these helpers see the relay as a source, a
contact and an operator would.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import html
import os
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp

from crypto.auth import auth_message
from crypto.card import MemberIdentity
from crypto.keys import VerifyKey

BIN = Path(sys.executable).parent
AMANAH = str(BIN / "amanah")
INBOX = str(BIN / "amanah-inbox")
AGE = "/usr/bin/age"
# A browser's user agent, unique per test run, that must never reach a log.
USER_AGENT = f"Mozilla/5.0 (AmanahTest {secrets.token_hex(8)})"
START_TIMEOUT = 20.0
STOP_GRACE = 5.0
RAW_TIMEOUT = 30.0  # seconds for one raw HTTP exchange


# --- processes ----------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """`count` distinct loopback ports that were free a moment ago (all held at once while
    choosing, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def child_env(tmpdir: Path | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMANAH_")}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    env.update(extra)
    return env


def run(
    *argv: str | Path,
    tmpdir: Path | None = None,
    check: bool = True,
    timeout: float = 120,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs a console script; with check, fails the test with its output on a non-zero exit."""
    done = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=child_env(tmpdir),
        input=stdin,
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, argv))} exited {done.returncode}\n"
            f"stdout: {done.stdout}\nstderr: {done.stderr}"
        )
    return done


@dataclass(frozen=True)
class Member:
    identity_file: Path
    card: str

    @property
    def identity(self) -> MemberIdentity:
        return MemberIdentity.parse_file_text(self.identity_file.read_text())


def keygen(path: Path) -> Member:
    """`amanah-inbox keygen -o path`: the card is the whole of standard output."""
    done = run(INBOX, "keygen", "-o", path)
    card = done.stdout.strip()
    assert card.startswith("amanah-member1") and "\n" not in card, done.stdout
    return Member(path, card)


def init_data(data: Path) -> None:
    run(AMANAH, "init", "--data", data)


def add_contact(data: Path, name: str, members: Sequence[Member]) -> None:
    argv: list[str | Path] = [AMANAH, "contact", "add", name, "--data", data]
    for member in members:
        argv += ["--member", member.card]
    run(*argv)


def set_limits(data: Path, **limits: int) -> None:
    """Rewrites the [limits] section of amanah.toml."""
    config = data / "amanah.toml"
    lines = [f"{k} = {v}" for k, v in limits.items()]
    text = config.read_text().replace("[limits]\n", "[limits]\n" + "\n".join(lines) + "\n", 1)
    config.write_text(text)


@contextmanager
def serving_with_tor(data: Path, tmp: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """`amanah serve` with its own tor, its output in tmp/serve.log. Stopped on exit:
    SIGTERM, then SIGKILL after 20 s (tor can hang on shutdown)."""
    source_port, journalist_port = free_ports(2)
    log = tmp / "serve.log"
    command = [AMANAH, "serve", "--data", str(data), "--source-port", str(source_port)]
    command += ["--journalist-port", str(journalist_port)]
    with log.open("wb") as out:
        relay = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=child_env(tmp))
    try:
        yield relay, log
    finally:
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(20)
        except subprocess.TimeoutExpired:
            relay.kill()
            relay.wait(5)


def forward_unsupported(data: Path) -> None:
    """The operator's opt-in: files the sanitizer cannot clean (random bytes, here) are
    forwarded unchanged, flagged NOT STRIPPED, instead of refused."""
    config = data / "amanah.toml"
    text = config.read_text()
    assert "# forward_unsupported = false" in text
    config.write_text(text.replace("# forward_unsupported = false", "forward_unsupported = true"))


@dataclass
class RelayProcess:
    """`amanah serve --no-tor` as a subprocess, with stdout and stderr captured to files
    outside the data directory and TMPDIR pointed at a directory the test owns."""

    data: Path
    tmpdir: Path
    logdir: Path
    source_port: int = 0
    journalist_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _logs: list[Path] = field(default_factory=list)

    @property
    def source_url(self) -> str:
        return f"http://127.0.0.1:{self.source_port}"

    @property
    def journalist_url(self) -> str:
        return f"http://127.0.0.1:{self.journalist_port}"

    def start(self) -> None:
        """Starts the relay and waits (bounded) until both ports answer. Ports are chosen
        afresh if the first choice was taken in the meantime."""
        assert self.process is None or self.process.poll() is not None, "already running"
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.logdir.mkdir(parents=True, exist_ok=True)
        for _attempt in range(3):
            self.starts += 1
            self.source_port, self.journalist_port = free_ports(2)
            out = self.logdir / f"relay-{self.starts}.out"
            err = self.logdir / f"relay-{self.starts}.err"
            self._logs += [out, err]
            with out.open("wb") as stdout, err.open("wb") as stderr:
                self.process = subprocess.Popen(
                    [
                        AMANAH,
                        "serve",
                        "--no-tor",
                        "--data",
                        str(self.data),
                        "--source-port",
                        str(self.source_port),
                        "--journalist-port",
                        str(self.journalist_port),
                    ],
                    stdout=stdout,
                    stderr=stderr,
                    stdin=subprocess.DEVNULL,
                    env=child_env(self.tmpdir),
                )
            if self._wait_ready():
                return
            if "address already in use" not in err.read_text().lower():
                break
        raise AssertionError(f"the relay did not start:\n{self.logs}")

    def _wait_ready(self) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if all(_answers(port) for port in (self.source_port, self.journalist_port)):
                return True
            time.sleep(0.05)
        self.kill()
        return False

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after STOP_GRACE seconds. Returns the exit code."""
        process = self.process
        if process is None or process.poll() is not None:
            return None if process is None else process.returncode
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait(STOP_GRACE)

    def kill(self) -> None:
        """SIGKILL, as a power cut or the OOM killer would."""
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(STOP_GRACE)

    @property
    def logs(self) -> str:
        """Everything the relay printed, over all its runs."""
        return "".join(p.read_text(errors="replace") for p in self._logs if p.exists())


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class RelayPool:
    """Relays made for one test, all stopped (SIGTERM, then SIGKILL) when it ends. They
    share one TMPDIR and one log directory under `root`."""

    def __init__(self, root: Path) -> None:
        self.tmpdir = root / "relay-tmp"
        self.logdir = root / "relay-logs"
        self._relays: list[RelayProcess] = []

    def new(self, data: Path, *, start: bool = True) -> RelayProcess:
        relay = RelayProcess(data, self.tmpdir, self.logdir)
        self._relays.append(relay)
        if start:
            relay.start()
        return relay

    def close(self) -> None:
        for relay in self._relays:
            relay.stop()

    def __enter__(self) -> RelayPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@dataclass
class ServedRelay:
    """A running relay and the identity of each member of its contacts, by member name."""

    process: RelayProcess
    members: dict[str, Member]

    @property
    def data(self) -> Path:
        return self.process.data


@contextmanager
def served_relay(root: Path, contacts: Mapping[str, Sequence[str]]) -> Iterator[ServedRelay]:
    """A relay on a fresh data directory under `root` that forwards unsupported types
    (random test files go through flagged, so that they can be compared), with `contacts`
    (contact name: its member names), each member's identity file under `root`. Stopped
    on leaving."""
    data = root / "data"
    init_data(data)
    forward_unsupported(data)
    members: dict[str, Member] = {}
    for contact, names in contacts.items():
        for name in names:
            members[name] = keygen(root / f"{name}.txt")
        add_contact(data, contact, [members[name] for name in names])
    with RelayPool(root) as pool:
        yield ServedRelay(pool.new(data), members)


# --- files --------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def write_random_file(path: Path, size: int, marker: bytes) -> str:
    """Writes `size` random bytes to `path`, streamed (1 MiB at a time, never whole in
    RAM), with `marker` planted at the start, in the middle and at the end. Returns the
    SHA-256 of what was written."""
    gap = (size - 3 * len(marker)) // 2
    assert gap >= 0
    digest = hashlib.sha256()

    def put(f: BinaryIO, data: bytes) -> None:
        f.write(data)
        digest.update(data)

    with path.open("wb") as f:
        for random_bytes in (gap, size - 3 * len(marker) - gap, 0):
            put(f, marker)
            while random_bytes:
                block = os.urandom(min(1 << 20, random_bytes))
                put(f, block)
                random_bytes -= len(block)
    assert path.stat().st_size == size
    return digest.hexdigest()


def all_files(*roots: Path) -> list[Path]:
    return sorted(p for root in roots if root.exists() for p in root.rglob("*") if p.is_file())


def needle_forms(needles: Iterable[str]) -> dict[bytes, str]:
    """Each needle as ASCII/UTF-8 and as UTF-16-LE bytes, mapped back to the needle."""
    forms: dict[bytes, str] = {}
    for needle in needles:
        forms[needle.encode("utf-8")] = needle
        forms[needle.encode("utf-16-le")] = f"{needle} (UTF-16-LE)"
    return forms


def scan_files(paths: Iterable[Path], needles: Iterable[str]) -> list[str]:
    """Streams every file looking for every needle (case-sensitive bytes, in UTF-8 and
    UTF-16-LE). Returns "path: needle" for each hit."""
    forms = needle_forms(needles)
    overlap = max(len(f) for f in forms) - 1
    hits = []
    for path in paths:
        tail = b""
        with path.open("rb") as f:
            while block := f.read(4 << 20):
                window = tail + block
                for form, name in forms.items():
                    if form in window:
                        hits.append(f"{path}: {name}")
                tail = window[-overlap:]
    return sorted(set(hits))


def tree_snapshot(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under root."""
    return {str(p.relative_to(root)): sha256_file(p) for p in all_files(root)}


def table_rows(database: Path, tables: Sequence[str]) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the named tables, sorted, read through a separate connection."""
    connection = sqlite3.connect(database, timeout=10)
    try:
        return {
            t: sorted(
                connection.execute(f"SELECT * FROM {t}").fetchall(),  # noqa: S608
                key=repr,
            )
            for t in tables
        }
    finally:
        connection.close()


# --- the source's side --------------------------------------------------------------------

_CSRF = re.compile(r'<input type="hidden" name="csrf" value="([^"]+)">')
_WORDS = re.compile(r'<p class="words">([^<]+)</p>')
_REPLY = re.compile(r'<article class="reply">.*?<pre>(.*?)</pre>', re.S)
_ERROR = re.compile(r'<p class="error">([^<]*)</p>')


def source_session() -> aiohttp.ClientSession:
    # unsafe=True: aiohttp's jar otherwise ignores cookies from an IP address like ours.
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        headers={"User-Agent": USER_AGENT},
        timeout=aiohttp.ClientTimeout(total=600, sock_read=120),
    )


def session_cookie(session: aiohttp.ClientSession) -> str:
    """The `Cookie:` header value of a session, for raw requests."""
    return "; ".join(f"{c.key}={c.value}" for c in session.cookie_jar)


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found, f"no csrf field in the page:\n{page[:2000]}"
    return found.group(1)


def codename_of(page: str) -> str:
    found = _WORDS.search(page)
    assert found, f"no codename in the receipt:\n{page[:2000]}"
    return html.unescape(found.group(1)).strip()


def replies_of(page: str) -> list[str]:
    return [html.unescape(text) for text in _REPLY.findall(page)]


def error_of(page: str) -> str:
    found = _ERROR.search(page)
    return html.unescape(found.group(1)).strip() if found else ""


async def fresh_csrf(session: aiohttp.ClientSession, base: str, path: str = "/") -> str:
    async with session.get(base + path) as response:
        assert response.status == 200, response.status
        return csrf_of(await response.text())


@dataclass
class Upload:
    """One file for the form: a name the browser says, and bytes or an open binary file."""

    filename: str
    content: bytes | BinaryIO
    content_type: str = "application/octet-stream"


def form(
    csrf: str | None,
    message: str | None = None,
    contacts: Sequence[str] = (),
    files: Sequence[Upload] = (),
) -> aiohttp.FormData:
    """The submission form, fields in the order a browser sends them (csrf first)."""
    # A browser sends this form as multipart even without a file (enctype on the form).
    data = aiohttp.FormData(quote_fields=False, default_to_multipart=True)
    if csrf is not None:
        data.add_field("csrf", csrf)
    for name in contacts:
        data.add_field("contact", name)
    if message is not None:
        data.add_field("message", message)
    for each in files:
        data.add_field(
            "files", each.content, filename=each.filename, content_type=each.content_type
        )
    return data


async def submit(
    session: aiohttp.ClientSession, base: str, data: aiohttp.FormData | bytes, **kwargs: Any
) -> tuple[int, str]:
    async with session.post(base + "/submit", data=data, **kwargs) as response:
        return response.status, await response.text()


async def login(session: aiohttp.ClientSession, base: str, codename: str) -> tuple[int, str]:
    csrf = await fresh_csrf(session, base, "/login")
    async with session.post(base + "/login", data={"csrf": csrf, "codename": codename}) as response:
        return response.status, await response.text()


# --- the journalist's side, by hand ---------------------------------------------------------


async def api_json(
    session: aiohttp.ClientSession,
    url: str,
    method: str = "GET",
    token: str | None = None,
    body: Any = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.request(method, url, json=body, headers=headers) as response:
        raw = await response.read()
        try:
            return response.status, (await response.json(content_type=None)) if raw else None
        except ValueError:
            return response.status, raw


async def signed_answer(
    session: aiohttp.ClientSession, base: str, signer: MemberIdentity, claim: str | None = None
) -> dict[str, str]:
    """A challenge for `claim` (default: the signer's own verify key), signed by `signer`."""
    verify_key = claim or str(signer.signing_key.verify_key)
    status, issued = await api_json(
        session, base + "/api/v1/auth/challenge", "POST", body={"verify_key": verify_key}
    )
    assert status == 200, issued
    challenge = base64.b64decode(issued["challenge"])
    message = auth_message(VerifyKey.parse(issued["relay_key"]), challenge)
    signature = signer.signing_key.sign(message)
    return {
        "verify_key": verify_key,
        "challenge": issued["challenge"],
        "signature": base64.b64encode(signature).decode(),
    }


async def token_for(session: aiohttp.ClientSession, base: str, member: MemberIdentity) -> str:
    answer = await signed_answer(session, base, member)
    status, body = await api_json(session, base + "/api/v1/auth/token", "POST", body=answer)
    assert status == 200, body
    return str(body["token"])


async def _listing(session: aiohttp.ClientSession, relay: RelayProcess, token: str) -> list[Any]:
    status, body = await api_json(session, relay.journalist_url + "/api/v1/drops", token=token)
    assert status == 200, body
    return list(body["drops"])


async def waiting_drops(relay: RelayProcess, member: Member) -> list[dict[str, Any]]:
    """The drops waiting for the member's contact, as the API lists them."""
    async with aiohttp.ClientSession() as session:
        token = await token_for(session, relay.journalist_url, member.identity)
        return await _listing(session, relay, token)


async def ack_all(relay: RelayProcess, member: Member) -> None:
    """Acknowledges every drop waiting for the member's contact (tidying between tests)."""
    async with aiohttp.ClientSession() as session:
        token = await token_for(session, relay.journalist_url, member.identity)
        for drop in await _listing(session, relay, token):
            url = f"{relay.journalist_url}/api/v1/drops/{drop['id']}/ack"
            status, body = await api_json(session, url, "POST", token=token)
            assert status == 200, body


# --- raw HTTP -----------------------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


async def _read_response(reader: asyncio.StreamReader) -> RawResponse:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readline()).split(b";")[0], 16):
            body += await reader.readexactly(size)
            await reader.readline()
    else:
        body = await reader.read()
    return RawResponse(status, headers, body)


async def raw_request(
    port: int,
    head: bytes,
    body: bytes | AsyncIterator[bytes] = b"",
    *,
    half_close: bool = False,
) -> RawResponse:
    """Sends `head` (request line and headers, ending in a blank line) and `body` (bytes,
    or chunks sent as they come while the response is read), and reads one response.
    The body is sent concurrently, so a server that answers before reading it is seen
    to do so; sending stops, without error, when the server stops reading."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answered = asyncio.Event()

    async def send() -> None:
        try:
            writer.write(head)
            if isinstance(body, bytes):
                writer.write(body)
                await writer.drain()
            else:
                async for chunk in body:
                    if answered.is_set():
                        break
                    writer.write(chunk)
                    await writer.drain()
            if half_close and writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError):
            pass

    sender = asyncio.create_task(send())
    try:
        async with asyncio.timeout(RAW_TIMEOUT):
            response = await _read_response(reader)
        answered.set()
        return response
    finally:
        answered.set()
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
            await sender
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


def multipart_body(
    boundary: str, fields: Sequence[tuple[str, bytes, str | None]], *, close: bool = True
) -> bytes:
    """A multipart/form-data body from (name, value, filename or None) fields."""
    out = bytearray()
    for name, value, filename in fields:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + value + b"\r\n"
    if close:
        out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def request_head(
    method: str,
    target: str,
    headers: dict[str, str],
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", f"User-Agent: {USER_AGENT}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

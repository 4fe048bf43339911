"""Ingest: one file uploaded through the relay's form on loopback, against OnionShare's
receive mode and a raw socket sink, measured in the same run with the same file.

    .venv/bin/python bench/ingest.py [--size-mib 1024] [--runs 3] [--concurrent 8]
    .venv/bin/python bench/ingest.py --quick          # smoke run: 200 MiB, 1 run, 4 uploads

Peers, each its own server process on 127.0.0.1 (nothing else is ever a target):
- amanah: `amanah serve --no-tor` on a fresh data directory with one contact. The client
  does what a browser does: GET / for the session cookie and the form, then POST /submit
  with the form's fields in document order (the CSRF token first). The file is random
  bytes, a type the sanitizer cannot clean, forwarded unstripped by the operator's choice:
  the relay seals each piece to the contact's key as it arrives (relay/staging.py: sealed,
  hashed and written off the event loop), then (after the last byte) derives the new
  source's codename (Argon2id, 8 MiB), fsyncs the file and moves it into the drop.
- onionshare: `onionshare-cli --receive --local-only` from PyPI (`--onionshare-spec`),
  installed by this script into its own venv outside the repository on first use
  (`--onionshare-venv`). Its port is read from what it prints; the route and the field
  names from the form it serves. A browser's plain form POST is answered with a redirect
  to / (which shows "Uploaded ..."); the redirect is followed, as a browser would.
- raw-sink: a minimal asyncio protocol (this file, run as its own process) that reads the
  multipart body, checks its closing boundary, discards it and answers 200: the ceiling of
  this client and loopback.

The client sends the body with a Content-Length, as a browser does: the file read in 1 MiB
pieces, each written to a blocking socket whole (see `send`), one thread per upload; the
file is never read whole into memory. Wall time runs from the start of the request to the
final response (the receipt page: what a source waits for). Server CPU is utime+stime of
the server process (all its threads) from /proc/PID/stat over that time. Peak RSS is the
server's VmHWM, reset before each measurement (/proc/PID/clear_refs, 5), polled every 10
ms; it is also read when the last byte has been sent, which splits the peak into the
upload phase and what follows it. If the reset is refused, the peak is the largest VmRSS
polled instead. The client runs on the same machine (2 cores here): its CPU is reported
apart (this process's own CPU, the RSS poller included); it competes with the server for
the cores.

Waitress (OnionShare's server) refuses any request body of 1 GiB or more (413), so the
large file is 1 GiB less 64 KiB when --size-mib is 1024 or more: the same file for every
peer. Medians of --runs; peak RSS is the largest of the runs. This machine class is noisy
(+-20%), so only ratios taken in the same run mean anything.

Targets: (1) amanah's throughput (sealing included, receipt received) >= 1.7x OnionShare's
for one large upload; (2) amanah's peak RSS under 100 MiB with --concurrent uploads of
--concurrent-mib each (every upload its own session), and flat from 10 MiB to the large
file (the largest single-upload peak within 10% of the smallest).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
from yarl import URL

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
MiB = 1024 * 1024
PIECE = MiB
# waitress's default max_request_body_size: a body of this size or more is refused (413).
WAITRESS_MAX_BODY = 1 << 30
HEADROOM = 64 * 1024
DEFAULT_ONIONSHARE_VENV = Path.home() / ".cache" / "amanah-bench" / "onionshare-venv"
DEFAULT_ONIONSHARE_SPEC = "onionshare-cli==2.7"  # the version performance.md measured
CLK_TCK = os.sysconf("SC_CLK_TCK")
POLL_SECONDS = 0.01
START_TIMEOUT = 60.0
UPLOAD_TIMEOUT = 900.0
TARGET_RATIO = 1.7
TARGET_RSS_MIB = 100.0
FLAT_TOLERANCE = 0.10


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- measuring a server process ------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (every thread), from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) in KiB; zeros once the process is gone."""
    hwm = rss = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return hwm, rss


class Monitor:
    """Peak RSS of one process over one measurement: VmHWM reset first, polled every 10 ms
    in a thread (falls back to the largest VmRSS seen if the reset is refused)."""

    warned = False

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._peak_kib = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reset_works = True

    def _reset(self) -> None:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError as exc:
            self.reset_works = False
            if not Monitor.warned:
                Monitor.warned = True
                log(f"VmHWM reset refused ({exc}); peak RSS is the largest VmRSS polled")

    def peak_mib(self) -> float:
        hwm, rss = memory_kib(self.pid)
        self._peak_kib = max(self._peak_kib, hwm if self.reset_works else rss)
        return self._peak_kib / 1024

    def _poll(self) -> None:
        deadline = time.monotonic() + UPLOAD_TIMEOUT * 2
        while not self._stop.wait(POLL_SECONDS) and time.monotonic() < deadline:
            self.peak_mib()

    def __enter__(self) -> Monitor:
        self._reset()
        self._peak_kib = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_mib()


@dataclass
class Sample:
    seconds: float  # request start to final response (the last one, when concurrent)
    cpu: float  # server CPU seconds over that time
    rss_mib: float  # server peak RSS over that time
    sent_seconds: float  # request start to the last byte handed to the socket
    sent_cpu: float
    sent_rss_mib: float
    spread: float = 1.0  # slowest / fastest of concurrent uploads (start to response)
    client_cpu: float = 0.0  # this process (the client, and the RSS poller) over that time


def median(samples: list[Sample]) -> Sample:
    return Sample(
        statistics.median(s.seconds for s in samples),
        statistics.median(s.cpu for s in samples),
        max(s.rss_mib for s in samples),
        statistics.median(s.sent_seconds for s in samples),
        statistics.median(s.sent_cpu for s in samples),
        max(s.sent_rss_mib for s in samples),
        statistics.median(s.spread for s in samples),
        statistics.median(s.client_cpu for s in samples),
    )


# --- the browser side ----------------------------------------------------------------------

FILE = object()  # where the file part goes among a form's fields


class FormReader(HTMLParser):
    """The first multipart form of a page, as a browser would submit it: hidden and text
    inputs, checked boxes and textareas in document order, and the (first) file input."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.parts: list[tuple[str, str] | object] = []
        self.file_field: str | None = None
        self._inside = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form" and not self._done and a.get("enctype") == "multipart/form-data":
            self._inside, self.action = True, a.get("action", "")
        if not self._inside or "name" not in a or "disabled" in a:
            return
        kind = a.get("type", "text").lower()
        if tag == "input" and kind == "file":
            if self.file_field is None:
                self.file_field = a["name"]
                self.parts.append(FILE)
        elif tag == "input" and (
            kind in ("hidden", "text") or (kind in ("checkbox", "radio") and "checked" in a)
        ):
            self.parts.append((a["name"], a.get("value", "on" if kind == "checkbox" else "")))
        elif tag == "textarea":
            self.parts.append((a["name"], ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._inside:
            self._inside, self._done = False, True


@dataclass
class Body:
    """A multipart/form-data body whose file part is streamed from disk."""

    content_type: str
    before: bytes
    path: Path
    after: bytes

    @property
    def length(self) -> int:
        return len(self.before) + self.path.stat().st_size + len(self.after)


def multipart(parts: list[tuple[str, str] | object], file_field: str, path: Path) -> Body:
    boundary = "----AmanahBench" + secrets.token_hex(12)
    before, after = bytearray(), bytearray()
    target = before
    for part in parts:
        if part is FILE:
            target += (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{file_field}"; '
                f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            target = after
            continue
        assert isinstance(part, tuple)
        name, value = part
        target += (f"\r\n--{boundary}\r\n" if target is after else f"--{boundary}\r\n").encode()
        target += f'Content-Disposition: form-data; name="{name}"\r\n\r\n{value}'.encode()
        if target is before:
            target += b"\r\n"
    after += f"\r\n--{boundary}--\r\n".encode()
    return Body(f"multipart/form-data; boundary={boundary}", bytes(before), path, bytes(after))


@dataclass
class Marks:
    start: float = 0.0
    sent: float = 0.0
    end: float = 0.0
    on_sent: Callable[[], None] | None = None


@dataclass
class Peer:
    name: str
    process: subprocess.Popen[bytes]
    base: str  # http://127.0.0.1:PORT
    log_path: Path
    ok: Callable[[int, str], bool]  # is this final response a successful upload?
    form: bool = True  # GET / and submit its form; else POST /upload with one file field
    output_dirs: list[Path] = field(default_factory=list)  # emptied after every upload

    def clean(self) -> None:
        for directory in self.output_dirs:
            for child in directory.iterdir() if directory.exists() else []:
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


def client() -> aiohttp.ClientSession:
    # unsafe=True: keep cookies set by an IP-address host (127.0.0.1); every call gets
    # its own session, so every upload is its own browser with its own cookie.
    return aiohttp.ClientSession(
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=UPLOAD_TIMEOUT),
    )


async def prepare(session: aiohttp.ClientSession, peer: Peer, path: Path) -> tuple[str, Body]:
    """What a browser does before it sends: load the page, read the form."""
    if not peer.form:
        return peer.base + "/upload", multipart([FILE], "files", path)
    async with session.get(peer.base + "/") as response:
        page = await response.text()
        if response.status != 200:
            raise RuntimeError(f"{peer.name}: GET / answered {response.status}")
    reader = FormReader()
    reader.feed(page)
    if reader.action is None or reader.file_field is None:
        raise RuntimeError(f"{peer.name}: no multipart form with a file input on its page")
    return urljoin(peer.base + "/", reader.action), multipart(reader.parts, reader.file_field, path)


async def send(
    session: aiohttp.ClientSession, peer: Peer, url: str, body: Body, marks: Marks
) -> None:
    """The POST, sent with the standard library's http.client in a thread of its own: the
    file is read in 1 MiB pieces and each is written whole to a blocking socket, as a
    browser's native network stack does (aiohttp's streamed body added a Python copy loop
    that took ~30% of the machine's CPU samples, on 2 cores shared with the server). Not
    sendfile(2): the page-cache pages it hands to the socket made OnionShare's server ~15%
    slower here (245-256 against 287-297 MB/s, same run) while Amanah's rate did not
    change, so the choice of client would have moved the ratio. Cookies come from, and go
    back to, the session's jar; a redirect is followed with a GET, as a browser does."""
    target = URL(url)
    cookies = session.cookie_jar.filter_cookies(target)
    headers = {"Content-Type": body.content_type, "Content-Length": str(body.length)}
    if cookies:
        headers["Cookie"] = "; ".join(f"{k}={m.value}" for k, m in cookies.items())
    loop = asyncio.get_running_loop()
    marks.start = time.perf_counter()
    status, set_cookies, location, text = await loop.run_in_executor(
        None, post, target, headers, body, marks
    )
    for value in set_cookies:
        session.cookie_jar.update_cookies(SimpleCookie(value), target)
    if status in (301, 302, 303) and location:
        async with session.get(urljoin(url, location)) as response:
            status, text = response.status, await response.text()
    marks.end = time.perf_counter()
    if not peer.ok(status, text):
        raise RuntimeError(f"{peer.name}: upload answered {status}: {squash(text)[:300]}")


def post(
    target: URL, headers: dict[str, str], body: Body, marks: Marks
) -> tuple[int, list[str], str | None, str]:
    """Blocking: one request; returns the answer's status, Set-Cookie values, Location
    and text."""
    connection = http.client.HTTPConnection(
        target.host or "127.0.0.1", target.port, timeout=UPLOAD_TIMEOUT
    )
    try:
        connection.putrequest("POST", target.raw_path_qs, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body.before)
        with body.path.open("rb", buffering=0) as file:
            for _ in range(body.path.stat().st_size // PIECE + 1):  # bounded by the size
                piece = file.read(PIECE)
                if not piece:
                    break
                connection.send(piece)
        connection.send(body.after)
        marks.sent = time.perf_counter()
        if marks.on_sent is not None:
            marks.on_sent()
        response = connection.getresponse()
        text = response.read().decode("utf-8", "replace")
        cookies = response.headers.get_all("Set-Cookie") or []
        return response.status, cookies, response.getheader("Location"), text
    finally:
        connection.close()


def squash(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


async def upload_all(peer: Peer, path: Path, count: int) -> Sample:
    """`count` simultaneous uploads of `path`, each from its own browser session."""
    pid = peer.process.pid
    sessions = [client() for _ in range(count)]
    try:
        prepared = [await prepare(s, peer, path) for s in sessions]
        marks = [Marks() for _ in range(count)]
        at_sent: dict[str, float] = {}
        remaining = [count]
        counting = threading.Lock()  # the uploads' threads call this
        # One thread per upload (the default executor has fewer than 8 on 2 cores).
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(count))

        def last_sent() -> None:
            with counting:
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                at_sent["cpu"] = cpu_seconds(pid)
                at_sent["rss"] = monitor.peak_mib()

        for m in marks:
            m.on_sent = last_sent
        with Monitor(pid) as monitor:
            cpu0 = cpu_seconds(pid)
            mine0 = own_cpu_seconds()
            start = time.perf_counter()
            await asyncio.gather(
                *(
                    send(s, peer, url, body, m)
                    for s, (url, body), m in zip(sessions, prepared, marks, strict=True)
                )
            )
            end = time.perf_counter()
            cpu1 = cpu_seconds(pid)
            mine1 = own_cpu_seconds()
    finally:
        for s in sessions:
            await s.close()
    durations = [m.end - m.start for m in marks]
    return Sample(
        seconds=end - start,
        cpu=cpu1 - cpu0,
        rss_mib=monitor.peak_mib(),
        sent_seconds=max(m.sent for m in marks) - start,
        sent_cpu=at_sent.get("cpu", cpu1) - cpu0,
        sent_rss_mib=at_sent.get("rss", 0.0),
        spread=max(durations) / min(durations),
        client_cpu=mine1 - mine0,
    )


def measure(peer: Peer, path: Path, count: int = 1) -> Sample | None:
    """One measurement; None (and why on stderr) if the peer fails. The peer's output is
    removed afterwards so the disk holds one upload at a time. Dirty pages are flushed
    first, so no peer pays for the writeback of the one before."""
    warm(path)
    os.sync()
    try:
        return asyncio.run(upload_all(peer, path, count))
    except (RuntimeError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        log(f"{peer.name}: upload failed: {type(exc).__name__}: {exc}")
        if peer.process.poll() is not None:
            log(f"{peer.name}: server exited; last of its log: {tail(peer.log_path)}")
        return None
    finally:
        peer.clean()


# --- the raw sink (run as its own process) --------------------------------------------------


class SinkProtocol(asyncio.Protocol):
    """One HTTP/1.1 request per connection: headers, then Content-Length bytes of body,
    discarded; 200 if the body ends with the closing boundary its Content-Type names."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.remaining = -1  # body bytes still to come; -1 while reading headers
        self.closing = b""
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.remaining < 0:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                if len(self.head) > 65536:
                    self.answer(431)
                return
            lines = self.head[:end].decode("latin-1").split("\r\n")
            headers = {
                k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)
            }
            data, self.head = self.head[end + 4 :], b""
            self.remaining = int(headers.get("content-length", "0") or 0)
            boundary = headers.get("content-type", "").partition("boundary=")[2]
            self.closing = f"\r\n--{boundary}--\r\n".encode() if boundary else b""
            if self.remaining == 0:
                self.answer(200)
                return
        taken = data[: self.remaining]
        self.remaining -= len(taken)
        self.tail = (self.tail + taken[-64:])[-64:]
        if self.remaining == 0:
            self.answer(200 if self.tail.endswith(self.closing) else 400)

    def answer(self, status: int) -> None:
        assert self.transport is not None
        self.transport.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".encode()
        )
        self.transport.close()
        self.remaining = -2  # ignore anything more


def serve_sink(port: int) -> int:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(SinkProtocol, "127.0.0.1", port)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        async with server:
            await stop.wait()

    asyncio.run(run())
    return 0


# --- starting and stopping the servers -------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def launch(
    command: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(
            command, cwd=log_path.parent, stdout=out, stderr=subprocess.STDOUT, env=env
        )


def wait_ready(peer: Peer) -> None:
    async def probe() -> bool:
        try:
            async with client() as session, session.get(peer.base + "/") as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError):
            return False

    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if peer.process.poll() is not None:
            raise RuntimeError(f"{peer.name} exited at start-up: {tail(peer.log_path)}")
        if asyncio.run(probe()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{peer.name} did not answer within {START_TIMEOUT:.0f} s")


def stop(peer: Peer) -> None:
    if peer.process.poll() is None:
        peer.process.send_signal(signal.SIGINT)
        try:
            peer.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            peer.process.kill()
            peer.process.wait(timeout=15)


def start_sink(workdir: Path) -> Peer:
    port = free_port()
    log_path = workdir / "sink.log"
    process = launch(
        [sys.executable, str(Path(__file__).resolve()), "--serve-sink", str(port)], log_path
    )
    peer = Peer("raw-sink", process, f"http://127.0.0.1:{port}", log_path, lambda s, _: s == 200)
    peer.form = False
    return peer


def start_amanah(workdir: Path, max_bytes: int) -> Peer:
    data = workdir / "amanah-data"

    def tool(*command: str) -> str:
        done = subprocess.run(
            [str(VENV_BIN / command[0]), *command[1:]],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise SystemExit(f"bench: {' '.join(command[:2])} failed: {done.stderr.strip()}")
        return done.stdout.strip()

    tool("amanah", "init", "--data", str(data))
    card = tool("amanah-inbox", "keygen", "-o", str(workdir / "member.txt"))
    tool("amanah", "contact", "add", "bench", "--member", card, "--data", str(data))
    config = data / "amanah.toml"
    text = config.read_text()
    if "[limits]\n" not in text:
        raise SystemExit("bench: amanah.toml has no [limits] section to raise max_total_bytes in")
    text = text.replace("[limits]\n", f"[limits]\nmax_total_bytes = {max_bytes}\n", 1)
    if "[sanitize]\n" not in text:
        raise SystemExit("bench: amanah.toml has no [sanitize] section")
    # The file is random bytes, which the sanitizer refuses by default; forwarding it
    # unstripped keeps every other step (sniffing, sealing to the contact as it arrives,
    # hashing, fsync) and measures ingest with sealing as issue 3 defines it. Stripping
    # has its own bench (bench/sanitize.py).
    text = text.replace("[sanitize]\n", "[sanitize]\nforward_unsupported = true\n", 1)
    config.write_text(text)
    port = free_port()
    journalist = free_port()
    while journalist == port:
        journalist = free_port()
    log_path = workdir / "amanah.log"
    command = [str(VENV_BIN / "amanah"), "serve", "--no-tor", "--data", str(data)]
    command += ["--source-port", str(port), "--journalist-port", str(journalist)]
    process = launch(command, log_path)
    return Peer(
        "amanah",
        process,
        f"http://127.0.0.1:{port}",
        log_path,
        lambda status, page: status == 200 and "<h1>Sent</h1>" in page,
        output_dirs=[data / "blobs" / "drops"],
    )


def ensure_onionshare(venv: Path, spec: str) -> tuple[Path | None, str]:
    """onionshare-cli in its own venv (outside the repository), installed on first use.
    Returns (executable, version) or (None, why not)."""
    exe, done = venv / "bin" / "onionshare-cli", venv / ".amanah-bench-complete"
    installed = exe.exists() and done.exists() and done.read_text().strip() == spec
    if not installed:
        log(f"installing {spec} from PyPI into {venv} (first use; takes a minute)")
        try:
            shutil.rmtree(venv, ignore_errors=True)
            venv.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [sys.executable, "-m", "venv", str(venv)],
                check=True,
                capture_output=True,
                text=True,
                timeout=180,
            )
            subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
                + ["--disable-pip-version-check", spec],
                check=True,
                capture_output=True,
                text=True,
                timeout=900,
            )
            done.write_text(spec + "\n")
        except subprocess.CalledProcessError as exc:
            errors = [x for x in (exc.stderr or "").splitlines() if "ERROR" in x or "rror:" in x]
            shutil.rmtree(venv, ignore_errors=True)
            return None, f"install failed: {' | '.join(errors[-3:]) or exc}"
        except (subprocess.TimeoutExpired, OSError) as exc:
            shutil.rmtree(venv, ignore_errors=True)
            return None, f"install failed: {exc}"
    version = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import importlib.metadata as m;print(m.version('onionshare-cli'))",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    return exe, version or "?"


def start_onionshare(workdir: Path, exe: Path) -> Peer:
    home, received, spool = workdir / "os-home", workdir / "os-received", workdir / "os-tmp"
    for d in (home, received, spool):
        d.mkdir()
    env = dict(os.environ)  # its settings and temp files stay in the throwaway directory
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), TMPDIR=str(spool))
    env["PYTHONUNBUFFERED"] = "1"
    log_path = workdir / "onionshare.log"
    command = [str(exe), "--receive", "--local-only", "--data-dir", str(received)]
    process = launch(command, log_path, env)
    deadline = time.monotonic() + START_TIMEOUT
    port = None
    while port is None and time.monotonic() < deadline:
        found = re.search(r"http://127\.0\.0\.1:(\d+)", log_path.read_text(errors="replace"))
        if found:
            port = int(found.group(1))
        elif process.poll() is not None:
            raise RuntimeError(f"onionshare exited at start-up: {tail(log_path)}")
        else:
            time.sleep(0.1)
    peer = Peer(
        "onionshare",
        process,
        f"http://127.0.0.1:{port}",
        log_path,
        lambda status, page: status == 200 and "Uploaded " in page,
        output_dirs=[received, spool],
    )
    if port is None:
        stop(peer)
        raise RuntimeError(f"onionshare printed no address within {START_TIMEOUT:.0f} s")
    return peer


# --- the run -----------------------------------------------------------------------------


def make_input(path: Path, size: int) -> None:
    block = os.urandom(MiB)
    with path.open("wb") as out:
        for _ in range(size // MiB):
            out.write(block)
        out.write(block[: size % MiB])


def warm(path: Path) -> None:
    with path.open("rb") as f:
        for _ in range(path.stat().st_size // (8 * MiB) + 1):
            if not f.read(8 * MiB):
                break


def mib(size: int) -> str:
    return f"{size / MiB:.0f} MiB" if size % MiB == 0 else f"{size / MiB:.2f} MiB"


def rate(size: int, s: Sample) -> float:
    return size / 1e6 / s.seconds


def per_gb(size: int, s: Sample) -> float:
    return s.cpu / (size / 1e9)


def times(ours: float, theirs: float) -> str:
    """`ours / theirs` as "1.23x"; "n/a" when `theirs` is too small to divide by (a
    small upload into the raw sink can take less CPU than /proc counts: 0.00 s)."""
    return f"{ours / theirs:.2f}x" if theirs > 0 else "n/a"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=1024, help="the large file (default 1024)")
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (median)")
    parser.add_argument("--tmp", type=Path, default=None, help="where files and servers go")
    parser.add_argument("--concurrent", type=int, default=8, help="uploads at once (default 8)")
    parser.add_argument(
        "--concurrent-mib", type=int, default=200, help="size of each concurrent upload"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 200 MiB, 1 run, 4 uploads of 50 MiB"
    )
    parser.add_argument("--onionshare-venv", type=Path, default=DEFAULT_ONIONSHARE_VENV)
    parser.add_argument("--onionshare-spec", default=DEFAULT_ONIONSHARE_SPEC)
    parser.add_argument("--no-onionshare", action="store_true", help="skip the OnionShare peer")
    parser.add_argument("--serve-sink", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_sink is not None:
        return serve_sink(args.serve_sink)
    if args.quick:
        args.size_mib, args.runs, args.concurrent, args.concurrent_mib = 200, 1, 4, 50
    if min(args.size_mib, args.runs, args.concurrent, args.concurrent_mib) < 1:
        parser.error("sizes, runs and --concurrent must be positive")

    big = min(args.size_mib * MiB, WAITRESS_MAX_BODY - HEADROOM)
    sizes = sorted({10 * MiB, 100 * MiB, big})
    each = args.concurrent_mib * MiB
    started = time.monotonic()

    exe, os_version = (None, "skipped (--no-onionshare)")
    if not args.no_onionshare:
        exe, os_version = ensure_onionshare(args.onionshare_venv.expanduser(), args.onionshare_spec)
        if exe is None:
            log(f"OnionShare unavailable: {os_version}; continuing with the other peers")

    peers: list[Peer] = []
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="amanah-bench-") as tmp:
        workdir = Path(tmp)
        try:
            peers.append(start_amanah(workdir, 2 * max(big, each) + 64 * MiB))
            if exe is not None:
                try:
                    peers.append(start_onionshare(workdir, exe))
                except RuntimeError as exc:
                    log(f"OnionShare unavailable: {exc}")
                    os_version = f"unavailable ({exc})"
            peers.append(start_sink(workdir))
            for peer in list(peers):
                try:
                    wait_ready(peer)
                except RuntimeError as exc:
                    if peer.name == "amanah":
                        raise SystemExit(f"bench: {exc}") from None
                    log(f"{peer.name} unavailable: {exc}")
                    stop(peer)
                    peers.remove(peer)
            files = {size: workdir / f"upload-{size}.bin" for size in {*sizes, each, MiB}}
            for size, path in files.items():
                make_input(path, size)
            for peer in list(peers):  # warm-up (imports, first allocations); not measured
                if measure(peer, files[MiB]) is None:
                    if peer.name == "amanah":
                        raise SystemExit("bench: amanah failed its warm-up upload")
                    stop(peer)
                    peers.remove(peer)
            names = [p.name for p in peers]
            resident = {p.name: [memory_kib(p.process.pid)[1] / 1024] for p in peers}
            single: dict[int, dict[str, list[Sample]]] = {s: {n: [] for n in names} for s in sizes}
            together: dict[str, list[Sample]] = {n: [] for n in names}
            plan = [(size, 1, False) for size in reversed(sizes)]
            plan.append((each, args.concurrent, True))  # even --concurrent 1
            for run in range(args.runs):
                for size, count, concurrent in plan:
                    for peer in peers:  # peers interleaved, so drift hits them alike
                        sample = measure(peer, files[size], count)
                        what = f"{count} x {mib(size)}" if count > 1 else mib(size)
                        if sample is None:
                            if peer.name == "amanah":
                                raise SystemExit(f"bench: amanah failed ({what})")
                            continue
                        (together if concurrent else single[size])[peer.name].append(sample)
                        log(
                            f"run {run + 1}/{args.runs} {peer.name:>10} {what}: "
                            f"{sample.seconds:.2f} s, CPU {sample.cpu:.2f} s, "
                            f"peak RSS {sample.rss_mib:.0f} MiB"
                        )
            for peer in peers:
                resident[peer.name].append(memory_kib(peer.process.pid)[1] / 1024)
        finally:
            for peer in peers:
                stop(peer)
    elapsed = time.monotonic() - started
    report(args, big, sizes, each, os_version, single, together, resident, elapsed)
    return 0


def report(
    args: argparse.Namespace,
    big: int,
    sizes: list[int],
    each: int,
    os_version: str,
    single: dict[int, dict[str, list[Sample]]],
    together: dict[str, list[Sample]],
    resident: dict[str, list[float]],
    elapsed: float,
) -> None:
    names = list(single[big])
    ones = {n: median(v) for n, v in single[big].items() if v}
    note = (
        " (1 GiB less 64 KiB: waitress refuses bodies of 1 GiB)"
        if big < args.size_mib * MiB
        else ""
    )
    print(f"ingest on loopback, {os.cpu_count()} CPUs, medians of {args.runs} run(s)")
    print("amanah: `amanah serve --no-tor`, form upload, one contact (1 member key)")
    print(f"onionshare: `onionshare-cli --receive --local-only`, onionshare-cli {os_version}")
    print("raw-sink: asyncio protocol in bench/ingest.py, reads the multipart body, discards it")
    print()
    print(f"1. one upload of {mib(big)}{note}")
    print(
        f"{'server':>10} {'MB/s':>7} {'CPU-s/GB':>9} {'peak RSS':>9}  upload phase: s / CPU-s / RSS"
        "  client CPU-s/GB"
    )
    for name in names:
        if name not in ones:
            print(f"{name:>10} {'n/a':>7}")
            continue
        s = ones[name]
        print(
            f"{name:>10} {rate(big, s):>7.0f} {per_gb(big, s):>9.2f} {s.rss_mib:>7.1f}Mi"
            f"  {s.sent_seconds:.2f} / {s.sent_cpu:.2f} / {s.sent_rss_mib:.1f}Mi"
            f"  {s.client_cpu / (big / 1e9):>16.2f}"
        )
    a = ones["amanah"]
    after = a.seconds - a.sent_seconds
    print(
        f"amanah: body in {a.sent_seconds:.2f} s ({big / 1e6 / a.sent_seconds:.0f} MB/s, sealed"
        f" as it arrived), then {after:.2f} s to the receipt (codename + fsync + move)"
    )
    met1, ratio1 = None, 0.0
    for peer in ("onionshare", "raw-sink"):
        if peer in ones:
            r = rate(big, a) / rate(big, ones[peer])
            c = times(per_gb(big, a), per_gb(big, ones[peer]))
            print(f"amanah / {peer}: {r:.2f}x MB/s, {c} CPU-s/GB")
            if peer == "onionshare":
                met1, ratio1 = r >= TARGET_RATIO, r
        else:
            print(f"amanah / {peer}: n/a ({peer} unavailable)")
    verdict = (
        "not measured (OnionShare unavailable)"
        if met1 is None
        else f"{'met' if met1 else 'MISSED'} ({ratio1:.2f}x)"
    )
    print(f"target: amanah >= {TARGET_RATIO}x OnionShare MB/s: {verdict}")
    print()
    print("2. memory")
    print("peak RSS of one upload, by size (VmHWM reset before each):")
    print(f"{'size':>12} " + " ".join(f"{n:>11}" for n in names))
    for size in sizes:
        row = []
        for name in names:
            samples = single[size][name]
            row.append(f"{max(s.rss_mib for s in samples):>9.1f}Mi" if samples else f"{'n/a':>11}")
        print(f"{mib(size):>12} " + " ".join(row))
    print(f"{args.concurrent} concurrent uploads of {mib(each)}, each its own session:")
    print(f"{'server':>10} {'MB/s':>7} {'CPU-s/GB':>9} {'peak RSS':>9}  upload-phase RSS  spread")
    total = args.concurrent * each
    for name in names:
        if not together[name]:
            print(f"{name:>10} {'n/a':>7}")
            continue
        s = median(together[name])
        print(
            f"{name:>10} {rate(total, s):>7.0f} {per_gb(total, s):>9.2f} {s.rss_mib:>7.1f}Mi"
            f"  {s.sent_rss_mib:>14.1f}Mi  {s.spread:.2f}"
        )
    a = median(together["amanah"])
    for peer in ("onionshare", "raw-sink"):
        if together.get(peer):
            o = median(together[peer])
            print(
                f"amanah / {peer}: {times(rate(total, a), rate(total, o))} MB/s, "
                f"{times(per_gb(total, a), per_gb(total, o))} CPU-s/GB"
            )
    print(
        "(upload-phase RSS: the peak until the last byte was sent; spread: slowest / fastest"
        " upload. Amanah's peak after the body is the new source's codename, Argon2id with"
        " 8 MiB, at most 2 at once, and storing the drop in worker threads.)"
    )
    conc = max(s.rss_mib for s in together["amanah"])
    peaks = [max(s.rss_mib for s in single[size]["amanah"]) for size in sizes]
    flat = max(peaks) <= min(peaks) * (1 + FLAT_TOLERANCE)
    print(
        f"target: amanah peak RSS with {args.concurrent} concurrent < {TARGET_RSS_MIB:.0f} MiB: "
        f"{'met' if conc < TARGET_RSS_MIB else 'MISSED'} ({conc:.1f} MiB)"
    )
    print(
        f"target: amanah peak RSS flat from {mib(sizes[0])} to {mib(sizes[-1])} (within "
        f"{FLAT_TOLERANCE:.0%}): {'met' if flat else 'MISSED'} "
        f"({min(peaks):.1f}-{max(peaks):.1f} MiB)"
    )
    print(
        "resident set (VmRSS) after the warm-up -> after every run: "
        + ", ".join(f"{n} {r[0]:.1f} -> {r[-1]:.1f} MiB" for n, r in resident.items())
    )
    print(f"(whole run {elapsed / 60:.1f} min)")


if __name__ == "__main__":
    raise SystemExit(main())

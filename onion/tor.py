"""The one door to tor: launching our own tor process, attaching to a running one, and the
control commands the relay and its clients need. The only module that imports stem.

Rules:
- Everything here is synchronous (stem is); async callers go through `asyncio.to_thread`
  (see `onion.services`). Each call is bounded: stem's socket has its own timeouts, the
  launch waits at most `start_timeout` seconds, and `stop()` at most twice `grace`.
- Tor listens on loopback only. A launched tor gets `ControlPort 127.0.0.1:auto` with
  cookie authentication (the cookie file is 0600 in tor's data directory) and, if asked,
  `SocksPort 127.0.0.1:auto`; we attach only to control ports on loopback addresses.
- A launched tor is owned by this process (`__OwningControllerProcess`): if the relay dies,
  tor exits by itself. Its PID is recorded at start, because tor 0.4.9.11 sometimes hangs
  on SIGTERM (a deadlock at shutdown): `stop()` sends SIGTERM, then SIGKILL after `grace`.
- `controller.msg()` does not raise on an error reply: every raw command's reply is
  checked with `is_ok()`.
- stem's errors never leave this module: they become `onion.errors` classes.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import stem
import stem.connection
import stem.control
import stem.response

from .address import ClientAuthKey, ServiceKey, service_id
from .errors import (
    AddressMismatch,
    ControlAuthFailed,
    ControlError,
    ControlUnreachable,
    ServiceError,
    TorNotInstalled,
    TorStartFailed,
)

# stem logs every control command it sends at DEBUG level, ADD_ONION's private key and
# ONION_CLIENT_AUTH_ADD's included, and floods INFO lines once a connection closes. Its
# logger is silenced here, in the one module that imports stem, whatever the program's
# logging setup: a key must never reach a log.
_stem_log = logging.getLogger("stem")
_stem_log.setLevel(logging.CRITICAL + 1)
_stem_log.propagate = False
_stem_log.addHandler(logging.NullHandler())

CONTROL_PORT_FILE = "control-port"
LOG_FILE = "tor.log"
PID_FILE = "tor.pid"
START_TIMEOUT = 30.0  # seconds; a launch on this machine class takes ~0.1 s
STOP_GRACE = 5.0  # seconds between SIGTERM and SIGKILL
_POLL = 0.05
POW_KEYWORD = "PoWDefensesEnabled=1"
# ADD_ONION takes PoWDefensesEnabled since tor 0.4.9.2-alpha (tor's changelog); before,
# proof-of-work existed for services in a torrc only.
POW_SINCE = (0, 4, 9, 2)
MAX_STREAMS_LIMIT = 65535  # what ADD_ONION's MaxStreams accepts
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)\.(\d+)")


def _torrc_value(value: str | Path) -> str:
    """A torrc value, quoted when it has spaces. Newlines would inject config lines."""
    text = str(value)
    if "\n" in text or "\r" in text or "\0" in text:
        raise TorStartFailed("a tor setting cannot contain a line break")
    if " " in text or '"' in text or "\\" in text or not text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


@dataclass(frozen=True)
class LaunchSettings:
    """How to start our own tor. `data_dir` is tor's own (inside Amanah's data directory);
    `include` names a torrc fragment appended with `%include` (a private test network's
    authorities, say); `extra` are further (option, value) lines."""

    data_dir: Path
    binary: str = "tor"
    socks: bool = True
    disable_network: bool = False
    include: Path | None = None
    extra: Sequence[tuple[str, str]] = ()
    start_timeout: float = START_TIMEOUT

    def torrc(self) -> str:
        d = self.data_dir
        lines = [
            ("DataDirectory", _torrc_value(d)),
            ("ControlPort", "127.0.0.1:auto"),
            ("ControlPortWriteToFile", _torrc_value(d / CONTROL_PORT_FILE)),
            ("CookieAuthentication", "1"),
            ("CookieAuthFile", _torrc_value(d / "control_auth_cookie")),
            ("SocksPort", "127.0.0.1:auto" if self.socks else "0"),
            ("PidFile", _torrc_value(d / PID_FILE)),
            ("Log", "notice stdout"),
            ("__OwningControllerProcess", str(os.getpid())),
            ("DisableNetwork", "1" if self.disable_network else "0"),
        ]
        lines += [(k, _torrc_value(v)) for k, v in self.extra]
        text = "".join(f"{k} {v}\n" for k, v in lines)
        if self.include is not None:
            text += f"%include {_torrc_value(self.include)}\n"
        return text


@dataclass
class TorProcess:
    """A tor we started. `stop()` always reaps it."""

    process: subprocess.Popen[bytes]
    data_dir: Path
    control_port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = STOP_GRACE) -> int:
        """SIGTERM, then SIGKILL if tor has not exited after `grace` seconds (it can hang
        at shutdown). Returns the exit status; never leaves a zombie."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(grace)


def launch(settings: LaunchSettings) -> TorProcess:
    """Starts tor and waits until its control port is open. Raises TorNotInstalled, or
    TorStartFailed with the end of tor's log."""
    d = settings.data_dir
    try:
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)  # tor refuses a data directory others can read
        (d / CONTROL_PORT_FILE).unlink(missing_ok=True)
        (d / "torrc").write_text(settings.torrc(), encoding="utf-8")
        log = (d / LOG_FILE).open("ab")
    except OSError as exc:
        raise TorStartFailed(f"cannot prepare tor's data directory: {exc.strerror}") from exc
    try:
        process = subprocess.Popen(  # noqa: S603 (the binary is the operator's config)
            [settings.binary, "--defaults-torrc", "/dev/null", "-f", str(d / "torrc")],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C reaches the relay, which stops tor itself
        )
    except FileNotFoundError:
        raise TorNotInstalled(
            f"tor is not installed (no {settings.binary!r} found)",
            "install it: apt-get install tor (Debian), or set [tor] binary in amanah.toml",
        ) from None
    except OSError as exc:
        raise TorStartFailed(f"cannot run {settings.binary!r}: {exc.strerror}") from exc
    finally:
        log.close()
    tor = TorProcess(process, d, 0)
    deadline = time.monotonic() + settings.start_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TorStartFailed(
                f"tor exited at start (status {process.returncode}); its log ends:\n"
                + tor.log_tail(),
                f"the whole log is {tor.log_path}",
            )
        port = _read_control_port(d / CONTROL_PORT_FILE)
        if port is not None:
            tor.control_port = port
            return tor
        time.sleep(_POLL)
    tor.stop()
    raise TorStartFailed(
        f"tor did not open its control port within {settings.start_timeout:.0f} s; "
        "its log ends:\n" + tor.log_tail()
    )


def _read_control_port(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        if line.startswith("PORT=") and ":" in line:
            port = line.rsplit(":", 1)[1]
            if port.isdigit():
                return int(port)
    return None


def is_loopback_host(host: str) -> bool:
    """An IP literal in 127.0.0.0/8 or ::1, or the name localhost. Other names are not,
    even when they look it ("127.example.org" can resolve anywhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    """`HOST:PORT` with a loopback IP literal (or `localhost`). Raises ControlError."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ControlError(f"{what} must be HOST:PORT, e.g. 127.0.0.1:9051")
    if not is_loopback_host(host):
        raise ControlError(f"{what} must be on loopback (127.0.0.1 or ::1), not {host!r}")
    return ("127.0.0.1" if host == "localhost" else host), int(port)


def pow_supported(version: str) -> bool:
    """Whether a tor of this version (as GETINFO version gives it, "0.4.9.11" or
    "0.4.9.2-alpha (git-...)") takes PoWDefensesEnabled on ADD_ONION. An unreadable
    version is given the benefit of the doubt: tor's own reply then decides."""
    found = _VERSION.match(version.strip())
    if found is None:
        return True
    return tuple(int(part) for part in found.groups()) >= POW_SINCE


@dataclass(frozen=True)
class Published:
    """An onion service tor accepted: its address, whether PoW is on, and the client-auth
    public keys (base32) it was published with (empty: no client authorisation)."""

    name: str
    address: str
    proof_of_work: bool
    client_auth: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    # Why proof-of-work is off although it was asked for ("tor 0.4.8.12 does not support
    # it"), for `amanah status`; empty when it is on or was not asked for.
    pow_note: str = ""


@dataclass
class DescriptorState:
    """What HS_DESC events said about one service's descriptor, since it was published."""

    uploads: int = 0  # HSDirs that accepted it
    failures: int = 0
    last_event_at: float | None = None


@dataclass
class TorControl:
    """An authenticated control connection. Not thread-safe beyond what stem gives: the
    async facade serialises calls."""

    controller: stem.control.Controller
    descriptors: dict[str, DescriptorState] = field(default_factory=dict)
    # The ADD_ONION keyword that turns proof-of-work on. Only tests change it: to an
    # unknown keyword, which the real tor refuses exactly as a tor older than
    # 0.4.9.2-alpha refuses this one, so the fallback runs against a real reply.
    pow_keyword: str = POW_KEYWORD
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- connecting ----------------------------------------------------------------------

    @classmethod
    def connect(cls, host: str, port: int, password: str | None = None) -> TorControl:
        """Connects to tor's control port on loopback and authenticates (cookie, or the
        password if given). Raises ControlUnreachable, ControlAuthFailed."""
        try:
            # Probed first with a socket closed here: stem leaks its socket when the
            # connection is refused (a ResourceWarning at some later garbage collection).
            socket.create_connection((host, port), timeout=10).close()
            controller = stem.control.Controller.from_port(host, port)
        except (OSError, stem.SocketError) as exc:
            raise ControlUnreachable(
                f"nothing answers on tor's control port {host}:{port}",
                "is tor running with `ControlPort` set? (or leave [tor] control empty "
                "to let amanah start its own tor)",
            ) from exc
        try:
            controller.authenticate(password=password)
        except stem.connection.MissingPassword as exc:
            controller.close()
            raise ControlAuthFailed(
                "tor's control port wants a password",
                "set [tor] control_password_file, or use CookieAuthentication 1",
            ) from exc
        except stem.connection.PasswordAuthFailed as exc:
            controller.close()
            raise ControlAuthFailed("tor's control port refused the password") from exc
        except stem.connection.UnreadableCookieFile as exc:
            controller.close()
            raise ControlAuthFailed(
                "cannot read tor's control cookie file",
                "run amanah as a user that can read it (Debian: add it to the debian-tor group)",
            ) from exc
        except stem.connection.CookieAuthFailed as exc:
            controller.close()
            raise ControlAuthFailed("tor's control port refused the cookie") from exc
        except (stem.connection.AuthenticationFailure, stem.SocketError) as exc:
            controller.close()
            raise ControlAuthFailed(f"cannot authenticate to tor's control port: {exc}") from exc
        control = cls(controller)
        control._listen_for_descriptors()
        return control

    def close(self) -> None:
        """Closes the connection; tor withdraws the services this connection added."""
        self.controller.close()

    # -- raw commands --------------------------------------------------------------------

    def command(self, line: str, what: str) -> stem.response.ControlMessage:
        """Sends one control command; raises ControlError (or ServiceError for onion
        commands) with tor's reply when it is not 250 OK."""
        if "\r" in line or "\n" in line:
            raise ControlError("a control command is one line")
        try:
            with self._lock:
                reply = self.controller.msg(line)
        except stem.SocketClosed as exc:
            raise ControlUnreachable(
                f"tor closed the control connection while trying to {what}"
            ) from exc
        except stem.ControllerError as exc:
            raise ControlError(f"failed to {what}: {exc}") from exc
        # 250 is OK; ONION_CLIENT_AUTH_ADD also answers 251 (replaced) and 252 (registered,
        # and a cached descriptor could now be decrypted): successes too.
        if not all(code in ("250", "251", "252") for code, _, _ in reply.content()):
            error = ServiceError if "ONION" in line.split(" ", 1)[0] else ControlError
            raise error(f"tor refused to {what}: {_reply_text(reply)}")
        return reply

    def get_info(self, key: str) -> str:
        try:
            with self._lock:
                return str(self.controller.get_info(key))
        except stem.ControllerError as exc:
            raise ControlError(f"tor could not tell {key}: {exc}") from exc

    def version(self) -> str:
        return self.get_info("version")

    def socks_listener(self) -> tuple[str, int] | None:
        """The first SOCKS listener on loopback, as (host, port), or None. (An attached
        tor may listen elsewhere too; the relay's own traffic stays on loopback.)"""
        for item in self.get_info("net/listeners/socks").split():
            try:
                return parse_host_port(item.strip('"'), "a SOCKS listener")
            except ControlError:
                continue
        return None

    # -- onion services ------------------------------------------------------------------

    def add_service(
        self,
        name: str,
        key: ServiceKey,
        ports: dict[int, tuple[str, int]],
        *,
        client_auth: Sequence[str] = (),
        proof_of_work: bool = False,
        max_streams: int | None = None,
        close_circuit_over_max: bool = False,
    ) -> Published:
        """Publishes `key`'s service (ADD_ONION with our persisted key, so the address
        never changes) mapping each virtual port to a loopback target. `client_auth`
        lists X25519 public keys in base32: with any, only their holders can reach it.
        With `proof_of_work`, asks for PoWDefensesEnabled=1; a tor older than
        0.4.9.2-alpha, or one that refuses it, gets the service without it, and a warning.
        `max_streams` bounds the streams open at once on one rendezvous circuit; with
        `close_circuit_over_max`, a client that asks for more loses the circuit instead of
        the extra stream. Raises ServiceError, AddressMismatch."""
        if not ports:
            raise ServiceError("an onion service needs at least one port")
        flags = ["DiscardPK"] + (["V3Auth"] if client_auth else [])
        flags += ["MaxStreamsCloseCircuit"] if max_streams and close_circuit_over_max else []
        parts = [f"ADD_ONION ED25519-V3:{key.tor_key_blob()}", "Flags=" + ",".join(flags)]
        if max_streams is not None:
            if not 0 <= max_streams <= MAX_STREAMS_LIMIT:
                raise ServiceError(f"max_streams is 0 (no limit) to {MAX_STREAMS_LIMIT}")
            parts.append(f"MaxStreams={max_streams}")
        parts += [f"ClientAuthV3={public}" for public in client_auth]
        for virtual, (host, port) in sorted(ports.items()):
            parse_host_port(f"{host}:{port}", "an onion service target")
            parts.append(f"Port={virtual},{host}:{port}")
        what = f"publish the {name} service"
        reply, warning, note = None, "", ""
        if proof_of_work:
            reply, warning, note = self._add_with_pow(parts, what, name)
        if reply is None:
            reply = self.command(" ".join(parts), what)
        answered = _reply_value(reply, "ServiceID")
        self.descriptors[key.service_id] = DescriptorState()
        if answered != key.service_id:
            self._withdraw_quietly(answered)
            raise AddressMismatch(
                f"tor published the {name} service under an address other than its key's; withdrawn"
            )
        return Published(
            name,
            key.address,
            proof_of_work and not note,
            tuple(client_auth),
            (warning,) if warning else (),
            note,
        )

    def _add_with_pow(
        self, parts: list[str], what: str, name: str
    ) -> tuple[stem.response.ControlMessage | None, str, str]:
        """ADD_ONION with proof-of-work, if this tor has it: (reply, warning, note), with
        no reply when the caller must publish without it. A tor that does not know the
        keyword answers `512 ... Unrecognized keyword argument`, as for any unknown one;
        the version is checked first so that an old tor is not asked at all."""
        version = self._version_or_unknown()
        note = f"tor {version} does not support it"
        warning = (
            f"proof-of-work is OFF for the {name} service: {note} (tor 0.4.9.2-alpha or "
            "later has it); a flood of introductions can now crowd out real sources"
        )
        if not pow_supported(version):
            return None, warning, note
        pow_parts = parts[:1] + [self.pow_keyword] + parts[1:]
        try:
            return self.command(" ".join(pow_parts), what), "", ""
        except ServiceError as exc:
            if "collision" in str(exc).lower():
                raise
            return None, f"{warning}; tor said: {exc}", note

    def remove_service(self, address: str) -> None:
        """DEL_ONION. Raises ServiceError (e.g. not one of this connection's services)."""
        self.command(f"DEL_ONION {service_id(address)}", "withdraw an onion service")
        self.descriptors.pop(service_id(address), None)

    def close_rendezvous_circuits(self, address: str) -> int:
        """Closes the service side's rendezvous circuits for `address`; returns how many.

        tor keeps them open after DEL_ONION "for existing connections to finish", and a
        service added again under the same key serves new streams on them: without this,
        a member removed from the journalist service would keep reaching it through the
        circuit they already had, until their tor dropped it (10 minutes or more). Every
        client of the service reconnects through a new circuit, which must pass the new
        descriptor's client authorisation. Raises ControlError."""
        sid = service_id(address)
        closed = 0
        for line in self.get_info("circuit-status").splitlines():
            words = line.split()
            fields = dict(word.split("=", 1) for word in words[1:] if "=" in word)
            if fields.get("PURPOSE") != "HS_SERVICE_REND" or fields.get("REND_QUERY") != sid:
                continue
            try:
                self.command(f"CLOSECIRCUIT {words[0]}", "close a rendezvous circuit")
            except ControlUnreachable:
                raise
            except ControlError as exc:
                if "unknown circuit" not in str(exc).lower():  # closed meanwhile: fine
                    raise
                continue
            closed += 1
        return closed

    def services(self) -> list[str]:
        """The addresses (….onion) of the services this connection added."""
        raw = self.get_info("onions/current")
        return sorted(f"{line.strip()}.onion" for line in raw.splitlines() if line.strip())

    def _withdraw_quietly(self, answered: str | None) -> None:
        if answered:
            try:
                self.command(f"DEL_ONION {answered}", "withdraw a mispublished service")
            except ControlError:
                pass  # the AddressMismatch that follows says what matters

    def _version_or_unknown(self) -> str:
        try:
            return self.version().split()[0]
        except ControlError:
            return "version unknown"

    # -- descriptor events ---------------------------------------------------------------

    def _listen_for_descriptors(self) -> None:
        def on_event(event: Any) -> None:
            state = self.descriptors.get(str(getattr(event, "address", "")))
            if state is None:
                return
            action = str(getattr(event, "action", ""))
            if action == "UPLOADED":
                state.uploads += 1
            elif action == "FAILED":
                state.failures += 1
            else:
                return
            state.last_event_at = time.time()

        try:
            self.controller.add_event_listener(on_event, stem.control.EventType.HS_DESC)
        except stem.ControllerError as exc:
            raise ControlError(f"tor refused to report descriptor uploads: {exc}") from exc

    # -- the client side -----------------------------------------------------------------

    def add_client_auth(self, address: str, key: ClientAuthKey) -> None:
        """Gives this (client) tor a member's key for `address` (ONION_CLIENT_AUTH_ADD),
        for as long as tor runs. Raises ControlError."""
        self.command(
            f"ONION_CLIENT_AUTH_ADD {service_id(address)} x25519:{key.private_base64}",
            "add the client-auth key",
        )


def _reply_text(reply: stem.response.ControlMessage) -> str:
    return " ".join(content for _, _, content in reply.content())[:300]


def _reply_value(reply: stem.response.ControlMessage, key: str) -> str | None:
    for _, _, content in reply.content():
        name, sep, value = content.partition("=")
        if sep and name == key:
            return value
    return None

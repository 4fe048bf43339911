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


def parse_host_port(text: str, what: str) -> tuple[str, int]:
    """`HOST:PORT` with a loopback IP literal (or `localhost`). Raises ControlError."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ControlError(f"{what} must be HOST:PORT, e.g. 127.0.0.1:9051")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ControlError(f"{what} must be on loopback (127.0.0.1 or ::1), not {host!r}")
    return ("127.0.0.1" if host == "localhost" else host), int(port)


@dataclass(frozen=True)
class Published:
    """An onion service tor accepted: its address, whether PoW is on, and the client-auth
    public keys (base32) it was published with (empty: no client authorisation)."""

    name: str
    address: str
    proof_of_work: bool
    client_auth: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


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
        """The first SOCKS listener, as (host, port), or None."""
        for item in self.get_info("net/listeners/socks").split():
            host, _, port = item.strip('"').rpartition(":")
            if port.isdigit():
                return host.strip("[]"), int(port)
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
    ) -> Published:
        """Publishes `key`'s service (ADD_ONION with our persisted key, so the address
        never changes) mapping each virtual port to a loopback target. `client_auth`
        lists X25519 public keys in base32: with any, only their holders can reach it.
        With `proof_of_work`, asks for PoWDefensesEnabled=1; a tor that refuses it gets
        the service without, and a warning. Raises ServiceError, AddressMismatch."""
        if not ports:
            raise ServiceError("an onion service needs at least one port")
        parts = [f"ADD_ONION ED25519-V3:{key.tor_key_blob()}"]
        parts.append("Flags=DiscardPK,V3Auth" if client_auth else "Flags=DiscardPK")
        parts += [f"ClientAuthV3={public}" for public in client_auth]
        for virtual, (host, port) in sorted(ports.items()):
            parse_host_port(f"{host}:{port}", "an onion service target")
            parts.append(f"Port={virtual},{host}:{port}")
        warnings: list[str] = []
        reply = None
        if proof_of_work:
            pow_parts = parts[:1] + ["PoWDefensesEnabled=1"] + parts[1:]
            try:
                reply = self.command(" ".join(pow_parts), f"publish the {name} service")
            except ServiceError as exc:
                if "collision" in str(exc).lower():
                    raise
                warnings.append(
                    f"this tor ({self._version_or_unknown()}) refused proof-of-work for the "
                    f"{name} service ({exc}); it runs without that flood defence: "
                    "tor 0.4.9 or later has it"
                )
        if reply is None:
            reply = self.command(" ".join(parts), f"publish the {name} service")
        answered = _reply_value(reply, "ServiceID")
        self.descriptors[key.service_id] = DescriptorState()
        if answered != key.service_id:
            self._withdraw_quietly(answered)
            raise AddressMismatch(
                f"tor published the {name} service under an address other than its key's; withdrawn"
            )
        return Published(
            name, key.address, proof_of_work and not warnings, tuple(client_auth), tuple(warnings)
        )

    def remove_service(self, address: str) -> None:
        """DEL_ONION. Raises ServiceError (e.g. not one of this connection's services)."""
        self.command(f"DEL_ONION {service_id(address)}", "withdraw an onion service")
        self.descriptors.pop(service_id(address), None)

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

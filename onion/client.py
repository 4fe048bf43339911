"""The client side of Tor, for `amanah-inbox` and `amanah-drop`: HTTP through a SOCKS
port, and a member's client-auth key given to the client's tor.

Rules:
- Names are always resolved by tor (`rdns=True`): resolving a `.onion` name locally
  would ask the local DNS resolver for it, telling the network which relay is in use.
- tor's extended SOCKS errors become `TorClientError`s that say what to do; the ones that
  only mean "not yet" (no descriptor yet, an introduction that failed) are `retryable`.
"""

from __future__ import annotations

import asyncio
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
from aiohttp_socks import ProxyConnectionError, ProxyConnector, ProxyError, ProxyTimeoutError

from .address import parse_auth_private, service_id
from .errors import ControlError, OnionError, OnionKeyError
from .tor import TorControl, parse_host_port

DEFAULT_SOCKS = "127.0.0.1:9050"
DEFAULT_CONTROL = "127.0.0.1:9051"

# tor's extended SOCKS5 replies (tor's doc/socks-extensions): what they mean to a user.
_SOCKS_REPLIES: dict[int, tuple[str, bool]] = {
    0xF0: ("the onion service's descriptor is not on the Tor network (yet)", True),
    0xF1: ("the onion service's descriptor is invalid", False),
    0xF2: ("the introduction to the onion service failed", True),
    0xF3: ("the rendezvous with the onion service failed", True),
    0xF4: (
        "the onion service needs client authorisation and this tor has no key for it "
        "(give your key with --onion-auth FILE)",
        False,
    ),
    0xF5: ("the onion service refused this client-auth key (revoked or wrong key)", False),
    0xF6: ("the onion address is invalid", False),
    0xF7: ("the introduction to the onion service timed out", True),
}
_REPLY_CODE = re.compile(r"0X([0-9A-F]{2})", re.IGNORECASE)


# What a request through tor's SOCKS port can raise besides the HTTP exchange itself:
# aiohttp-socks' errors are not aiohttp.ClientError subclasses.
TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    aiohttp.ClientError,
    ProxyError,
    ProxyConnectionError,
    ProxyTimeoutError,
    TimeoutError,
)


class TorClientError(OnionError):
    """A request through Tor failed; `retryable` when trying again later may work."""

    def __init__(self, message: str, hint: str | None = None, retryable: bool = False) -> None:
        super().__init__(message, hint)
        self.retryable = retryable


def is_onion_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host.endswith(".onion")


def onion_host(url: str) -> str:
    """The `.onion` host of `url`, checked (a well-formed v3 address). Raises ValueError."""
    host = urlsplit(url).hostname or ""
    return service_id(host) + ".onion"


def socks_connector(socks: str) -> ProxyConnector:
    """An aiohttp connector that sends every connection through tor's SOCKS port at
    `socks` (HOST:PORT on loopback), names resolved by tor. Raises TorClientError if
    nothing listens there."""
    try:
        host, port = parse_host_port(socks, "--tor-socks")
    except ControlError as exc:
        raise TorClientError(str(exc)) from None
    try:
        with socket.create_connection((host, port), timeout=5):
            pass
    except OSError:
        raise TorClientError(
            f"no Tor SOCKS port at {host}:{port}",
            "install and start tor (Debian: apt-get install tor; it listens on 9050), or "
            "run Tor Browser and give --tor-socks 127.0.0.1:9150",
        ) from None
    return ProxyConnector.from_url(f"socks5://{host}:{port}", rdns=True)


def explain(exc: Exception) -> TorClientError | None:
    """A TorClientError for an aiohttp-socks failure, or None if `exc` is not one."""
    if isinstance(exc, ProxyError):
        found = _REPLY_CODE.search(str(exc))
        code = int(found.group(1), 16) if found else None
        if code is not None and code in _SOCKS_REPLIES:
            message, retryable = _SOCKS_REPLIES[code]
            return TorClientError(message, retryable=retryable)
        return TorClientError(f"tor could not connect: {exc}", retryable=True)
    if isinstance(exc, ProxyConnectionError | ProxyTimeoutError | TimeoutError):
        return TorClientError(f"the connection through tor failed: {exc}", retryable=True)
    if isinstance(exc, aiohttp.ClientConnectorError) and exc.__cause__ is not None:
        return explain(exc.__cause__) if isinstance(exc.__cause__, Exception) else None
    return None


def register_client_auth(
    auth_file: Path, relay_url: str, control: str, password: str | None
) -> str:
    """Gives the client's tor (control port `control`) the member's key from `auth_file`,
    for the onion address of `relay_url` (the file's own address may be an older one, from
    before a key rotation). Returns the address. Raises OnionKeyError, ControlError."""
    try:
        text = auth_file.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise OnionKeyError(f"cannot read the client-auth key file {auth_file}") from exc
    _, key = parse_auth_private(text)
    try:
        address = onion_host(relay_url)
    except ValueError as exc:
        raise OnionKeyError(f"--onion-auth needs a .onion --relay URL: {exc}") from None
    host, port = parse_host_port(control, "--tor-control")
    try:
        tor = TorControl.connect(host, port, password)
    except ControlError as exc:
        raise ControlError(
            f"cannot give the key to your tor: {exc}",
            f"either start tor with `ControlPort {port}` and `CookieAuthentication 1`, or "
            "copy the key file into the directory your torrc names as ClientOnionAuthDir "
            "(its name must end in .auth_private), then reload tor (systemctl reload tor)",
        ) from exc
    try:
        tor.add_client_auth(address, key)
    finally:
        tor.close()
    return address


async def register_client_auth_async(
    auth_file: Path, relay_url: str, control: str, password: str | None
) -> str:
    return await asyncio.to_thread(register_client_auth, auth_file, relay_url, control, password)

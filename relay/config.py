"""Configuration: one frozen, typed object, loaded once from `amanah.toml` in the data
directory, with environment overrides, validated at start-up and passed explicitly.

Precedence: command-line flags (applied by the CLI with `dataclasses.replace`) over
environment variables (`AMANAH_SOURCE_PORT`, ...) over `amanah.toml` over the defaults
below. Unknown keys in the file are errors: a typo must not silently fall back to a
default that, say, allows larger uploads than the operator meant.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from onion.errors import ControlError
from onion.tor import is_loopback_host, parse_host_port

from .errors import ConfigError

CONFIG_NAME = "amanah.toml"

MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    # One submission through the form, all files together. Large video is the point of
    # the relay; the tus path (resumable) is the better road for it, but the form must
    # take a phone video too.
    max_total_bytes: int = 2048 * MiB
    # A page of files is what a person picks by hand; more is likelier a script.
    max_files: int = 20
    # Characters of message text; 100k is a long testimony, and bounds RAM per request.
    max_message_chars: int = 100_000
    # A contact's reply, sealed on their machine: text, not media.
    max_reply_bytes: int = 1 * MiB


@dataclass(frozen=True)
class Server:
    # Loopback only: Tor's onion services (or the tests) reach the relay here. Binding
    # anything else would expose the relay, and the addresses of its visitors, directly.
    host: str = "127.0.0.1"
    source_port: int = 8080
    journalist_port: int = 8081


@dataclass(frozen=True)
class Auth:
    # A journalist's signed challenge is good for this long, and only once.
    challenge_seconds: int = 60
    # Bearer tokens are short-lived so a leaked one is soon useless.
    token_seconds: int = 900


@dataclass(frozen=True)
class Tor:
    # Empty: `amanah serve` starts its own tor (its data directory is DATA/tor, its control
    # port on loopback with cookie authentication). "HOST:PORT": attach to the tor whose
    # control port that is, on loopback only.
    control: str = ""
    # Attach with a password (tor's HashedControlPassword) read from this file, instead of
    # the cookie. The password lives in its own file, never in this one.
    control_password_file: str = ""
    # The tor binary to start (Debian's package `tor`).
    binary: str = "tor"
    # Tor's proof-of-work defence on the source service: a flood costs the flooder CPU
    # instead of queueing out every real source. Needs tor 0.4.9; an older tor gets a
    # warning and the service without it.
    proof_of_work: bool = True
    # Starts our tor with DisableNetwork 1: services are registered but never published.
    # For tests and for preparing a relay offline.
    disable_network: bool = False
    # A torrc fragment added to our tor's configuration with %include (bridges, or a
    # private test network's authorities).
    include: str = ""
    # Seconds between the relay's checks that the journalist service is published with
    # exactly the current members' client-auth keys (`amanah contact` changes them).
    sync_seconds: int = 2
    # The relay fetches its own source page through its tor's SOCKS port and shows the
    # result in `amanah status`: a service that silently stopped answering is otherwise
    # noticed only by the sources who cannot reach it. Every `self_check_seconds` while
    # it answers; after a failure sooner (15 s, doubling up to that).
    self_check: bool = True
    self_check_seconds: int = 600


@dataclass(frozen=True)
class Sanitize:
    # A type the sanitizer cannot clean is refused by default. An operator may choose to
    # forward such files as they were sent; each is then flagged to the contact in
    # capitals, and the source is warned on the receipt. Off: a source who does not know
    # what a file carries is protected from it.
    forward_unsupported: bool = False


@dataclass(frozen=True)
class Config:
    data_dir: Path
    server: Server = field(default_factory=Server)
    limits: Limits = field(default_factory=Limits)
    auth: Auth = field(default_factory=Auth)
    tor: Tor = field(default_factory=Tor)
    sanitize: Sanitize = field(default_factory=Sanitize)

    @property
    def database(self) -> Path:
        return self.data_dir / "amanah.db"

    @property
    def blobs(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def staging(self) -> Path:
        return self.data_dir / "staging"

    @property
    def keys(self) -> Path:
        return self.data_dir / "keys"

    @property
    def tor_data(self) -> Path:
        """The data directory of the tor `amanah serve` starts, and its status file."""
        return self.data_dir / "tor"


_SECTIONS: dict[str, type] = {
    "server": Server,
    "limits": Limits,
    "auth": Auth,
    "tor": Tor,
    "sanitize": Sanitize,
}
_ENV = {
    "AMANAH_HOST": ("server", "host"),
    "AMANAH_SOURCE_PORT": ("server", "source_port"),
    "AMANAH_JOURNALIST_PORT": ("server", "journalist_port"),
    "AMANAH_TOR_CONTROL": ("tor", "control"),
}
_TYPES: dict[Any, type] = {"int": int, int: int, "str": str, str: str, "bool": bool, bool: bool}

DEFAULT_TOML = """\
# Amanah relay configuration. Every setting shows its default; uncomment to change.
# Environment variables AMANAH_HOST, AMANAH_SOURCE_PORT and AMANAH_JOURNALIST_PORT
# override this file; command-line flags override both.

[server]
# Loopback only: Tor reaches the relay here. Never bind a public address.
# host = "127.0.0.1"
# source_port = 8080        # pages and uploads for sources
# journalist_port = 8081    # the journalist API, on its own port

[limits]
# max_total_bytes = 2147483648   # one form submission, all files together (2 GiB)
# max_files = 20
# max_message_chars = 100000
# max_reply_bytes = 1048576

[auth]
# challenge_seconds = 60
# token_seconds = 900

[tor]
# control = ""                 # empty: start our own tor; "127.0.0.1:9051": attach to it
# control_password_file = ""   # attach with a password from this file instead of the cookie
# binary = "tor"
# proof_of_work = true         # PoW defence on the source service (tor 0.4.9+)
# disable_network = false      # register services with tor but never publish (offline)
# include = ""                 # a torrc fragment for our own tor (%include)
# sync_seconds = 2             # how soon a contact change reaches the journalist service
# self_check = true            # fetch our own source page through tor; `amanah status` shows it
# self_check_seconds = 600     # how often, while it answers (sooner after a failure)

[sanitize]
# Files whose type cannot be cleaned are refused. true: forward them unchanged instead,
# flagged NOT STRIPPED to the contact (they may identify the source).
# forward_unsupported = false
"""


def _section(cls: type, values: Mapping[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown setting {key!r}")
        expected = _TYPES[known[key].type]
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise ConfigError(f"{where}.{key}: expected {expected.__name__}")
        if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
            raise ConfigError(f"{where}.{key}: must be positive")
    return cls(**values)


def load(data_dir: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Reads `DATA_DIR/amanah.toml` and the environment. Raises ConfigError."""
    environ = os.environ if environ is None else environ
    path = data_dir / CONFIG_NAME
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no {CONFIG_NAME} in the data directory (run `amanah init`)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{CONFIG_NAME} cannot be read: {exc}") from exc
    for name, value in document.items():
        if name not in _SECTIONS:
            raise ConfigError(f"{CONFIG_NAME}: unknown section [{name}]")
        if not isinstance(value, dict):
            raise ConfigError(f"{CONFIG_NAME}: {name} must be a [{name}] table of settings")
    merged: dict[str, dict[str, Any]] = {k: dict(document.get(k, {})) for k in _SECTIONS}
    for variable, (section, key) in _ENV.items():
        if variable in environ:
            raw = environ[variable]
            merged[section][key] = int(raw) if raw.isdigit() else raw
    config = Config(
        data_dir=data_dir,
        **{k: _section(cls, merged[k], k) for k, cls in _SECTIONS.items()},
    )
    validate(config)
    return config


def validate(config: Config) -> None:
    """Raises ConfigError for settings that parse but make no sense together."""
    server = config.server
    for port in (server.source_port, server.journalist_port):
        if not 0 < port < 65536:
            raise ConfigError(f"port {port} is out of range")
    if server.source_port == server.journalist_port:
        raise ConfigError("source_port and journalist_port must differ")
    # An IP literal in 127.0.0.0/8 or ::1, or localhost: a name that only looks loopback
    # ("127.example.org") can resolve anywhere.
    if not is_loopback_host(server.host):
        raise ConfigError("server.host must be a loopback address; Tor reaches the relay there")
    if config.tor.control:
        try:  # it commands tor: loopback only, parsed as the onion package connects to it
            parse_host_port(config.tor.control, "tor.control")
        except ControlError as exc:
            raise ConfigError(str(exc)) from None


def with_tor_control(config: Config, control: str | None) -> Config:
    """The same config attaching to the tor control port `control`, where given."""
    if control is None:
        return config
    updated = replace(config, tor=replace(config.tor, control=control))
    validate(updated)
    return updated


def with_ports(config: Config, source: int | None, journalist: int | None) -> Config:
    """The same config with ports from the command line, where given."""
    server = replace(
        config.server,
        source_port=config.server.source_port if source is None else source,
        journalist_port=config.server.journalist_port if journalist is None else journalist,
    )
    updated = replace(config, server=server)
    validate(updated)
    return updated

"""The data directory: creating it, and reading the relay's own keys from it.

    DATA/amanah.toml          configuration (commented defaults)
    DATA/keys/directory.key   the relay's Ed25519 directory signing key     0600
    DATA/keys/codename.salt   the per-relay salt of codename derivation     0600
    DATA/keys/source-onion.key, journalist-onion.key
                              the onion services' Ed25519 seeds (onion.keys) 0600
    DATA/tor/                 the data directory of the tor `amanah serve` starts
    DATA/amanah.db            SQLite (WAL)
    DATA/blobs/               sealed drops and replies, one age file each
    DATA/staging/             uploads in flight, sealed to a key that lives only in RAM

Directories are 0700 and key files 0600. A key file that others can read is reported as a
warning (not refused: an operator may be mid-fix), every time the keys are loaded.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from crypto.codename import SALT_SIZE
from crypto.errors import KeyEncodingError
from crypto.keys import SigningKey
from onion import keys as onion_keys
from onion.errors import OnionKeyError

from .config import CONFIG_NAME, DEFAULT_TOML
from .errors import ConfigError, Conflict

DIRECTORY_KEY = "directory.key"
CODENAME_SALT = "codename.salt"


@dataclass(frozen=True)
class RelayKeys:
    directory_key: SigningKey
    codename_salt: bytes
    warnings: tuple[str, ...]


def _write_secret(path: Path, text: str) -> None:
    # O_EXCL: never overwrite a key; 0600 from the first byte, not chmod after.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def initialise(data_dir: Path) -> RelayKeys:
    """Creates the data directory, its configuration and the relay's keys.
    Raises Conflict if it is already initialised, ConfigError if it cannot be created."""
    if (data_dir / CONFIG_NAME).exists():
        raise Conflict(f"{data_dir} is already initialised")
    try:
        for sub in ("", "keys", "blobs", "staging"):
            (data_dir / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = data_dir / "keys"
        _write_secret(keys / DIRECTORY_KEY, SigningKey.generate().encode() + "\n")
        _write_secret(keys / CODENAME_SALT, secrets.token_hex(SALT_SIZE) + "\n")
        for service in onion_keys.SERVICES:
            onion_keys.ensure(keys, service)
        config = data_dir / CONFIG_NAME
        config.write_text(DEFAULT_TOML, encoding="utf-8")
    except FileExistsError as exc:
        raise Conflict(f"{exc.filename} exists already; refusing to overwrite a key") from exc
    except OnionKeyError as exc:
        raise ConfigError(str(exc)) from exc
    except OSError as exc:
        raise ConfigError(f"cannot create the data directory: {exc.strerror}") from exc
    return load_keys(data_dir)


def _read_secret(path: Path, warnings: list[str]) -> str:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise ConfigError(f"missing key file {path.name} (was `amanah init` run?)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read key file {path.name}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(f"key file {path} is readable by others: chmod 600 {path}")
    return text


def load_keys(data_dir: Path) -> RelayKeys:
    """Reads the relay's keys. Raises ConfigError; lists permission warnings."""
    warnings: list[str] = []
    keys = data_dir / "keys"
    try:
        directory_key = SigningKey.parse(_read_secret(keys / DIRECTORY_KEY, warnings))
    except KeyEncodingError as exc:
        raise ConfigError(f"{DIRECTORY_KEY} is not a valid signing key") from exc
    try:
        salt = bytes.fromhex(_read_secret(keys / CODENAME_SALT, warnings))
    except ValueError:
        salt = b""
    if len(salt) != SALT_SIZE:
        raise ConfigError(f"{CODENAME_SALT} must hold {SALT_SIZE} bytes in hex")
    return RelayKeys(directory_key, salt, tuple(warnings))


def onion_addresses(data_dir: Path, *, create: bool = False) -> dict[str, str]:
    """The onion services' addresses ("source", "journalist": the full `….onion`),
    computed from the persisted keys, so they are known whether or not tor runs. With
    `create`, a data directory from before onion keys existed gets them. Raises
    ConfigError for a damaged key file."""
    keys = data_dir / "keys"
    found: dict[str, str] = {}
    try:
        for service in onion_keys.SERVICES:
            key = onion_keys.ensure(keys, service) if create else onion_keys.load(keys, service)
            if key is not None:
                found[service] = key.address
    except OnionKeyError as exc:
        raise ConfigError(str(exc)) from exc
    return found

"""Onion-service keys persisted in a directory (the relay's `DATA/keys/`).

    NAME-onion.key            the service's current Ed25519 seed                  0600
    NAME-onion.retiring.key   after a rotation: the previous seed and the time    0600
                              after which its service is withdrawn

A key file is written once, 0600 from its first byte (O_EXCL), fsynced, and never
overwritten in place: a rotation writes the new key under a temporary name and renames it
over the old one after the old key is safe in the retiring file. A key file that others
can read is reported as a warning each time it is loaded. Nothing here logs.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from .address import ServiceKey
from .errors import OnionKeyError

SERVICES = ("source", "journalist")
_TAG = "amanah-onion-service-key-v1:"
_WITHDRAW = "withdraw-after:"


@dataclass(frozen=True)
class Retiring:
    """A service key on its way out: published beside the new one until `withdraw_after`
    (unix seconds)."""

    key: ServiceKey
    withdraw_after: int


def key_path(keys_dir: Path, name: str) -> Path:
    _check_name(name)
    return keys_dir / f"{name}-onion.key"


def retiring_path(keys_dir: Path, name: str) -> Path:
    _check_name(name)
    return keys_dir / f"{name}-onion.retiring.key"


def _check_name(name: str) -> None:
    if name not in SERVICES:
        raise OnionKeyError(f"unknown onion service {name!r}; the services are {SERVICES}")


def _encode(key: ServiceKey) -> str:
    return _TAG + base64.b64encode(key.seed).decode("ascii") + "\n"


def _decode(line: str, what: str) -> ServiceKey:
    if not line.startswith(_TAG):
        raise OnionKeyError(f"{what} is not an Amanah onion service key file")
    try:
        return ServiceKey(base64.b64decode(line[len(_TAG) :], validate=True))
    except binascii.Error:
        raise OnionKeyError(f"{what} is damaged (not base64)") from None


def _write_new(path: Path, text: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise OnionKeyError(f"{path.name} exists already; refusing to overwrite a key") from None
    except OSError as exc:
        raise OnionKeyError(f"cannot write {path.name}: {exc.strerror}") from exc
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path, warnings: list[str] | None) -> list[str] | None:
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise OnionKeyError(f"cannot read the key file {path.name}") from exc
    if warnings is not None and mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(f"key file {path} is readable by others: chmod 600 {path}")
    return [line.strip() for line in text.splitlines() if line.strip()]


def load(keys_dir: Path, name: str, warnings: list[str] | None = None) -> ServiceKey | None:
    """The current key of service `name`, or None if it has none yet. Raises OnionKeyError
    for a damaged file."""
    path = key_path(keys_dir, name)
    lines = _read(path, warnings)
    if lines is None:
        return None
    if len(lines) != 1:
        raise OnionKeyError(f"{path.name} must hold one key line")
    return _decode(lines[0], path.name)


def ensure(keys_dir: Path, name: str, warnings: list[str] | None = None) -> ServiceKey:
    """The current key of service `name`, made (and persisted) if it has none yet."""
    existing = load(keys_dir, name, warnings)
    if existing is not None:
        return existing
    key = ServiceKey.generate()
    _write_new(key_path(keys_dir, name), _encode(key))
    _fsync_dir(keys_dir)
    return key


def load_retiring(keys_dir: Path, name: str, warnings: list[str] | None = None) -> Retiring | None:
    """The previous key of service `name` while a rotation overlaps, else None."""
    path = retiring_path(keys_dir, name)
    lines = _read(path, warnings)
    if lines is None:
        return None
    if len(lines) != 2 or not lines[1].startswith(_WITHDRAW):
        raise OnionKeyError(f"{path.name} must hold a key line and a {_WITHDRAW} line")
    try:
        withdraw_after = int(lines[1][len(_WITHDRAW) :].strip())
    except ValueError:
        raise OnionKeyError(f"{path.name}: {_WITHDRAW} is not a time") from None
    return Retiring(_decode(lines[0], path.name), withdraw_after)


def rotate(
    keys_dir: Path, name: str, overlap_seconds: int, now: int
) -> tuple[ServiceKey, Retiring]:
    """Makes a new key for service `name`; the current one becomes the retiring key,
    withdrawn `overlap_seconds` after `now`. Raises OnionKeyError if the previous rotation
    is still in its overlap, or the service has no key yet."""
    if overlap_seconds < 0:
        raise OnionKeyError("the overlap cannot be negative")
    current = load(keys_dir, name)
    if current is None:
        raise OnionKeyError(f"the {name} service has no key yet; nothing to rotate")
    previous = load_retiring(keys_dir, name)
    if previous is not None and previous.withdraw_after > now:
        raise OnionKeyError(
            f"the previous {name} rotation is still overlapping",
            "rotate again once its old address is withdrawn (`amanah status` shows when)",
        )
    forget_retiring(keys_dir, name)
    retiring = Retiring(current, now + overlap_seconds)
    _write_new(
        retiring_path(keys_dir, name), _encode(current) + f"{_WITHDRAW} {retiring.withdraw_after}\n"
    )
    new = ServiceKey.generate()
    temporary = keys_dir / f".{name}-onion.key.{secrets.token_hex(8)}"
    _write_new(temporary, _encode(new))
    os.replace(temporary, key_path(keys_dir, name))
    _fsync_dir(keys_dir)
    return new, retiring


def forget_retiring(keys_dir: Path, name: str) -> bool:
    """Deletes the retiring key of service `name` (its service is withdrawn). Returns
    whether there was one."""
    try:
        retiring_path(keys_dir, name).unlink()
    except FileNotFoundError:
        return False
    _fsync_dir(keys_dir)
    return True

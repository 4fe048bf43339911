"""Opening a drop sealed on the source's device (clients/sealing.py), on the contact's
machine: age, then a tar read as hostile input.

A source's device is not trusted to be honest: the file authenticates (age) as sealed to
this contact's key, and says nothing else about who made it or what it holds.

Rules:
- the tar is read as a stream from the decrypting reader, and never with tarfile's own
  extraction (which follows what a member's name and type say): each member is checked,
  then copied into a file this module opens in the drop's folder, O_EXCL | O_NOFOLLOW;
- only regular files called manifest.json, message.txt or item-N.EXT (N from 1 to 9999),
  each at most once, with no PAX or GNU extensions; any other member (a path, `..`, a
  link, a device, a second copy) stops everything;
- sizes are bounded before a byte is read: manifest and message at most 1 MiB each, and
  all members together at most what the sealed file can hold;
- the age payload is authenticated to its last chunk before anything is kept;
- then the manifest must describe exactly the members found (sizes and SHA-256), and
  each item is renamed to the name the manifest gives it (`photo-1.jpg`), which must have
  the form relay-sealed drops use, so contacts see the same layout;
- on any failure the caller removes the folder: nothing of a refused drop is kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, BinaryIO

from crypto.age import Decryptor
from crypto.errors import CryptoError
from crypto.keys import Identity

from .common import UserError
from .sealing import DROP_FORMAT, MANIFEST, MAX_MESSAGE_BYTES, MESSAGE

READ_SIZE = 1 << 20
MAX_MANIFEST_BYTES = 1 << 20
_ITEM = re.compile(r"item-[1-9][0-9]{0,3}\.[a-z0-9]{1,5}")
# What a delivered file may be called: the relay's own pattern (clients/inbox.py), minus
# the tar's own names, so that no rename can land on another member.
_DELIVERED = re.compile(r"[a-z]+-[1-9][0-9]{0,3}\.[a-z0-9]{1,5}")


class UnsafeDrop(UserError):
    """The sealed drop decrypts, but what it holds is not what `amanah-drop` writes; it
    is refused whole and nothing of it is kept."""


class DecryptingReader(io.RawIOBase):
    """The plaintext of an age file, read forward only. Each chunk is released once it
    authenticates; the end of the payload is checked when the file is exhausted. Raises
    crypto.errors.AgeError subclasses from reads."""

    def __init__(self, source: BinaryIO, identities: Iterable[str | Identity]) -> None:
        super().__init__()
        self._source = source
        self._decryptor = Decryptor(identities)
        self._buffer = bytearray()
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer).cast("B")
        while not self._buffer and not self._done:
            data = self._source.read(READ_SIZE)
            pieces = self._decryptor.update(data) if data else self._decryptor.finalize()
            self._done = not data
            for piece in pieces:
                self._buffer += piece
        count = min(len(view), len(self._buffer))
        view[:count] = self._buffer[:count]
        del self._buffer[:count]
        return count

    def drain(self) -> int:
        """Reads to the end (authenticating the rest); returns how many bytes were left."""
        left = 0
        while block := self.read(READ_SIZE):
            left += len(block)
        return left


def _check_member(member: tarfile.TarInfo, seen: set[str], budget: int) -> None:
    name = member.name
    if name in seen:
        raise UnsafeDrop(f"the sealed drop holds a second {name!r}")
    if not (name in (MANIFEST, MESSAGE) or _ITEM.fullmatch(name)):
        raise UnsafeDrop("the sealed drop holds a file with a name amanah-drop never writes")
    if member.type != tarfile.REGTYPE or member.pax_headers:
        raise UnsafeDrop("the sealed drop holds something other than a plain file")
    bound = {MANIFEST: MAX_MANIFEST_BYTES, MESSAGE: MAX_MESSAGE_BYTES}.get(name, budget)
    if member.size > min(bound, budget):
        raise UnsafeDrop("the sealed drop holds a file larger than it can")


def _copy_member(data: IO[bytes], folder: Path, name: str) -> tuple[int, str]:
    """Writes one member to folder/name, new; returns (size, SHA-256)."""
    fd = os.open(
        folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
    )
    digest, size = hashlib.sha256(), 0
    with os.fdopen(fd, "wb") as out:
        while block := data.read(READ_SIZE):
            out.write(block)
            digest.update(block)
            size += len(block)
        out.flush()
        os.fsync(out.fileno())
    return size, digest.hexdigest()


def _extract(reader: DecryptingReader, folder: Path, budget: int) -> tuple[bytes, dict[str, Any]]:
    """Every member into `folder` (the manifest into memory). Returns (manifest bytes,
    {member name: (size, sha256)}). Raises UnsafeDrop, tarfile.TarError, AgeError."""
    found: dict[str, tuple[int, str]] = {}
    manifest = b""
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for member in tar:
            _check_member(member, set(found), budget)
            budget -= member.size
            data = tar.extractfile(member)
            if data is None:
                raise UnsafeDrop("the sealed drop holds something other than a plain file")
            if member.name == MANIFEST:
                manifest = data.read(MAX_MANIFEST_BYTES + 1)
                found[MANIFEST] = (len(manifest), hashlib.sha256(manifest).hexdigest())
            else:
                found[member.name] = _copy_member(data, folder, member.name)
            if found[member.name][0] != member.size:
                raise UnsafeDrop("the sealed drop is cut short")
    reader.drain()
    if MANIFEST not in found:
        raise UnsafeDrop("the sealed drop has no manifest")
    return manifest, found


def _check_entry(entry: Any, found: dict[str, tuple[int, str]]) -> tuple[str, str]:
    """(member, delivered name) of one manifest entry that matches what was found."""
    if not isinstance(entry, dict):
        raise UnsafeDrop("the manifest is malformed")
    member, size, sha256 = entry.get("blob"), entry.get("size"), entry.get("sha256")
    if not isinstance(member, str) or member not in found or found[member] != (size, sha256):
        raise UnsafeDrop("the manifest does not match the files in the sealed drop")
    return member, str(entry.get("name", ""))


def _check_manifest(data: bytes, found: dict[str, tuple[int, str]]) -> dict[str, Any]:
    """The parsed manifest, if it describes exactly what was found. Returns it with the
    renames to make ({member: delivered name}) under the key "_renames"."""
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError):
        raise UnsafeDrop("the manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != DROP_FORMAT:
        raise UnsafeDrop("the manifest is not an amanah-drop manifest")
    if manifest.get("sealed_on") != "device" or not isinstance(manifest.get("files"), list):
        raise UnsafeDrop("the manifest is malformed")
    expected = {MANIFEST}
    if manifest.get("message") is not None:
        member, name = _check_entry(manifest["message"], found)
        if member != MESSAGE or name != MESSAGE:
            raise UnsafeDrop("the manifest names the message wrongly")
        expected.add(MESSAGE)
    renames: dict[str, str] = {}
    for entry in manifest["files"]:
        member, name = _check_entry(entry, found)
        if not _ITEM.fullmatch(member) or not _DELIVERED.fullmatch(name):
            raise UnsafeDrop("the manifest names a file unsafely")
        if name.startswith("item-") or name in renames.values() or member in renames:
            raise UnsafeDrop("the manifest names a file unsafely")
        renames[member] = name
    if expected | set(renames) != set(found):
        raise UnsafeDrop("the sealed drop holds files its manifest does not list")
    return {**manifest, "_renames": renames}


def unpack(sealed: Path, folder: Path, identities: Iterable[str | Identity]) -> dict[str, Any]:
    """Decrypts `sealed` and unpacks it into the empty folder `folder`: message.txt and the
    files under the names the manifest gives them. Returns the parsed manifest (not
    written). Raises UnsafeDrop, or UserError when it cannot be decrypted; the caller
    removes `folder` then."""
    try:
        with sealed.open("rb") as source:
            reader = DecryptingReader(source, identities)
            data, found = _extract(reader, folder, sealed.stat().st_size)
    except CryptoError as exc:
        raise UserError(f"cannot decrypt the sealed drop: {exc}") from None
    except (tarfile.TarError, EOFError):
        raise UnsafeDrop("the sealed drop does not hold a valid tar archive") from None
    manifest = _check_manifest(data, found)
    for member, name in manifest.pop("_renames").items():
        os.link(folder / member, folder / name)  # never over an existing file
        os.unlink(folder / member)
    return manifest

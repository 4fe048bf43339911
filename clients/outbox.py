"""What `amanah-drop` keeps on the source's device between runs: pins and unfinished
uploads. Nothing here is plaintext, a codename, or the name of a file.

    STATE/relays/<relay>/directory-pin.json    the relay's pinned directory key and chain
    STATE/outbox/<id>/drop.age                 a sealed drop (ciphertext) made by `send`
    STATE/outbox/<id>/drop.age.route           its routing (`Route`)
    STATE/outbox/<id>/upload.json              its upload (`Pending`)

STATE is --state, else $AMANAH_DROP_STATE, else $XDG_STATE_HOME/amanah-drop, else
~/.local/state/amanah-drop. <relay> is a digest of the relay's origin, so two relays
never share a pin.

Rules:
- folders are 0700 and files 0600, and every file is replaced atomically;
- an upload's folder is removed once the relay has stored the drop; a drop made by `seal`
  is the person's own file, and only its upload.json lives here;
- "the same command run again" is recognised by an HMAC, under a random key kept in that
  upload's upload.json, over the relay, the contacts, the message and each file's device,
  inode, size and modification time: a later run can tell the command is the same, and
  the file holds no message or file content. (Anyone holding this device and guessing the
  message could confirm a guess with that key, while the upload is unfinished; the
  message is in the shell's history anyway, and a seized device is out of scope.)
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .common import UserError, write_private

ROUTE_FORMAT = "amanah-drop-route-v1"
UPLOAD_FORMAT = "amanah-drop-upload-v1"
CIPHERTEXT = "drop.age"
ROUTE_SUFFIX = ".route"
UPLOAD = "upload.json"
_FINGERPRINT = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def state_root(option: str | None) -> Path:
    if option:
        return Path(option)
    if os.environ.get("AMANAH_DROP_STATE"):
        return Path(os.environ["AMANAH_DROP_STATE"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "amanah-drop"


def private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def origin(relay: str) -> str:
    """scheme://host[:port] of a relay URL, lowercase: what a pin and an upload belong to."""
    parts = urlsplit(relay)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"--relay must be an http:// URL, not {relay!r}")
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname.lower()}{port}"


def pin_path(root: Path, relay: str) -> Path:
    digest = hashlib.sha256(origin(relay).encode()).hexdigest()[:32]
    return private_dir(root / "relays" / digest) / "directory-pin.json"


@dataclass(frozen=True)
class Route:
    """What delivering a sealed drop takes, beside it as `drop.age.route`: the contacts,
    the fingerprints of the member keys it is sealed to, the directory version they came
    from, the source's login id and reply recipient (derived, never the codename), and the
    sealed file's SHA-256 and size."""

    contacts: tuple[str, ...]
    recipients: tuple[str, ...]
    directory_version: int
    login: str
    reply: str
    sha256: str
    size: int
    returning: bool = False

    def to_json(self) -> bytes:
        value = {"format": ROUTE_FORMAT, **asdict(self)}
        return json.dumps(value, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> Route:
        """Raises UserError for anything but a route file this client wrote."""
        try:
            value = json.loads(data)
            if value.pop("format") != ROUTE_FORMAT:
                raise ValueError("format")
            value["contacts"] = tuple(value["contacts"])
            value["recipients"] = tuple(value["recipients"])
            route = cls(**value)
            route.check()
        except (ValueError, TypeError, KeyError, AttributeError):
            raise UserError("the .route file beside the sealed drop is damaged") from None
        return route

    def check(self) -> None:
        """Raises ValueError unless every field has its form."""
        if not all(isinstance(n, str) and _NAME.fullmatch(n) for n in self.contacts):
            raise ValueError("contacts")
        if not self.recipients or not all(
            isinstance(f, str) and _FINGERPRINT.fullmatch(f) for f in self.recipients
        ):
            raise ValueError("recipients")
        if not (_HEX64.fullmatch(self.login) and _HEX64.fullmatch(self.sha256)):
            raise ValueError("login")
        if not self.reply.startswith("age1") or type(self.size) is not int or self.size <= 0:
            raise ValueError("reply")
        if type(self.directory_version) is not int or type(self.returning) is not bool:
            raise ValueError("version")

    def metadata(self) -> dict[str, str]:
        """The tus Upload-Metadata of this drop (relay/sealed.py)."""
        metadata = {
            "sealed": "1",
            "contacts": ",".join(self.contacts),
            "recipients": ",".join(self.recipients),
            "login": self.login,
            "reply": self.reply,
            "sha256": self.sha256,
        }
        if self.returning:
            metadata["returning"] = "1"
        return metadata


def read_route(sealed: Path) -> Route:
    path = sealed.with_name(sealed.name + ROUTE_SUFFIX)
    try:
        return Route.from_json(path.read_bytes())
    except OSError:
        raise UserError(
            f"no {path.name} beside the sealed drop",
            "`amanah-drop seal` writes it next to the -o file; keep the two together",
        ) from None


def write_route(sealed: Path, route: Route) -> None:
    write_private(sealed.with_name(sealed.name + ROUTE_SUFFIX), route.to_json())


def command_digest(key: bytes, description: dict[str, Any]) -> str:
    data = json.dumps(description, sort_keys=True, ensure_ascii=False).encode()
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def describe_command(
    relay: str, contacts: Sequence[str], message: str | None, files: Sequence[Path], prompt: bool
) -> dict[str, Any]:
    """What makes two runs of `send` the same command (see the module rules). Raises
    UserError naming a file by position if it cannot be read."""
    identities = []
    for position, path in enumerate(files, start=1):
        try:
            status = path.stat()
        except OSError as exc:
            raise UserError(f"file {position} cannot be read ({exc.strerror})") from None
        identities.append([status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns])
    return {
        "relay": origin(relay),
        "contacts": sorted(contacts),
        "message": message or "",
        "files": identities,
        "codename_prompt": prompt,
    }


@dataclass
class Pending:
    """One unfinished upload. `ciphertext` is absolute: inside the folder for `send`,
    the person's own file for `send --sealed`."""

    folder: Path
    relay: str
    key: str  # hex, for command_digest
    command: str  # hex digest of the command's description
    ciphertext: str
    upload_url: str | None = None
    offset: int = 0

    @property
    def route(self) -> Route:
        return read_route(Path(self.ciphertext))

    def save(self, folder: Path | None = None) -> None:
        value = {"format": UPLOAD_FORMAT, **asdict(self)}
        value.pop("folder")
        data = json.dumps(value, indent=2).encode() + b"\n"
        write_private((folder or self.folder) / UPLOAD, data)

    def matches(self, description: dict[str, Any]) -> bool:
        digest = command_digest(bytes.fromhex(self.key), description)
        return hmac.compare_digest(digest, self.command)

    def finish(self) -> None:
        """The relay stored the drop: forget the upload (and the ciphertext if ours)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    @contextmanager
    def locked(self) -> Iterator[bool]:
        """Holds this upload for one run; yields False if another run holds it."""
        fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)


def sealing_folder(root: Path) -> Path:
    """Where `send` seals a new drop: a hidden folder that `publish` makes a pending
    upload once its ciphertext, route and upload.json are all written. A run killed while
    sealing leaves one behind, removed by the next run a day later."""
    return private_dir(root / "outbox" / f".sealing-{secrets.token_hex(8)}")


def new_pending(
    root: Path, relay: str, description: dict[str, Any], ciphertext: Path | None = None
) -> Pending:
    """A pending upload (not yet saved). Without `ciphertext`, its sealed drop is to be
    written inside its folder, a new sealing folder (`send`); with it, the person's own
    file is uploaded (`send --sealed`)."""
    key = secrets.token_bytes(32)
    if ciphertext is None:
        folder = sealing_folder(root)
        ciphertext = folder / CIPHERTEXT
    else:
        folder = private_dir(root / "outbox" / secrets.token_hex(8))
    return Pending(
        folder=folder,
        relay=relay,
        key=key.hex(),
        command=command_digest(key, description),
        ciphertext=str(ciphertext.resolve()),
    )


def publish(pending: Pending) -> None:
    """Saves upload.json and, for a drop sealed in a sealing folder, renames the folder
    into the outbox: from then on a later run finds it."""
    sealing = pending.folder
    if not sealing.name.startswith(".sealing-"):
        pending.save()
        return
    pending.folder = sealing.with_name(sealing.name.removeprefix(".sealing-"))
    pending.ciphertext = str(pending.folder / CIPHERTEXT)
    pending.save(sealing)  # naming the paths it will have once renamed
    os.replace(sealing, pending.folder)


def pending_uploads(root: Path) -> list[Pending]:
    """Every unfinished upload, oldest first. A folder whose upload.json is missing or
    damaged is removed (it holds only ciphertext nothing describes), as is a sealing
    folder left a day ago by a run that was killed."""
    outbox = root / "outbox"
    if not outbox.is_dir():
        return []
    found = []
    for folder in sorted(outbox.iterdir(), key=lambda p: p.stat().st_mtime):
        if folder.name.startswith(".sealing-"):
            if time.time() - folder.stat().st_mtime > 86400:
                shutil.rmtree(folder, ignore_errors=True)
            continue
        try:
            value = json.loads((folder / UPLOAD).read_bytes())
            if value.pop("format") != UPLOAD_FORMAT:
                raise ValueError("format")
            found.append(Pending(folder=folder, **value))
        except (OSError, ValueError, TypeError, KeyError):
            shutil.rmtree(folder, ignore_errors=True)
    return found

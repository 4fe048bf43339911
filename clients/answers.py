"""How `amanah-inbox` reads the relay's answers: the journalist API's JSON, field by field.

Rules:
- every answer of the relay is hostile input: a relay can be broken, out of date, or in
  the hands of someone else, and a drop id and a blob name become paths under --out, a
  size and a checksum judge a download, a contact name is printed;
- each answer is checked against what docs/openapi.yaml says of it, as far as this client
  uses it, before any of it is used: a whole listing is checked before the first drop is
  downloaded, written or acknowledged;
- a malformed answer is one error, MalformedAnswer, naming the answer (its method and
  path) and the field (as `drops[0].blobs[1].size`), never the relay's value: a hostile
  value could be anything, a terminal escape or a path included;
- a name from the relay becomes a path only through `plain_path`, which checks it again
  where it is used, so that no caller can hand one that climbs out.

Errors:

    UserError (clients/common.py)
     └── InboxError            what `amanah-inbox` can fail with (here, not in inbox.py,
          │                    because MalformedAnswer is one and inbox.py imports this)
          └── MalformedAnswer  an answer its API does not describe
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import UserError

# What docs/openapi.yaml says of the relay's answers, as far as this client uses them.
DROP_ID = re.compile(r"[0-9a-f]{32}")
BLOB_NAME = re.compile(r"manifest|message|sealed|(item|original)-[1-9][0-9]{0,3}")
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}")  # goes into a header: no space, no line break
CHALLENGE = re.compile(r"[A-Za-z0-9+/]{43}=")  # 32 bytes, standard base64
RELAY_KEY = re.compile(r"\S{1,200}")  # then parsed as a signing key
_CONTACT = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_SEALED_ON = re.compile(r"relay|device")


class InboxError(UserError):
    """A failure the user can act on; printed as `amanah-inbox: error: ...`."""


class MalformedAnswer(InboxError):
    """The relay answered something its API does not describe (docs/openapi.yaml): it is
    broken, out of date or hostile. The message names the answer and the field, never the
    value (a hostile value could be anything)."""

    def __init__(self, what: str, problem: str, hint: str | None = None) -> None:
        super().__init__(
            f"the relay's answer to {what} was malformed: {problem}",
            hint or "nothing was saved or acknowledged; tell the relay's operator",
        )


class Answer:
    """Reads one JSON answer of the relay (`what`: its method and path) field by field;
    each complaint (MalformedAnswer) names the field, as `drops[0].blobs[1].size`."""

    def __init__(self, what: str) -> None:
        self.what = what

    def malformed(self, problem: str) -> MalformedAnswer:
        return MalformedAnswer(self.what, problem)

    def object(self, value: Any, field: str = "") -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.malformed(f"{field or 'it'} is not a JSON object")
        return value

    def member(self, obj: dict[str, Any], key: str, field: str = "") -> Any:
        if key not in obj:
            raise self.malformed(f"{_join(field, key)} is missing")
        return obj[key]

    def text(
        self, obj: dict[str, Any], key: str, pattern: re.Pattern[str], meaning: str, field: str = ""
    ) -> str:
        value = self.member(obj, key, field)
        if not isinstance(value, str):
            raise self.malformed(f"{_join(field, key)} is not a string")
        if not pattern.fullmatch(value):
            raise self.malformed(f"{_join(field, key)} is not {meaning}")
        return value

    def size(self, obj: dict[str, Any], key: str, field: str) -> int:
        value = self.member(obj, key, field)
        if type(value) is not int:  # not a bool, a float or a string of digits
            raise self.malformed(f"{_join(field, key)} is not a whole number")
        if value < 0:
            raise self.malformed(f"{_join(field, key)} is negative")
        return value

    def array(self, obj: dict[str, Any], key: str, field: str = "") -> list[Any]:
        value = self.member(obj, key, field)
        if not isinstance(value, list):
            raise self.malformed(f"{_join(field, key)} is not a list")
        return value


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


@dataclass(frozen=True)
class ListedBlob:
    name: str  # matches BLOB_NAME: a plain name, safe as a file name
    size: int
    sha256: str


@dataclass(frozen=True)
class ListedDrop:
    id: str  # matches DROP_ID: safe as a folder name
    sealed_on: str  # "relay" or "device"
    blobs: tuple[ListedBlob, ...]
    reply_handle: str | None


@dataclass(frozen=True)
class Listing:
    contact: str
    drops: tuple[ListedDrop, ...]


LISTING = "GET /api/v1/drops"


def parse_listing(value: Any) -> Listing:
    """The relay's list of waiting drops, every drop and blob checked (parse_drop).
    Raises MalformedAnswer."""
    read = Answer(LISTING)
    listing = read.object(value)
    contact = read.text(listing, "contact", _CONTACT, "a contact name")
    drops = read.array(listing, "drops")
    return Listing(contact, tuple(parse_drop(d, f"drops[{i}]") for i, d in enumerate(drops)))


def parse_drop(value: Any, field: str = "drop") -> ListedDrop:
    """One listed drop. Its id and its blob names become paths under --out, so each must
    be a plain name (DROP_ID, BLOB_NAME): this is where a name that would climb out
    (`../x`, `/tmp/x`, ``) is refused, before anything is downloaded or written. Raises
    MalformedAnswer."""
    read = Answer(LISTING)
    drop = read.object(value, field)
    drop_id = read.text(drop, "id", DROP_ID, "a drop id (32 hex digits)", field)
    sealed_on = read.text(drop, "sealed_on", _SEALED_ON, "relay or device", field)
    blobs = []
    for i, each in enumerate(read.array(drop, "blobs", field)):
        where = f"{field}.blobs[{i}]"
        blob = read.object(each, where)
        name = read.text(blob, "name", BLOB_NAME, "a plain blob name", where)
        size = read.size(blob, "size", where)
        sha256 = read.text(blob, "sha256", _SHA256, "a SHA-256 (64 hex digits)", where)
        blobs.append(ListedBlob(name, size, sha256))
    names = [b.name for b in blobs]
    if len(set(names)) != len(names):
        raise read.malformed(f"{field}.blobs names a blob twice")
    needed = "sealed" if sealed_on == "device" else "manifest"
    if needed not in names:
        raise read.malformed(f"{field}.blobs has no {needed} blob")
    handle = drop.get("reply_handle")
    if handle is not None and not (isinstance(handle, str) and DROP_ID.fullmatch(handle)):
        raise read.malformed(f"{field}.reply_handle is not a reply handle (32 hex digits)")
    return ListedDrop(drop_id, sealed_on, tuple(blobs), handle)


def plain_path(folder: Path, name: str, pattern: re.Pattern[str]) -> Path:
    """`folder / name`, for a name the listing was checked for (parse_drop), checked
    again where it becomes a path, so that no caller can hand one that climbs out.
    Raises InboxError."""
    if not pattern.fullmatch(name):
        raise InboxError("refusing a name from the relay that is not a plain file name")
    return folder / name

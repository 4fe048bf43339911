"""The age v1 header: parsing and encoding, to the letter of the specification.

    age-encryption.org/v1
    -> X25519 <base64 ephemeral share>
    <base64 body, wrapped at 64 columns; the last line is shorter, possibly empty>
    --- <base64 HMAC-SHA-256 of everything up to and including "---">

Rules this module enforces (each one is a way a file could be malleable or ambiguous):
- base64 is canonical and unpadded everywhere: no `=`, no non-zero trailing bits;
- the version line is exactly `age-encryption.org/v1`; any other version is refused;
- a stanza is `-> ` then one or more arguments of visible ASCII separated by single
  spaces; its body lines are exactly 64 columns until one shorter line ends it;
- there is at least one stanza, and the header ends with `--- ` and a 32-byte MAC;
- lines end with LF alone; anything else anywhere in the header is an error;
- a header longer than MAX_HEADER_SIZE is refused before it is buffered whole.

Nothing here knows about keys: `Stanza`s are opaque to it.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from .errors import HeaderError

VERSION_PREFIX = b"age-encryption.org/"
VERSION_LINE = b"age-encryption.org/v1\n"
MAC_MARK = b"---"
STANZA_PREFIX = b"-> "
COLUMNS = 64
MAC_SIZE = 32

# Far above what any real file needs (a stanza is ~100 bytes; Amanah seals to a few dozen
# member keys at most), and low enough that a hostile file cannot make a reader buffer
# without bound while it looks for the end of the header.
MAX_HEADER_SIZE = 1 << 20

_BASE64_CHARS = re.compile(rb"[A-Za-z0-9+/]*")
_ARGUMENT = re.compile(rb"[\x21-\x7e]+")


def b64decode(text: bytes, what: str = "base64") -> bytes:
    """Decodes canonical unpadded base64. Raises HeaderError on anything else."""
    if not _BASE64_CHARS.fullmatch(text) or len(text) % 4 == 1:
        raise HeaderError(f"invalid {what}: not unpadded base64")
    data = base64.b64decode(text + b"=" * (-len(text) % 4))
    if b64encode(data) != text:
        raise HeaderError(f"invalid {what}: non-canonical base64")
    return data


def b64encode(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


@dataclass(frozen=True)
class Stanza:
    """One recipient stanza: its type (first argument), further arguments, and body."""

    type: str
    args: tuple[str, ...]
    body: bytes

    def encode(self) -> bytes:
        line = b" ".join(a.encode("ascii") for a in (self.type, *self.args))
        if not _ARGUMENT.fullmatch(line.replace(b" ", b"!")) or b"  " in line:
            raise ValueError("stanza arguments must be non-empty visible ASCII")
        body = b64encode(self.body)
        lines = [body[i : i + COLUMNS] for i in range(0, len(body), COLUMNS)]
        if not lines or len(lines[-1]) == COLUMNS:
            lines.append(b"")  # the body always ends with a line shorter than 64
        return STANZA_PREFIX + line + b"\n" + b"".join(x + b"\n" for x in lines)


@dataclass(frozen=True)
class Header:
    """A parsed header. `mac_input` is the exact bytes the MAC covers."""

    stanzas: tuple[Stanza, ...]
    mac: bytes
    mac_input: bytes


def encode_mac_input(stanzas: tuple[Stanza, ...] | list[Stanza]) -> bytes:
    """The header up to and including `---`: what the MAC is computed over."""
    if not stanzas:
        raise ValueError("a header needs at least one stanza")
    return VERSION_LINE + b"".join(s.encode() for s in stanzas) + MAC_MARK


def encode_header(mac_input: bytes, mac: bytes) -> bytes:
    return mac_input + b" " + b64encode(mac) + b"\n"


def check_start(buffer: bytes) -> None:
    """Raises HeaderError as soon as the first bytes show this is not an age v1 file, so
    a reader fed garbage fails at once instead of buffering it."""
    head = buffer[: len(VERSION_LINE)]
    if not VERSION_LINE.startswith(head):
        if buffer.startswith(VERSION_PREFIX):
            raise HeaderError("unsupported age format version (only v1 is known)")
        if not VERSION_PREFIX.startswith(buffer[: len(VERSION_PREFIX)]):
            raise HeaderError("not an age file")
        if len(buffer) >= len(VERSION_LINE):
            raise HeaderError("unsupported age format version (only v1 is known)")


def find_header_end(buffer: bytes) -> int | None:
    """The length of the header at the start of `buffer`, or None if more bytes are
    needed. Raises HeaderError for a file that is not age v1 or whose header is too long.
    A line starting `---` can only be the MAC line: arguments follow `-> ` and body
    lines are base64, so neither can start a line with `-` followed by `--`."""
    check_start(buffer)
    mark = buffer.find(b"\n" + MAC_MARK, 0, MAX_HEADER_SIZE)
    if mark >= 0:
        end = buffer.find(b"\n", mark + 1, MAX_HEADER_SIZE)
        if end >= 0:
            return end + 1
    if len(buffer) >= MAX_HEADER_SIZE:
        raise HeaderError("header too long")
    return None


def parse_header(header: bytes) -> Header:
    """Parses a whole header (as delimited by find_header_end). Raises HeaderError."""
    check_start(header)
    if not header.endswith(b"\n"):
        raise HeaderError("header does not end with a newline")
    lines = header[:-1].split(b"\n")
    if lines[0] + b"\n" != VERSION_LINE:
        raise HeaderError("unsupported age format version (only v1 is known)")
    stanzas: list[Stanza] = []
    index = 1
    while index < len(lines) and lines[index].startswith(STANZA_PREFIX):
        stanza, index = _parse_stanza(lines, index)
        stanzas.append(stanza)
    if not stanzas:
        raise HeaderError("header has no recipient stanza")
    if index != len(lines) - 1:
        raise HeaderError("malformed header line")
    mac_line = lines[index]
    if not mac_line.startswith(MAC_MARK + b" "):
        raise HeaderError("malformed header line")
    encoded_mac = mac_line[len(MAC_MARK) + 1 :]
    mac = b64decode(encoded_mac, "header MAC")
    if len(mac) != MAC_SIZE:
        raise HeaderError("header MAC has the wrong length")
    mac_input = header[: len(header) - len(encoded_mac) - 2]
    return Header(tuple(stanzas), mac, mac_input)


def _parse_stanza(lines: list[bytes], index: int) -> tuple[Stanza, int]:
    arguments = lines[index][len(STANZA_PREFIX) :].split(b" ")
    if not all(_ARGUMENT.fullmatch(a) for a in arguments):
        raise HeaderError("malformed stanza arguments")
    body_lines: list[bytes] = []
    index += 1
    while True:
        if index >= len(lines) - 1:  # the last line is the MAC line
            raise HeaderError("stanza body is not terminated by a short line")
        line = lines[index]
        index += 1
        if len(line) > COLUMNS or not _BASE64_CHARS.fullmatch(line):
            raise HeaderError("malformed stanza body line")
        body_lines.append(line)
        if len(line) < COLUMNS:
            break
    body = b64decode(b"".join(body_lines), "stanza body")
    args = tuple(a.decode("ascii") for a in arguments)
    return Stanza(args[0], args[1:], body), index


def decode_ascii_arg(arg: str, size: int, what: str) -> bytes:
    """A stanza argument that must be canonical base64 of exactly `size` bytes."""
    try:
        raw = arg.encode("ascii")
    except UnicodeEncodeError:
        raise HeaderError(f"invalid {what}") from None
    value = b64decode(raw, what)  # HeaderError for anything but canonical base64
    if len(value) != size:
        raise HeaderError(f"{what} has the wrong length")
    return value

"""ASCII armor for age files (strict PEM, RFC 7468 section 3), decoding only, sans-I/O.

    -----BEGIN AGE ENCRYPTED FILE-----
    <padded base64, exactly 64 columns a line, the last line 1..64 columns>
    -----END AGE ENCRYPTED FILE-----

Armored files are malleable unless the parser is strict, so this one is: whitespace is
allowed only before and after the block; lines end in LF or CRLF; every line but the
last is exactly 64 columns; padding appears only at the very end; base64 is canonical.
"""

from __future__ import annotations

import base64
import re

from .errors import ArmorError

BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
END = b"-----END AGE ENCRYPTED FILE-----"
COLUMNS = 64
_WHITESPACE = b" \t\r\n"
_LINE = re.compile(rb"[A-Za-z0-9+/]*={0,2}")
_MAX_LINE = 128  # longer than any valid line: bounds what a hostile file makes us buffer


def looks_armored(prefix: bytes) -> bool | None:
    """True/False once `prefix` shows whether the input is armored, None if more bytes
    are needed to tell. Binary age files start with `age-encryption.org/`, never with
    whitespace or `-`."""
    stripped = prefix.lstrip(_WHITESPACE)
    if not stripped:
        return None if len(prefix) < 4096 else False
    if len(stripped) < len(BEGIN):
        return None if BEGIN.startswith(stripped) else False
    return stripped.startswith(BEGIN)


class ArmorDecoder:
    """Feed armored text with update(); finish with finalize(). Returns binary data."""

    def __init__(self) -> None:
        self._buffer = b""
        self._state = "begin"  # begin -> body -> after
        self._short_line_seen = False
        self._any_line = False

    def update(self, data: bytes) -> bytes:
        self._buffer += data
        out: list[bytes] = []
        while True:
            newline = self._buffer.find(b"\n")
            if newline < 0:
                if len(self._buffer) > _MAX_LINE and self._state != "after":
                    raise ArmorError("armor line too long")
                break
            line = self._buffer[:newline]
            self._buffer = self._buffer[newline + 1 :]
            if line.endswith(b"\r"):
                line = line[:-1]
            out.append(self._line(line))
        if self._state == "after" and self._buffer.strip(_WHITESPACE):
            raise ArmorError("data after the end of the armored file")
        return b"".join(out)

    def finalize(self) -> bytes:
        if self._state != "after":
            # The END line may lack a final newline.
            tail = self._buffer.rstrip(b"\r")
            self._buffer = b""
            self._line(tail)
        if self._state != "after":
            raise ArmorError("armored file is truncated: no END line")
        if self._buffer.strip(_WHITESPACE):
            raise ArmorError("data after the end of the armored file")
        return b""

    def _line(self, line: bytes) -> bytes:
        if self._state == "begin":
            if not line.strip(_WHITESPACE):
                return b""
            if line.lstrip(_WHITESPACE) != BEGIN:
                raise ArmorError("malformed armor header line")
            self._state = "body"
            return b""
        if self._state == "after":
            if line.strip(_WHITESPACE):
                raise ArmorError("data after the end of the armored file")
            return b""
        if line == END:
            if not self._any_line:
                raise ArmorError("armored file has no data")
            self._state = "after"
            return b""
        if self._short_line_seen:
            raise ArmorError("armor line after a short line")
        if not line or len(line) > COLUMNS or not _LINE.fullmatch(line) or len(line) % 4:
            raise ArmorError("malformed armor line")
        if b"=" in line or len(line) < COLUMNS:
            self._short_line_seen = True
        self._any_line = True
        decoded = base64.b64decode(line, validate=True)
        if base64.b64encode(decoded) != line:
            raise ArmorError("non-canonical base64 in armor")
        return decoded

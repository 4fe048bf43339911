"""Canonical JSON: one byte string for each value, and a strict reader for hostile input.

Rules of this module:
- No I/O. Bytes in, values out, and back.
- The canonical form is UTF-8; object keys sorted by code point; no insignificant
  whitespace (separators "," and ":"); non-ASCII characters written as themselves
  (ensure_ascii=False), so only `"`, `\\` and control characters are escaped, the way
  Python's `json` escapes them. Values are objects with string keys, lists, strings,
  booleans, null, and integers in [-(2**53 - 1), 2**53 - 1] (the integers every JSON
  reader holds exactly). There are no floats: two readers can disagree about a float's
  value, never about a small integer's.
- The reader refuses what the writer could not have written, because a signature over a
  value is only meaningful if every reader sees the same value: duplicate object keys
  (JSON leaves the winner undefined), floats, NaN and the infinities, invalid UTF-8, and
  nesting deep enough to exhaust the stack. Callers that need the exact canonical bytes
  compare `dumps(loads(data)) == data` after reading.
- Every failure is a ValueError whose message says where, never what the value was.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import NoReturn, TypeAlias

JSONValue: TypeAlias = "None | bool | int | str | list[JSONValue] | dict[str, JSONValue]"

MAX_INT = 2**53 - 1


def dumps(value: JSONValue) -> bytes:
    """The canonical bytes of `value`. Raises ValueError for a float, an integer out of
    range, a non-string key, or a string that is not valid Unicode (a lone surrogate)."""
    _check_writable(value)
    text = json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("canonical JSON: a string is not valid Unicode") from None


def _check_writable(value: object) -> None:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        if not -MAX_INT <= value <= MAX_INT:
            raise ValueError("canonical JSON: integer out of range")
    elif isinstance(value, list):
        for item in value:
            _check_writable(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("canonical JSON: object keys are strings")
            _check_writable(item)
    else:
        raise ValueError(f"canonical JSON: cannot write a {type(value).__name__}")


def loads(data: bytes) -> JSONValue:
    """Reads JSON strictly. Raises ValueError for invalid UTF-8 or JSON, duplicate keys,
    floats, NaN or infinities, or nesting too deep to read."""
    try:
        text = data.decode("utf-8")
        value: JSONValue = json.loads(
            text,
            object_pairs_hook=_object_without_duplicates,
            parse_float=_refuse_float,
            parse_constant=_refuse_constant,
        )
    except RecursionError:
        raise ValueError("JSON: nested too deeply") from None
    except UnicodeDecodeError:
        raise ValueError("JSON: not valid UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"JSON: malformed at byte {exc.pos}") from None
    return value


def _object_without_duplicates(pairs: list[tuple[str, JSONValue]]) -> dict[str, JSONValue]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("JSON: an object has a duplicate key")
    return result


def _refuse_float(_text: str) -> NoReturn:
    raise ValueError("JSON: floats are not allowed")


def _refuse_constant(_text: str) -> NoReturn:
    raise ValueError("JSON: NaN and Infinity are not allowed")


# Typed readers for parsed values. `where` names the place in the document ("contact 2:
# members"), so an error can be found without the message quoting the input.


def fields(value: JSONValue, names: frozenset[str], where: str) -> dict[str, JSONValue]:
    """`value` as an object with exactly the keys `names`. Raises ValueError."""
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object")
    missing, unknown = names - value.keys(), value.keys() - names
    if missing:
        raise ValueError(f"{where}: missing field {sorted(missing)[0]!r}")
    if unknown:
        raise ValueError(f"{where}: unknown field")
    return value


def as_int(value: JSONValue, where: str, low: int = 0, high: int = MAX_INT) -> int:
    """An integer (not a boolean) in [low, high]. Raises ValueError."""
    if type(value) is not int:
        raise ValueError(f"{where}: expected an integer")
    if not low <= value <= high:
        raise ValueError(f"{where}: out of range")
    return value


def as_str(value: JSONValue, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string")
    return value


def as_bool(value: JSONValue, where: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{where}: expected true or false")
    return value


def as_list(value: JSONValue, where: str) -> list[JSONValue]:
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected a list")
    return value


def as_object(value: JSONValue, where: str) -> dict[str, JSONValue]:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object")
    return value


def as_base64(value: JSONValue, where: str) -> bytes:
    """Bytes from strict base64: the standard alphabet with its padding, and only the one
    spelling `base64.b64encode` writes. Raises ValueError."""
    text = as_str(value, where)
    try:
        decoded = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError(f"{where}: not base64") from None
    if base64.b64encode(decoded).decode("ascii") != text:
        raise ValueError(f"{where}: not canonical base64")
    return decoded

"""Big-endian bit fields in bytes, for the codec headers read in the worker (mp3.py's side
information, aac.py's fill elements)."""

from __future__ import annotations


def read(data: bytes | bytearray | memoryview, start: int, count: int) -> int:
    """The `count` bits from bit `start` of `data`."""
    end = start + count
    value = int.from_bytes(data[start // 8 : (end + 7) // 8], "big")
    return value >> ((8 - end % 8) % 8) & ((1 << count) - 1)


def write(data: bytearray, start: int, count: int, value: int) -> None:
    """Sets the `count` bits from bit `start` of `data` to `value`."""
    first, last = start // 8, (start + count + 7) // 8
    shift = (last - first) * 8 - (start - first * 8) - count
    word = int.from_bytes(data[first:last], "big")
    mask = ((1 << count) - 1) << shift
    word = word & ~mask | (value << shift) & mask
    data[first:last] = word.to_bytes(last - first, "big")

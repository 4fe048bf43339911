"""Bech32 (BIP 173), as the age format uses it: no length limit on the data part.

Rules, from BIP 173 and the age specification:
- a string is all lowercase or all uppercase, never mixed; the checksum is computed over
  the lowercase form, so `encode` output may be upper-cased for display (age identities);
- the human-readable part (HRP) is 1+ characters in 33..126; the separator is the last `1`;
- the data part is 5-bit groups; converting back to bytes allows at most 4 bits of zero
  padding, and non-zero padding is rejected (so each byte string has one encoding).
"""

from __future__ import annotations

from .errors import KeyEncodingError

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_INDEX = {c: i for i, c in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate(_GENERATOR):
            if (top >> i) & 1:
                checksum ^= generator
    return checksum


def _expand_hrp(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    accumulator = 0
    bits = 0
    out: list[int] = []
    mask = (1 << to_bits) - 1
    for value in data:
        accumulator = (accumulator << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((accumulator >> bits) & mask)
    if pad:
        if bits:
            out.append((accumulator << (to_bits - bits)) & mask)
    elif bits >= from_bits:
        raise KeyEncodingError("bech32: too much padding")
    elif (accumulator << (to_bits - bits)) & mask:
        raise KeyEncodingError("bech32: non-zero padding")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Encodes `data` under the lowercase `hrp`. Raises KeyEncodingError for a bad HRP."""
    if not hrp or hrp != hrp.lower() or any(not 33 <= ord(c) <= 126 for c in hrp):
        raise KeyEncodingError("bech32: invalid human-readable part")
    words = _convert_bits(data, 8, 5, pad=True)
    polymod = _polymod(_expand_hrp(hrp) + words + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(CHARSET[w] for w in words + checksum)


def decode(text: str) -> tuple[str, bytes]:
    """Returns (lowercase HRP, data). Raises KeyEncodingError on any deviation."""
    hrp, words = decode_words(text)
    return hrp, bytes(_convert_bits(words, 5, 8, pad=False))


def decode_words(text: str) -> tuple[str, list[int]]:
    """Returns (lowercase HRP, 5-bit data words) after checking the checksum."""
    if text.lower() != text and text.upper() != text:
        raise KeyEncodingError("bech32: mixed case")
    if any(not 33 <= ord(c) <= 126 for c in text):
        raise KeyEncodingError("bech32: invalid character")
    text = text.lower()
    separator = text.rfind("1")
    if separator < 1 or separator + 7 > len(text):
        raise KeyEncodingError("bech32: missing separator or checksum")
    hrp, rest = text[:separator], text[separator + 1 :]
    try:
        words = [_CHARSET_INDEX[c] for c in rest]
    except KeyError:
        raise KeyEncodingError("bech32: invalid character in data part") from None
    if _polymod(_expand_hrp(hrp) + words) != 1:
        raise KeyEncodingError("bech32: checksum mismatch (the string was mistyped or cut)")
    return hrp, words[:-6]

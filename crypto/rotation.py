"""The chain of records that hands the directory signing key from one key to the next.

Rules of this module:
- No I/O and no clock: the caller passes `issued_at`.
- A record is signed by the old key (it authorises its successor) and by the new key
  (proof that whoever rotated holds it, so nobody can rotate to a key they do not
  control, such as another relay's, and claim its signatures as their own).
- Both sign b"amanah-directory-rotation-v1\\n" + the canonical JSON of the record's keys,
  sequence and time. The label keeps a rotation signature from ever being valid as a
  directory signature or any other message the same key signs.
- A chain is numbered from 1 without gaps, each record starts at the key the previous
  one ended at, and a key once retired never returns (a cycle would let a retired, perhaps
  stolen, key take the directory back).
- `crypto.directory` uses these records; it decides what a client pins.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import canonical
from .canonical import JSONValue
from .errors import ChainError, SignatureError
from .keys import SIGNATURE_SIZE, SigningKey, VerifyKey

ROTATION_LABEL = b"amanah-directory-rotation-v1\n"
_RECORD_FIELDS = frozenset(
    {"old_key", "new_key", "sequence", "issued_at", "old_signature", "new_signature"}
)


@dataclass(frozen=True)
class RotationRecord:
    """`old_key` hands the directory over to `new_key`; both signed `body()`. Raises
    ValueError for a sequence below 1, the same key on both sides, or a signature that is
    not 64 bytes."""

    old_key: VerifyKey
    new_key: VerifyKey
    sequence: int
    issued_at: int
    old_signature: bytes = field(repr=False)
    new_signature: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if type(self.sequence) is not int or not 1 <= self.sequence <= canonical.MAX_INT:
            raise ValueError("a rotation sequence is an integer from 1")
        if type(self.issued_at) is not int or not 0 <= self.issued_at <= canonical.MAX_INT:
            raise ValueError("issued_at is an integer from 0 to 2**53 - 1")
        if self.old_key == self.new_key:
            raise ValueError("a rotation changes the key")
        if SIGNATURE_SIZE != len(self.old_signature) or SIGNATURE_SIZE != len(self.new_signature):
            raise ValueError("an Ed25519 signature is 64 bytes")

    def body(self) -> bytes:
        """What both keys sign."""
        return _record_body(self.old_key, self.new_key, self.sequence, self.issued_at)

    def verify(self) -> None:
        """Raises ChainError unless both keys signed this record."""
        body = self.body()
        for key, signature, who in (
            (self.old_key, self.old_signature, "old"),
            (self.new_key, self.new_signature, "new"),
        ):
            try:
                key.verify(body, signature)
            except SignatureError:
                raise ChainError(
                    f"rotation record {self.sequence}: the {who} key did not sign it"
                ) from None


def _record_body(old: VerifyKey, new: VerifyKey, sequence: int, issued_at: int) -> bytes:
    body: JSONValue = {
        "old_key": str(old),
        "new_key": str(new),
        "sequence": sequence,
        "issued_at": issued_at,
    }
    return ROTATION_LABEL + canonical.dumps(body)


def rotate(old: SigningKey, new: SigningKey, sequence: int, issued_at: int) -> RotationRecord:
    """The record that hands the directory from `old` to `new`, signed by both. `sequence`
    is one more than the last record's (1 for the first). Raises ValueError for a sequence
    below 1, a time out of range, or `new` equal to `old`."""
    if type(sequence) is not int or type(issued_at) is not int:
        raise ValueError("sequence and issued_at are integers")
    body = _record_body(old.verify_key, new.verify_key, sequence, issued_at)
    return RotationRecord(
        old.verify_key, new.verify_key, sequence, issued_at, old.sign(body), new.sign(body)
    )


def verify_chain(root: VerifyKey, chain: Sequence[RotationRecord]) -> VerifyKey:
    """Follows `chain` from `root` and returns its last key (`root` for an empty chain).
    Raises ChainError for a gap in the sequence, a record that does not start where the
    last one ended, a return to a retired key, or a missing signature."""
    current, seen = root, {root}
    for position, record in enumerate(chain, start=1):
        if record.sequence != position:
            raise ChainError(f"rotation record {position}: sequence is not {position}")
        if record.old_key != current:
            raise ChainError(f"rotation record {position}: does not start at the current key")
        if record.new_key in seen:
            raise ChainError(f"rotation record {position}: returns to a retired key")
        record.verify()
        current = record.new_key
        seen.add(current)
    return current


def record_to_json(record: RotationRecord) -> JSONValue:
    """The record as a JSON object (signatures in base64)."""
    return {
        "old_key": str(record.old_key),
        "new_key": str(record.new_key),
        "sequence": record.sequence,
        "issued_at": record.issued_at,
        "old_signature": base64.b64encode(record.old_signature).decode("ascii"),
        "new_signature": base64.b64encode(record.new_signature).decode("ascii"),
    }


def record_from_json(value: JSONValue, where: str) -> RotationRecord:
    """The record from a parsed JSON object; signatures are not checked here. Raises
    ValueError (or KeyEncodingError, a ValueError) naming `where` for any malformation."""
    fields = canonical.fields(value, _RECORD_FIELDS, where)
    return RotationRecord(
        old_key=verify_key_from_json(fields["old_key"], f"{where}: old_key"),
        new_key=verify_key_from_json(fields["new_key"], f"{where}: new_key"),
        sequence=canonical.as_int(fields["sequence"], f"{where}: sequence"),
        issued_at=canonical.as_int(fields["issued_at"], f"{where}: issued_at"),
        old_signature=canonical.as_base64(fields["old_signature"], f"{where}: old_signature"),
        new_signature=canonical.as_base64(fields["new_signature"], f"{where}: new_signature"),
    )


def verify_key_from_json(value: JSONValue, where: str) -> VerifyKey:
    """An `amanah-sig1...` string, in exactly the spelling `str(VerifyKey)` writes (no
    uppercase, no surrounding space). Raises ValueError or KeyEncodingError."""
    text = canonical.as_str(value, where)
    key = VerifyKey.parse(text)
    if str(key) != text:
        raise ValueError(f"{where}: not in canonical form")
    return key

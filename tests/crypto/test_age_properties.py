"""Properties, checked with hypothesis: round trips for any data fed in any pieces, and for
any mutation of a valid file, decryption either returns the original (the mutation was a
no-op) or raises one of the documented errors, never anything else."""

from __future__ import annotations

import base64
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto import age
from crypto.errors import AgeError
from crypto.keys import Identity

IDENTITY = Identity.generate()
OTHER = Identity.generate()
PLAINTEXTS = [os.urandom(n) for n in (0, 1, 65536, 65537, 140_000)]
FILES = [age.encrypt(p, [IDENTITY.recipient, OTHER.recipient]) for p in PLAINTEXTS]
ARMORED = [
    b"-----BEGIN AGE ENCRYPTED FILE-----\n"
    + b"".join(
        base64.b64encode(f)[i : i + 64] + b"\n" for i in range(0, len(base64.b64encode(f)), 64)
    )
    + b"-----END AGE ENCRYPTED FILE-----\n"
    for f in FILES[:3]
]

SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def feed(decryptor: age.Decryptor, data: bytes, cuts: list[int]) -> bytes:
    pieces: list[bytes] = []
    previous = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        pieces += decryptor.update(data[previous:cut])
        previous = cut
    pieces += decryptor.update(data[previous:])
    pieces += decryptor.finalize()
    return b"".join(pieces)


@SETTINGS
@given(st.binary(max_size=200_000), st.lists(st.integers(min_value=0), max_size=8))
def test_round_trip_in_any_pieces(data: bytes, cuts: list[int]) -> None:
    encryptor = age.Encryptor([IDENTITY.recipient])
    sealed: list[bytes] = []
    previous = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        sealed += encryptor.update(data[previous:cut])
        previous = cut
    sealed += encryptor.update(data[previous:])
    sealed += encryptor.finalize()
    blob = b"".join(sealed)
    assert feed(age.Decryptor([IDENTITY]), blob, cuts) == data


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0), st.integers(1, 255)),
    st.tuples(st.just("insert"), st.integers(min_value=0), st.binary(min_size=1, max_size=70)),
    st.tuples(st.just("delete"), st.integers(min_value=0), st.integers(1, 70_000)),
    st.tuples(st.just("truncate"), st.integers(min_value=0), st.just(0)),
    st.tuples(st.just("append"), st.just(0), st.binary(min_size=1, max_size=70_000)),
    st.tuples(st.just("replace-line"), st.integers(min_value=0), st.binary(max_size=80)),
)


def mutate(data: bytes, kind: str, where: int, what: object) -> bytes:
    position = where % (len(data) + 1)
    if kind == "flip" and isinstance(what, int) and position < len(data):
        return data[:position] + bytes([data[position] ^ what]) + data[position + 1 :]
    if kind == "insert" and isinstance(what, bytes):
        return data[:position] + what + data[position:]
    if kind == "delete" and isinstance(what, int):
        return data[:position] + data[position + what :]
    if kind == "truncate":
        return data[:position]
    if kind == "append" and isinstance(what, bytes):
        return data + what
    if kind == "replace-line" and isinstance(what, bytes):
        lines = data.split(b"\n")
        index = where % min(len(lines), 8)
        lines[index] = what
        return b"\n".join(lines)
    return data


@SETTINGS
@given(
    st.sampled_from(range(len(FILES) + len(ARMORED))),
    st.lists(mutation, min_size=1, max_size=3),
    st.lists(st.integers(min_value=0), max_size=3),
)
def test_mutations_raise_only_documented_errors(
    which: int, mutations: list[tuple[str, int, object]], cuts: list[int]
) -> None:
    original = (FILES + ARMORED)[which]
    expected = PLAINTEXTS[which % len(FILES)]
    data = original
    for kind, where, what in mutations:
        data = mutate(data, kind, where, what)
    try:
        result = feed(age.Decryptor([IDENTITY]), data, cuts)
    except AgeError:
        return
    # Success is allowed only if the file still authenticates to the same plaintext:
    # the mutation was a no-op, or touched only whitespace around armor.
    assert result == expected


@SETTINGS
@given(st.binary(max_size=3000))
def test_arbitrary_headers_raise_only_documented_errors(tail: bytes) -> None:
    for prefix in (b"age-encryption.org/v1\n", b"age-encryption.org/v1\n-> X25519 ", b""):
        try:
            age.decrypt(prefix + tail, [IDENTITY])
        except AgeError:
            continue
        raise AssertionError("random bytes decrypted")


@SETTINGS
@given(st.text(alphabet="ABCDEFabcdef0123456789+/=-\n\r \t", max_size=600))
def test_arbitrary_armor_raises_only_documented_errors(body: str) -> None:
    data = (
        b"-----BEGIN AGE ENCRYPTED FILE-----\n"
        + body.encode()
        + b"\n-----END AGE ENCRYPTED FILE-----\n"
    )
    try:
        age.decrypt(data, [IDENTITY])
    except AgeError:
        return
    raise AssertionError("random armor decrypted")

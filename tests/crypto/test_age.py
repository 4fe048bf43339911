"""The age format on its own: round trips, streaming, and every malformed input we know of,
each breaking one rule of the specification (with a valid MAC unless the MAC is the rule)."""

from __future__ import annotations

import base64
import io
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from crypto import age
from crypto.errors import (
    AgeError,
    ArmorError,
    HeaderError,
    HeaderMACError,
    KeyEncodingError,
    NoIdentityMatchError,
    PayloadError,
)
from crypto.keys import Identity, Recipient
from crypto.stream import StreamEncryptor, sealed_size

from .agefiles import b64, craft, split_chunks, wrap_lines, x25519_stanza

SIZES = [0, 1, 100, 65535, 65536, 65537, 2 * 65536, 3 * 65536 + 7]


@pytest.fixture(scope="module")
def identity() -> Identity:
    return Identity.generate()


@pytest.fixture(scope="module")
def file_key() -> bytes:
    return os.urandom(16)


def ok_stanza(file_key: bytes, identity: Identity) -> bytes:
    return x25519_stanza(file_key, identity.recipient.public_key)


# --- good input --------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_round_trip(identity: Identity, size: int) -> None:
    data = os.urandom(size)
    sealed = age.encrypt(data, [str(identity.recipient)])
    assert sealed != data
    assert age.decrypt(sealed, [identity.encode()]) == data


@pytest.mark.parametrize("size", SIZES)
def test_sealed_size_is_predictable(identity: Identity, size: int) -> None:
    sealed = age.encrypt(os.urandom(size), [identity.recipient])
    header_end = sealed.index(b"\n---") + len(b"\n--- ") + 43 + 1
    assert len(sealed) == header_end + 16 + sealed_size(size)


def test_every_recipient_can_open(identity: Identity) -> None:
    others = [Identity.generate() for _ in range(4)]
    data = b"testimony"
    sealed = age.encrypt(data, [i.recipient for i in [*others, identity]])
    for each in [*others, identity]:
        assert age.decrypt(sealed, [each]) == data
    assert sealed.count(b"\n-> X25519 ") == 5


def test_each_file_is_fresh(identity: Identity) -> None:
    one = age.encrypt(b"same", [identity.recipient])
    two = age.encrypt(b"same", [identity.recipient])
    assert one != two  # new file key, ephemeral share and nonce every time


@pytest.mark.parametrize("piece", [1, 7, 65535, 65536, 65553, 200_000])
def test_feeding_in_pieces_matches_whole(identity: Identity, piece: int) -> None:
    data = os.urandom(3 * 65536 + 11)
    encryptor = age.Encryptor([identity.recipient])
    sealed: list[bytes] = []
    for i in range(0, len(data), piece):
        sealed += encryptor.update(data[i : i + piece])
    sealed += encryptor.finalize()
    blob = b"".join(sealed)
    decryptor = age.Decryptor([identity])
    opened: list[bytes] = []
    for i in range(0, len(blob), piece):
        opened += decryptor.update(blob[i : i + piece])
    opened += decryptor.finalize()
    assert b"".join(opened) == data


def test_streams(identity: Identity) -> None:
    data = os.urandom(2_500_000)
    sealed = io.BytesIO()
    written = age.encrypt_stream(io.BytesIO(data), sealed, [str(identity.recipient)])
    assert written == len(sealed.getvalue())
    opened = io.BytesIO()
    assert age.decrypt_stream(io.BytesIO(sealed.getvalue()), opened, [identity]) == len(data)
    assert opened.getvalue() == data


@pytest.mark.parametrize("share", [2, 3, 5])
def test_chunks_sealed_in_runs_on_threads_are_the_same_bytes(share: int) -> None:
    """StreamEncryptor with a pool: the same chunks, nonces and order as one thread, for
    pieces of every shape (fewer chunks than runs, runs of uneven length)."""
    key = os.urandom(32)
    data = os.urandom(5 * 1024 * 1024 + 12345)
    cuts = [0, 1, 70_000, 200_000, 1_300_000, 1_300_001, 4_000_000, len(data)]
    alone = StreamEncryptor(key)
    with ThreadPoolExecutor(share - 1) as pool:
        shared = StreamEncryptor(key, pool, share)
        ours: list[bytes] = []
        for start, end in zip(cuts, cuts[1:], strict=False):
            piece = memoryview(bytearray(data[start:end]))
            ours += shared.update(piece)
            piece[:] = bytes(len(piece))  # the caller's buffer is free once update returns
        ours += shared.finalize()
    reference = alone.update(data) + alone.finalize()
    assert b"".join(ours) == b"".join(reference)


def test_identity_file_text_with_comments(identity: Identity) -> None:
    text = f"# created: now\n\n{identity.encode()}\n# trailing comment\n"
    assert age.decrypt(age.encrypt(b"x", [identity.recipient]), [text]) == b"x"


def test_unknown_stanzas_are_skipped(identity: Identity, file_key: bytes) -> None:
    grease = b"-> grease-type arg2 !#$%&'()*+,-./ \x7e\n" + wrap_lines(os.urandom(70))
    crafted = craft(file_key, [grease, ok_stanza(file_key, identity)], split_chunks(b"hi"))
    assert age.decrypt(crafted.data, [identity]) == b"hi"


def test_a_full_final_chunk_is_valid(identity: Identity, file_key: bytes) -> None:
    data = os.urandom(65536)
    crafted = craft(file_key, [ok_stanza(file_key, identity)], [(data, True)])
    assert age.decrypt(crafted.data, [identity]) == data


def test_spec_example_key() -> None:
    # The X25519 example of the age specification (c2sp.org/age).
    spec_identity = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX"
    spec_recipient = "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj"
    assert str(Identity.parse(spec_identity).recipient) == spec_recipient
    assert Identity.parse(spec_identity.lower()).encode() == spec_identity


# --- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "age1",
        "age1qqqq",
        "Age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj",  # mixed case
        "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwk",  # checksum
        "age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujw",  # cut
        "age2zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj",
        "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX",
    ],
)
def test_bad_recipients(bad: str) -> None:
    with pytest.raises(KeyEncodingError):
        age.encrypt(b"x", [bad])


def test_no_recipient_is_refused() -> None:
    with pytest.raises(ValueError):
        age.encrypt(b"x", [])


def test_low_order_recipient_is_refused() -> None:
    with pytest.raises(ValueError):
        age.encrypt(b"x", [Recipient(bytes(32))])


def test_bad_identity_line_is_named_not_shown() -> None:
    secret = "AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEY"
    with pytest.raises(KeyEncodingError) as caught:
        age.Decryptor([f"# comment\n{secret}\n"])
    assert "line 2" in str(caught.value)
    assert secret not in str(caught.value)


def test_secret_keys_do_not_show_in_repr(identity: Identity) -> None:
    assert identity.encode() not in repr(identity)
    assert identity.encode() not in str(identity)


# --- hostile headers -----------------------------------------------------------------------


def expect(error: type[AgeError], data: bytes, identity: Identity) -> None:
    with pytest.raises(error):
        age.decrypt(data, [identity])
    # Fed one byte at a time, the same error, and never a byte of plaintext before it.
    decryptor = age.Decryptor([identity])
    released: list[bytes] = []
    with pytest.raises(error):
        for i in range(len(data)):
            released += decryptor.update(data[i : i + 1])
        released += decryptor.finalize()
    if error is not PayloadError:
        assert released == []


def test_not_an_age_file(identity: Identity) -> None:
    expect(HeaderError, b"hello, this is not age\n" * 10, identity)
    expect(HeaderError, b"", identity)
    expect(HeaderError, b"\n age-encryption.org/v1\n", identity)


def test_other_versions(identity: Identity, file_key: bytes) -> None:
    for line in [b"age-encryption.org/v2\n", b"age-encryption.org/v1 \n", b"age-encryption.org/\n"]:
        crafted = craft(
            file_key, [ok_stanza(file_key, identity)], split_chunks(b"x"), version_line=line
        )
        expect(HeaderError, crafted.data, identity)


def test_crlf_line_endings(identity: Identity) -> None:
    good = age.encrypt(b"x", [identity.recipient])
    header_end = good.index(b"\n---")
    header_end = good.index(b"\n", header_end + 1) + 1
    expect(HeaderError, good[:header_end].replace(b"\n", b"\r\n") + good[header_end:], identity)


@pytest.mark.parametrize(
    "stanza_text",
    [
        b"->  X25519 AAAA\n\n",  # empty argument
        b"-> X25519  AAAA\n\n",  # double space
        b"-> X25519 AAAA \n\n",  # trailing space
        b"->\n\n",  # no argument
        b"-> X25519\tAAAA\n\n",  # tab
        b"-> grease \xc3\xa9\n\n",  # not ASCII
        b"-> grease\n" + b"A" * 64 + b"\n",  # body not ended by a short line
        b"-> grease\n" + b"A" * 65 + b"\n\n",  # line too long
        b"-> grease\nAAA=\n",  # padding
        b"-> grease\nAB\n",  # non-canonical (trailing bits)
        b"-> grease\nA\n",  # impossible length
        b"-> grease\nA-B_\n",  # URL-safe alphabet
        b"-> grease\n",  # no body line at all
    ],
)
def test_malformed_stanzas(identity: Identity, file_key: bytes, stanza_text: bytes) -> None:
    crafted = craft(file_key, [stanza_text, ok_stanza(file_key, identity)], split_chunks(b"x"))
    expect(HeaderError, crafted.data, identity)


def test_no_stanza(identity: Identity, file_key: bytes) -> None:
    expect(HeaderError, craft(file_key, [], split_chunks(b"x")).data, identity)


def _x25519_variant(file_key: bytes, identity: Identity, args: bytes, body: bytes) -> bytes:
    return b"-> X25519" + args + b"\n" + wrap_lines(body)


@pytest.mark.parametrize(
    "case",
    [
        "extra-arg",
        "no-share",
        "short-share",
        "long-share",
        "noncanonical-share",
        "long-body",
        "short-body",
    ],
)
def test_malformed_x25519_stanzas(identity: Identity, file_key: bytes, case: str) -> None:
    good = ok_stanza(file_key, identity)
    share = good.split(b"\n")[0].split(b" ")[2]
    body_line = good.split(b"\n")[1]
    body = base64.b64decode(body_line + b"=")
    variants = {
        "extra-arg": (b" " + share + b" extra", body),
        "no-share": (b"", body),
        "short-share": (b" " + b64(os.urandom(31)), body),
        "long-share": (b" " + b64(os.urandom(33)), body),
        # The last character of 32 bytes in base64 carries 2 unused bits; "B" sets one.
        "noncanonical-share": (b" " + share[:-1] + b"B", body),
        "long-body": (b" " + share, body + b"\x00"),
        "short-body": (b" " + share, body[:-1]),
    }
    args, stanza_body = variants[case]
    stanza = _x25519_variant(file_key, identity, args, stanza_body)
    expect(HeaderError, craft(file_key, [stanza], split_chunks(b"x")).data, identity)


@pytest.mark.parametrize(
    "point",
    [
        bytes(32),  # zero
        (1).to_bytes(32, "little"),  # order 1
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
        bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    ],
)
def test_low_order_share_aborts(identity: Identity, file_key: bytes, point: bytes) -> None:
    stanza = b"-> X25519 " + b64(point) + b"\n" + wrap_lines(os.urandom(32))
    expect(HeaderError, craft(file_key, [stanza], split_chunks(b"x")).data, identity)


def test_scrypt_mixed_with_x25519(identity: Identity, file_key: bytes) -> None:
    scrypt = b"-> scrypt " + b64(os.urandom(16)) + b" 10\n" + wrap_lines(os.urandom(32))
    crafted = craft(file_key, [ok_stanza(file_key, identity), scrypt], split_chunks(b"x"))
    expect(HeaderError, crafted.data, identity)


def test_scrypt_alone_is_not_ours(identity: Identity, file_key: bytes) -> None:
    scrypt = b"-> scrypt " + b64(os.urandom(16)) + b" 10\n" + wrap_lines(os.urandom(32))
    expect(NoIdentityMatchError, craft(file_key, [scrypt], split_chunks(b"x")).data, identity)


def test_wrong_identity(identity: Identity) -> None:
    sealed = age.encrypt(b"x", [Identity.generate().recipient])
    expect(NoIdentityMatchError, sealed, identity)


def test_bad_mac(identity: Identity, file_key: bytes) -> None:
    crafted = craft(
        file_key, [ok_stanza(file_key, identity)], split_chunks(b"x"), mac=os.urandom(32)
    )
    expect(HeaderMACError, crafted.data, identity)


def test_mac_covers_unknown_stanzas(identity: Identity, file_key: bytes) -> None:
    crafted = craft(file_key, [ok_stanza(file_key, identity), b"-> grease\n\n"], split_chunks(b"x"))
    changed = crafted.data.replace(b"-> grease\n", b"-> greasf\n")
    expect(HeaderMACError, changed, identity)


@pytest.mark.parametrize(
    "mac_line",
    [
        b"---\n",
        b"--- \n",
        b"---  AAAA\n",
        b"--- " + b"A" * 42 + b"\n",
        b"--- " + b"A" * 44 + b"\n",
        b"--- " + b"A" * 42 + b"B\n",
    ],
)
def test_malformed_mac_line(identity: Identity, file_key: bytes, mac_line: bytes) -> None:
    crafted = craft(file_key, [ok_stanza(file_key, identity)], split_chunks(b"x"))
    header = crafted.header[: crafted.header.index(b"---")] + mac_line
    expect(HeaderError, header + crafted.payload, identity)


def test_header_too_long(identity: Identity, file_key: bytes) -> None:
    huge = b"-> grease\n" + (b"A" * 64 + b"\n") * 20000 + b"\n"
    with pytest.raises(HeaderError):
        age.decrypt(craft(file_key, [huge], split_chunks(b"x")).data, [identity])


def test_truncated_header(identity: Identity) -> None:
    sealed = age.encrypt(b"x", [identity.recipient])
    header_end = sealed.index(b"\n---")
    for cut in [5, 30, header_end, header_end + 10]:
        expect(HeaderError, sealed[:cut], identity)


# --- hostile payloads ----------------------------------------------------------------------


def test_truncated_nonce(identity: Identity, file_key: bytes) -> None:
    crafted = craft(file_key, [ok_stanza(file_key, identity)], split_chunks(b"x"))
    expect(PayloadError, crafted.header, identity)
    expect(PayloadError, crafted.header + crafted.payload[:15], identity)
    expect(PayloadError, crafted.header + crafted.payload[:16], identity)


def test_missing_final_chunk(identity: Identity, file_key: bytes) -> None:
    chunks = [(os.urandom(65536), False), (os.urandom(65536), False)]
    expect(PayloadError, craft(file_key, [ok_stanza(file_key, identity)], chunks).data, identity)


def test_final_flag_on_an_earlier_chunk(identity: Identity, file_key: bytes) -> None:
    chunks = [(os.urandom(65536), True), (b"more", True)]
    expect(PayloadError, craft(file_key, [ok_stanza(file_key, identity)], chunks).data, identity)


def test_empty_final_chunk_after_data(identity: Identity, file_key: bytes) -> None:
    chunks = [(os.urandom(65536), False), (b"", True)]
    expect(PayloadError, craft(file_key, [ok_stanza(file_key, identity)], chunks).data, identity)


def test_empty_non_final_chunk(identity: Identity, file_key: bytes) -> None:
    chunks = [(b"", False), (b"x", True)]
    expect(PayloadError, craft(file_key, [ok_stanza(file_key, identity)], chunks).data, identity)


def test_short_non_final_chunk(identity: Identity, file_key: bytes) -> None:
    chunks = [(b"short", False), (b"x", True)]
    expect(PayloadError, craft(file_key, [ok_stanza(file_key, identity)], chunks).data, identity)


def test_empty_payload_is_one_empty_final_chunk(identity: Identity, file_key: bytes) -> None:
    crafted = craft(file_key, [ok_stanza(file_key, identity)], [(b"", True)])
    assert age.decrypt(crafted.data, [identity]) == b""


@pytest.mark.parametrize("size", [1, 65536, 65537, 3 * 65536])
def test_truncation_and_trailing_data(identity: Identity, size: int) -> None:
    sealed = age.encrypt(os.urandom(size), [identity.recipient])
    for cut in [1, 16, 17, 65552]:
        if cut < len(sealed) - 200:
            expect(PayloadError, sealed[:-cut], identity)
    expect(PayloadError, sealed + b"\x00", identity)
    expect(PayloadError, sealed + os.urandom(65552), identity)


def test_reordered_chunks(identity: Identity, file_key: bytes) -> None:
    first, second = os.urandom(65536), os.urandom(65536)
    crafted = craft(
        file_key, [ok_stanza(file_key, identity)], [(first, False), (second, False), (b"end", True)]
    )
    start = len(crafted.header) + 16
    one = crafted.data[start : start + 65552]
    two = crafted.data[start + 65552 : start + 2 * 65552]
    swapped = crafted.data[:start] + two + one + crafted.data[start + 2 * 65552 :]
    expect(PayloadError, swapped, identity)


def test_every_flipped_payload_byte_is_caught(identity: Identity) -> None:
    sealed = age.encrypt(os.urandom(300), [identity.recipient])
    start = sealed.index(b"\n---")
    start = sealed.index(b"\n", start + 1) + 1
    for position in range(start, len(sealed)):
        changed = bytearray(sealed)
        changed[position] ^= 0x01
        with pytest.raises(PayloadError):
            age.decrypt(bytes(changed), [identity])


def test_every_flipped_header_byte_is_caught(identity: Identity) -> None:
    sealed = age.encrypt(b"x", [identity.recipient])
    end = sealed.index(b"\n---")
    end = sealed.index(b"\n", end + 1) + 1
    for position in range(end):
        changed = bytearray(sealed)
        changed[position] ^= 0x01
        with pytest.raises(AgeError):
            age.decrypt(bytes(changed), [identity])


# --- armor -----------------------------------------------------------------------------------


def armor(data: bytes, newline: bytes = b"\n") -> bytes:
    encoded = base64.b64encode(data)
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    body = b"".join(line + newline for line in lines)
    return (
        b"-----BEGIN AGE ENCRYPTED FILE-----"
        + newline
        + body
        + b"-----END AGE ENCRYPTED FILE-----"
        + newline
    )


@pytest.mark.parametrize("size", [0, 1, 47, 48, 65536 + 5])
def test_armored_input(identity: Identity, size: int) -> None:
    data = os.urandom(size)
    sealed = age.encrypt(data, [identity.recipient])
    assert age.decrypt(armor(sealed), [identity]) == data
    assert age.decrypt(b"  \n\t" + armor(sealed, b"\r\n") + b"\n\n ", [identity]) == data
    assert age.decrypt(armor(sealed).rstrip(b"\n"), [identity]) == data


def test_malformed_armor(identity: Identity) -> None:
    sealed = age.encrypt(os.urandom(500), [identity.recipient])
    good = armor(sealed)
    lines = good.split(b"\n")
    cases = [
        good + b"garbage",
        good.replace(b"-----END AGE ENCRYPTED FILE-----\n", b""),  # no END
        good.replace(b"BEGIN AGE ENCRYPTED FILE", b"BEGIN AGE ENCRYPTED FILF"),
        b"\n".join([lines[0], lines[1][:63], lines[1][63:] + lines[2], *lines[3:]]),  # 63 columns
        b"\n".join([lines[0], lines[1] + b"A" * 4, *lines[2:]]),  # 68 columns
        b"\n".join([*lines[:2], b"", *lines[2:]]),  # empty line inside
        b"-----BEGIN AGE ENCRYPTED FILE-----\n-----END AGE ENCRYPTED FILE-----\n",  # no data
        good.replace(lines[1], lines[1][:-1] + b"!"),
    ]
    last = lines[-3]  # the short line before END
    if last.endswith(b"="):
        cases.append(good.replace(last, last[:-1]))  # missing padding
    for case in cases:
        with pytest.raises(HeaderError):  # ArmorError is a HeaderError
            age.decrypt(case, [identity])


def test_armor_with_noncanonical_padding_bits(identity: Identity) -> None:
    sealed = age.encrypt(b"x", [identity.recipient])
    extra = 1 if len(sealed) % 3 == 0 else 0
    good = armor(sealed + b"\x00" * extra)  # make sure the last group carries padding
    last = good.split(b"\n")[-3]
    index = last.index(b"=") - 1
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    bumped = alphabet[
        alphabet.index(last[index : index + 1]) + 1 : alphabet.index(last[index : index + 1]) + 2
    ]
    changed = good.replace(last, last[:index] + bumped + last[index + 1 :])
    with pytest.raises(ArmorError):
        age.decrypt(changed, [identity])


# --- random access -----------------------------------------------------------------------------


def test_open_payload_gives_random_access(identity: Identity) -> None:
    from crypto.stream import CHUNK_SIZE, SEALED_CHUNK_SIZE

    data = os.urandom(3 * CHUNK_SIZE + 1234)
    sealed = age.encrypt(data, [identity.recipient])
    offset, cipher = age.open_payload(sealed[:4096], [identity])
    for index in (2, 0, 3, 1):
        start = offset + index * SEALED_CHUNK_SIZE
        chunk = cipher.open(index, sealed[start : start + SEALED_CHUNK_SIZE], final=index == 3)
        assert chunk == data[index * CHUNK_SIZE : (index + 1) * CHUNK_SIZE]
    with pytest.raises(PayloadError):  # a chunk opened under another index is refused
        cipher.open(1, sealed[offset : offset + SEALED_CHUNK_SIZE], final=False)
    with pytest.raises(HeaderError):
        age.open_payload(sealed[:40], [identity])
    with pytest.raises(NoIdentityMatchError):
        age.open_payload(sealed[:4096], [Identity.generate()])


def test_a_buffer_reused_by_the_caller_does_not_change_what_was_sealed(
    identity: Identity,
) -> None:
    """update() reads its argument during the call only (chunks are sealed from views of
    it, and only the held-back tail is copied): a caller may refill the same bytearray."""
    payload = os.urandom(3 * 65536 + 1234)
    encryptor = age.Encryptor([identity.recipient])
    buffer = bytearray(100_000)
    pieces: list[bytes] = []
    for start in range(0, len(payload), len(buffer)):
        piece = payload[start : start + len(buffer)]
        buffer[: len(piece)] = piece
        pieces += encryptor.update(memoryview(buffer)[: len(piece)])
        buffer[:] = b"\xaa" * len(buffer)  # the caller scribbles over it at once
    pieces += encryptor.finalize()
    sealed = b"".join(pieces)
    assert age.decrypt(sealed, [identity]) == payload
    decryptor = age.Decryptor([identity])
    opened: list[bytes] = []
    for start in range(0, len(sealed), len(buffer)):
        piece = sealed[start : start + len(buffer)]
        buffer[: len(piece)] = piece
        opened += decryptor.update(memoryview(buffer)[: len(piece)])
        buffer[:] = b"\x55" * len(buffer)
    opened += decryptor.finalize()
    assert b"".join(opened) == payload

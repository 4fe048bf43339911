"""Member cards and member identity files: round trips, every way a card can be damaged,
and the identity file opened by the real `age` tool."""

from __future__ import annotations

import shutil
import string
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crypto import bech32
from crypto.card import CARD_HRP, MemberCard, MemberIdentity
from crypto.errors import KeyEncodingError
from crypto.keys import Identity, Recipient, SigningKey, VerifyKey

keys32 = st.binary(min_size=32, max_size=32)


def member_from(secret: bytes, seed: bytes) -> MemberIdentity:
    return MemberIdentity(Identity(secret), SigningKey(seed))


FIXED = member_from(bytes(range(32)), bytes(range(32, 64)))
CARD_TEXT = FIXED.card.encode()


def card_data(member: MemberIdentity, version: int = 1) -> bytes:
    card = member.card
    return bytes([version]) + card.recipient.public_key + card.verify_key.public_key


# --- cards: good input --------------------------------------------------------------


@given(keys32, keys32)
def test_card_round_trip(secret: bytes, seed: bytes) -> None:
    card = member_from(secret, seed).card
    text = card.encode()
    assert MemberCard.parse(text) == card
    assert MemberCard.parse(f"  \n{text}\t\n") == card
    assert MemberCard.parse(text.upper()) == card


def test_card_shape() -> None:
    assert CARD_TEXT.startswith("amanah-member1")
    assert len(CARD_TEXT) == 124
    assert CARD_TEXT == CARD_TEXT.lower()
    assert str(FIXED.card) == CARD_TEXT
    hrp, data = bech32.decode(CARD_TEXT)
    assert (hrp, data) == (CARD_HRP, card_data(FIXED))


def test_card_carries_the_members_public_keys() -> None:
    card = MemberCard.parse(CARD_TEXT)
    assert card.recipient == FIXED.identity.recipient
    assert card.verify_key == FIXED.signing_key.verify_key
    message = b"authenticate me"
    card.verify_key.verify(message, FIXED.signing_key.sign(message))


# --- cards: hostile input -----------------------------------------------------------

SUBSTITUTES = sorted(set(string.printable + bech32.CHARSET.upper()))


def test_every_single_character_substitution_is_rejected() -> None:
    for position, original in enumerate(CARD_TEXT):
        for replacement in SUBSTITUTES:
            if replacement == original:
                continue
            damaged = CARD_TEXT[:position] + replacement + CARD_TEXT[position + 1 :]
            with pytest.raises(KeyEncodingError):
                MemberCard.parse(damaged)


def test_every_single_character_deletion_and_insertion_is_rejected() -> None:
    # Bech32 (unlike Bech32m) misses a `q` inserted or deleted before a final `p`; the
    # fixed card length must catch what the checksum does not.
    for position in range(len(CARD_TEXT)):
        with pytest.raises(KeyEncodingError):
            MemberCard.parse(CARD_TEXT[:position] + CARD_TEXT[position + 1 :])
        for inserted in bech32.CHARSET:
            with pytest.raises(KeyEncodingError):
                MemberCard.parse(CARD_TEXT[:position] + inserted + CARD_TEXT[position:])


def test_q_insertion_before_final_p_is_caught_by_length() -> None:
    data = card_data(FIXED)
    # Find a card ending in "p" to exercise the known Bech32 weakness directly.
    for tweak in range(256):
        text = bech32.encode(CARD_HRP, data[:-1] + bytes([tweak]))
        if text.endswith("p"):
            break
    else:
        pytest.skip("no card ending in p among the tweaks")
    for inserted in ("q", "qq", "qqq"):
        extended = text[:-1] + inserted + "p"
        hrp, rest = extended.rsplit("1", 1)
        words = [bech32.CHARSET.index(c) for c in rest]
        # The checksum alone does not notice; the padding rule or the length must.
        assert bech32._polymod(bech32._expand_hrp(hrp) + words) == 1
        with pytest.raises(KeyEncodingError):
            MemberCard.parse(extended)


@pytest.mark.parametrize(
    "hrp", ["amanah-membe", "amanah-members", "age", "amanah-sig", "amanah-member-"]
)
def test_wrong_hrp_with_valid_checksum_is_rejected(hrp: str) -> None:
    with pytest.raises(KeyEncodingError, match="not a member card"):
        MemberCard.parse(bech32.encode(hrp, card_data(FIXED)))


@pytest.mark.parametrize("version", [0x00, 0x02, 0xFF])
def test_wrong_version_is_rejected(version: int) -> None:
    with pytest.raises(KeyEncodingError, match="version"):
        MemberCard.parse(bech32.encode(CARD_HRP, card_data(FIXED, version)))


@pytest.mark.parametrize("size", [0, 1, 33, 64, 66, 97])
def test_wrong_length_is_rejected(size: int) -> None:
    data = (card_data(FIXED) * 2)[:size]
    with pytest.raises(KeyEncodingError):
        MemberCard.parse(bech32.encode(CARD_HRP, data))


def test_other_key_strings_are_not_cards() -> None:
    for text in (
        str(FIXED.identity.recipient),
        FIXED.identity.encode(),
        str(FIXED.signing_key.verify_key),
        FIXED.signing_key.encode(),
        "",
        "amanah-member1",
        CARD_TEXT * 3,
    ):
        with pytest.raises(KeyEncodingError):
            MemberCard.parse(text)


def test_mixed_case_is_rejected() -> None:
    with pytest.raises(KeyEncodingError, match="mixed case"):
        MemberCard.parse(CARD_TEXT[:20] + CARD_TEXT[20:].upper())


# Low-order X25519 points (from the age and libsodium blocklists): zero, one, and a point
# of order 8. Sealing to any of them gives an all-zero shared secret.
LOW_ORDER_X25519 = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
]
# Small-order Ed25519 points: the identity, a point of order 2 and one of order 4.
SMALL_ORDER_ED25519 = [
    bytes([1]) + bytes(31),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes(32),
]


@pytest.mark.parametrize("point", LOW_ORDER_X25519)
def test_low_order_recipient_is_rejected(point: bytes) -> None:
    verify_key = FIXED.signing_key.verify_key.public_key
    with pytest.raises(KeyEncodingError, match="low-order"):
        MemberCard.parse(bech32.encode(CARD_HRP, b"\x01" + point + verify_key))
    with pytest.raises(KeyEncodingError):
        MemberCard(Recipient(point), FIXED.signing_key.verify_key)


@pytest.mark.parametrize("point", SMALL_ORDER_ED25519)
def test_invalid_verify_key_is_rejected(point: bytes) -> None:
    recipient = FIXED.identity.recipient.public_key
    with pytest.raises(KeyEncodingError, match="Ed25519"):
        MemberCard.parse(bech32.encode(CARD_HRP, b"\x01" + recipient + point))
    with pytest.raises(KeyEncodingError):
        MemberCard(FIXED.identity.recipient, VerifyKey(point))


@given(st.text(max_size=300))
def test_parse_of_any_text_raises_only_key_encoding_error(text: str) -> None:
    try:
        MemberCard.parse(text)
    except KeyEncodingError:
        pass


@given(st.binary(min_size=0, max_size=80))
def test_parse_of_any_bech32_data_raises_only_key_encoding_error(data: bytes) -> None:
    try:
        card = MemberCard.parse(bech32.encode(CARD_HRP, data))
    except KeyEncodingError:
        return
    assert card.encode() == bech32.encode(CARD_HRP, data)


# --- the member identity file -------------------------------------------------------


@given(keys32, keys32)
def test_identity_file_round_trip(secret: bytes, seed: bytes) -> None:
    member = member_from(secret, seed)
    text = member.to_file_text("2025-01-01T00:00:00Z")
    assert MemberIdentity.parse_file_text(text) == member
    assert MemberIdentity.parse_file_text(text.replace("\n", "\r\n")) == member


def test_identity_file_layout() -> None:
    lines = FIXED.to_file_text("2025-01-01").splitlines()
    assert lines[0] == "# Amanah member identity (created: 2025-01-01)"
    assert f"# card: {CARD_TEXT}" in lines
    assert f"# public key: {FIXED.identity.recipient}" in lines
    assert f"# amanah-signing-key: {FIXED.signing_key.encode()}" in lines
    # age reads every line not starting with '#': only the identity may be such a line.
    assert [line for line in lines if line and not line.startswith("#")] == [
        FIXED.identity.encode()
    ]


def test_generate_gives_fresh_keys() -> None:
    first, second = MemberIdentity.generate(), MemberIdentity.generate()
    assert first.card != second.card
    assert MemberIdentity.parse_file_text(first.to_file_text("now")) == first


def test_repr_shows_no_secret() -> None:
    text = repr(FIXED) + str(FIXED)
    assert FIXED.identity.encode() not in text
    assert FIXED.identity.secret_key.hex() not in text
    assert FIXED.signing_key.encode() not in text
    assert FIXED.signing_key.seed.hex() not in text


@pytest.mark.parametrize("created", ["a\nAGE-SECRET-KEY-1X", "x\r", "\x1b[2J", "x" * 101])
def test_created_must_be_one_short_printable_line(created: str) -> None:
    with pytest.raises(ValueError):
        FIXED.to_file_text(created)


OTHER = member_from(bytes(range(64, 96)), bytes(range(96, 128)))


def file_lines() -> list[str]:
    return FIXED.to_file_text("2025-01-01").splitlines()


def assert_rejected(lines: list[str], line_number: int | None, *secrets: str) -> None:
    with pytest.raises(KeyEncodingError) as caught:
        MemberIdentity.parse_file_text("\n".join(lines))
    message = str(caught.value)
    if line_number is not None:
        assert f"line {line_number}" in message
    for secret in (FIXED.identity.encode(), FIXED.signing_key.encode(), *secrets):
        assert secret.lower() not in message.lower()


def test_missing_identity_line() -> None:
    assert_rejected([line for line in file_lines() if line.startswith("#")], None)


def test_missing_signing_key_line() -> None:
    assert_rejected([line for line in file_lines() if "signing-key" not in line], None)


def test_second_identity_line_names_its_line() -> None:
    lines = file_lines() + [OTHER.identity.encode()]
    assert_rejected(lines, len(lines), OTHER.identity.encode())


def test_second_signing_key_line_names_its_line() -> None:
    lines = file_lines() + [f"# amanah-signing-key: {OTHER.signing_key.encode()}"]
    assert_rejected(lines, len(lines), OTHER.signing_key.encode())


def test_damaged_identity_line_names_its_line_not_its_content() -> None:
    lines = file_lines()
    number = lines.index(FIXED.identity.encode())
    damaged = FIXED.identity.encode()[:-1] + ("Q" if lines[number][-1] != "Q" else "P")
    lines[number] = damaged
    assert_rejected(lines, number + 1, damaged)


def test_damaged_signing_key_line_names_its_line_not_its_content() -> None:
    lines = file_lines()
    number = next(i for i, line in enumerate(lines) if "signing-key" in line)
    damaged = lines[number][:-3] + "QQQ"
    lines[number] = damaged
    assert_rejected(lines, number + 1, damaged)


def test_stray_non_comment_line_is_rejected() -> None:
    lines = file_lines() + ["hello"]
    assert_rejected(lines, len(lines))


@pytest.mark.parametrize("label", ["card", "public key"])
def test_comment_that_contradicts_the_keys_is_rejected(label: str) -> None:
    other = OTHER.card.encode() if label == "card" else str(OTHER.identity.recipient)
    lines = [
        f"# {label}: {other}" if line.startswith(f"# {label}:") else line for line in file_lines()
    ]
    number = next(i for i, line in enumerate(lines, 1) if line.startswith(f"# {label}:"))
    assert_rejected(lines, number)


def test_oversized_file_is_rejected() -> None:
    with pytest.raises(KeyEncodingError, match="too long"):
        MemberIdentity.parse_file_text("#" * 100_000)


@given(st.text(max_size=500))
def test_parse_file_text_raises_only_key_encoding_error(text: str) -> None:
    try:
        MemberIdentity.parse_file_text(text)
    except KeyEncodingError:
        pass


# --- interop with the real age tool -------------------------------------------------

needs_age = pytest.mark.skipif(
    shutil.which("age") is None or shutil.which("age-keygen") is None,
    reason="the age tool is not installed",
)


@needs_age
def test_age_opens_drops_with_the_identity_file(tmp_path: Path) -> None:
    member = MemberIdentity.generate()
    key_file = tmp_path / "member.key"
    key_file.write_text(member.to_file_text("2025-01-01T00:00:00Z"))
    message = "شهادة: testimony to be delivered sealed\n".encode()
    sealed = subprocess.run(
        ["age", "-r", str(member.card.recipient)], input=message, capture_output=True, check=True
    ).stdout
    opened = subprocess.run(
        ["age", "-d", "-i", str(key_file)], input=sealed, capture_output=True, check=True
    ).stdout
    assert opened == message


@needs_age
def test_age_keygen_derives_the_cards_recipient(tmp_path: Path) -> None:
    member = MemberIdentity.generate()
    key_file = tmp_path / "member.key"
    key_file.write_text(member.to_file_text("2025-01-01"))
    shown = subprocess.run(
        ["age-keygen", "-y", str(key_file)], capture_output=True, check=True, text=True
    ).stdout.strip()
    assert Recipient.parse(shown) == member.card.recipient


@needs_age
def test_age_refuses_a_drop_for_another_member(tmp_path: Path) -> None:
    key_file = tmp_path / "member.key"
    key_file.write_text(FIXED.to_file_text("2025-01-01"))
    sealed = subprocess.run(
        ["age", "-r", str(OTHER.card.recipient)], input=b"x", capture_output=True, check=True
    ).stdout
    result = subprocess.run(["age", "-d", "-i", str(key_file)], input=sealed, capture_output=True)
    assert result.returncode != 0

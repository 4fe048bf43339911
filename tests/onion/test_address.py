"""Addresses and key encodings, computed without tor (tor's own answers are checked
against these in test_tor.py)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onion.address import (
    ClientAuthKey,
    ServiceKey,
    b32decode,
    onion_address,
    parse_auth_private,
    parse_public_base32,
    service_id,
)
from onion.errors import OnionKeyError


def test_an_address_is_56_base32_characters_and_checks_its_own_checksum() -> None:
    key = ServiceKey.generate()
    address = key.address
    assert address.endswith(".onion") and len(address) == 62
    assert service_id(address) == key.service_id == address[:-6]
    assert service_id(address.upper()) == key.service_id


def test_a_changed_character_breaks_the_checksum() -> None:
    sid = ServiceKey.generate().service_id
    changed = ("a" if sid[10] != "a" else "b").join((sid[:10], sid[11:]))
    with pytest.raises(ValueError, match="checksum"):
        service_id(changed)


@pytest.mark.parametrize(
    "text", ["", "example.com", "abc.onion", "x" * 56 + ".onion", "0" * 56, "a" * 57]
)
def test_not_addresses(text: str) -> None:
    with pytest.raises(ValueError):
        service_id(text)


def test_the_key_given_to_tor_is_the_expanded_clamped_seed() -> None:
    key = ServiceKey(bytes(range(32)))
    blob = base64.b64decode(key.tor_key_blob())
    assert len(blob) == 64
    assert blob[0] & 7 == 0 and blob[31] & 0x80 == 0 and blob[31] & 0x40
    assert onion_address(key.public_key) == key.address


def test_secret_keys_do_not_show_in_repr() -> None:
    service = ServiceKey.generate()
    client = ClientAuthKey.generate()
    for text in (repr(service), str(service)):
        assert service.seed.hex() not in text and service.tor_key_blob() not in text
    for text in (repr(client), str(client)):
        assert client.private_base64 not in text
        assert base64.b32encode(client.private_key).decode().rstrip("=") not in text


def test_an_auth_private_line_round_trips() -> None:
    address = ServiceKey.generate().address
    key = ClientAuthKey.generate()
    line = key.auth_private_line(address)
    sid, parsed = parse_auth_private(f"# a comment\n{line}\n\n")
    assert sid == address.removesuffix(".onion")
    assert parsed == key
    assert parse_public_base32(key.public_base32) == key.public_key


@pytest.mark.parametrize(
    "text",
    [
        "",
        "one\ntwo",
        "abc:descriptor:x25519:AAAA",
        "{sid}:descriptor:ed25519:{key}",
        "{sid}:descriptor:x25519:{key}:extra",
        "{sid}:descriptor:x25519:AAAA",
        "{sid}:descriptor:x25519:not base32!",
    ],
)
def test_bad_auth_private_files_are_refused_without_quoting_the_key(text: str) -> None:
    key = ClientAuthKey.generate().auth_private_line(ServiceKey.generate().address)
    sid, _, _, secret = key.split(":")
    text = text.format(sid=sid, key=secret)
    with pytest.raises(OnionKeyError) as caught:
        parse_auth_private(text)
    assert secret not in str(caught.value)


@given(st.text(max_size=200))
def test_parsing_any_text_raises_only_our_error(text: str) -> None:
    try:
        parse_auth_private(text)
    except OnionKeyError:
        pass


@given(st.text(max_size=80))
def test_base32_decoding_raises_only_value_error(text: str) -> None:
    try:
        b32decode(text)
    except ValueError:
        pass

"""The signed contact directory and the rotation chain of its signing key: what a client
accepts, and every way a relay, a network or a thief could try to change its mind."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto import canonical
from crypto.card import MemberCard, MemberIdentity
from crypto.directory import (
    Contact,
    Directory,
    DirectoryPin,
    RotationRecord,
    rotate,
    sign_directory,
    verify_directory,
)
from crypto.errors import ChainError, DirectoryError, SignatureError
from crypto.keys import Identity, SigningKey
from crypto.rotation import record_to_json


def member(n: int) -> MemberCard:
    return MemberIdentity(Identity(bytes([n]) * 32), SigningKey(bytes([n + 100]) * 32)).card


def key(n: int) -> SigningKey:
    return SigningKey(bytes([200 + n]) * 32)


K0, K1, K2, K3, STRANGER = key(0), key(1), key(2), key(3), key(9)
T = 1_700_000_000
R1 = rotate(K0, K1, 1, T + 1)
R2 = rotate(K1, K2, 2, T + 2)
R3 = rotate(K2, K3, 3, T + 3)


def make_directory(version: int = 1, **changes: Any) -> Directory:
    contacts = (
        Contact("bbc-arabic", "BBC Arabic, London desk", (member(1), member(2)), None, True),
        Contact(
            "ohchr",
            "UN Human Rights: investigations\nGenève",
            (member(3),),
            "http://pushpushpush.onion/amanah/v1",
            False,
        ),
    )
    fields: dict[str, Any] = {
        "version": version,
        "issued_at": T,
        "contacts": contacts,
        "services": {"source_onion": "abc.onion", "journalist_onion": "def.onion"},
    }
    fields.update(changes)
    return Directory(**fields)


DIRECTORY = make_directory()
DOCUMENT = sign_directory(DIRECTORY, K0)


def edit(document: bytes, change: Callable[[Any], None]) -> bytes:
    """Changes the parsed document and writes it back canonically, so only the signature
    (or the chain) can notice."""
    value = json.loads(document)
    change(value)
    return canonical.dumps(value)


def with_chain(document: bytes, *records: RotationRecord) -> bytes:
    def change(value: Any) -> None:
        value["chain"] = [record_to_json(r) for r in records]

    return edit(document, change)


# --- round trips ---------------------------------------------------------------------


def test_sign_and_verify_round_trip() -> None:
    directory, pin = verify_directory(DOCUMENT, None)
    assert directory == DIRECTORY
    assert directory.contact("ohchr") == DIRECTORY.contacts[1]
    assert directory.contact("nobody") is None
    assert pin.root == K0.verify_key
    assert pin.current_key == K0.verify_key
    assert pin.last_version == 1
    assert verify_directory(DOCUMENT, pin) == (directory, pin)


def test_document_shape() -> None:
    value = json.loads(DOCUMENT)
    assert set(value) == {"format", "directory", "signing_key", "signature", "chain"}
    assert value["format"] == "amanah-directory-v1"
    assert value["signing_key"] == str(K0.verify_key)
    assert value["directory"]["contacts"][0]["members"] == [member(1).encode(), member(2).encode()]
    assert DOCUMENT == canonical.dumps(value)
    signed = b"amanah-directory-v1\n" + canonical.dumps(value["directory"])
    K0.verify_key.verify(signed, base64.b64decode(value["signature"]))


def test_empty_directory_and_empty_services() -> None:
    empty = Directory(0, 0, (), {})
    assert verify_directory(sign_directory(empty, K0), None)[0] == empty


def test_pin_round_trip() -> None:
    _, pin = verify_directory(sign_directory(DIRECTORY, K2, [R1, R2]), None)
    assert DirectoryPin.from_json(pin.to_json()) == pin
    fresh = DirectoryPin(K0.verify_key)
    assert DirectoryPin.from_json(fresh.to_json()) == fresh


def test_directory_is_immutable() -> None:
    services = {"source_onion": "abc.onion"}
    directory = Directory(1, T, (), services)
    services["source_onion"] = "evil.onion"
    assert directory.services["source_onion"] == "abc.onion"
    with pytest.raises(TypeError):
        directory.services["x"] = "y"  # type: ignore[index]


# --- tampering -----------------------------------------------------------------------


def set_path(path: tuple[Any, ...], new: Any) -> Callable[[Any], None]:
    def change(value: Any) -> None:
        for step in path[:-1]:
            value = value[step]
        value[path[-1]] = new

    return change


TAMPERING = {
    "contact name": set_path(("directory", "contacts", 0, "name"), "bbc-persian"),
    "description": set_path(("directory", "contacts", 1, "description"), "UN"),
    "member swapped": set_path(("directory", "contacts", 0, "members", 1), member(7).encode()),
    "member added": set_path(
        ("directory", "contacts", 1, "members"), [member(3).encode(), member(8).encode()]
    ),
    "member removed": set_path(("directory", "contacts", 0, "members"), [member(1).encode()]),
    "originals flag": set_path(("directory", "contacts", 0, "accepts_originals"), False),
    "push endpoint": set_path(("directory", "contacts", 1, "push_endpoint"), "http://evil.onion"),
    "push endpoint dropped": set_path(("directory", "contacts", 1, "push_endpoint"), None),
    "contact dropped": set_path(("directory", "contacts"), []),
    "version": set_path(("directory", "version"), 2),
    "issued_at": set_path(("directory", "issued_at"), T + 1),
    "service": set_path(("directory", "services", "source_onion"), "evil.onion"),
    "signature zeroed": set_path(("signature",), base64.b64encode(bytes(64)).decode()),
}


@pytest.mark.parametrize("change", TAMPERING.values(), ids=TAMPERING.keys())
def test_tampered_document_is_rejected(change: Callable[[Any], None]) -> None:
    tampered = edit(DOCUMENT, change)
    assert tampered != DOCUMENT
    _, pin = verify_directory(DOCUMENT, None)
    for client_pin in (None, pin):
        with pytest.raises(SignatureError):
            verify_directory(tampered, client_pin)


def test_signature_from_another_directory_is_rejected() -> None:
    other = json.loads(sign_directory(make_directory(2), K0))
    tampered = edit(DOCUMENT, set_path(("signature",), other["signature"]))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_directory(tampered, None)


def test_directory_signed_by_another_key_is_rejected() -> None:
    _, pin = verify_directory(DOCUMENT, None)
    with pytest.raises(ChainError):
        verify_directory(sign_directory(DIRECTORY, STRANGER), pin)


def test_signing_key_field_swapped_is_rejected() -> None:
    # On first use the document's own key is trusted, so only the signature can object.
    tampered = edit(DOCUMENT, set_path(("signing_key",), str(STRANGER.verify_key)))
    with pytest.raises(SignatureError):
        verify_directory(tampered, None)
    with pytest.raises(ChainError):
        verify_directory(tampered, verify_directory(DOCUMENT, None)[1])


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(value, dict):
        for name, item in value.items():
            yield from leaf_paths(item, (*path, name))
    elif isinstance(value, list) and value:
        for index, item in enumerate(value):
            yield from leaf_paths(item, (*path, index))
    else:
        yield path, value


def mutations(leaf: Any) -> list[Any]:
    if isinstance(leaf, bool):
        return [not leaf, int(leaf), str(leaf).lower(), None]
    if isinstance(leaf, int):
        return [leaf + 1, leaf - 1, str(leaf), None, True]
    if isinstance(leaf, str):
        flipped = chr(ord(leaf[-1]) ^ 1) if leaf else "x"
        return [leaf[:-1] + flipped, leaf.upper(), leaf + " ", "", None, 0, [leaf]]
    return ["", 0, {}]


def every_field_mutation(document: bytes) -> Iterator[tuple[str, bytes]]:
    """Every leaf set to each of a few wrong values, and every object and list along the
    way with a field removed, a field added, or an item repeated."""
    value = json.loads(document)
    containers: set[tuple[Any, ...]] = set()
    for path, leaf in leaf_paths(value):
        for new in mutations(leaf):
            yield f"set {path}", edit(document, set_path(path, new))
        containers.update(path[:cut] for cut in range(1, len(path) + 1))
    for path in sorted(containers, key=repr):
        yield f"remove {path}", edit(document, change_container(path, "remove"))
        yield f"extend {path}", edit(document, change_container(path, "extend"))


def change_container(path: tuple[Any, ...], how: str) -> Callable[[Any], None]:
    def change(value: Any) -> None:
        for step in path[:-1]:
            value = value[step]
        if how == "remove":
            del value[path[-1]]
        elif isinstance(value, dict):
            value["unexpected"] = value[path[-1]]
        else:
            value.append(value[path[-1]])

    return change


CHAINED = sign_directory(DIRECTORY, K2, [R1, R2])
SALT = bytes(range(16))
SALTED = sign_directory(make_directory(codename_salt=SALT), K0)


@pytest.mark.parametrize(
    "document", [DOCUMENT, CHAINED, SALTED], ids=["no chain", "chain", "codename salt"]
)
def test_every_field_mutation_is_rejected(document: bytes) -> None:
    pins = [None, verify_directory(document, None)[1]]
    count = 0
    for what, mutated in every_field_mutation(document):
        if mutated == document:
            continue
        for pin in pins:
            with pytest.raises(DirectoryError):
                verify_directory(mutated, pin)
                pytest.fail(f"accepted: {what}")
        count += 1
    assert count > 100


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_byte_flip_is_rejected_with_a_directory_error(data: st.DataObject) -> None:
    document = data.draw(st.sampled_from([DOCUMENT, CHAINED]))
    position = data.draw(st.integers(0, len(document) - 1))
    mask = data.draw(st.integers(1, 255))
    flipped = bytearray(document)
    flipped[position] ^= mask
    pin = data.draw(st.sampled_from([None, verify_directory(document, None)[1]]))
    with pytest.raises(DirectoryError):
        verify_directory(bytes(flipped), pin)


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_insertion_deletion_or_truncation_is_rejected(data: st.DataObject) -> None:
    document = data.draw(st.sampled_from([DOCUMENT, CHAINED]))
    start = data.draw(st.integers(0, len(document)))
    end = data.draw(st.integers(start, min(len(document), start + 8)))
    inserted = data.draw(st.binary(max_size=8))
    changed = document[:start] + inserted + document[end:]
    if changed == document:
        return
    with pytest.raises(DirectoryError):
        verify_directory(changed, None)


@given(st.binary(max_size=400))
def test_arbitrary_bytes_raise_only_directory_errors(data: bytes) -> None:
    with pytest.raises(DirectoryError):
        verify_directory(data, None)


@pytest.mark.parametrize(
    "raw_change",
    [
        lambda d: d.replace(b'"version":1', b'"version":1,"version":1', 1),
        lambda d: d.replace(b'"version":1', b'"version":2,"version":1', 1),
        lambda d: d.replace(b'"chain":[]', b'"chain":[],"chain":[]', 1),
        lambda d: d.replace(b'"name":"ohchr"', b'"name":"ohchr","name":"ohchr"', 1),
        lambda d: d.replace(b'"version":1', b'"version":1.0', 1),
        lambda d: d.replace(b'"version":1', b'"version":NaN', 1),
        lambda d: d.replace(b'"version":1', b'"version":1e0', 1),
        lambda d: d.replace(b'"version":1', b'"version":true', 1),
        lambda d: d.replace(b'"version":1', b'"version":"1"', 1),
        lambda d: d.replace(b'"version":1', b'"version":' + b"9" * 30, 1),
        lambda d: d.replace(b'"version":1', b'"version":-1', 1),
        lambda d: d.replace(b'"chain":[]', b'"chain":{}', 1),
        lambda d: d.replace(b"ohchr", b"\\u006fhchr", 1),
        lambda d: d.replace(b":", b": ", 1),
        lambda d: d + b"\n",
        lambda d: b" " + d,
        lambda d: b"\xef\xbb\xbf" + d,
        lambda d: d.replace(b"amanah-sig1", b"AMANAH-SIG1", 1),
        lambda d: d.replace(b"amanah-member1", b"AMANAH-MEMBER1", 1),
        lambda d: d.replace(b'"format":"amanah-directory-v1"', b'"format":"amanah-directory-v2"'),
        lambda d: d.replace(b'"description":"BBC', b'"description":"\\u0000BBC', 1),
        lambda d: d.replace(b'"description":"BBC', b'"description":"\\ud800BBC', 1),
    ],
)
def test_malformed_document_is_a_signature_error(raw_change: Callable[[bytes], bytes]) -> None:
    changed = raw_change(DOCUMENT)
    assert changed != DOCUMENT
    with pytest.raises(SignatureError):
        verify_directory(changed, None)


def test_oversized_document_is_rejected_before_parsing() -> None:
    with pytest.raises(SignatureError, match="too large"):
        verify_directory(b" " * (1024 * 1024 + 1), None)


def test_a_valid_signature_over_an_invalid_directory_is_still_rejected() -> None:
    # A signer that skipped validation (or a forged key) cannot get a broken directory in.
    value = json.loads(DOCUMENT)
    value["directory"]["contacts"][1]["name"] = "bbc-arabic"
    signed = b"amanah-directory-v1\n" + canonical.dumps(value["directory"])
    value["signature"] = base64.b64encode(K0.sign(signed)).decode()
    with pytest.raises(SignatureError, match="same name"):
        verify_directory(canonical.dumps(value), None)


# --- the codename salt ---------------------------------------------------------------


def test_codename_salt_round_trip() -> None:
    directory, _ = verify_directory(SALTED, None)
    assert directory.codename_salt == SALT
    assert json.loads(SALTED)["directory"]["codename_salt"] == base64.b64encode(SALT).decode()
    # A relay that publishes no salt spells its document without the field at all.
    assert "codename_salt" not in json.loads(DOCUMENT)["directory"]
    assert verify_directory(DOCUMENT, None)[0].codename_salt is None


def test_changed_or_removed_salt_is_rejected() -> None:
    other = base64.b64encode(bytes(16)).decode()
    changed = edit(SALTED, set_path(("directory", "codename_salt"), other))
    removed = edit(SALTED, change_container(("directory", "codename_salt"), "remove"))
    added = edit(DOCUMENT, set_path(("directory", "codename_salt"), other))
    for tampered in (changed, removed, added):
        with pytest.raises(SignatureError, match="does not verify"):
            verify_directory(tampered, None)


def test_same_version_with_another_salt_is_caught_by_the_pin() -> None:
    # One version, two salts: two sources shown different salts (linkable, or locked out).
    _, pin = verify_directory(SALTED, None)
    other = sign_directory(make_directory(codename_salt=bytes(16)), K0)
    with pytest.raises(ChainError, match="differs"):
        verify_directory(other, pin)


@pytest.mark.parametrize("salt", [b"", bytes(15), bytes(17), "0" * 16])
def test_a_salt_that_is_not_16_bytes_is_refused(salt: Any) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        make_directory(codename_salt=salt)
    if isinstance(salt, bytes):  # signed by the right key, still refused
        value = json.loads(SALTED)
        value["directory"]["codename_salt"] = base64.b64encode(salt).decode()
        signed = b"amanah-directory-v1\n" + canonical.dumps(value["directory"])
        value["signature"] = base64.b64encode(K0.sign(signed)).decode()
        with pytest.raises(SignatureError, match="16 bytes"):
            verify_directory(canonical.dumps(value), None)


# --- rotation ------------------------------------------------------------------------


def test_client_pinned_on_the_first_key_follows_three_rotations() -> None:
    _, pin = verify_directory(DOCUMENT, None)
    later = make_directory(version=4)
    directory, new_pin = verify_directory(sign_directory(later, K3, [R1, R2, R3]), pin)
    assert directory == later
    assert new_pin.root == K0.verify_key
    assert new_pin.chain == (R1, R2, R3)
    assert new_pin.current_key == K3.verify_key
    assert new_pin.last_version == 4


def test_client_with_only_the_root_key_follows_the_chain() -> None:
    pin = DirectoryPin(K0.verify_key)
    _, new_pin = verify_directory(sign_directory(DIRECTORY, K3, [R1, R2, R3]), pin)
    assert new_pin.current_key == K3.verify_key


def test_client_pinned_after_rotation_one_follows_rotation_two() -> None:
    _, pin = verify_directory(sign_directory(DIRECTORY, K1, [R1]), None)
    assert pin.chain == (R1,)
    _, pin = verify_directory(sign_directory(make_directory(2), K2, [R1, R2]), pin)
    assert (pin.chain, pin.current_key, pin.last_version) == ((R1, R2), K2.verify_key, 2)
    assert DirectoryPin.from_json(pin.to_json()) == pin


def test_first_use_with_a_chain_pins_its_first_key() -> None:
    _, pin = verify_directory(sign_directory(DIRECTORY, K2, [R1, R2]), None)
    assert pin.root == K0.verify_key


def test_after_rotation_the_retired_key_is_refused() -> None:
    _, pin = verify_directory(sign_directory(DIRECTORY, K1, [R1]), None)
    with pytest.raises(ChainError, match="shorter"):
        verify_directory(sign_directory(make_directory(2), K0), pin)


def test_document_signed_by_an_older_key_of_its_own_chain_is_refused() -> None:
    document = with_chain(sign_directory(DIRECTORY, K1, [R1]), R1, R2)
    with pytest.raises(ChainError, match="current key"):
        verify_directory(document, None)


BROKEN_CHAINS = {
    "missing record": [R1, R3],
    "missing first record": [R2, R3],
    "record out of order": [R2, R1, R3],
    "repeated record": [R1, R1, R2, R3],
    "sequence gap": [R1, R2, rotate(K2, K3, 4, T)],
    "sequence repeated": [R1, R2, rotate(K2, K3, 2, T)],
    "wrong old signature": [
        R1,
        RotationRecord(R2.old_key, R2.new_key, 2, R2.issued_at, R1.old_signature, R2.new_signature),
        R3,
    ],
    "new key did not sign": [
        R1,
        RotationRecord(R2.old_key, R2.new_key, 2, R2.issued_at, R2.old_signature, R2.old_signature),
        R3,
    ],
    "stranger signed as new key": [
        R1,
        RotationRecord(
            R2.old_key, R2.new_key, 2, R2.issued_at, R2.old_signature, STRANGER.sign(R2.body())
        ),
        R3,
    ],
    "signed time changed": [
        R1,
        RotationRecord(R2.old_key, R2.new_key, 2, T + 99, R2.old_signature, R2.new_signature),
        R3,
    ],
    "returns to a retired key": [R1, R2, rotate(K2, K1, 3, T), rotate(K1, K3, 4, T)],
}


@pytest.mark.parametrize("chain", BROKEN_CHAINS.values(), ids=BROKEN_CHAINS.keys())
def test_broken_chain_is_rejected(chain: list[RotationRecord]) -> None:
    document = with_chain(sign_directory(DIRECTORY, K3, [R1, R2, R3]), *chain)
    for pin in (None, DirectoryPin(K0.verify_key), verify_directory(DOCUMENT, None)[1]):
        with pytest.raises(ChainError):
            verify_directory(document, pin)
    with pytest.raises(ChainError):
        sign_directory(DIRECTORY, K3, chain)


def test_chain_not_starting_at_the_pinned_key_is_rejected() -> None:
    _, pin = verify_directory(DOCUMENT, None)
    hijack = [rotate(STRANGER, K3, 1, T)]
    with pytest.raises(ChainError, match="pinned key"):
        verify_directory(sign_directory(DIRECTORY, K3, hijack), pin)


def test_fork_is_rejected() -> None:
    _, pin = verify_directory(sign_directory(DIRECTORY, K2, [R1, R2]), None)
    # Whoever stole K1 rotates it to their own key: signed correctly, but not the history
    # this client already accepted.
    forked = [R1, rotate(K1, STRANGER, 2, T + 2)]
    document = sign_directory(make_directory(3), STRANGER, forked)
    with pytest.raises(ChainError, match="fork"):
        verify_directory(document, pin)
    # ...and a fork at the first record too.
    _, pin = verify_directory(sign_directory(DIRECTORY, K1, [R1]), None)
    with pytest.raises(ChainError, match="fork"):
        verify_directory(sign_directory(DIRECTORY, STRANGER, [rotate(K0, STRANGER, 1, T)]), pin)


def test_accepted_record_rewritten_is_rejected() -> None:
    _, pin = verify_directory(sign_directory(DIRECTORY, K1, [R1]), None)
    rewritten = rotate(K0, K1, 1, T + 50)  # same keys, a different signed time
    with pytest.raises(ChainError, match="rotation record 1"):
        verify_directory(sign_directory(DIRECTORY, K2, [rewritten, R2]), pin)


def test_sign_directory_refuses_a_chain_that_ends_elsewhere() -> None:
    with pytest.raises(ChainError):
        sign_directory(DIRECTORY, K3, [R1, R2])


def test_rotate_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        rotate(K0, K0, 1, T)
    with pytest.raises(ValueError):
        rotate(K0, K1, 0, T)
    with pytest.raises(ValueError):
        rotate(K0, K1, 1, -1)


# --- rollback ------------------------------------------------------------------------


def test_older_version_is_a_rollback() -> None:
    _, pin = verify_directory(sign_directory(make_directory(5), K0), None)
    with pytest.raises(ChainError, match="rollback"):
        verify_directory(sign_directory(make_directory(4), K0), pin)
    with pytest.raises(ChainError, match="rollback"):
        verify_directory(sign_directory(make_directory(4), K1, [R1]), pin)


def test_same_version_is_accepted_only_with_the_same_directory() -> None:
    _, pin = verify_directory(sign_directory(make_directory(5), K0), None)
    assert verify_directory(sign_directory(make_directory(5), K0), pin)[1] == pin
    # The same directory re-signed after a rotation is fine.
    verify_directory(sign_directory(make_directory(5), K1, [R1]), pin)
    changed = make_directory(5, issued_at=T + 60)
    with pytest.raises(ChainError, match="same version"):
        verify_directory(sign_directory(changed, K0), pin)


def test_newer_version_is_accepted() -> None:
    _, pin = verify_directory(sign_directory(make_directory(5), K0), None)
    _, pin = verify_directory(sign_directory(make_directory(6), K0), pin)
    assert pin.last_version == 6


# --- the data rules ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "0", "bbc-arabic", "a" * 63, "un-", "9-9"])
def test_good_contact_names(name: str) -> None:
    assert Contact(name, "", (member(1),)).name == name


@pytest.mark.parametrize(
    "name", ["", "-a", "A", "Bbc", "a_b", "a.b", "a b", "a" * 64, "a\n", "é", "ａ"]
)
def test_bad_contact_names(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        Contact(name, "", (member(1),))


def test_contact_rules() -> None:
    with pytest.raises(ValueError, match="at least one member"):
        Contact("a", "", ())
    with pytest.raises(ValueError, match="more than once"):
        Contact("a", "", (member(1), member(1)))
    with pytest.raises(ValueError, match="control"):
        Contact("a", "bell\x07", (member(1),))
    with pytest.raises(ValueError, match="too long"):
        Contact("a", "x" * 2001, (member(1),))
    for endpoint in ("ftp://x", "http://a b", "http://x\n", "", "x" * 3000):
        with pytest.raises(ValueError):
            Contact("a", "", (member(1),), endpoint)


def test_member_keys_are_unique_across_the_directory() -> None:
    a = Contact("a", "", (member(1),))
    with pytest.raises(ValueError, match="more than once"):
        Directory(1, T, (a, Contact("b", "", (member(1),))))
    # Sharing only one of the two keys is refused too.
    one, two = member(1), member(2)
    mixed = MemberCard(one.recipient, two.verify_key)
    with pytest.raises(ValueError, match="more than once"):
        Directory(1, T, (a, Contact("b", "", (mixed,))))
    with pytest.raises(ValueError, match="same name"):
        Directory(1, T, (a, Contact("a", "", (member(2),))))


@pytest.mark.parametrize(
    "changes",
    [
        {"version": -1},
        {"version": 2**53},
        {"issued_at": -5},
        {"version": True},
        {"services": {"Source": "x"}},
        {"services": {"source_onion": "x\ny"}},
        {"services": {"": "x"}},
    ],
)
def test_directory_rules(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_directory(**changes)


# --- the stored pin ------------------------------------------------------------------


def test_damaged_pin_is_rejected() -> None:
    _, pin = verify_directory(sign_directory(DIRECTORY, K2, [R1, R2]), None)
    text = pin.to_json()
    for damaged in (
        text[:-1],
        text.replace('"last_version":1', '"last_version":1.5'),
        text.replace('"last_version":1', '"last_version":-1'),
        text.replace(pin.directory_digest.hex() if pin.directory_digest else "", "00"),
        text.replace("amanah-directory-pin-v1", "amanah-directory-pin-v2"),
        text.replace(":", ": ", 1),
        json.dumps({**json.loads(text), "chain": [record_to_json(R2)]}, separators=(",", ":")),
        json.dumps({**json.loads(text), "directory_digest": None}, separators=(",", ":")),
        "",
        "null",
    ):
        with pytest.raises(ChainError):
            DirectoryPin.from_json(damaged)


def test_pin_with_a_broken_chain_cannot_be_made() -> None:
    with pytest.raises(ChainError):
        DirectoryPin(K0.verify_key, (R2,))
    with pytest.raises(ChainError):
        DirectoryPin(K0.verify_key, (), 1, None)


@given(st.text(max_size=300))
def test_any_pin_text_raises_only_chain_error(text: str) -> None:
    with pytest.raises(ChainError):
        DirectoryPin.from_json(text)


@settings(max_examples=200)
@given(st.data())
def test_pin_character_change_raises_only_chain_error(data: st.DataObject) -> None:
    # The pin is the client's own state, not signed: a changed digit of its version or
    # digest still reads as a pin. What matters is that nothing but ChainError escapes.
    text = verify_directory(CHAINED, None)[1].to_json()
    position = data.draw(st.integers(0, len(text) - 1))
    replacement = data.draw(st.characters(exclude_characters=text[position]))
    try:
        DirectoryPin.from_json(text[:position] + replacement + text[position + 1 :])
    except ChainError:
        pass

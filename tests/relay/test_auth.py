"""relay.auth.Authenticator without a server: the clock is an argument, so every expiry is
checked at its exact edge."""

from __future__ import annotations

import base64
import hashlib
import time

import pytest

import relay.auth
from crypto.auth import CHALLENGE_SIZE, auth_message
from crypto.card import MemberIdentity
from crypto.keys import SigningKey
from relay.auth import MAX_OUTSTANDING, Authenticator
from relay.errors import ClientError, Unauthorized

NOW = 1_700_000_000.0
CHALLENGE_SECONDS = 60
TOKEN_SECONDS = 900


@pytest.fixture
def relay_key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def auth(relay_key: SigningKey) -> Authenticator:
    return Authenticator(relay_key.verify_key, CHALLENGE_SECONDS, TOKEN_SECONDS)


@pytest.fixture
def member() -> MemberIdentity:
    return MemberIdentity.generate()


def key_of(member: MemberIdentity) -> str:
    return str(member.signing_key.verify_key)


def sign(member: MemberIdentity, relay_key: SigningKey, challenge: bytes) -> bytes:
    return member.signing_key.sign(auth_message(relay_key.verify_key, challenge))


def login(
    auth: Authenticator, relay_key: SigningKey, member: MemberIdentity, now: float = NOW
) -> str:
    challenge = auth.challenge(key_of(member), now)
    return auth.answer(key_of(member), challenge, sign(member, relay_key, challenge), now, True)


def test_challenge_response_gives_a_token_for_the_member(
    auth: Authenticator, relay_key: SigningKey, member: MemberIdentity
) -> None:
    challenge = auth.challenge(key_of(member), NOW)
    assert len(challenge) == CHALLENGE_SIZE
    token = auth.answer(key_of(member), challenge, sign(member, relay_key, challenge), NOW, True)
    assert len(token) == 43 and "=" not in token  # 32 bytes, base64url, no padding
    session = auth.session(token, NOW + 1)
    assert session.verify_key == key_of(member)
    assert session.expires_at == NOW + TOKEN_SECONDS
    assert auth.token_seconds == TOKEN_SECONDS
    assert auth.challenge_seconds == CHALLENGE_SECONDS


def test_challenges_are_fresh(auth: Authenticator, member: MemberIdentity) -> None:
    issued = {auth.challenge(key_of(member), NOW) for _ in range(50)}
    assert len(issued) == 50


def test_a_challenge_is_single_use(
    auth: Authenticator, relay_key: SigningKey, member: MemberIdentity
) -> None:
    challenge = auth.challenge(key_of(member), NOW)
    signature = sign(member, relay_key, challenge)
    auth.answer(key_of(member), challenge, signature, NOW, True)
    with pytest.raises(Unauthorized, match="already used"):
        auth.answer(key_of(member), challenge, signature, NOW, True)


def test_a_wrong_answer_burns_the_challenge(
    auth: Authenticator, relay_key: SigningKey, member: MemberIdentity
) -> None:
    challenge = auth.challenge(key_of(member), NOW)
    with pytest.raises(Unauthorized, match="does not verify"):
        auth.answer(key_of(member), challenge, bytes(64), NOW, True)
    with pytest.raises(Unauthorized, match="already used"):
        auth.answer(key_of(member), challenge, sign(member, relay_key, challenge), NOW, True)


def test_a_challenge_expires_after_its_seconds(
    auth: Authenticator, relay_key: SigningKey, member: MemberIdentity
) -> None:
    on_time = auth.challenge(key_of(member), NOW)
    late = auth.challenge(key_of(member), NOW)
    edge = NOW + CHALLENGE_SECONDS
    auth.answer(key_of(member), on_time, sign(member, relay_key, on_time), edge, True)
    with pytest.raises(Unauthorized, match="expired"):
        auth.answer(key_of(member), late, sign(member, relay_key, late), edge + 0.001, True)


def test_expired_challenges_are_dropped_when_new_ones_are_issued(
    auth: Authenticator, relay_key: SigningKey, member: MemberIdentity
) -> None:
    old = auth.challenge(key_of(member), NOW)
    auth.challenge(key_of(member), NOW + CHALLENGE_SECONDS + 1)  # sweeps the expired
    # Even with a clock that went back, the swept challenge is gone.
    with pytest.raises(Unauthorized):
        auth.answer(key_of(member), old, sign(member, relay_key, old), NOW, True)


def test_a_challenge_is_bound_to_its_key(
    auth: Authenticator, relay_key: SigningKey, member: MemberIdentity
) -> None:
    other = MemberIdentity.generate()
    challenge = auth.challenge(key_of(member), NOW)
    # The other member signs correctly, but the challenge was not issued to them.
    with pytest.raises(Unauthorized):
        auth.answer(key_of(other), challenge, sign(other, relay_key, challenge), NOW, True)
    # ... and that attempt used the challenge up.
    with pytest.raises(Unauthorized, match="already used"):
        auth.answer(key_of(member), challenge, sign(member, relay_key, challenge), NOW, True)


def test_an_answer_for_another_relay_is_refused(
    auth: Authenticator, member: MemberIdentity
) -> None:
    elsewhere = SigningKey.generate()
    challenge = auth.challenge(key_of(member), NOW)
    with pytest.raises(Unauthorized, match="does not verify"):
        auth.answer(key_of(member), challenge, sign(member, elsewhere, challenge), NOW, True)


def test_an_unknown_challenge_is_refused(
    auth: Authenticator, relay_key: SigningKey, member: MemberIdentity
) -> None:
    made_up = bytes(CHALLENGE_SIZE)
    with pytest.raises(Unauthorized):
        auth.answer(key_of(member), made_up, sign(member, relay_key, made_up), NOW, True)
    with pytest.raises(Unauthorized):  # a wrong size is just as unknown, not a ValueError
        auth.answer(key_of(member), b"short", bytes(64), NOW, True)


def test_a_non_member_is_refused_like_a_bad_signature(
    auth: Authenticator, relay_key: SigningKey, member: MemberIdentity
) -> None:
    challenge = auth.challenge(key_of(member), NOW)  # issued: the endpoint tells nothing
    with pytest.raises(Unauthorized) as refused:
        auth.answer(key_of(member), challenge, sign(member, relay_key, challenge), NOW, False)
    bad = auth.challenge(key_of(member), NOW)
    with pytest.raises(Unauthorized) as forged:
        auth.answer(key_of(member), bad, bytes(64), NOW, True)
    assert str(refused.value) == str(forged.value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "amanah-sig1",
        "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqszqgpqyqs3290gq",
        "not a key at all",
        "AMANAH-sig1qqqqqqqq",
    ],
)
def test_a_malformed_key_gets_no_challenge(auth: Authenticator, text: str) -> None:
    with pytest.raises(ClientError, match="not an Amanah signing public key") as refused:
        auth.challenge(text, NOW)
    assert type(refused.value) is ClientError  # a 400, not a 401


def test_a_wrong_length_signature_is_refused(
    auth: Authenticator, relay_key: SigningKey, member: MemberIdentity
) -> None:
    challenge = auth.challenge(key_of(member), NOW)
    with pytest.raises(Unauthorized):
        auth.answer(key_of(member), challenge, sign(member, relay_key, challenge)[:-1], NOW, True)


def test_a_token_expires_after_its_seconds(
    auth: Authenticator, relay_key: SigningKey, member: MemberIdentity
) -> None:
    token = login(auth, relay_key, member)
    assert auth.session(token, NOW + TOKEN_SECONDS).verify_key == key_of(member)
    with pytest.raises(Unauthorized, match="expired"):
        auth.session(token, NOW + TOKEN_SECONDS + 0.001)


def test_expired_tokens_are_forgotten(
    auth: Authenticator, relay_key: SigningKey, member: MemberIdentity
) -> None:
    token = login(auth, relay_key, member)
    auth.challenge(key_of(member), NOW + TOKEN_SECONDS + 1)  # sweeps
    with pytest.raises(Unauthorized):
        auth.session(token, NOW)  # a clock set back does not bring it back


def test_revoke_ends_every_session_of_that_member_only(
    auth: Authenticator, relay_key: SigningKey, member: MemberIdentity
) -> None:
    other = MemberIdentity.generate()
    first, second = login(auth, relay_key, member), login(auth, relay_key, member)
    kept = login(auth, relay_key, other)
    auth.revoke(key_of(member))
    for token in (first, second):
        with pytest.raises(Unauthorized):
            auth.session(token, NOW)
    assert auth.session(kept, NOW).verify_key == key_of(other)
    auth.revoke(key_of(member))  # nothing left: no error


@pytest.mark.parametrize(
    "token",
    ["", "!!!!", "a", "é" * 43, "A" * 43, "A" * 44, "%%%", base64.b64encode(bytes(32)).decode()],
)
def test_malformed_or_unknown_tokens_are_unauthorized(auth: Authenticator, token: str) -> None:
    with pytest.raises(Unauthorized):
        auth.session(token, NOW)


def test_only_a_hash_of_the_token_is_kept(
    auth: Authenticator, relay_key: SigningKey, member: MemberIdentity
) -> None:
    token = login(auth, relay_key, member)
    raw = base64.urlsafe_b64decode(token + "=")
    held = repr(vars(auth))
    assert token not in held and raw.hex() not in held and repr(raw) not in held
    assert hashlib.sha256(raw).hexdigest() not in held  # stored as bytes, not shown as hex
    assert hashlib.sha256(raw).digest() in auth._tokens


def test_outstanding_challenges_are_bounded_oldest_first(
    auth: Authenticator,
    relay_key: SigningKey,
    member: MemberIdentity,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(relay.auth, "MAX_OUTSTANDING", 5)
    issued = [auth.challenge(key_of(member), NOW) for _ in range(8)]
    assert len(auth._challenges) == 5
    for dropped in issued[:3]:
        with pytest.raises(Unauthorized):
            auth.answer(key_of(member), dropped, sign(member, relay_key, dropped), NOW, True)
    for kept in issued[3:]:
        auth.answer(key_of(member), kept, sign(member, relay_key, kept), NOW, True)


def test_the_bound_is_a_flood_not_a_workload() -> None:
    # Each outstanding challenge is ~100 bytes; the bound keeps a flood under a few MB
    # while far exceeding what real members ever hold open at once.
    assert 1_000 <= MAX_OUTSTANDING <= 100_000


def test_a_huge_key_is_refused_without_decoding_it(auth: Authenticator) -> None:
    huge = "amanah-sig1" + "q" * 1_000_000
    started = time.perf_counter()
    with pytest.raises(ClientError):
        auth.challenge(huge, NOW)
    assert time.perf_counter() - started < 0.05

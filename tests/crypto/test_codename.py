"""Codenames: the word list, generation, normalisation, and the keys derived from them.

Most derivations here use the cheapest Argon2id limits libsodium allows (`FAST`), which
exercise the same code path. The tests marked `argon2` run real costs (the production
8 MiB, and a 64 MiB known answer: about a third of a second); deselect them with
`-m "not argon2"`."""

from __future__ import annotations

import hashlib
import hmac
import json
from importlib import resources
from pathlib import Path
from random import Random
from typing import Any

import pytest
from argon2.low_level import Type, hash_secret_raw
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.codename import (
    DEFAULT_PARAMS,
    MAX_WORDS,
    CodenameKeys,
    CodenameParams,
    derive_codename_keys,
    entropy_bits,
    generate_codename,
    normalize_codename,
    word_list,
)
from crypto.errors import CodenameError

# The published EFF large word list, lowercased, one word per line. If this changes, every
# codename ever issued derives different keys: its sources are locked out of their replies.
WORD_LIST_SHA256 = "6d557f0693958fb5e650b68b5bee585eb82cf4da32965505c789e924743bc522"

FAST = CodenameParams(opslimit=1, memlimit=8192)
SALT = bytes(range(16))
VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "codename.json").read_text(encoding="utf-8")
)
CODENAME = "abacus zoom quilt wobble t-shirt yodel drop-down"


# --- the word list -------------------------------------------------------------------


def test_word_list_file_is_pinned() -> None:
    data = resources.files("crypto").joinpath("wordlists/eff_large.txt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == WORD_LIST_SHA256
    lines = data.decode("ascii").split("\n")
    assert lines[-1] == "" and len(lines) == 7777  # one word per line, final newline
    assert tuple(lines[:-1]) == word_list()


def test_word_list_has_7776_unique_lowercase_words() -> None:
    words = word_list()
    assert len(words) == 7776 == len(set(words))
    assert all(w.isascii() and w == w.lower() and w.replace("-", "").isalpha() for w in words)
    assert (words[0], words[-1]) == ("abacus", "zoom")


def test_hyphenated_words_cannot_be_misread() -> None:
    # Normalisation rejoins "t shirt" into "t-shirt"; that is only unambiguous while the
    # first half of every hyphenated word is not itself a word.
    words = set(word_list())
    hyphenated = sorted(w for w in words if "-" in w)
    assert hyphenated == ["drop-down", "felt-tip", "t-shirt", "yo-yo"]
    for word in hyphenated:
        first, second = word.split("-")
        assert first not in words
        assert "-" not in second


def test_word_list_credits_its_source() -> None:
    readme = resources.files("crypto").joinpath("wordlists/README").read_text(encoding="utf-8")
    assert "Electronic Frontier Foundation" in readme
    assert "CC BY 3.0" in readme


# --- generation ----------------------------------------------------------------------


def test_seven_words_are_at_least_90_bits() -> None:
    assert entropy_bits(7) >= 90
    assert entropy_bits(6) < 90


def test_generated_codename_is_canonical() -> None:
    codename = generate_codename()
    words = codename.split(" ")
    assert len(words) == 7
    assert set(words) <= set(word_list())
    assert normalize_codename(codename) == codename
    assert len(generate_codename(10).split(" ")) == 10


def test_generated_codenames_differ() -> None:
    assert len({generate_codename() for _ in range(50)}) == 50


@pytest.mark.parametrize("words", [0, 1, 6, MAX_WORDS + 1])
def test_generate_refuses_too_few_or_too_many_words(words: int) -> None:
    with pytest.raises(ValueError):
        generate_codename(words)


# --- normalisation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed",
    [
        "abacus zoom quilt wobble t-shirt yodel drop-down",
        "Abacus  Zoom-quilt\twobble\nT shirt YODEL drop down",
        "  abacus-zoom-quilt-wobble-t-shirt-yodel-drop-down  ",
        "abacus—zoom–quilt‐wobble t‑shirt yodel drop−down",
        "ＡＢＡＣＵＳ zoom quilt wobble t-shirt yodel drop-down",
        "abacus\u3000zoom\u00a0quilt wobble t--shirt yodel drop - down",
    ],
)
def test_normalisation_accepts_variants(typed: str) -> None:
    assert normalize_codename(typed) == CODENAME


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: repr(c["input"])[:30])
def test_normalisation_refuses_known_bad_input(case: dict[str, str]) -> None:
    with pytest.raises(CodenameError, match=case["error"]) as caught:
        normalize_codename(case["input"])
    message = str(caught.value).lower()
    for piece in case["input"].split():
        # Short pieces ("t", "yo") occur in any sentence; longer ones must not appear.
        if len(piece) >= 4 and piece.lower() not in {"abacus", "shirt"}:
            assert piece.lower() not in message


def test_error_names_the_position_and_not_the_word() -> None:
    with pytest.raises(CodenameError) as caught:
        normalize_codename("abacus zoom quilt wobble secretword yodel drop-down")
    assert "word 5" in str(caught.value)
    assert "secretword" not in str(caught.value)


@given(st.text(max_size=200))
def test_normalisation_of_any_text_raises_only_codename_error(text: str) -> None:
    try:
        normalized = normalize_codename(text)
    except CodenameError:
        return
    assert normalize_codename(normalized) == normalized


separators = st.sampled_from([" ", "  ", "\t", "\n", "-", " - ", "\u2014", "\u00a0"])


@settings(max_examples=50)
@given(
    st.lists(st.sampled_from(word_list()), min_size=7, max_size=12),
    st.lists(separators, min_size=11, max_size=11),
    st.randoms(use_true_random=False),
)
def test_any_spelling_of_a_codename_normalises_to_it(
    words: list[str], between: list[str], random: Random
) -> None:
    typed = words[0] + "".join(sep + word for sep, word in zip(between, words[1:], strict=False))
    typed = "".join(c.upper() if random.random() < 0.5 else c for c in typed)
    assert normalize_codename(typed) == " ".join(words)


# --- derivation ----------------------------------------------------------------------


def test_derivation_is_deterministic() -> None:
    first = derive_codename_keys(CODENAME, SALT, FAST)
    assert derive_codename_keys(CODENAME, SALT, FAST) == first
    assert len(first.login_id) == 64 and int(first.login_id, 16) >= 0


def test_spellings_of_one_codename_give_the_same_keys() -> None:
    typed = "ABACUS zoom-quilt  wobble t shirt yodel drop down"
    assert derive_codename_keys(typed, SALT, FAST) == derive_codename_keys(CODENAME, SALT, FAST)


def test_salt_and_words_change_the_keys() -> None:
    base = derive_codename_keys(CODENAME, SALT, FAST)
    others = [
        derive_codename_keys(CODENAME, bytes(16), FAST),
        derive_codename_keys(CODENAME.replace("zoom", "zone"), SALT, FAST),
        derive_codename_keys(CODENAME.replace("abacus zoom", "zoom abacus"), SALT, FAST),
        derive_codename_keys(CODENAME + " abacus", SALT, FAST),
        derive_codename_keys(CODENAME, SALT, CodenameParams(opslimit=2, memlimit=8192)),
    ]
    for other in others:
        assert other.login_id != base.login_id
        assert other.reply_identity != base.reply_identity


def test_login_id_and_reply_key_are_independent_outputs() -> None:
    keys = derive_codename_keys(CODENAME, SALT, FAST)
    assert keys.login_id != keys.reply_identity.secret_key.hex()


@pytest.mark.parametrize("size", [0, 15, 17, 32])
def test_salt_must_be_16_bytes(size: int) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        derive_codename_keys(CODENAME, bytes(size), FAST)


def test_bad_codename_is_refused_before_any_work() -> None:
    with pytest.raises(CodenameError):
        derive_codename_keys("not a codename", SALT)


def test_repr_shows_no_secret() -> None:
    keys = derive_codename_keys(CODENAME, SALT, FAST)
    text = repr(keys) + str(keys) + f"{keys!r}"
    for secret in (
        keys.login_id,
        keys.reply_identity.secret_key.hex(),
        keys.reply_identity.encode(),
        str(keys.reply_identity.recipient),
    ):
        assert secret.lower() not in text.lower()


@pytest.mark.parametrize(
    "limits",
    [{"opslimit": 0}, {"memlimit": 1024}, {"opslimit": 2**32}, {"memlimit": 2**50}],
)
def test_params_refuse_limits_libsodium_would_refuse(limits: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        CodenameParams(**limits)


def test_default_params_are_the_documented_ones() -> None:
    assert (DEFAULT_PARAMS.opslimit, DEFAULT_PARAMS.memlimit) == (3, 8 * 1024 * 1024)


# --- known answers, and an independent implementation of the construction ------------


def reference_keys(codename: str, salt: bytes, params: CodenameParams) -> tuple[str, bytes]:
    """The documented construction, from argon2-cffi (the reference C Argon2, not
    libsodium) and the standard library's HMAC, sharing no code with crypto/."""
    master = hash_secret_raw(
        codename.encode("utf-8"),
        salt,
        time_cost=params.opslimit,
        memory_cost=params.memlimit // 1024,
        parallelism=1,
        hash_len=64,
        type=Type.ID,
        version=19,
    )

    def hkdf(info: bytes) -> bytes:
        prk = hmac.new(b"", master, hashlib.sha256).digest()
        return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()

    return hkdf(b"amanah-codename-login-v1").hex(), hkdf(b"amanah-codename-reply-v1")


def vector_params(case: dict[str, Any]) -> list[Any]:
    marks = [pytest.mark.argon2] if case["memlimit"] > FAST.memlimit else []
    return [pytest.param(case, marks=marks, id=f"{case['opslimit']}-{case['memlimit']}")]


VALID = [p for case in VECTORS["valid"] for p in vector_params(case)]


@pytest.mark.parametrize("case", VALID)
def test_known_answer(case: dict[str, Any]) -> None:
    assert normalize_codename(case["input"]) == case["normalized"]
    params = CodenameParams(case["opslimit"], case["memlimit"])
    keys = derive_codename_keys(case["input"], bytes.fromhex(case["salt"]), params)
    assert keys.login_id == case["login_id"]
    assert str(keys.reply_identity.recipient) == case["reply_recipient"]


@pytest.mark.parametrize("case", VALID)
def test_known_answer_matches_the_reference_construction(case: dict[str, Any]) -> None:
    params = CodenameParams(case["opslimit"], case["memlimit"])
    login_id, reply_secret = reference_keys(case["normalized"], bytes.fromhex(case["salt"]), params)
    assert login_id == case["login_id"]
    keys = derive_codename_keys(case["input"], bytes.fromhex(case["salt"]), params)
    assert keys.reply_identity.secret_key == reply_secret


@settings(max_examples=20, deadline=None)
@given(
    st.lists(st.sampled_from(word_list()), min_size=7, max_size=9),
    st.binary(min_size=16, max_size=16),
)
def test_derivation_matches_the_reference_construction(words: list[str], salt: bytes) -> None:
    codename = " ".join(words)
    keys = derive_codename_keys(codename, salt, FAST)
    assert (keys.login_id, keys.reply_identity.secret_key) == reference_keys(codename, salt, FAST)


@pytest.mark.argon2
def test_default_cost_matches_the_reference_construction() -> None:
    codename = generate_codename()
    keys = derive_codename_keys(codename, SALT)
    expected = reference_keys(codename, SALT, DEFAULT_PARAMS)
    assert (keys.login_id, keys.reply_identity.secret_key) == expected


def test_keys_type_is_frozen() -> None:
    keys = derive_codename_keys(CODENAME, SALT, FAST)
    assert isinstance(keys, CodenameKeys)
    with pytest.raises(AttributeError):
        keys.login_id = "x"  # type: ignore[misc]

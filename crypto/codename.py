"""Codenames: the receipt a source keeps, and the keys the relay derives from it.

Rules of this module:
- No I/O, except reading this package's own word list once, through importlib.resources.
- A codename is at least 7 words drawn uniformly with `secrets` from the EFF large word
  list (7776 words, log2(7776) = 12.92 bits each): 7 words are 90.4 bits, above the 90
  bits we require, so the codename itself is what resists guessing, not the KDF.
- What a source types is normalised first (NFKC, lowercase, words split on whitespace or
  hyphens); keys are derived from the normalised text only, so "Word  word-word" and
  "word word word" are the same codename.
- Four list words contain a hyphen (drop-down, felt-tip, t-shirt, yo-yo). Their first
  halves are not list words, so "drop down" can only mean "drop-down": normalisation
  rejoins such a pair, and the canonical form keeps the hyphen.
- Errors name a word's position, never the word: what a source typed is a secret.
- Derivation: master = Argon2id(normalised codename, per-relay salt) with 64 bytes of
  output; then HKDF-SHA-256 with distinct labels gives the login id and the X25519 secret
  for replies, so neither output says anything about the other.
"""

from __future__ import annotations

import functools
import importlib.resources
import math
import re
import secrets
import unicodedata
from dataclasses import dataclass, field

import nacl.exceptions
import nacl.pwhash.argon2id

from .errors import CodenameError
from .keys import Identity
from .primitives import hkdf_sha256

WORD_LIST_SIZE = 7776
MIN_WORDS = 7
# Far more than anyone would be asked to remember; a bound on the work a typed codename
# can cause (NFKC can grow a string up to 18 times, so the raw text is bounded first).
MAX_WORDS = 24
_MAX_TEXT = 1024
SALT_SIZE = nacl.pwhash.argon2id.SALTBYTES
_MASTER_SIZE = 64
_LOGIN_INFO = b"amanah-codename-login-v1"
_REPLY_INFO = b"amanah-codename-reply-v1"

# Whitespace, ASCII hyphen-minus, and the dashes a phone keyboard substitutes for it
# (hyphen, non-breaking hyphen, figure dash, en dash, em dash, horizontal bar, minus sign).
_SEPARATORS = re.compile(r"[\s\-\u2010-\u2015\u2212]+")


@dataclass(frozen=True)
class CodenameParams:
    """Argon2id cost. The default is 3 passes over 8 MiB (about 12 ms here). Why so light:
    a codename carries 90 bits of entropy, so no work factor is what keeps it from being
    guessed, even from a stolen database; while the relay derives one per new source and
    per login, on a small host whose memory budget is 100 MiB with 8 uploads in flight
    (libsodium's INTERACTIVE 64 MiB alone would take two thirds of it). Changing these
    values changes every login id: sources of an existing relay could no longer log in.
    Raises ValueError for limits libsodium would refuse."""

    opslimit: int = 3
    memlimit: int = 8 * 1024 * 1024

    def __post_init__(self) -> None:
        argon2id = nacl.pwhash.argon2id
        if not argon2id.OPSLIMIT_MIN <= self.opslimit <= argon2id.OPSLIMIT_MAX:
            raise ValueError("Argon2id opslimit out of range")
        if not argon2id.MEMLIMIT_MIN <= self.memlimit <= argon2id.MEMLIMIT_MAX:
            raise ValueError("Argon2id memlimit out of range")


DEFAULT_PARAMS = CodenameParams()


@dataclass(frozen=True)
class CodenameKeys:
    """What a codename opens: the id the relay files a source's replies under, and the
    identity replies are sealed to. `repr()` shows neither: both link a log line to a
    source."""

    login_id: str = field(repr=False)
    reply_identity: Identity = field(repr=False)

    def __repr__(self) -> str:
        return "CodenameKeys(<redacted>)"


@functools.cache
def word_list() -> tuple[str, ...]:
    """The EFF large word list, in its published order."""
    text = importlib.resources.files(__package__).joinpath("wordlists/eff_large.txt")
    words = tuple(text.read_text(encoding="utf-8").split())
    # A changed list would lock every source out of their replies; fail loudly instead.
    if len(words) != WORD_LIST_SIZE or len(set(words)) != WORD_LIST_SIZE:
        raise RuntimeError("the codename word list is damaged")
    return words


@functools.cache
def _word_set() -> frozenset[str]:
    return frozenset(word_list())


def entropy_bits(words: int) -> float:
    """The entropy of a codename of `words` words drawn from the list."""
    return words * math.log2(WORD_LIST_SIZE)


def generate_codename(words: int = MIN_WORDS) -> str:
    """A fresh codename of `words` words, drawn with `secrets`. Raises ValueError for fewer
    than 7 words (under 90 bits) or more than MAX_WORDS."""
    if not MIN_WORDS <= words <= MAX_WORDS:
        raise ValueError(f"a codename has {MIN_WORDS} to {MAX_WORDS} words")
    choices = word_list()
    return " ".join(secrets.choice(choices) for _ in range(words))


def normalize_codename(text: str) -> str:
    """The canonical form of a typed codename: list words, lowercase, one space apart.
    Raises CodenameError for a word not in the list (naming its position), or for too few
    or too many words."""
    if len(text) > _MAX_TEXT:
        raise CodenameError("codename is too long")
    pieces = [p for p in _SEPARATORS.split(unicodedata.normalize("NFKC", text).lower()) if p]
    words = _rejoin_hyphenated(pieces)
    if len(words) > MAX_WORDS:
        raise CodenameError(f"a codename has at most {MAX_WORDS} words")
    known = _word_set()
    for position, word in enumerate(words, start=1):
        if word not in known:
            raise CodenameError(f"word {position} is not in the codename word list")
    if len(words) < MIN_WORDS:
        raise CodenameError(f"a codename has at least {MIN_WORDS} words; got {len(words)}")
    return " ".join(words)


def _rejoin_hyphenated(pieces: list[str]) -> list[str]:
    """Rejoins a pair like ["t", "shirt"] into the list word "t-shirt". Unambiguous: the
    first half of every hyphenated list word is itself not a list word."""
    known = _word_set()
    words: list[str] = []
    index = 0
    while index < len(pieces):
        joined = "-".join(pieces[index : index + 2])
        if index + 1 < len(pieces) and pieces[index] not in known and joined in known:
            words.append(joined)
            index += 2
        else:
            words.append(pieces[index])
            index += 1
    return words


def derive_codename_keys(
    codename: str, salt: bytes, params: CodenameParams = DEFAULT_PARAMS
) -> CodenameKeys:
    """Derives the login id (64 hex digits) and reply identity from a codename and the
    relay's 16-byte salt. Raises CodenameError for a malformed codename, ValueError for a
    salt of the wrong size."""
    if len(salt) != SALT_SIZE:
        raise ValueError(f"the codename salt is {SALT_SIZE} bytes")
    master = _argon2id(normalize_codename(codename).encode("utf-8"), salt, params)
    login_id = hkdf_sha256(master, b"", _LOGIN_INFO).hex()
    reply_identity = Identity(hkdf_sha256(master, b"", _REPLY_INFO))
    return CodenameKeys(login_id=login_id, reply_identity=reply_identity)


def _argon2id(secret: bytes, salt: bytes, params: CodenameParams) -> bytes:
    try:
        return nacl.pwhash.argon2id.kdf(
            _MASTER_SIZE, secret, salt, opslimit=params.opslimit, memlimit=params.memlimit
        )
    except nacl.exceptions.RuntimeError as exc:
        # libsodium fails only when it cannot allocate memlimit bytes.
        raise MemoryError("Argon2id could not allocate its memory") from exc

"""Every error `crypto` raises, as one tree.

    CryptoError                      never raised itself
    ├── KeyEncodingError             a key, recipient, identity or card string is malformed
    ├── AgeError                     an age file could not be opened (the four failures
    │   │                            of the age test kit, plus armor)
    │   ├── HeaderError              the header is malformed or unsupported
    │   │   └── ArmorError           the ASCII armor around the file is malformed
    │   ├── NoIdentityMatchError     the file is well formed but sealed to other keys
    │   ├── HeaderMACError           the header was changed after it was sealed
    │   └── PayloadError             the body was changed, cut short or extended
    ├── DirectoryError               a signed contact directory is not to be trusted
    │   ├── SignatureError           a signature does not verify, or the document changed
    │   └── ChainError               a directory-key rotation chain is broken or forked
    └── CodenameError                a codename is not one this relay could have issued

Messages say what failed and why. They never contain a key, a byte of plaintext, or
anything a source typed.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base of every error raised by `crypto`. Catch this to catch them all."""


class KeyEncodingError(CryptoError, ValueError):
    """A key string (age recipient or identity, signing key, member card) is malformed:
    wrong prefix, wrong length, bad checksum, or mixed case. Check that it was copied
    whole, without added spaces or line breaks."""


class AgeError(CryptoError):
    """An age file could not be decrypted. Nothing of its payload was released unless
    the subclass says otherwise."""


class HeaderError(AgeError):
    """The age header does not follow the v1 format: not an age file, a version we do not
    speak, non-canonical base64, a malformed stanza, or an X25519 stanza that would give an
    all-zero shared secret. No plaintext was released."""


class ArmorError(HeaderError):
    """The file starts like ASCII-armored age (`-----BEGIN AGE ENCRYPTED FILE-----`) but
    the armor is not strict PEM: bad line lengths, non-canonical base64, or data around
    the block."""


class NoIdentityMatchError(AgeError):
    """The file is well formed, but none of the given identities can open it: it was
    sealed to other keys. Check that the right identity file was used."""


class HeaderMACError(AgeError):
    """An identity unwrapped the file key, but the header's MAC does not verify: the
    header was modified after encryption. No plaintext was released."""


class PayloadError(AgeError):
    """The encrypted payload failed authentication: it was modified, truncated, or has
    data after its final chunk. With streaming decryption, chunks before the failure may
    already have been written: the output must be discarded."""


class DirectoryError(CryptoError):
    """A signed contact directory, or the chain that introduces its key, cannot be
    trusted. Do not send anything to the contacts it lists."""


class SignatureError(DirectoryError):
    """A signature does not verify, or the signed document is not in canonical form:
    the document was changed after it was signed, or signed by another key."""


class ChainError(DirectoryError):
    """The directory key changed, but the rotation records do not lead from the pinned
    key to the new one, or two records disagree about what followed a key (a fork)."""


class CodenameError(CryptoError, ValueError):
    """The codename is not well formed: wrong number of words, or a word that is not in
    the list. Check the spelling of each word."""

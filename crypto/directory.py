"""The signed contact directory, and the chain of records that rotates its signing key.

Rules of this module:
- No I/O and no clock: the relay passes in `issued_at`; a client passes in the document
  bytes and the pin it stored, and stores the pin it gets back.
- The document is canonical JSON (`crypto.canonical`), and only the exact bytes
  `sign_directory` would write are accepted: any other spelling of the same content
  (whitespace, key order, escapes, an uppercase key) is refused, so no byte of an
  accepted document can change without it being rejected.
- The directory signature is Ed25519 over b"amanah-directory-v1\\n" + the canonical JSON
  of the directory object. The label keeps a directory signature from ever being valid
  as any other message the same key signs.
- The signing key changes through rotation records (`crypto.rotation`, re-exported here),
  each signed by both the old and the new key.
- The directory may carry the relay's codename salt (16 bytes, not secret). A source's
  device needs it to derive, from a codename it made itself, the login id and reply key
  the relay would derive: signed here, a relay cannot show one source a salt that links
  it, or locks it out, without signing a second directory its pin would catch. A document
  without the field (a relay from before it) is still valid, and spelled without it.
- A client pins the root key on first use (trust on first use: the first document it sees
  names the root), then accepts only documents whose chain extends the chain it already
  accepted, signed by the chain's last key, with a directory version no older than the
  last one it accepted; the same version must carry the same directory.

Errors (all DirectoryError, so a client can catch one class for "do not trust this"):
- SignatureError: the document is malformed in any way (not JSON, duplicate keys, floats,
  missing, unknown or mistyped fields, a rule of the directory broken, not canonical), or
  the directory signature does not verify. A malformed document is one no honest signer
  produces, so it is treated exactly like a forged one.
- ChainError: the document goes back on what the pin already accepted or cannot be
  reached from it: a chain that does not start at the pinned root, a fork (a different
  successor for a key already seen), a broken record, a document signed by a key that is
  not the chain's last, or a rollback to an older directory version.
"""

from __future__ import annotations

import base64
import hashlib
import re
import types
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from . import canonical
from .canonical import JSONValue
from .card import MemberCard
from .codename import SALT_SIZE as CODENAME_SALT_SIZE
from .errors import ChainError, KeyEncodingError, SignatureError
from .keys import SigningKey, VerifyKey
from .rotation import (
    ROTATION_LABEL,
    RotationRecord,
    record_from_json,
    record_to_json,
    rotate,
    verify_chain,
    verify_key_from_json,
)

__all__ = [
    "FORMAT",
    "ROTATION_LABEL",
    "SIGNATURE_LABEL",
    "Contact",
    "Directory",
    "DirectoryPin",
    "RotationRecord",
    "rotate",
    "sign_directory",
    "verify_directory",
]

FORMAT = "amanah-directory-v1"
PIN_FORMAT = "amanah-directory-pin-v1"
SIGNATURE_LABEL = b"amanah-directory-v1\n"
# Thousands of contacts fit in 1 MiB; the bound caps the work a hostile document causes
# (parsing, and two signature checks per rotation record).
MAX_DOCUMENT_SIZE = 1024 * 1024
# A few paragraphs shown to a source choosing a contact; more is a mistake, not a need.
MAX_DESCRIPTION = 2000
# The de facto URL limit of browsers and servers; onion URLs are far shorter.
MAX_URL = 2048
_DIGEST_SIZE = hashlib.sha256().digest_size

_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_SERVICE_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_CONTACT_FIELDS = frozenset(
    {"name", "description", "members", "push_endpoint", "accepts_originals"}
)
_DIRECTORY_FIELDS = frozenset({"version", "issued_at", "contacts", "services"})
_SALT_FIELD = "codename_salt"
_ENVELOPE_FIELDS = frozenset({"format", "directory", "signing_key", "signature", "chain"})
_PIN_FIELDS = frozenset({"format", "root", "chain", "last_version", "directory_digest"})


def _check_description(text: str) -> None:
    # Control characters (bar newline) could rewrite a terminal showing the description,
    # and a lone surrogate is not text at all.
    if len(text) > MAX_DESCRIPTION:
        raise ValueError("description is too long")
    if any(c != "\n" and unicodedata.category(c) in ("Cc", "Cs") for c in text):
        raise ValueError("description contains control characters")


def _check_url(url: str, what: str) -> None:
    if len(url) > MAX_URL or not url.isprintable() or " " in url:
        raise ValueError(f"{what} must be a URL without spaces or control characters")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{what} must be an http:// or https:// URL")


@dataclass(frozen=True)
class Contact:
    """One organisation that receives drops. Raises ValueError for a name that does not
    match ^[a-z0-9][a-z0-9-]{0,62}$, no members, a member listed twice, an over-long or
    control-character description, or a push endpoint that is not an http(s) URL."""

    name: str
    description: str
    members: tuple[MemberCard, ...]
    push_endpoint: str | None = None
    accepts_originals: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        if not _NAME.fullmatch(self.name):
            raise ValueError("contact name must match ^[a-z0-9][a-z0-9-]{0,62}$")
        _check_description(self.description)
        if not self.members:
            raise ValueError("a contact has at least one member")
        _check_unique_members(self.members)
        if self.push_endpoint is not None:
            _check_url(self.push_endpoint, "push endpoint")
        if not isinstance(self.accepts_originals, bool):
            raise ValueError("accepts_originals is true or false")


def _check_unique_members(members: Iterable[MemberCard]) -> None:
    # Either key alone identifies a member: the relay knows a member by the key they sign
    # with, and a drop sealed to a contact must not open for a member of another. So a
    # repeated recipient or a repeated signing key is refused, not only a repeated card.
    recipients: set[bytes] = set()
    verify_keys: set[bytes] = set()
    for card in members:
        if card.recipient.public_key in recipients or card.verify_key.public_key in verify_keys:
            raise ValueError("a member key appears more than once in the directory")
        recipients.add(card.recipient.public_key)
        verify_keys.add(card.verify_key.public_key)


@dataclass(frozen=True)
class Directory:
    """Who receives drops, and where the relay's onion services are. `version` increases
    with each change; `issued_at` is unix seconds, passed in; `codename_salt` is the
    relay's salt for codename derivation, if it publishes one. Raises ValueError for a
    repeated contact name or member key, a malformed service entry, or a salt that is not
    16 bytes."""

    version: int
    issued_at: int
    contacts: tuple[Contact, ...]
    services: Mapping[str, str] = field(default_factory=dict, hash=False)
    codename_salt: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "contacts", tuple(self.contacts))
        for value, what in ((self.version, "version"), (self.issued_at, "issued_at")):
            if type(value) is not int or not 0 <= value <= canonical.MAX_INT:
                raise ValueError(f"{what} is an integer from 0 to 2**53 - 1")
        names = [contact.name for contact in self.contacts]
        if len(set(names)) != len(names):
            raise ValueError("two contacts have the same name")
        _check_unique_members(card for contact in self.contacts for card in contact.members)
        for name, text in self.services.items():
            if not _SERVICE_NAME.fullmatch(name):
                raise ValueError("service names match ^[a-z][a-z0-9_]{0,63}$")
            if len(text) > MAX_URL or not text.isprintable():
                raise ValueError("a service value is one line of printable text")
        # A read-only copy, so a frozen directory cannot change under its signature.
        object.__setattr__(self, "services", types.MappingProxyType(dict(self.services)))
        salt = self.codename_salt
        if salt is not None and (type(salt) is not bytes or len(salt) != CODENAME_SALT_SIZE):
            raise ValueError(f"the codename salt is {CODENAME_SALT_SIZE} bytes")

    def contact(self, name: str) -> Contact | None:
        """The contact called `name`, if any."""
        return next((c for c in self.contacts if c.name == name), None)


@dataclass(frozen=True)
class DirectoryPin:
    """What a client stores between fetches: the root key it trusts, the rotation chain it
    has accepted, and the last directory version (with its SHA-256) it accepted. A pin
    made from a known root alone has accepted no directory yet. Raises ChainError if the
    chain does not lead on from the root."""

    root: VerifyKey
    chain: tuple[RotationRecord, ...] = ()
    last_version: int | None = None
    directory_digest: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "chain", tuple(self.chain))
        if (self.last_version is None) != (self.directory_digest is None):
            raise ChainError("pin: a last version comes with its directory digest")
        if self.last_version is not None and (
            type(self.last_version) is not int or not 0 <= self.last_version <= canonical.MAX_INT
        ):
            raise ChainError("pin: the last version is out of range")
        if self.directory_digest is not None and len(self.directory_digest) != _DIGEST_SIZE:
            raise ChainError("pin: the directory digest is not a SHA-256")
        verify_chain(self.root, self.chain)

    @property
    def current_key(self) -> VerifyKey:
        """The key the next directory must be signed with (or rotated on from)."""
        return self.chain[-1].new_key if self.chain else self.root

    def to_json(self) -> str:
        """The pin as canonical JSON text, for the client to store."""
        digest = self.directory_digest
        value: JSONValue = {
            "format": PIN_FORMAT,
            "root": str(self.root),
            "chain": [record_to_json(record) for record in self.chain],
            "last_version": self.last_version,
            "directory_digest": None if digest is None else digest.hex(),
        }
        return canonical.dumps(value).decode("utf-8")

    @classmethod
    def from_json(cls, text: str) -> DirectoryPin:
        """Reads a stored pin. Raises ChainError if it is damaged in any way."""
        try:
            value = canonical.fields(canonical.loads(text.encode("utf-8")), _PIN_FIELDS, "pin")
            if value["format"] != PIN_FORMAT:
                raise ValueError("pin: unknown format")
            chain = canonical.as_list(value["chain"], "pin: chain")
            version, digest = value["last_version"], value["directory_digest"]
            pin = cls(
                verify_key_from_json(value["root"], "pin: root"),
                tuple(record_from_json(r, f"pin: record {i}") for i, r in enumerate(chain, 1)),
                None if version is None else canonical.as_int(version, "pin: last_version"),
                None if digest is None else bytes.fromhex(canonical.as_str(digest, "pin")),
            )
        except (ValueError, KeyEncodingError) as exc:
            raise ChainError(f"the stored directory pin is damaged: {exc}") from None
        if pin.to_json() != text:
            raise ChainError("the stored directory pin is damaged: not in canonical form")
        return pin


def sign_directory(
    directory: Directory, key: SigningKey, chain: Iterable[RotationRecord] = ()
) -> bytes:
    """The signed document: canonical JSON holding the directory, the signing key, the
    signature and the rotation chain from the root. Raises ChainError if `chain` is broken
    or does not end at `key` (clients would refuse the document)."""
    records = tuple(chain)
    root = records[0].old_key if records else key.verify_key
    if verify_chain(root, records) != key.verify_key:
        raise ChainError("the rotation chain does not end at the signing key")
    signature = key.sign(SIGNATURE_LABEL + canonical.dumps(_directory_to_json(directory)))
    return _envelope(directory, key.verify_key, signature, records)


def verify_directory(document: bytes, pin: DirectoryPin | None) -> tuple[Directory, DirectoryPin]:
    """Checks a signed document against the client's pin (None on first use: the root is
    then the first record's old key, or the signing key if there is no chain). Returns the
    directory and the pin to store in place of the old one. Raises SignatureError or
    ChainError (see the module docstring); nothing else, whatever the bytes."""
    directory, signing_key, signature, chain = _parse_document(document)
    if pin is None:
        pin = DirectoryPin(chain[0].old_key if chain else signing_key)
    _check_extends(pin, chain)
    if verify_chain(pin.root, chain) != signing_key:
        raise ChainError("the directory is not signed by the current key of its chain")
    directory_bytes = canonical.dumps(_directory_to_json(directory))
    signing_key.verify(SIGNATURE_LABEL + directory_bytes, signature)
    digest = hashlib.sha256(directory_bytes).digest()
    _check_not_rollback(pin, directory.version, digest)
    return directory, DirectoryPin(pin.root, chain, directory.version, digest)


def _check_extends(pin: DirectoryPin, chain: tuple[RotationRecord, ...]) -> None:
    if chain and chain[0].old_key != pin.root:
        raise ChainError("the rotation chain does not start at the pinned key")
    for position, (accepted, offered) in enumerate(zip(pin.chain, chain, strict=False), 1):
        if accepted != offered:
            what = "fork: a different key" if accepted.new_key != offered.new_key else "a change"
            raise ChainError(f"rotation record {position}: {what} where the pin has a record")
    if len(chain) < len(pin.chain):
        raise ChainError("the rotation chain is shorter than the one accepted: a retired key")


def _check_not_rollback(pin: DirectoryPin, version: int, digest: bytes) -> None:
    if pin.last_version is None:
        return
    if version < pin.last_version:
        raise ChainError("rollback: the directory is older than the one already accepted")
    if version == pin.last_version and digest != pin.directory_digest:
        # One version with two contents means two clients were shown different lists.
        raise ChainError("the directory differs from the one accepted with the same version")


def _parse_document(
    document: bytes,
) -> tuple[Directory, VerifyKey, bytes, tuple[RotationRecord, ...]]:
    """Reads the envelope. Raises SignatureError if it is malformed or not canonical."""
    if len(document) > MAX_DOCUMENT_SIZE:
        raise SignatureError("directory document: too large")
    try:
        value = canonical.fields(canonical.loads(document), _ENVELOPE_FIELDS, "document")
        if value["format"] != FORMAT:
            raise ValueError("document: unknown format")
        directory = _directory_from_json(value["directory"])
        signing_key = verify_key_from_json(value["signing_key"], "signing_key")
        signature = canonical.as_base64(value["signature"], "signature")
        chain = tuple(
            record_from_json(record, f"chain record {position}")
            for position, record in enumerate(canonical.as_list(value["chain"], "chain"), 1)
        )
        if _envelope(directory, signing_key, signature, chain) != document:
            raise ValueError("document is not in canonical form")
    except (ValueError, KeyEncodingError) as exc:
        raise SignatureError(f"directory document is malformed: {exc}") from None
    return directory, signing_key, signature, chain


def _envelope(
    directory: Directory, key: VerifyKey, signature: bytes, chain: tuple[RotationRecord, ...]
) -> bytes:
    value: JSONValue = {
        "format": FORMAT,
        "directory": _directory_to_json(directory),
        "signing_key": str(key),
        "signature": base64.b64encode(signature).decode("ascii"),
        "chain": [record_to_json(record) for record in chain],
    }
    return canonical.dumps(value)


def _directory_to_json(directory: Directory) -> JSONValue:
    value: dict[str, JSONValue] = {
        "version": directory.version,
        "issued_at": directory.issued_at,
        "contacts": [_contact_to_json(contact) for contact in directory.contacts],
        "services": dict(directory.services),
    }
    if directory.codename_salt is not None:
        value[_SALT_FIELD] = base64.b64encode(directory.codename_salt).decode("ascii")
    return value


def _contact_to_json(contact: Contact) -> JSONValue:
    return {
        "name": contact.name,
        "description": contact.description,
        "members": [card.encode() for card in contact.members],
        "push_endpoint": contact.push_endpoint,
        "accepts_originals": contact.accepts_originals,
    }


def _directory_from_json(value: JSONValue) -> Directory:
    names = _DIRECTORY_FIELDS
    if isinstance(value, dict) and _SALT_FIELD in value:
        names = names | {_SALT_FIELD}
    fields = canonical.fields(value, names, "directory")
    contacts = canonical.as_list(fields["contacts"], "directory: contacts")
    services = canonical.as_object(fields["services"], "directory: services")
    salt = None
    if _SALT_FIELD in fields:
        salt = canonical.as_base64(fields[_SALT_FIELD], "directory: codename_salt")
    return Directory(
        version=canonical.as_int(fields["version"], "directory: version"),
        issued_at=canonical.as_int(fields["issued_at"], "directory: issued_at"),
        contacts=tuple(_contact_from_json(c, f"contact {i}") for i, c in enumerate(contacts, 1)),
        services={k: canonical.as_str(v, "directory: services") for k, v in services.items()},
        codename_salt=salt,
    )


def _contact_from_json(value: JSONValue, where: str) -> Contact:
    fields = canonical.fields(value, _CONTACT_FIELDS, where)
    name = canonical.as_str(fields["name"], f"{where}: name")
    description = canonical.as_str(fields["description"], f"{where}: description")
    members = canonical.as_list(fields["members"], f"{where}: members")
    cards = tuple(MemberCard.parse(canonical.as_str(m, f"{where}: members")) for m in members)
    endpoint = fields["push_endpoint"]
    if endpoint is not None:
        endpoint = canonical.as_str(endpoint, f"{where}: push_endpoint")
    originals = canonical.as_bool(fields["accepts_originals"], f"{where}: accepts_originals")
    try:
        return Contact(name, description, cards, endpoint, originals)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None

"""Contacts as the operator manages them, and the signed directory that publishes them.

Every change (add, remove, rotate a member) is written to the store and followed by a
new directory version signed with the relay's directory key, so sources and contacts
always see who receives, and with which keys, under the relay's signature.
"""

from __future__ import annotations

from collections.abc import Mapping

from crypto.card import MemberCard
from crypto.directory import Contact as DirectoryContact
from crypto.directory import Directory, sign_directory, verify_directory
from crypto.errors import KeyEncodingError
from crypto.keys import SigningKey
from onion.address import ClientAuthKey

from .datadir import RelayKeys
from .errors import ClientError, Conflict, NotFound
from .store import Contact, MemberKeys, Store


def parse_card(text: str) -> tuple[MemberCard, MemberKeys]:
    """A member card from the command line. Raises ClientError with a hint."""
    try:
        card = MemberCard.parse(text)
    except KeyEncodingError as exc:
        raise ClientError(
            f"not a valid member card ({exc}); it is the line `amanah-inbox keygen` printed"
        ) from None
    keys = MemberKeys(
        card.recipient.fingerprint, card.encode(), str(card.recipient), str(card.verify_key)
    )
    return card, keys


def _directory_contact(contact: Contact) -> DirectoryContact:
    return DirectoryContact(
        name=contact.name,
        description=contact.description,
        members=tuple(MemberCard.parse(m.card) for m in contact.members),
        push_endpoint=contact.push_endpoint,
        accepts_originals=contact.accepts_originals,
    )


# Versions lost to another publisher before this one gives up (each loss is one other
# directory signed in the same moment).
PUBLISH_ATTEMPTS = 5


async def publish_directory(
    store: Store,
    key: SigningKey,
    now: int,
    services: Mapping[str, str] | None = None,
    codename_salt: bytes | None = None,
) -> int:
    """Signs the current contacts, and the relay's onion addresses (`services`: service
    name to `….onion`, e.g. "source" and "journalist"), and its codename salt (which a
    source's `amanah-drop` needs to derive its login on the device), as the next
    directory version. Returns the version.

    Another process may sign the same version meanwhile: the running relay when it sees
    new onion keys, while `amanah keys rotate` publishes them too. The store keeps the
    first; this one is then signed again, as the version after it, from the contacts as
    they are now."""
    attempts = PUBLISH_ATTEMPTS
    while True:
        latest = await store.latest_directory()
        version = 1 if latest is None else latest[0] + 1
        contacts = tuple(_directory_contact(c) for c in await store.list_contacts())
        directory = Directory(version, now, contacts, dict(services or {}), codename_salt)
        document = sign_directory(directory, key)
        try:
            await store.save_directory(version, now, document)
        except Conflict:
            attempts -= 1
            if not attempts:
                raise
            continue
        return version


async def publish_codename_salt(store: Store, keys: RelayKeys, now: int) -> int | None:
    """Signs a new directory version when the latest one lacks this relay's codename salt
    (a data directory from before sources could seal on their devices). Returns the new
    version, or None when nothing needed publishing."""
    latest = await store.latest_directory()
    if latest is None:
        return None
    published, _ = verify_directory(latest[1], None)
    if published.codename_salt == keys.codename_salt:
        return None
    return await publish_directory(
        store, keys.directory_key, now, dict(published.services), keys.codename_salt
    )


async def add_contact(
    store: Store,
    name: str,
    cards: list[str],
    description: str,
    accepts_originals: bool,
    now: int,
) -> list[tuple[str, ClientAuthKey]]:
    """Registers a contact, with a new client-auth key pair per member for the journalist
    onion service (the public half is stored). Returns (member fingerprint, key pair) for
    each member: the private halves exist only in this return value, for the operator to
    hand over once. Raises ClientError for a bad name or card, Conflict if it exists."""
    if not cards:
        raise ClientError("a contact needs at least one --member CARD")
    parsed = [parse_card(c) for c in cards]
    rows = [keys for _, keys in parsed]
    try:  # validate exactly as the directory will, before anything is stored
        DirectoryContact(name, description, tuple(card for card, _ in parsed))
    except ValueError as exc:
        raise ClientError(str(exc)) from None
    issued = [(row.fingerprint, ClientAuthKey.generate()) for row in rows]
    await store.add_contact(
        name,
        description,
        None,
        accepts_originals,
        rows,
        now,
        onion_auth={fingerprint: key.public_base32 for fingerprint, key in issued},
    )
    return issued


async def rotate_member(
    store: Store, name: str, old_card: str, new_card: str, now: int
) -> tuple[str, ClientAuthKey]:
    """Replaces one member's keys, and their client-auth key for the journalist onion
    service (the old one is withdrawn with the old member row). Drops already sealed stay
    sealed to the old key (and record its fingerprint); new drops use the new one.
    Returns (new fingerprint, new client-auth key pair). Raises NotFound, ClientError."""
    old, _ = parse_card(old_card)
    _, new_row = parse_card(new_card)
    contact = await store.get_contact(name)
    if not any(m.fingerprint == old.recipient.fingerprint for m in contact.members):
        raise NotFound(f"contact {name!r} has no member with that card")
    auth = ClientAuthKey.generate()
    await store.replace_member(
        name, old.recipient.fingerprint, new_row, now, onion_auth=auth.public_base32
    )
    return new_row.fingerprint, auth

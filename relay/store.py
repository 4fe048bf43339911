"""The relay's SQLite database: contacts, directories, sources, drops, replies, events.

Rules:
- This is the only module that imports aiosqlite. Its errors are translated here: a
  duplicate is `Conflict`, a reference to something missing is `NotFound`, anything else
  from the database is `StoreError`. Messages name the kind of thing, never its value.
- Every connection runs with journal_mode=WAL (readers do not block the writer),
  synchronous=FULL (a commit survives a power cut, so an acknowledged drop is not lost),
  secure_delete=ON (deleted rows are overwritten with zeros, not just unlinked from the
  b-tree) and foreign_keys=ON (the cascades below are real). `open()` checks they took.
- WAL keeps old page images until it is checkpointed, so every deletion ends with
  `checkpoint()`: a TRUNCATE checkpoint that copies the zeroed pages into the database and
  empties the WAL file. Without it a deleted drop's row could be read back from the WAL.
- A drop row is written only after all its blobs are fsynced, in one transaction with its
  blobs, contacts and keys: a drop in the database is complete. It is deleted when its last
  waiting contact acknowledges it or is removed; the caller then unlinks its blobs.
- Every write that touches more than one row is one transaction (BEGIN IMMEDIATE, so two
  processes fail fast on the busy timeout rather than deadlocking on a lock upgrade). One
  asyncio lock serialises this connection's transactions: statements of two tasks never mix.
- Queries are parameterised; no value is ever formatted into SQL.
- The schema is a list of migrations; `schema_version` records how many have run, each runs
  in its own transaction, and a database newer than this code is refused, never touched.
- Times are integers (seconds) passed in by the caller, so that tests control the clock.
- Nothing here logs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple, cast

import aiosqlite

from .errors import Conflict, NotFound, StoreError

BUSY_TIMEOUT_MS = 5000
EVENTS_KEPT = 1000  # the event log is for an operator's eyes; a flood must not fill the disk
SealedOn = Literal["relay", "device"]
SEALED_ON: tuple[SealedOn, ...] = ("relay", "device")


@dataclass(frozen=True, slots=True)
class Member:
    fingerprint: str  # of the age recipient
    contact: str
    card: str
    recipient: str  # age1...
    verify_key: str  # amanah-sig1...


@dataclass(frozen=True, slots=True)
class Contact:
    name: str
    description: str
    push_endpoint: str | None
    accepts_originals: bool
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Blob:
    name: str
    size: int
    sha256: str  # hex


@dataclass(frozen=True, slots=True)
class Drop:
    id: str
    source_login: str | None
    created_at: int
    sealed_on: SealedOn
    total_size: int
    blobs: tuple[Blob, ...]
    contacts: tuple[str, ...]  # every contact it was addressed to, acknowledged or not
    key_fingerprints: tuple[str, ...]  # the member keys it was sealed to


@dataclass(frozen=True, slots=True)
class Reply:
    id: str
    source_login: str
    drop_id: str | None
    contact: str
    created_at: int
    size: int


@dataclass(frozen=True, slots=True)
class Event:
    at: int
    kind: str
    detail: str


class NewSource(NamedTuple):
    """A source to register with its first drop."""

    login_id: str
    reply_recipient: str
    reply_handle: str
    created_at: int


class MemberKeys(NamedTuple):
    """A member to register: a plain (fingerprint, card, recipient, verify_key) tuple also
    does."""

    fingerprint: str
    card: str
    recipient: str
    verify_key: str


Migration = tuple[str, ...]  # statements, run in order in one transaction

_V1: Migration = (
    """CREATE TABLE contacts (
        name TEXT PRIMARY KEY,
        description TEXT NOT NULL,
        push_endpoint TEXT,
        accepts_originals INTEGER NOT NULL CHECK (accepts_originals IN (0, 1)),
        created_at INTEGER NOT NULL
    ) STRICT""",
    """CREATE TABLE members (
        fingerprint TEXT PRIMARY KEY,
        contact TEXT NOT NULL REFERENCES contacts (name) ON DELETE CASCADE,
        card TEXT NOT NULL UNIQUE,
        recipient TEXT NOT NULL,
        verify_key TEXT NOT NULL UNIQUE,
        added_at INTEGER NOT NULL
    ) STRICT""",
    "CREATE INDEX members_by_contact ON members (contact)",
    """CREATE TABLE directories (
        version INTEGER PRIMARY KEY,
        issued_at INTEGER NOT NULL,
        document BLOB NOT NULL
    ) STRICT""",
    # A source is known by its login id (derived from the codename) and answered through
    # its reply handle: a random name that contacts see in drop manifests, so a reply can
    # be sent after the drop itself is deleted, without telling contacts the login id.
    """CREATE TABLE sources (
        login_id TEXT PRIMARY KEY,
        reply_recipient TEXT NOT NULL,
        reply_handle TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    ) STRICT""",
    # Which contacts a source has written to: only they may reply to it.
    """CREATE TABLE source_contacts (
        source_login TEXT NOT NULL REFERENCES sources (login_id) ON DELETE CASCADE,
        contact TEXT NOT NULL REFERENCES contacts (name) ON DELETE CASCADE,
        PRIMARY KEY (source_login, contact)
    ) STRICT""",
    """CREATE TABLE drops (
        id TEXT PRIMARY KEY,
        source_login TEXT REFERENCES sources (login_id) ON DELETE SET NULL,
        created_at INTEGER NOT NULL,
        sealed_on TEXT NOT NULL CHECK (sealed_on IN ('relay', 'device')),
        total_size INTEGER NOT NULL CHECK (total_size >= 0)
    ) STRICT""",
    "CREATE INDEX drops_by_source ON drops (source_login)",
    """CREATE TABLE drop_blobs (
        drop_id TEXT NOT NULL REFERENCES drops (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        size INTEGER NOT NULL CHECK (size >= 0),
        sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
        PRIMARY KEY (drop_id, name)
    ) STRICT""",
    # The contact reference cascades so that a contact added later under a removed one's
    # name never sees the old contact's drops.
    """CREATE TABLE drop_contacts (
        drop_id TEXT NOT NULL REFERENCES drops (id) ON DELETE CASCADE,
        contact TEXT NOT NULL REFERENCES contacts (name) ON DELETE CASCADE,
        acked_at INTEGER,
        PRIMARY KEY (drop_id, contact)
    ) STRICT""",
    "CREATE INDEX drop_contacts_by_contact ON drop_contacts (contact, acked_at)",
    # No reference to members: after a key rotation, this is how a contact learns that a
    # waiting drop needs the old key.
    """CREATE TABLE drop_keys (
        drop_id TEXT NOT NULL REFERENCES drops (id) ON DELETE CASCADE,
        contact TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        PRIMARY KEY (drop_id, fingerprint)
    ) STRICT""",
    # Replies outlive the drop they answer (it is deleted once acknowledged) and the
    # contact that wrote them, so neither is a reference.
    """CREATE TABLE replies (
        id TEXT PRIMARY KEY,
        source_login TEXT NOT NULL REFERENCES sources (login_id) ON DELETE CASCADE,
        drop_id TEXT,
        contact TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        size INTEGER NOT NULL CHECK (size >= 0)
    ) STRICT""",
    "CREATE INDEX replies_by_source ON replies (source_login, created_at)",
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    ) STRICT""",
)

# v2 (issue 6): each member's X25519 client-auth public key for the journalist onion
# service, in base32 as tor's ClientAuthV3 takes it. Members added before v2 have none
# until rotated. The row goes with its member (a removed or rotated member's key is
# withdrawn from the service because it is no longer here).
_V2: Migration = (
    """CREATE TABLE member_onion_auth (
        fingerprint TEXT PRIMARY KEY REFERENCES members (fingerprint) ON DELETE CASCADE,
        public_key TEXT NOT NULL UNIQUE CHECK (length(public_key) = 52),
        added_at INTEGER NOT NULL
    ) STRICT""",
)

MIGRATIONS: tuple[Migration, ...] = (_V1, _V2)

_DUPLICATE = frozenset({"SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"})
_MISSING = "SQLITE_CONSTRAINT_FOREIGNKEY"
_STRICT_TABLES = (3, 37, 0)  # the SQLite that first understood STRICT
_PRAGMAS = ("journal_mode", "synchronous", "secure_delete", "foreign_keys", "busy_timeout")
_REQUIRED_PRAGMAS: dict[str, str | int] = {
    "journal_mode": "wal",
    "synchronous": 2,  # FULL
    "secure_delete": 1,
    "foreign_keys": 1,
}


class _DropQueries(NamedTuple):
    """Four queries that load a set of drops: the rows, then their blobs, contacts and keys
    (each in insertion order, so a drop reads back exactly as it was added)."""

    drops: str
    blobs: str
    contacts: str
    keys: str


_ONE_DROP = _DropQueries(
    "SELECT id, source_login, created_at, sealed_on, total_size FROM drops WHERE id = ?",
    "SELECT drop_id, name, size, sha256 FROM drop_blobs WHERE drop_id = ? ORDER BY rowid",
    "SELECT drop_id, contact FROM drop_contacts WHERE drop_id = ? ORDER BY rowid",
    "SELECT drop_id, fingerprint FROM drop_keys WHERE drop_id = ? ORDER BY rowid",
)

# Parameters: (contact, include_acked), the same four times.
_DROPS_FOR_CONTACT = _DropQueries(
    "SELECT d.id, d.source_login, d.created_at, d.sealed_on, d.total_size FROM drops AS d"
    " JOIN drop_contacts AS dc ON dc.drop_id = d.id"
    " WHERE dc.contact = ? AND (? OR dc.acked_at IS NULL) ORDER BY d.created_at, d.rowid",
    "SELECT b.drop_id, b.name, b.size, b.sha256 FROM drop_blobs AS b"
    " JOIN drop_contacts AS dc ON dc.drop_id = b.drop_id"
    " WHERE dc.contact = ? AND (? OR dc.acked_at IS NULL) ORDER BY b.rowid",
    "SELECT c.drop_id, c.contact FROM drop_contacts AS c"
    " JOIN drop_contacts AS dc ON dc.drop_id = c.drop_id"
    " WHERE dc.contact = ? AND (? OR dc.acked_at IS NULL) ORDER BY c.rowid",
    "SELECT k.drop_id, k.fingerprint FROM drop_keys AS k"
    " JOIN drop_contacts AS dc ON dc.drop_id = k.drop_id"
    " WHERE dc.contact = ? AND (? OR dc.acked_at IS NULL) ORDER BY k.rowid",
)


class Store:
    """The open database. Make one with `await Store.open(path)`; close it with `close()`
    or `async with`. Every method raises StoreError if the database fails, besides the
    errors it names."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        """Use `Store.open()`."""
        self._db: aiosqlite.Connection | None = connection
        self._lock = asyncio.Lock()

    # Opening and closing

    @classmethod
    async def open(cls, path: Path, *, migrations: Sequence[Migration] = MIGRATIONS) -> Store:
        """Opens (creating it 0600 if needed) and migrates the database at `path`.

        Raises StoreError if it cannot be opened, if a required PRAGMA does not take, if a
        migration fails (that migration is rolled back), or if the database was written by
        a newer relay (its schema version is above `len(migrations)`)."""
        if aiosqlite.sqlite_version_info < _STRICT_TABLES:
            raise StoreError(f"SQLite {aiosqlite.sqlite_version} is too old; 3.37 is needed")
        try:
            await asyncio.to_thread(_create_private_file, path)
            connection = await aiosqlite.connect(path, isolation_level=None)
        except (OSError, aiosqlite.Error) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else exc
            raise StoreError(f"failed to open the database: {reason}") from exc
        store = cls(connection)
        try:
            await store._configure()
            await store._migrate(migrations)
        except BaseException:
            await store.close()
            raise
        return store

    async def close(self) -> None:
        """Closes the connection. Idempotent."""
        if self._db is not None:
            connection, self._db = self._db, None
            async with self._lock:
                await connection.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _configure(self) -> None:
        # busy_timeout first, so that switching to WAL waits for another process's lock.
        async with self._locked("configure the database") as db:
            await _run(db, f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_MS)}")
            await _run(db, "PRAGMA journal_mode = WAL")
            await _run(db, "PRAGMA synchronous = FULL")
            await _run(db, "PRAGMA secure_delete = ON")
            await _run(db, "PRAGMA foreign_keys = ON")
        settings = await self.pragmas()
        for name, wanted in _REQUIRED_PRAGMAS.items():
            if settings[name] != wanted:
                raise StoreError(f"the database refused PRAGMA {name} = {wanted}")

    async def _migrate(self, migrations: Sequence[Migration]) -> None:
        async with self._transaction("prepare the schema") as db:
            await _run(
                db,
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL) STRICT",
            )
            await _run(db, "INSERT OR IGNORE INTO schema_version (id, version) VALUES (1, 0)")
        known = len(migrations)
        while True:
            # One transaction per migration, re-reading the version inside it: another
            # process may have migrated while this one waited for the lock.
            async with self._transaction("migrate the schema") as db:
                (version,) = await _one(db, "SELECT version FROM schema_version WHERE id = 1")
                if version > known:
                    raise StoreError(
                        f"the database has schema version {version}, newer than this relay"
                        f" knows ({known}); run a newer amanah"
                    )
                if version == known:
                    return
                for statement in migrations[version]:
                    await _run(db, statement)
                await _run(db, "UPDATE schema_version SET version = ? WHERE id = 1", (version + 1,))

    async def schema_version(self) -> int:
        """How many migrations this database has run."""
        async with self._locked("read the schema version") as db:
            (version,) = await _one(db, "SELECT version FROM schema_version WHERE id = 1")
        return int(version)

    async def pragmas(self) -> dict[str, str | int]:
        """The connection settings that the rules above depend on, as SQLite reports them."""
        settings: dict[str, str | int] = {}
        async with self._locked("read the database settings") as db:
            for name in _PRAGMAS:
                (settings[name],) = await _one(db, f"PRAGMA {name}")
        return settings

    async def checkpoint(self) -> None:
        """Copies the WAL into the database and truncates it, so that old page images of
        deleted rows do not outlive the deletion. Called after every deletion; call it
        before copying the database file too."""
        async with self._locked("checkpoint the database") as db:
            await _run(db, "PRAGMA wal_checkpoint(TRUNCATE)")

    # Contacts

    async def add_contact(
        self,
        name: str,
        description: str,
        push_endpoint: str | None,
        accepts_originals: bool,
        members: Sequence[tuple[str, str, str, str]],
        now: int,
        onion_auth: Mapping[str, str] | None = None,
    ) -> Contact:
        """Registers a contact and its members, each (fingerprint, card, recipient,
        verify_key), and the members' client-auth public keys (`onion_auth`: fingerprint to
        base32 key), in one transaction. Raises ValueError without members, Conflict if
        the name, or a member's fingerprint, card, verify key or client-auth key, is
        registered already."""
        if not members:
            raise ValueError("a contact needs at least one member")
        async with self._transaction("add a contact") as db:
            with _constraints(duplicate="a contact with that name exists already"):
                await _run(
                    db,
                    "INSERT INTO contacts (name, description, push_endpoint, accepts_originals,"
                    " created_at) VALUES (?, ?, ?, ?, ?)",
                    (name, description, push_endpoint, int(accepts_originals), now),
                )
            for member in members:
                await _insert_member(db, name, MemberKeys(*member), now)
            for fingerprint, public_key in (onion_auth or {}).items():
                await _insert_onion_auth(db, fingerprint, public_key, now)
            return await _load_contact(db, name)

    async def list_contacts(self) -> list[Contact]:
        """Every contact with its members, by name."""
        async with self._transaction("list contacts", write=False) as db:
            rows = await db.execute_fetchall(
                "SELECT name, description, push_endpoint, accepts_originals FROM contacts"
                " ORDER BY name"
            )
            members = await db.execute_fetchall(
                "SELECT fingerprint, contact, card, recipient, verify_key FROM members"
                " ORDER BY added_at, rowid"
            )
        by_contact: dict[str, list[Member]] = {}
        for member in members:
            by_contact.setdefault(member[1], []).append(Member(*member))
        return [_contact(row, by_contact.get(row[0], [])) for row in rows]

    async def get_contact(self, name: str) -> Contact:
        """The contact and its members. Raises NotFound."""
        async with self._transaction("read a contact", write=False) as db:
            return await _load_contact(db, name)

    async def remove_contact(self, name: str) -> list[str]:
        """Removes a contact, its members and its place on every drop. Returns the ids of
        the drops that no other contact was still waiting for: they are deleted here, and
        the caller deletes their blobs. Raises NotFound."""
        async with self._transaction("remove a contact") as db:
            orphans = [
                drop_id
                for (drop_id,) in await db.execute_fetchall(
                    "SELECT dc.drop_id FROM drop_contacts AS dc WHERE dc.contact = ?"
                    " AND NOT EXISTS (SELECT 1 FROM drop_contacts AS other"
                    " WHERE other.drop_id = dc.drop_id AND other.contact != dc.contact"
                    " AND other.acked_at IS NULL) ORDER BY dc.rowid",
                    (name,),
                )
            ]
            if not await _run(db, "DELETE FROM contacts WHERE name = ?", (name,)):
                raise NotFound("no such contact")
            # members and drop_contacts rows went with it (ON DELETE CASCADE).
            await _run(db, "DELETE FROM drop_keys WHERE contact = ?", (name,))
            await _run_many(db, "DELETE FROM drops WHERE id = ?", [(i,) for i in orphans])
        await self.checkpoint()
        return orphans

    async def replace_member(
        self,
        contact: str,
        old_fingerprint: str,
        new: tuple[str, str, str, str],
        now: int,
        onion_auth: str | None = None,
    ) -> Member:
        """Replaces one member key of a contact with `new` (fingerprint, card, recipient,
        verify_key), e.g. after a rotation; the old member's client-auth key goes with it,
        and `onion_auth` (base32) becomes the new member's. Raises NotFound if the contact
        has no member `old_fingerprint`, Conflict if the new fingerprint, card or verify
        key is registered (to anyone else)."""
        async with self._transaction("replace a member") as db:
            deleted = await _run(
                db,
                "DELETE FROM members WHERE contact = ? AND fingerprint = ?",
                (contact, old_fingerprint),
            )
            if not deleted:
                raise NotFound("no such member")
            member = await _insert_member(db, contact, MemberKeys(*new), now)
            if onion_auth is not None:
                await _insert_onion_auth(db, member.fingerprint, onion_auth, now)
            return member

    async def onion_auth_keys(self) -> list[tuple[str, str, str]]:
        """(contact, member fingerprint, client-auth public key in base32) of every member
        who has one, oldest first: the keys the journalist onion service is published
        with."""
        async with self._locked("list client-auth keys") as db:
            rows = await db.execute_fetchall(
                "SELECT m.contact, a.fingerprint, a.public_key FROM member_onion_auth AS a"
                " JOIN members AS m ON m.fingerprint = a.fingerprint"
                " ORDER BY a.added_at, a.rowid"
            )
        return [(str(c), str(f), str(k)) for c, f, k in rows]

    async def members_without_onion_auth(self, contact: str) -> list[str]:
        """Fingerprints of the contact's members with no client-auth key (registered
        before schema v2), oldest first. Raises NotFound if there is no such contact."""
        async with self._transaction("list members without a key", write=False) as db:
            await _load_contact(db, contact)
            rows = await db.execute_fetchall(
                "SELECT m.fingerprint FROM members AS m WHERE m.contact = ? AND NOT EXISTS"
                " (SELECT 1 FROM member_onion_auth AS a WHERE a.fingerprint = m.fingerprint)"
                " ORDER BY m.added_at, m.rowid",
                (contact,),
            )
        return [str(fingerprint) for (fingerprint,) in rows]

    async def add_onion_auth(self, keys: Mapping[str, str], now: int) -> None:
        """Gives members (fingerprint to base32 public key) their first client-auth key,
        in one transaction. Raises NotFound for an unknown member, Conflict if a member
        has a key already or the key is registered."""
        async with self._transaction("add client-auth keys") as db:
            for fingerprint, public_key in keys.items():
                await _insert_onion_auth(db, fingerprint, public_key, now)

    async def member_by_verify_key(self, verify_key: str) -> Member | None:
        """The member who signs with `verify_key`, if any."""
        async with self._locked("find a member") as db:
            rows = await db.execute_fetchall(
                "SELECT fingerprint, contact, card, recipient, verify_key FROM members"
                " WHERE verify_key = ?",
                (verify_key,),
            )
        return next((Member(*row) for row in rows), None)

    # The signed contact directory

    async def save_directory(self, version: int, issued_at: int, document: bytes) -> None:
        """Keeps a signed directory. Raises Conflict unless `version` is above every
        version saved so far (clients refuse a directory that goes back)."""
        async with self._transaction("save a directory") as db:
            (latest,) = await _one(db, "SELECT max(version) FROM directories")
            if latest is not None and version <= latest:
                raise Conflict("a directory with that version or a later one exists already")
            await _run(
                db,
                "INSERT INTO directories (version, issued_at, document) VALUES (?, ?, ?)",
                (version, issued_at, document),
            )

    async def latest_directory(self) -> tuple[int, bytes] | None:
        """(version, document) of the latest directory, or None before the first."""
        async with self._locked("read the directory") as db:
            rows = await db.execute_fetchall(
                "SELECT version, document FROM directories ORDER BY version DESC LIMIT 1"
            )
        return next(((int(v), bytes(d)) for v, d in rows), None)

    # Sources

    async def add_source(
        self, login_id: str, reply_recipient: str, reply_handle: str, now: int
    ) -> None:
        """Registers a source's login. Raises Conflict if it (or the handle) exists."""
        async with self._transaction("add a source") as db:
            await _insert_source(db, NewSource(login_id, reply_recipient, reply_handle, now))

    async def source_for_reply(self, reply_handle: str, contact: str) -> tuple[str, str] | None:
        """(login_id, reply_handle) of the source behind `reply_handle`, if it has ever
        addressed `contact`; None otherwise (unknown handle or not that contact's source)."""
        async with self._locked("find a source") as db:
            rows = await db.execute_fetchall(
                "SELECT s.login_id, s.reply_handle FROM sources AS s"
                " JOIN source_contacts AS sc ON sc.source_login = s.login_id"
                " WHERE s.reply_handle = ? AND sc.contact = ?",
                (reply_handle, contact),
            )
        return next(((str(login), str(handle)) for login, handle in rows), None)

    async def get_source(self, login_id: str) -> tuple[str, str, str] | None:
        """(login_id, reply_recipient, reply_handle), or None."""
        async with self._locked("read a source") as db:
            rows = await db.execute_fetchall(
                "SELECT login_id, reply_recipient, reply_handle FROM sources WHERE login_id = ?",
                (login_id,),
            )
        return next(((str(a), str(b), str(c)) for a, b, c in rows), None)

    # Drops

    async def add_drop(self, drop: Drop, new_source: NewSource | None = None) -> None:
        """Records a complete drop: call it only once every blob is fsynced on disk.
        `new_source` registers the drop's source in the same transaction (a first drop),
        so a source exists only together with a drop it sent.

        Raises ValueError if the drop addresses no contact, repeats a contact, blob name or
        key, or has an unknown `sealed_on`; Conflict if the id (or the new source) exists;
        NotFound if the source, an addressed contact, or a key (as a member of an addressed
        contact) is unknown. On any error nothing of the drop is recorded."""
        _check_drop(drop)
        async with self._transaction("add a drop") as db:
            if new_source is not None:
                await _insert_source(db, new_source)
            with _constraints(
                duplicate="a drop with that id exists already", missing="no such source"
            ):
                await _run(
                    db,
                    "INSERT INTO drops (id, source_login, created_at, sealed_on, total_size)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (drop.id, drop.source_login, drop.created_at, drop.sealed_on, drop.total_size),
                )
            await _run_many(
                db,
                "INSERT INTO drop_blobs (drop_id, name, size, sha256) VALUES (?, ?, ?, ?)",
                [(drop.id, blob.name, blob.size, blob.sha256) for blob in drop.blobs],
            )
            with _constraints(missing="no such contact"):
                await _run_many(
                    db,
                    "INSERT INTO drop_contacts (drop_id, contact) VALUES (?, ?)",
                    [(drop.id, contact) for contact in drop.contacts],
                )
            if drop.source_login is not None:
                await _run_many(
                    db,
                    "INSERT OR IGNORE INTO source_contacts (source_login, contact) VALUES (?, ?)",
                    [(drop.source_login, contact) for contact in drop.contacts],
                )
            for fingerprint in drop.key_fingerprints:
                inserted = await _run(
                    db,
                    "INSERT INTO drop_keys (drop_id, contact, fingerprint)"
                    " SELECT dc.drop_id, m.contact, m.fingerprint FROM members AS m"
                    " JOIN drop_contacts AS dc ON dc.contact = m.contact AND dc.drop_id = ?"
                    " WHERE m.fingerprint = ?",
                    (drop.id, fingerprint),
                )
                if not inserted:
                    raise NotFound("a key of the drop is no member key of an addressed contact")

    async def list_drops(self, contact: str, include_acked: bool = False) -> list[Drop]:
        """The drops addressed to `contact`, oldest first: those it has not acknowledged,
        or all of them. An unknown contact has none."""
        async with self._transaction("list drops", write=False) as db:
            return await _load_drops(db, _DROPS_FOR_CONTACT, (contact, int(include_acked)))

    async def get_drop(self, drop_id: str) -> Drop:
        """One drop. Raises NotFound."""
        async with self._transaction("read a drop", write=False) as db:
            drops = await _load_drops(db, _ONE_DROP, (drop_id,))
        if not drops:
            raise NotFound("no such drop")
        return drops[0]

    async def drop_is_addressed_to(self, drop_id: str, contact: str) -> bool:
        """Whether the drop exists and is addressed to `contact` (acknowledged or not)."""
        async with self._locked("read a drop") as db:
            rows = await db.execute_fetchall(
                "SELECT 1 FROM drop_contacts WHERE drop_id = ? AND contact = ?", (drop_id, contact)
            )
        return bool(list(rows))

    async def ack_drop(self, drop_id: str, contact: str, now: int) -> bool:
        """Records that `contact` has the drop. Returns True if no contact is waiting for it
        any more and it was deleted (the caller then deletes its blobs). Acknowledging again
        while others wait changes nothing and returns False.

        Raises NotFound if the drop is not addressed to `contact`, which includes a drop
        already deleted by the last acknowledgement: a client retrying an ack it saw fail
        should treat NotFound as done."""
        async with self._transaction("acknowledge a drop") as db:
            acked = await _run(
                db,
                "UPDATE drop_contacts SET acked_at = ?"
                " WHERE drop_id = ? AND contact = ? AND acked_at IS NULL",
                (now, drop_id, contact),
            )
            if not acked:
                addressed = await db.execute_fetchall(
                    "SELECT 1 FROM drop_contacts WHERE drop_id = ? AND contact = ?",
                    (drop_id, contact),
                )
                if not list(addressed):
                    raise NotFound("no such drop")
                return False  # acknowledged before: nothing changes
            deleted = await _run(
                db,
                "DELETE FROM drops WHERE id = ? AND NOT EXISTS (SELECT 1 FROM drop_contacts"
                " WHERE drop_id = ? AND acked_at IS NULL)",
                (drop_id, drop_id),
            )
        if deleted:
            await self.checkpoint()
        return bool(deleted)

    async def waiting_counts(self) -> dict[str, int]:
        """For every contact (zero included), how many drops wait for it."""
        async with self._locked("count drops") as db:
            rows = await db.execute_fetchall(
                "SELECT c.name, count(dc.drop_id) FROM contacts AS c"
                " LEFT JOIN drop_contacts AS dc ON dc.contact = c.name AND dc.acked_at IS NULL"
                " GROUP BY c.name ORDER BY c.name"
            )
        return {str(name): int(count) for name, count in rows}

    async def all_blob_names(self) -> set[tuple[str, str]]:
        """(drop_id, blob name) of every blob of every drop, to compare with the disk."""
        async with self._locked("list blobs") as db:
            rows = await db.execute_fetchall("SELECT drop_id, name FROM drop_blobs")
        return {(str(drop_id), str(name)) for drop_id, name in rows}

    # Replies

    async def add_reply(self, reply: Reply) -> None:
        """Records a reply (its blob must be on disk already). Raises Conflict if the id
        exists, NotFound if the source does not."""
        async with self._transaction("add a reply") as db:
            with _constraints(
                duplicate="a reply with that id exists already", missing="no such source"
            ):
                await _run(
                    db,
                    "INSERT INTO replies (id, source_login, drop_id, contact, created_at, size)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        reply.id,
                        reply.source_login,
                        reply.drop_id,
                        reply.contact,
                        reply.created_at,
                        reply.size,
                    ),
                )

    async def list_replies(self, source_login: str) -> list[Reply]:
        """The replies to a source, oldest first."""
        async with self._locked("list replies") as db:
            rows = await db.execute_fetchall(
                "SELECT id, source_login, drop_id, contact, created_at, size FROM replies"
                " WHERE source_login = ? ORDER BY created_at, rowid",
                (source_login,),
            )
        return [Reply(*row) for row in rows]

    async def delete_reply(self, reply_id: str) -> bool:
        """Deletes a reply's row; True if there was one (the caller deletes its blob)."""
        async with self._transaction("delete a reply") as db:
            deleted = bool(await _run(db, "DELETE FROM replies WHERE id = ?", (reply_id,)))
        if deleted:
            await self.checkpoint()
        return deleted

    # Events

    async def add_event(self, kind: str, detail: str, now: int) -> None:
        """Records an operator-visible event; `detail` must identify nobody. Only the latest
        EVENTS_KEPT events are kept."""
        async with self._transaction("record an event") as db:
            await _run(
                db, "INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)", (now, kind, detail)
            )
            await _run(
                db,
                "DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC"
                " LIMIT 1 OFFSET ?)",
                (EVENTS_KEPT,),
            )

    async def recent_events(self, limit: int) -> list[Event]:
        """The latest `limit` events, newest first. Raises ValueError for a negative limit."""
        if limit < 0:
            raise ValueError("limit must not be negative")
        async with self._locked("read events") as db:
            rows = await db.execute_fetchall(
                "SELECT at, kind, detail FROM events ORDER BY id DESC LIMIT ?", (limit,)
            )
        return [Event(*row) for row in rows]

    async def storage_summary(self) -> dict[str, int]:
        """Counts for `amanah status`: drops, blobs, blob_bytes (as recorded in drop_blobs),
        replies, reply_bytes, contacts."""
        async with self._locked("summarise storage") as db:
            row = await _one(
                db,
                "SELECT (SELECT count(*) FROM drops), (SELECT count(*) FROM drop_blobs),"
                " (SELECT coalesce(sum(size), 0) FROM drop_blobs),"
                " (SELECT count(*) FROM replies), (SELECT coalesce(sum(size), 0) FROM replies),"
                " (SELECT count(*) FROM contacts)",
            )
        keys = ("drops", "blobs", "blob_bytes", "replies", "reply_bytes", "contacts")
        return {key: int(value) for key, value in zip(keys, row, strict=True)}

    # Plumbing

    @asynccontextmanager
    async def _locked(self, action: str) -> AsyncIterator[aiosqlite.Connection]:
        """This connection to itself, outside any transaction; database errors become
        StoreError("failed to <action>: <reason>")."""
        async with self._lock:
            if self._db is None:
                raise StoreError("the database is closed")
            try:
                yield self._db
            except aiosqlite.Error as exc:
                raise StoreError(f"failed to {action}: {exc}") from exc

    @asynccontextmanager
    async def _transaction(
        self, action: str, *, write: bool = True
    ) -> AsyncIterator[aiosqlite.Connection]:
        """One transaction: committed if the block finishes, rolled back if it raises
        (cancellation included). A read-only one (`write=False`) gives its queries one
        consistent snapshot."""
        async with self._locked(action) as db:
            try:
                await _run(db, "BEGIN IMMEDIATE" if write else "BEGIN")
                yield db
                await _run(db, "COMMIT")
            except BaseException:
                # aiosqlite runs statements in order on one thread, so this ROLLBACK comes
                # after any statement a cancellation left queued, BEGIN included.
                try:
                    await _run(db, "ROLLBACK")
                except aiosqlite.OperationalError:
                    pass  # no transaction was open (BEGIN itself failed, or COMMIT ran)
                raise


def _create_private_file(path: Path) -> None:
    """Creates the database file 0600 before SQLite does: SQLite gives its -wal and -shm
    files the database file's permissions."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return
    os.fchmod(descriptor, 0o600)  # the mode given to open() is filtered by umask
    os.close(descriptor)


@contextmanager
def _constraints(*, duplicate: str | None = None, missing: str | None = None) -> Iterator[None]:
    """Turns a duplicate key into Conflict(duplicate) and a missing reference into
    NotFound(missing); other integrity errors pass on (and become StoreError)."""
    try:
        yield
    except aiosqlite.IntegrityError as exc:
        code = getattr(exc, "sqlite_errorname", "")
        if duplicate is not None and code in _DUPLICATE:
            raise Conflict(duplicate) from exc
        if missing is not None and code == _MISSING:
            raise NotFound(missing) from exc
        raise


async def _one(db: aiosqlite.Connection, sql: str, parameters: Iterable[Any] = ()) -> Any:
    rows = list(await db.execute_fetchall(sql, parameters))
    if len(rows) != 1:
        raise StoreError("the database answered an unexpected number of rows")
    return rows[0]


async def _run(db: aiosqlite.Connection, sql: str, parameters: Iterable[Any] = ()) -> int:
    """Runs a statement and returns how many rows it changed. Its cursor is closed at once:
    a statement left open would hold its read snapshot (and block a TRUNCATE checkpoint)."""
    async with db.execute(sql, parameters) as cursor:
        return cursor.rowcount


async def _run_many(db: aiosqlite.Connection, sql: str, parameters: list[tuple[Any, ...]]) -> None:
    if parameters:
        async with db.executemany(sql, parameters):
            pass


async def _insert_member(
    db: aiosqlite.Connection, contact: str, member: MemberKeys, now: int
) -> Member:
    with _constraints(duplicate="a member with that fingerprint, card or key exists already"):
        await _run(
            db,
            "INSERT INTO members (fingerprint, contact, card, recipient, verify_key, added_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (member.fingerprint, contact, member.card, member.recipient, member.verify_key, now),
        )
    return Member(member.fingerprint, contact, member.card, member.recipient, member.verify_key)


async def _insert_source(db: aiosqlite.Connection, source: NewSource) -> None:
    with _constraints(duplicate="that source exists already"):
        await _run(
            db,
            "INSERT INTO sources (login_id, reply_recipient, reply_handle, created_at)"
            " VALUES (?, ?, ?, ?)",
            source,
        )


async def _insert_onion_auth(
    db: aiosqlite.Connection, fingerprint: str, public_key: str, now: int
) -> None:
    with _constraints(
        duplicate="that client-auth key is registered already", missing="no such member"
    ):
        await _run(
            db,
            "INSERT INTO member_onion_auth (fingerprint, public_key, added_at) VALUES (?, ?, ?)",
            (fingerprint, public_key, now),
        )


async def _load_contact(db: aiosqlite.Connection, name: str) -> Contact:
    rows = list(
        await db.execute_fetchall(
            "SELECT name, description, push_endpoint, accepts_originals FROM contacts"
            " WHERE name = ?",
            (name,),
        )
    )
    if not rows:
        raise NotFound("no such contact")
    members = await db.execute_fetchall(
        "SELECT fingerprint, contact, card, recipient, verify_key FROM members"
        " WHERE contact = ? ORDER BY added_at, rowid",
        (name,),
    )
    return _contact(rows[0], [Member(*row) for row in members])


def _contact(row: Any, members: list[Member]) -> Contact:
    name, description, push_endpoint, accepts_originals = row
    return Contact(name, description, push_endpoint, bool(accepts_originals), tuple(members))


def _check_drop(drop: Drop) -> None:
    if not drop.contacts:
        raise ValueError("a drop must be addressed to at least one contact")
    if drop.sealed_on not in SEALED_ON:
        raise ValueError("sealed_on must be 'relay' or 'device'")
    for what, values in (
        ("contact", drop.contacts),
        ("blob name", [blob.name for blob in drop.blobs]),
        ("key", drop.key_fingerprints),
    ):
        if len(set(values)) != len(values):
            raise ValueError(f"a drop lists the same {what} twice")


async def _load_drops(
    db: aiosqlite.Connection, queries: _DropQueries, parameters: tuple[Any, ...]
) -> list[Drop]:
    blobs: dict[str, list[Blob]] = {}
    for drop_id, name, size, sha256 in await db.execute_fetchall(queries.blobs, parameters):
        blobs.setdefault(drop_id, []).append(Blob(name, size, sha256))
    contacts: dict[str, list[str]] = {}
    for drop_id, contact in await db.execute_fetchall(queries.contacts, parameters):
        contacts.setdefault(drop_id, []).append(contact)
    keys: dict[str, list[str]] = {}
    for drop_id, fingerprint in await db.execute_fetchall(queries.keys, parameters):
        keys.setdefault(drop_id, []).append(fingerprint)
    return [
        Drop(
            id=drop_id,
            source_login=source_login,
            created_at=created_at,
            sealed_on=cast(SealedOn, sealed_on),  # the CHECK constraint allows no other value
            total_size=total_size,
            blobs=tuple(blobs.get(drop_id, ())),
            contacts=tuple(contacts.get(drop_id, ())),
            key_fingerprints=tuple(keys.get(drop_id, ())),
        )
        for drop_id, source_login, created_at, sealed_on, total_size in await db.execute_fetchall(
            queries.drops, parameters
        )
    ]

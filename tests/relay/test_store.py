"""Store against a real SQLite file: every method's good path and errors, the PRAGMAs,
migrations, transactions that leave nothing behind, cascades, and secure deletion checked
in the bytes of the database and WAL files."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import relay.store
from relay.errors import Conflict, NotFound, StoreError
from relay.store import (
    MIGRATIONS,
    Blob,
    Contact,
    Drop,
    Event,
    Member,
    MemberKeys,
    NewSource,
    Reply,
    Store,
)

NOW = 1_700_000_000
V2 = (
    "ALTER TABLE contacts ADD COLUMN note TEXT",
    "CREATE TABLE extra (id INTEGER PRIMARY KEY, value TEXT NOT NULL) STRICT",
)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "amanah.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[Store]:
    async with await Store.open(db_path) as opened:
        yield opened


def keys(n: int) -> MemberKeys:
    return MemberKeys(f"fp{n}", f"card{n}", f"age1recipient{n}", f"amanah-sig1key{n}")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def drop(
    drop_id: str,
    contacts: tuple[str, ...],
    fingerprints: tuple[str, ...],
    created_at: int = NOW,
    source_login: str | None = None,
    blobs: tuple[Blob, ...] | None = None,
) -> Drop:
    if blobs is None:
        blobs = (Blob("0", 10, sha("0")), Blob("1", 20, sha("1")))
    return Drop(
        id=drop_id,
        source_login=source_login,
        created_at=created_at,
        sealed_on="relay",
        total_size=sum(blob.size for blob in blobs),
        blobs=blobs,
        contacts=contacts,
        key_fingerprints=fingerprints,
    )


async def with_contacts(store: Store) -> None:
    """Contacts a (members 1, 2), b (member 3) and c (member 4)."""
    await store.add_contact("a", "Newsroom A", None, False, [keys(1), keys(2)], NOW)
    await store.add_contact("b", "UN body B", "http://b.onion/push", True, [keys(3)], NOW)
    await store.add_contact("c", "Newsroom C", None, False, [keys(4)], NOW)


def raw_count(db_path: Path, table: str) -> int:
    """Counts rows with the standard library, independently of Store."""
    connection = sqlite3.connect(db_path)
    try:
        (count,) = connection.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    finally:
        connection.close()
    return int(count)


DROP_TABLES = ("drops", "drop_blobs", "drop_contacts", "drop_keys")


def drop_rows(db_path: Path) -> dict[str, int]:
    return {table: raw_count(db_path, table) for table in DROP_TABLES}


# Opening, settings, migrations


async def test_pragmas_are_in_effect(store: Store) -> None:
    assert await store.pragmas() == {
        "journal_mode": "wal",
        "synchronous": 2,
        "secure_delete": 1,
        "foreign_keys": 1,
        "busy_timeout": relay.store.BUSY_TIMEOUT_MS,
    }


async def test_wal_mode_is_persistent_in_the_file(store: Store, db_path: Path) -> None:
    connection = sqlite3.connect(db_path)
    try:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        connection.close()


async def test_database_files_are_private(db_path: Path) -> None:
    previous = os.umask(0)
    try:
        async with await Store.open(db_path) as store:
            await store.add_source("login", "age1reply", "handle-login", NOW)
            paths = [db_path, Path(f"{db_path}-wal"), Path(f"{db_path}-shm")]
            for path in paths:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    finally:
        os.umask(previous)


async def test_a_new_database_has_every_migration(store: Store) -> None:
    assert await store.schema_version() == len(MIGRATIONS)


async def test_a_v1_database_upgrades(db_path: Path) -> None:
    async with await Store.open(db_path, migrations=MIGRATIONS[:1]) as store:
        await store.add_contact("a", "Newsroom A", None, False, [keys(1)], NOW)
        assert await store.schema_version() == 1
    async with await Store.open(db_path, migrations=(*MIGRATIONS[:1], V2)) as store:
        assert await store.schema_version() == 2
        assert (await store.get_contact("a")).members[0].fingerprint == "fp1"
    assert raw_count(db_path, "extra") == 0  # the v2 table exists
    async with await Store.open(db_path, migrations=(*MIGRATIONS[:1], V2)) as store:
        assert await store.schema_version() == 2  # nothing runs twice


async def test_a_failed_migration_is_rolled_back(db_path: Path) -> None:
    async with await Store.open(db_path):
        pass
    broken = ("CREATE TABLE half (x INTEGER) STRICT", "THIS IS NOT SQL")
    with pytest.raises(StoreError, match="failed to migrate the schema"):
        await Store.open(db_path, migrations=(*MIGRATIONS, broken))
    async with await Store.open(db_path) as store:
        assert await store.schema_version() == len(MIGRATIONS)
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        raw_count(db_path, "half")


async def test_a_newer_database_is_refused(db_path: Path) -> None:
    async with await Store.open(db_path, migrations=(*MIGRATIONS, V2)):
        pass
    known = len(MIGRATIONS)
    with pytest.raises(
        StoreError, match=rf"version {known + 1}, newer than this relay knows \({known}\)"
    ):
        await Store.open(db_path)
    connection = sqlite3.connect(db_path)
    try:
        with connection:
            connection.execute("UPDATE schema_version SET version = 99")
    finally:
        connection.close()
    with pytest.raises(StoreError, match="schema version 99"):
        await Store.open(db_path, migrations=(*MIGRATIONS, V2))


async def test_a_file_that_is_not_a_database_is_refused(db_path: Path) -> None:
    await asyncio.to_thread(db_path.write_bytes, b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="failed to configure the database"):
        await Store.open(db_path)


async def test_a_missing_directory_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="failed to open the database"):
        await Store.open(tmp_path / "missing" / "amanah.db")


async def test_a_closed_store_refuses_work(db_path: Path) -> None:
    store = await Store.open(db_path)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        await store.list_contacts()


# Contacts


async def test_add_get_and_list_contacts(store: Store) -> None:
    added = await store.add_contact("a", "Newsroom A", None, False, [keys(1), keys(2)], NOW)
    member_1 = Member("fp1", "a", "card1", "age1recipient1", "amanah-sig1key1")
    member_2 = Member("fp2", "a", "card2", "age1recipient2", "amanah-sig1key2")
    assert added == Contact("a", "Newsroom A", None, False, (member_1, member_2))
    await store.add_contact("b", "UN body B", "http://b.onion/push", True, [keys(3)], NOW)
    assert await store.get_contact("a") == added
    assert [contact.name for contact in await store.list_contacts()] == ["a", "b"]
    b = (await store.list_contacts())[1]
    assert (b.push_endpoint, b.accepts_originals) == ("http://b.onion/push", True)
    assert b.members == (Member("fp3", "b", "card3", "age1recipient3", "amanah-sig1key3"),)


async def test_a_contact_needs_a_member(store: Store) -> None:
    with pytest.raises(ValueError, match="member"):
        await store.add_contact("a", "A", None, False, [], NOW)


async def test_get_missing_contact(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.get_contact("nobody")
    assert await store.list_contacts() == []


@pytest.mark.parametrize(
    ("name", "member", "match"),
    [
        ("a", keys(9), "contact with that name"),
        ("z", keys(1), "member"),  # same fingerprint, card and key
        ("z", MemberKeys("fp9", "card1", "age1r9", "amanah-sig1key9"), "member"),  # card
        ("z", MemberKeys("fp9", "card9", "age1r9", "amanah-sig1key1"), "member"),  # key
    ],
)
async def test_duplicate_contacts_and_members_conflict(
    store: Store, name: str, member: MemberKeys, match: str
) -> None:
    await store.add_contact("a", "A", None, False, [keys(1)], NOW)
    with pytest.raises(Conflict, match=match):
        await store.add_contact(name, "Z", None, False, [keys(8), member], NOW)
    # Nothing of the refused contact stays, not even its first member.
    assert [contact.name for contact in await store.list_contacts()] == ["a"]
    assert await store.member_by_verify_key("amanah-sig1key8") is None


async def test_replace_member(store: Store) -> None:
    await with_contacts(store)
    new = await store.replace_member("a", "fp1", keys(5), NOW + 1)
    assert new == Member("fp5", "a", "card5", "age1recipient5", "amanah-sig1key5")
    assert [m.fingerprint for m in (await store.get_contact("a")).members] == ["fp2", "fp5"]
    assert await store.member_by_verify_key("amanah-sig1key1") is None
    assert await store.member_by_verify_key("amanah-sig1key5") == new


async def test_replace_member_errors(store: Store) -> None:
    await with_contacts(store)
    with pytest.raises(NotFound, match="member"):
        await store.replace_member("a", "fp9", keys(5), NOW)
    with pytest.raises(NotFound, match="member"):
        await store.replace_member("b", "fp1", keys(5), NOW)  # fp1 is a's, not b's
    with pytest.raises(Conflict, match="member"):
        await store.replace_member("a", "fp1", MemberKeys("fp5", "card3", "r", "k"), NOW)
    # The refused replacement left the old member in place.
    assert [m.fingerprint for m in (await store.get_contact("a")).members] == ["fp1", "fp2"]


async def test_member_by_verify_key(store: Store) -> None:
    await with_contacts(store)
    found = await store.member_by_verify_key("amanah-sig1key3")
    assert found == Member("fp3", "b", "card3", "age1recipient3", "amanah-sig1key3")
    assert await store.member_by_verify_key("amanah-sig1nobody") is None


async def test_remove_missing_contact(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.remove_contact("nobody")


async def test_remove_contact_deletes_only_drops_nobody_else_waits_for(
    store: Store, db_path: Path
) -> None:
    await with_contacts(store)
    await store.add_drop(drop("only-a", ("a",), ("fp1",)))
    await store.add_drop(drop("a-and-b", ("a", "b"), ("fp1", "fp2", "fp3")))
    await store.add_drop(drop("b-acked", ("a", "b"), ("fp1", "fp3")))
    await store.add_drop(drop("only-b", ("b",), ("fp3",)))
    await store.add_drop(drop("a-acked", ("a", "b"), ("fp2", "fp3")))
    await store.ack_drop("b-acked", "b", NOW)
    await store.ack_drop("a-acked", "a", NOW)

    assert await store.remove_contact("a") == ["only-a", "b-acked"]

    for gone in ["only-a", "b-acked"]:
        with pytest.raises(NotFound):
            await store.get_drop(gone)
    kept = await store.get_drop("a-and-b")
    assert (kept.contacts, kept.key_fingerprints) == (("b",), ("fp3",))
    assert [d.id for d in await store.list_drops("b")] == ["a-and-b", "only-b", "a-acked"]
    assert await store.member_by_verify_key("amanah-sig1key1") is None
    assert await store.waiting_counts() == {"b": 3, "c": 0}
    assert drop_rows(db_path) == {
        "drops": 3,
        "drop_blobs": 6,
        "drop_contacts": 3,
        "drop_keys": 3,
    }
    # A new contact under the old name inherits nothing.
    await store.add_contact("a", "Another A", None, False, [keys(7)], NOW)
    assert await store.list_drops("a", include_acked=True) == []


# The directory


async def test_directories(store: Store) -> None:
    assert await store.latest_directory() is None
    await store.save_directory(1, NOW, b"\x00signed one")
    await store.save_directory(3, NOW + 5, b"signed three")
    assert await store.latest_directory() == (3, b"signed three")
    for version in (3, 2):
        with pytest.raises(Conflict, match="directory"):
            await store.save_directory(version, NOW, b"again")
    assert await store.latest_directory() == (3, b"signed three")


# Sources


async def test_sources(store: Store) -> None:
    assert await store.get_source("login") is None
    await store.add_source("login", "age1reply", "handle-login", NOW)
    assert await store.get_source("login") == ("login", "age1reply", "handle-login")
    with pytest.raises(Conflict, match="source"):
        await store.add_source("login", "age1other", "handle-other-2", NOW)
    assert await store.get_source("login") == ("login", "age1reply", "handle-login")


# Drops


async def test_add_and_get_drop_round_trip(store: Store) -> None:
    await with_contacts(store)
    await store.add_source("login", "age1reply", "handle-login", NOW)
    blobs = (Blob("message", 5, sha("m")), Blob("10", 7, sha("10")), Blob("2", 0, sha("2")))
    original = Drop(
        id="d1",
        source_login="login",
        created_at=NOW,
        sealed_on="device",
        total_size=12,
        blobs=blobs,
        contacts=("b", "a"),
        key_fingerprints=("fp3", "fp2", "fp1"),
    )
    await store.add_drop(original)
    assert await store.get_drop("d1") == original  # insertion order is kept throughout
    assert await store.drop_is_addressed_to("d1", "a")
    assert await store.drop_is_addressed_to("d1", "b")
    assert not await store.drop_is_addressed_to("d1", "c")
    assert not await store.drop_is_addressed_to("d9", "a")
    assert await store.all_blob_names() == {("d1", "message"), ("d1", "10"), ("d1", "2")}
    # Only contacts the source wrote to may answer it, and they still may once the drop
    # is gone.
    assert await store.source_for_reply("handle-login", "a") == ("login", "handle-login")
    assert await store.source_for_reply("handle-login", "c") is None
    assert await store.source_for_reply("no-such-handle", "a") is None
    await store.ack_drop("d1", "a", NOW)
    await store.ack_drop("d1", "b", NOW)
    assert await store.source_for_reply("handle-login", "b") == ("login", "handle-login")


async def test_a_first_drop_registers_its_source_in_the_same_transaction(
    store: Store, db_path: Path
) -> None:
    await with_contacts(store)
    new = NewSource("login", "age1reply", "handle-login", NOW)
    await store.add_drop(drop("d1", ("a",), ("fp1",), source_login="login"), new)
    assert await store.get_source("login") == ("login", "age1reply", "handle-login")
    assert await store.source_for_reply("handle-login", "a") == ("login", "handle-login")
    # Registered again as new: a conflict, and that drop is not recorded either.
    with pytest.raises(Conflict, match="source"):
        await store.add_drop(drop("d2", ("a",), ("fp1",), source_login="login"), new)
    with pytest.raises(NotFound):
        await store.get_drop("d2")
    # A drop that fails takes its new source with it: no source without a drop.
    other = NewSource("other", "age1other", "handle-other", NOW)
    with pytest.raises(NotFound, match="contact"):
        await store.add_drop(drop("d3", ("a", "nobody"), ("fp1",), source_login="other"), other)
    assert await store.get_source("other") is None
    assert raw_count(db_path, "sources") == 1
    assert drop_rows(db_path)["drops"] == 1


async def test_get_missing_drop(store: Store) -> None:
    with pytest.raises(NotFound, match="drop"):
        await store.get_drop("nothing")


async def test_list_drops_oldest_first(store: Store) -> None:
    await with_contacts(store)
    await store.add_drop(drop("late", ("a",), ("fp1",), created_at=NOW + 10))
    await store.add_drop(drop("early", ("a", "b"), ("fp1", "fp3"), created_at=NOW))
    await store.add_drop(drop("tie", ("a",), ("fp2",), created_at=NOW))
    await store.add_drop(drop("for-b", ("b",), ("fp3",), created_at=NOW - 10))
    assert [d.id for d in await store.list_drops("a")] == ["early", "tie", "late"]
    listed = await store.list_drops("b")
    assert [d.id for d in listed] == ["for-b", "early"]
    assert listed[1] == await store.get_drop("early")
    assert await store.list_drops("c") == []
    assert await store.list_drops("nobody") == []

    assert await store.ack_drop("early", "a", NOW + 20) is False
    assert [d.id for d in await store.list_drops("a")] == ["tie", "late"]
    assert [d.id for d in await store.list_drops("a", include_acked=True)] == [
        "early",
        "tie",
        "late",
    ]
    assert await store.waiting_counts() == {"a": 2, "b": 2, "c": 0}


async def test_ack_by_every_contact_deletes_the_drop_and_cascades(
    store: Store, db_path: Path
) -> None:
    await with_contacts(store)
    await store.add_drop(drop("d1", ("a", "b"), ("fp1", "fp2", "fp3")))
    await store.add_drop(drop("d2", ("a",), ("fp1",)))

    assert await store.ack_drop("d1", "a", NOW + 1) is False
    assert await store.ack_drop("d1", "a", NOW + 2) is False  # again: idempotent
    assert (await store.list_drops("a", include_acked=True))[0].id == "d1"
    assert await store.drop_is_addressed_to("d1", "a")  # acknowledged, still addressed
    with pytest.raises(NotFound):
        await store.ack_drop("d1", "c", NOW)  # not addressed to c
    with pytest.raises(NotFound):
        await store.ack_drop("d9", "a", NOW)

    assert await store.ack_drop("d1", "b", NOW + 3) is True
    with pytest.raises(NotFound):
        await store.get_drop("d1")
    with pytest.raises(NotFound):
        await store.ack_drop("d1", "b", NOW + 4)  # the drop is gone
    assert drop_rows(db_path) == {
        "drops": 1,
        "drop_blobs": 2,
        "drop_contacts": 1,
        "drop_keys": 1,
    }
    assert await store.all_blob_names() == {("d2", "0"), ("d2", "1")}


async def test_acked_at_is_kept_from_the_first_ack(store: Store, db_path: Path) -> None:
    await with_contacts(store)
    await store.add_drop(drop("d1", ("a", "b"), ("fp1", "fp3")))
    await store.ack_drop("d1", "a", NOW + 1)
    await store.ack_drop("d1", "a", NOW + 2)
    connection = sqlite3.connect(db_path)
    try:
        row = connection.execute(
            "SELECT acked_at FROM drop_contacts WHERE drop_id = 'd1' AND contact = 'a'"
        ).fetchone()
    finally:
        connection.close()
    assert row == (NOW + 1,)


async def test_a_duplicate_drop_conflicts_and_leaves_the_first_alone(store: Store) -> None:
    await with_contacts(store)
    first = drop("d1", ("a",), ("fp1",))
    await store.add_drop(first)
    with pytest.raises(Conflict, match="drop"):
        await store.add_drop(drop("d1", ("b",), ("fp3",), blobs=(Blob("x", 1, sha("x")),)))
    assert await store.get_drop("d1") == first
    assert await store.list_drops("b") == []


BAD_DROPS = [
    # Each fails after some rows of the drop were written: the source is unknown (first
    # row), a blob's digest is malformed (second table), a contact is unknown (third), a key
    # is unknown or belongs to a contact the drop is not addressed to (fourth).
    (drop("bad", ("a",), ("fp1",), source_login="nobody"), NotFound, "source"),
    (
        drop("bad", ("a",), ("fp1",), blobs=(Blob("0", 1, sha("0")), Blob("1", 1, "abc"))),
        StoreError,
        "CHECK constraint",
    ),
    (drop("bad", ("a", "nobody"), ("fp1",)), NotFound, "contact"),
    (drop("bad", ("a", "b"), ("fp1", "fp3", "fp9")), NotFound, "key"),
    (drop("bad", ("a",), ("fp1", "fp4")), NotFound, "key"),
]


@pytest.mark.parametrize(("bad", "error", "match"), BAD_DROPS)
async def test_a_failed_add_drop_leaves_nothing(
    store: Store, db_path: Path, bad: Drop, error: type[Exception], match: str
) -> None:
    await with_contacts(store)
    with pytest.raises(error, match=match):
        await store.add_drop(bad)
    assert drop_rows(db_path) == dict.fromkeys(DROP_TABLES, 0)
    with pytest.raises(NotFound):
        await store.get_drop("bad")
    assert await store.all_blob_names() == set()
    # The store is still usable: the transaction was closed.
    await store.add_drop(drop("good", ("a",), ("fp1",)))
    assert [d.id for d in await store.list_drops("a")] == ["good"]


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (drop("bad", (), ()), "at least one contact"),
        (drop("bad", ("a", "a"), ("fp1",)), "same contact twice"),
        (drop("bad", ("a",), ("fp1", "fp1")), "same key twice"),
        (
            drop("bad", ("a",), ("fp1",), blobs=(Blob("0", 1, sha("0")), Blob("0", 1, sha("0")))),
            "same blob name twice",
        ),
        (
            Drop("bad", None, NOW, "moon", 0, (), ("a",), ("fp1",)),  # type: ignore[arg-type]
            "sealed_on",
        ),
    ],
)
async def test_malformed_drops_are_refused(store: Store, bad: Drop, match: str) -> None:
    await with_contacts(store)
    with pytest.raises(ValueError, match=match):
        await store.add_drop(bad)


async def test_waiting_counts_and_storage_summary(store: Store) -> None:
    assert await store.waiting_counts() == {}
    assert await store.storage_summary() == {
        "drops": 0,
        "blobs": 0,
        "blob_bytes": 0,
        "replies": 0,
        "reply_bytes": 0,
        "contacts": 0,
    }
    await with_contacts(store)
    await store.add_source("login", "age1reply", "handle-login", NOW)
    await store.add_drop(drop("d1", ("a", "b"), ("fp1", "fp3")))
    await store.add_drop(drop("d2", ("a",), ("fp2",), blobs=(Blob("0", 1000, sha("x")),)))
    await store.add_reply(Reply("r1", "login", "d1", "a", NOW, 77))
    assert await store.waiting_counts() == {"a": 2, "b": 1, "c": 0}
    assert await store.storage_summary() == {
        "drops": 2,
        "blobs": 3,
        "blob_bytes": 1030,
        "replies": 1,
        "reply_bytes": 77,
        "contacts": 3,
    }


# Replies


async def test_replies(store: Store) -> None:
    await store.add_source("login", "age1reply", "handle-login", NOW)
    await store.add_source("other", "age1other", "handle-other", NOW)
    later = Reply("r2", "login", None, "b", NOW + 5, 10)
    earlier = Reply("r1", "login", "d-gone", "a", NOW, 20)
    await store.add_reply(later)
    await store.add_reply(earlier)
    await store.add_reply(Reply("r3", "other", None, "a", NOW, 1))
    assert await store.list_replies("login") == [earlier, later]
    assert await store.list_replies("nobody") == []
    with pytest.raises(Conflict, match="reply"):
        await store.add_reply(Reply("r1", "other", None, "a", NOW, 1))
    with pytest.raises(NotFound, match="source"):
        await store.add_reply(Reply("r9", "nobody", None, "a", NOW, 1))
    assert await store.delete_reply("r1") is True
    assert await store.delete_reply("r1") is False
    assert await store.list_replies("login") == [later]


# Events


async def test_events(store: Store) -> None:
    assert await store.recent_events(10) == []
    await store.add_event("sanitize-timeout", "a worker hit its time limit", NOW)
    await store.add_event("disk", "free space below 5%", NOW + 1)
    assert await store.recent_events(10) == [
        Event(NOW + 1, "disk", "free space below 5%"),
        Event(NOW, "sanitize-timeout", "a worker hit its time limit"),
    ]
    assert await store.recent_events(1) == [Event(NOW + 1, "disk", "free space below 5%")]
    assert await store.recent_events(0) == []
    with pytest.raises(ValueError, match="limit"):
        await store.recent_events(-1)


async def test_only_the_latest_events_are_kept(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay.store, "EVENTS_KEPT", 3)
    for index in range(5):
        await store.add_event("kind", f"event {index}", NOW + index)
    assert [event.detail for event in await store.recent_events(10)] == [
        "event 4",
        "event 3",
        "event 2",
    ]


# Concurrency


async def test_concurrent_transactions_do_not_mix(store: Store, db_path: Path) -> None:
    await with_contacts(store)
    good = [store.add_drop(drop(f"d{index}", ("a",), ("fp1",))) for index in range(20)]
    bad = [store.add_drop(drop(f"x{index}", ("a", "nobody"), ("fp1",))) for index in range(20)]
    results = await asyncio.gather(*good, *bad, return_exceptions=True)
    assert results[:20] == [None] * 20
    assert all(isinstance(result, NotFound) for result in results[20:])
    assert len(await store.list_drops("a")) == 20
    assert drop_rows(db_path)["drops"] == 20


async def test_cancelled_transactions_leave_nothing_half_done(store: Store) -> None:
    await with_contacts(store)
    # Cancelling after 0 to 3 ms hits BEGIN, the inserts, COMMIT, or nothing at all.
    for steps in range(30):
        task = asyncio.create_task(store.add_drop(drop(f"d{steps}", ("a", "b"), ("fp1", "fp3"))))
        await asyncio.sleep(steps * 0.0001)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        # Whether or not the cancellation came in time, the drop is whole or absent, and
        # the connection is usable.
        try:
            stored = await store.get_drop(f"d{steps}")
        except NotFound:
            continue
        assert stored == drop(f"d{steps}", ("a", "b"), ("fp1", "fp3"))
    await store.add_drop(drop("after", ("a",), ("fp1",)))
    assert (await store.get_drop("after")).id == "after"


# Secure deletion

MARKER = "MARKER-7f3a9c-do-not-keep"


def files_containing(db_path: Path, marker: bytes) -> list[str]:
    found = []
    for suffix in ("", "-wal", "-shm"):
        path = Path(f"{db_path}{suffix}")
        if path.exists() and marker in path.read_bytes():
            found.append(path.name)
    return found


def wal_size(db_path: Path) -> int:
    return Path(f"{db_path}-wal").stat().st_size


async def test_deleted_drops_leave_no_trace_in_the_files(store: Store, db_path: Path) -> None:
    await with_contacts(store)
    await store.add_source("login", "age1reply", "handle-login", NOW)
    marked = drop(
        f"{MARKER}-drop",
        ("a", "b"),
        ("fp1", "fp3"),
        blobs=(Blob(f"{MARKER}-blob", 5, sha("m")),),
        source_login="login",
    )
    await store.add_drop(marked)
    await store.add_drop(drop("unrelated", ("a",), ("fp1",)))
    await store.add_reply(Reply(f"{MARKER}-reply", "login", marked.id, "a", NOW, 3))
    await store.checkpoint()
    assert files_containing(db_path, MARKER.encode()) == ["amanah.db"]  # the test can see it

    assert await store.ack_drop(marked.id, "a", NOW) is False
    assert await store.ack_drop(marked.id, "b", NOW) is True
    assert await store.delete_reply(f"{MARKER}-reply") is True
    await store.checkpoint()
    assert files_containing(db_path, MARKER.encode()) == []
    assert wal_size(db_path) == 0  # truncated, not just rewound
    assert [d.id for d in await store.list_drops("a")] == ["unrelated"]


def test_without_secure_delete_the_marker_would_remain(tmp_path: Path) -> None:
    """The control for the test above: the same deletion without secure_delete leaves the
    bytes in the file, so the test above does detect a missing PRAGMA."""
    path = tmp_path / "plain.db"
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA secure_delete = OFF")
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("CREATE TABLE t (id TEXT PRIMARY KEY, other TEXT)")
        connection.execute("INSERT INTO t VALUES (?, 'x'), ('keep', 'y')", (MARKER,))
        connection.execute("DELETE FROM t WHERE id = ?", (MARKER,))
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    assert MARKER.encode() in path.read_bytes()

"""The parts of `amanah-inbox` that need no relay: what it refuses in a relay's listing
before anything is downloaded or written (a drop id or a blob name becomes a path)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clients.answers import InboxError, parse_drop
from clients.inbox import Keys, Relay, fetch_drop
from crypto.card import MemberIdentity

GOOD_ID = "0123456789abcdef" * 2
ESCAPED = f"amanah-escaped-{secrets.token_hex(4)}"


def blob(name: object) -> dict[str, Any]:
    return {"name": name, "size": 1, "sha256": "0" * 64}


def drop(drop_id: object, *blobs: dict[str, Any]) -> dict[str, Any]:
    return {"id": drop_id, "sealed_on": "relay", "blobs": list(blobs)}


BAD_ID, BAD_NAME = r"drop\.id is not a drop id", r"drop\.blobs\[0\]\.name is not a plain blob name"
HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "id climbing out": (drop("../" + GOOD_ID), BAD_ID),
    "id not hex": (drop(GOOD_ID.upper()), BAD_ID),
    "id too long": (drop(GOOD_ID + "0"), BAD_ID),
    "id not a string": (drop(7), r"drop\.id is not a string"),
    "blob climbing out": (drop(GOOD_ID, blob(f"../../{ESCAPED}")), BAD_NAME),
    "blob absolute": (drop(GOOD_ID, blob(f"/tmp/{ESCAPED}")), BAD_NAME),
    "blob empty": (drop(GOOD_ID, blob("")), BAD_NAME),
    "blob item 0": (drop(GOOD_ID, blob("item-0")), BAD_NAME),
    "blob not a name": (drop(GOOD_ID, blob(["sealed"])), r"drop\.blobs\[0\]\.name is not a string"),
    "blob after a good one": (
        drop(GOOD_ID, blob("manifest"), blob(f"../{ESCAPED}")),
        r"drop\.blobs\[1\]\.name is not a plain blob name",
    ),
}


async def fetch_one(drop: dict[str, Any], identity: Path, out: Path) -> None:
    async with aiohttp.ClientSession() as session:
        # Port 9 on loopback: nothing listens there, should a request be made.
        relay = Relay(session, "http://127.0.0.1:9")
        await fetch_drop(relay, parse_drop(drop), Keys([str(identity)]), out, "the-daily")


@pytest.mark.parametrize(("drop", "reason"), HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_listing_is_refused_before_anything_is_written(
    tmp_path: Path, drop: dict[str, Any], reason: str
) -> None:
    identity = tmp_path / "me.txt"
    identity.write_text(MemberIdentity.generate().to_file_text("2024-01-01T00:00:00Z"))
    out = tmp_path / "room" / "out"
    out.mkdir(parents=True)
    with pytest.raises(InboxError, match=reason):
        asyncio.run(fetch_one(drop, identity, out))
    assert [p for p in tmp_path.rglob("*") if not p.is_dir()] == [identity]
    assert not Path(f"/tmp/{ESCAPED}").exists()

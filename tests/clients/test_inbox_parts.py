"""The parts of `amanah-inbox` that need no relay: what it refuses in a relay's listing
before anything is downloaded or written (a drop id or a blob name becomes a path)."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from clients.inbox import InboxError, Keys, Relay, fetch_drop
from crypto.card import MemberIdentity

GOOD_ID = "0123456789abcdef" * 2
ESCAPED = f"amanah-escaped-{secrets.token_hex(4)}"


def blob(name: object) -> dict[str, Any]:
    return {"name": name, "size": 1, "sha256": "0" * 64}


HOSTILE: dict[str, tuple[dict[str, Any], str]] = {
    "id climbing out": ({"id": "../" + GOOD_ID, "blobs": []}, "malformed drop id"),
    "id not hex": ({"id": GOOD_ID.upper(), "blobs": []}, "malformed drop id"),
    "id too long": ({"id": GOOD_ID + "0", "blobs": []}, "malformed drop id"),
    "id not a string": ({"id": 7, "blobs": []}, "malformed drop id"),
    "blob climbing out": ({"id": GOOD_ID, "blobs": [blob(f"../../{ESCAPED}")]}, "blob name"),
    "blob absolute": ({"id": GOOD_ID, "blobs": [blob(f"/tmp/{ESCAPED}")]}, "blob name"),
    "blob item 0": ({"id": GOOD_ID, "blobs": [blob("item-0")]}, "blob name"),
    "blob not a name": ({"id": GOOD_ID, "blobs": [blob(["sealed"])]}, "blob name"),
}


async def fetch_one(drop: dict[str, Any], identity: Path, out: Path) -> None:
    async with aiohttp.ClientSession() as session:
        # Port 9 on loopback: nothing listens there, should a request be made.
        relay = Relay(session, "http://127.0.0.1:9")
        await fetch_drop(relay, drop, Keys([str(identity)]), out, "the-daily")


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

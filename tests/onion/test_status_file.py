"""The status file a running relay's keeper writes and `amanah status` reads: whatever is
found there, a status or None, never an exception."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from onion.keeper import read_status


def test_a_fresh_status_is_read_and_a_stale_or_stopped_one_is_not(tmp_path: Path) -> None:
    path = tmp_path / "status.json"
    path.write_text(json.dumps({"updated_at": time.time(), "services": {}}))
    assert read_status(path, 60) == json.loads(path.read_text())
    path.write_text(json.dumps({"updated_at": time.time() - 120}))
    assert read_status(path, 60) is None
    path.write_text(json.dumps({"stopped_at": int(time.time())}))
    assert read_status(path, 60) is None
    assert read_status(tmp_path / "none.json", 60) is None


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b"\xff\xfe", b"[]", b'"updated_at"', b"7", b"null", b'{"updated_at": "soon"}',
     b'{"updated_at": null}', b'{"updated_at": []}'],
)  # fmt: skip
def test_a_damaged_status_is_none(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "status.json"
    path.write_bytes(content)
    assert read_status(path, 60) is None

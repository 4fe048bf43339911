"""Service keys persisted in the data directory, and their rotation."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from onion import keys
from onion.errors import OnionKeyError

NOW = 1_700_000_000


def test_a_key_is_made_once_0600_and_read_back_the_same(tmp_path: Path) -> None:
    first = keys.ensure(tmp_path, "source")
    path = keys.key_path(tmp_path, "source")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.ensure(tmp_path, "source") == first
    assert keys.load(tmp_path, "source") == first
    assert keys.load(tmp_path, "journalist") is None
    assert keys.ensure(tmp_path, "journalist").address != first.address


def test_a_readable_key_file_is_warned_about(tmp_path: Path) -> None:
    keys.ensure(tmp_path, "source")
    os.chmod(keys.key_path(tmp_path, "source"), 0o644)
    warnings: list[str] = []
    keys.load(tmp_path, "source", warnings)
    assert warnings and "chmod 600" in warnings[0]


@pytest.mark.parametrize(
    "content",
    ["", "hello\n", "amanah-onion-service-key-v1:!!!\n", "amanah-onion-service-key-v1:AAAA\n"],
)
def test_a_damaged_key_file_is_an_error(tmp_path: Path, content: str) -> None:
    keys.key_path(tmp_path, "source").write_text(content)
    with pytest.raises(OnionKeyError):
        keys.load(tmp_path, "source")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{key}\n",
        b"{key}\nwithdraw-after: soon\n",
        b"{key}\nwithdraw-after:\n",
        b"{key}\nwithdraw_after: 1\n",
        b"{key}\nwithdraw-after: 1\nwithdraw-after: 2\n",
        b"amanah-onion-service-key-v1:AAAA\nwithdraw-after: 1\n",
        b"\xff{key}\nwithdraw-after: 1\n",
    ],
)
def test_a_damaged_retiring_key_file_is_an_error(tmp_path: Path, content: bytes) -> None:
    keys.ensure(tmp_path, "source")
    keys.rotate(tmp_path, "source", 60, NOW)
    path = keys.retiring_path(tmp_path, "source")
    key_line = path.read_bytes().splitlines()[0]
    path.write_bytes(content.replace(b"{key}", key_line))
    with pytest.raises(OnionKeyError):
        keys.load_retiring(tmp_path, "source")


def test_unknown_services_are_refused(tmp_path: Path) -> None:
    with pytest.raises(OnionKeyError, match="unknown onion service"):
        keys.ensure(tmp_path, "../escape")


def test_rotation_keeps_the_old_key_for_the_overlap(tmp_path: Path) -> None:
    old = keys.ensure(tmp_path, "journalist")
    new, retiring = keys.rotate(tmp_path, "journalist", 3600, NOW)
    assert new != old and retiring.key == old and retiring.withdraw_after == NOW + 3600
    assert keys.load(tmp_path, "journalist") == new
    assert keys.load_retiring(tmp_path, "journalist") == retiring
    path = keys.retiring_path(tmp_path, "journalist")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(OnionKeyError, match="still overlapping"):
        keys.rotate(tmp_path, "journalist", 3600, NOW + 10)
    newer, again = keys.rotate(tmp_path, "journalist", 0, NOW + 3600)
    assert again.key == new and keys.load(tmp_path, "journalist") == newer
    assert keys.forget_retiring(tmp_path, "journalist")
    assert keys.load_retiring(tmp_path, "journalist") is None
    assert not keys.forget_retiring(tmp_path, "journalist")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_rotating_a_service_without_a_key_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OnionKeyError, match="no key yet"):
        keys.rotate(tmp_path, "source", 60, NOW)
    keys.ensure(tmp_path, "source")
    with pytest.raises(OnionKeyError, match="negative"):
        keys.rotate(tmp_path, "source", -1, NOW)

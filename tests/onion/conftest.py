"""Fixtures of the onion tests: a real, offline tor per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from onion.tor import TorControl, TorProcess
from tests.onion.torfixtures import offline_tor


@pytest.fixture
def tor(tmp_path: Path) -> Iterator[tuple[TorProcess, TorControl]]:
    with offline_tor(tmp_path / "tor") as running:
        yield running

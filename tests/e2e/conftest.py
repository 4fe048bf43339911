"""Fixtures of the end-to-end tests: relays as real processes, stopped after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.relayharness import RelayPool


@pytest.fixture
def relays(tmp_path: Path) -> Iterator[RelayPool]:
    with RelayPool(tmp_path) as pool:
        yield pool

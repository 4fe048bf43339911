"""Fixtures for the client tests: one relay with two contacts per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.clients.harness import Setup, make_setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    yield from make_setup(tmp_path_factory.mktemp("clients"))

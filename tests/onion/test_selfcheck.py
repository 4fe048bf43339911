"""onion.selfcheck: the record's decisions without an event loop, and the fetch through a
real tor's SOCKS port when tor cannot reach any network."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from onion.address import ServiceKey
from onion.selfcheck import NOT_UPLOADED, RETRY, SelfCheck, SelfChecker
from onion.tor import TorControl, TorProcess
from tests.onion.torfixtures import offline_tor

ADDRESS = ServiceKey(bytes(32)).address
OTHER = ServiceKey(bytes([1] * 32)).address


def test_a_new_service_is_not_yet_reachable_then_failing_after_the_grace() -> None:
    check = SelfCheck(interval=600, retry=15, grace=600)
    assert check.state == "pending" and check.reachable is None
    check = check.failed(ADDRESS, published_at=1000, now=1010, detail="no descriptor yet")
    assert (check.state, check.reachable, check.failures) == ("not_yet", False, 1)
    assert check.next_at == 1010 + 15
    check = check.failed(ADDRESS, published_at=1000, now=1030, detail="no descriptor yet")
    assert check.next_at == 1030 + 30  # doubled
    check = check.failed(ADDRESS, published_at=1000, now=1700, detail="introduction failed")
    assert check.state == "failing" and check.detail == "introduction failed"
    assert check.next_at == 1700 + 60


def test_retries_double_up_to_the_interval() -> None:
    check = SelfCheck(interval=100, retry=15, grace=10_000)
    delays = []
    for n in range(6):
        now = 1000 + n
        check = check.failed(ADDRESS, 1000, now, "x")
        delays.append(check.next_at - now)
    assert delays == [15, 30, 60, 100, 100, 100]


def test_success_then_failure_is_failing_at_once() -> None:
    check = SelfCheck(interval=600, retry=15, grace=600)
    check = check.succeeded(ADDRESS, now=1000)
    assert (check.state, check.reachable, check.next_at) == ("reachable", True, 1600)
    assert check.last_reachable_at == 1000
    # within the grace of its publication, but it answered before: this is an outage
    check = check.failed(ADDRESS, published_at=990, now=1600, detail="rendezvous failed")
    assert check.state == "failing" and check.failures == 1 and check.next_at == 1615
    assert check.to_json() == {
        "state": "failing",
        "reachable": False,
        "detail": "rendezvous failed",
        "address": ADDRESS,
        "checked_at": 1600,
        "last_reachable_at": 1000,
        "next_check_at": 1615,
        "failures_in_a_row": 1,
    }


def test_a_rotated_address_starts_again() -> None:
    check = SelfCheck(interval=600, retry=15, grace=600).succeeded(ADDRESS, now=1000)
    check = check.failed(OTHER, published_at=1500, now=1510, detail="no descriptor yet")
    assert check.state == "not_yet" and check.last_reachable_at is None and check.failures == 1


def test_off_is_neither_reachable_nor_not() -> None:
    check = SelfCheck().off(ADDRESS, "no SOCKS port", now=5)
    assert check.state == "off" and check.reachable is None and check.next_at > 5


async def test_no_socks_listener_is_off_and_nothing_published_waits() -> None:
    published: list[tuple[str, float, bool]] = []

    async def socks() -> tuple[str, int] | None:
        return None

    async def bootstrap() -> int | None:
        return 100

    checker = SelfChecker(lambda: published[0] if published else None, socks, bootstrap)
    result = await checker.check()
    assert result.state == "pending" and result.next_at > 0
    published.append((ADDRESS, 0.0, True))
    result = await checker.check()
    assert result.state == "off" and "SOCKS" in result.detail


async def test_nothing_is_fetched_before_an_hsdir_has_the_descriptor() -> None:
    """Until tor reports an upload, a check records why without asking tor for the
    descriptor (each HSDir it asks too early is not asked again for 15 minutes), and looks
    again after `retry` with no backing off; once uploaded, the next check goes on to the
    fetch (here: no SOCKS port, so off)."""
    uploaded = [False]
    asked: list[str] = []

    async def socks() -> tuple[str, int] | None:
        asked.append("socks")
        return None

    async def bootstrap() -> int | None:
        return 100

    published_at = time.time()
    checker = SelfChecker(lambda: (ADDRESS, published_at, uploaded[0]), socks, bootstrap)
    for _ in range(3):  # only looking: no backing off
        result = await checker.check()
        assert (result.state, result.detail, asked) == ("not_yet", NOT_UPLOADED, [])
        assert result.next_at == pytest.approx(time.time() + RETRY, abs=5)
        assert result.failures == 0
    uploaded[0] = True
    result = await checker.check()
    assert (result.state, asked) == ("off", ["socks"])


async def test_each_check_asks_for_new_circuits_and_leaves_names_to_tor() -> None:
    """Each fetch gives the SOCKS port credentials of its own, so tor builds it new
    circuits (IsolateSOCKSAuth), and hands tor the name, never resolving it here. The
    SOCKS port is a loopback listener that records what a client sends (RFC 1928, 1929)
    and answers "host unreachable"."""
    asked: list[tuple[bytes, int, bytes]] = []  # (username, address type, address)

    async def socks5(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, methods = await reader.readexactly(2)
        assert 2 in await reader.readexactly(methods)  # username/password offered
        writer.write(b"\x05\x02")
        _, length = await reader.readexactly(2)
        username = await reader.readexactly(length)
        await reader.readexactly((await reader.readexactly(1))[0])  # the password
        writer.write(b"\x01\x00")
        _, command, _, kind = await reader.readexactly(4)
        assert command == 1  # CONNECT
        host = await reader.readexactly((await reader.readexactly(1))[0]) if kind == 3 else b""
        asked.append((username, kind, host))
        writer.write(b"\x05\x04\x00\x01" + bytes(6))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(socks5, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def socks() -> tuple[str, int] | None:
        return ("127.0.0.1", port)

    async def bootstrap() -> int | None:
        return 100

    checker = SelfChecker(lambda: (ADDRESS, 0.0, True), socks, bootstrap, timeout=10)
    try:
        for _ in range(2):
            assert (await checker.check()).state == "failing"
    finally:
        server.close()
        await server.wait_closed()
    assert [(kind, host) for _, kind, host in asked] == [(3, ADDRESS.encode())] * 2
    assert asked[0][0] != asked[1][0]


@pytest.fixture
def unreachable_tor(tmp_path: Path) -> Iterator[tuple[TorProcess, TorControl]]:
    """A real tor with its network on but nothing to reach: its only directory authority
    is a closed port on loopback, so it stays at bootstrap 0% and its SOCKS port is open."""
    fragment = tmp_path / "nowhere.torrc"
    fragment.write_text(
        f"DirAuthority nowhere orport=9 no-v2 v3ident={'A' * 40} 127.0.0.1:9 {'B' * 40}\n"
    )
    with offline_tor(tmp_path / "tor", disable_network=False, include=fragment) as tor:
        yield tor


async def test_through_a_tor_that_cannot_reach_the_network(
    unreachable_tor: tuple[TorProcess, TorControl],
) -> None:
    _, control = unreachable_tor
    key = ServiceKey.generate()
    control.add_service("source", key, {80: ("127.0.0.1", 9)})
    listener = control.socks_listener()
    assert listener is not None

    async def socks() -> tuple[str, int] | None:
        return listener

    async def bootstrap() -> int | None:
        return int(control.get_info("status/bootstrap-phase").split("PROGRESS=")[1].split()[0])

    checker = SelfChecker(lambda: (key.address, 0.0, False), socks, bootstrap, timeout=3)
    result = await checker.check()
    assert result.state == "failing" and result.reachable is False  # published long ago
    assert result.detail == "tor has not reached the Tor network (bootstrap 0%)"
    # The fetch itself, through the real SOCKS port: tor holds the request, and the
    # check gives up after its timeout with a reason, not an exception.
    reason = await asyncio.wait_for(checker._fetch(key.address, listener), 30)
    assert reason == "no answer through Tor within 3 s"

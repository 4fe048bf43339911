"""The relay published on a private Tor network on loopback (tests/onion/privnet.py): a
source reaches the source .onion and submits a drop; a member fetches it through the
journalist .onion with their client-auth key; without a key, or after their contact is
removed, the journalist service cannot be reached. Bounded in time; every process is
stopped at the end."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from onion import client as tor_client
from tests.onion.privnet import PrivateTorNetwork, rss_mib
from tests.relayharness import (
    AMANAH,
    INBOX,
    codename_of,
    csrf_of,
    form,
    keygen,
    run,
    serving_with_tor,
)

pytestmark = [pytest.mark.tor, pytest.mark.slow]

REACH_TIMEOUT = 240.0  # the notes measured 26-48 s; generous for a loaded CI machine


@pytest.fixture
def network(tmp_path: Path) -> Iterator[PrivateTorNetwork]:
    net = PrivateTorNetwork(tmp_path / "net")
    try:
        net.start()
        yield net
    finally:
        net.close()


async def get_through_tor(socks: str, url: str, deadline: float) -> str:
    """GETs `url` through tor, retrying while tor says "not yet", until `deadline`."""
    last = ""
    while time.monotonic() < deadline:
        try:
            async with aiohttp.ClientSession(
                connector=tor_client.socks_connector(socks),
                timeout=aiohttp.ClientTimeout(total=30),
            ) as session:
                async with session.get(url) as response:
                    assert response.status == 200, response.status
                    return await response.text()
        except tor_client.TRANSPORT_ERRORS as exc:
            explained = tor_client.explain(exc)
            last = str(explained or exc)
            if explained is not None and not explained.retryable:
                raise
        await asyncio.sleep(2)
    raise AssertionError(f"{url} not reachable in time: {last}")


async def submit_drop(socks: str, url: str, message: str, contacts: list[str]) -> str:
    async with aiohttp.ClientSession(
        connector=tor_client.socks_connector(socks),
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=120),
    ) as session:
        async with session.get(url) as response:
            csrf = csrf_of(await response.text())
        async with session.post(url + "/submit", data=form(csrf, message, contacts)) as response:
            page = await response.text()
            assert response.status == 200, page
    return codename_of(page)


def inbox_fetch(
    net: PrivateTorNetwork, url: str, identity: Path, out: Path, auth: Path | None, wait: int
) -> subprocess.CompletedProcess[str]:
    argv: list[str | Path] = [
        INBOX, "fetch", "--relay", url, "--identity", identity, "--out", out,
        "--tor-socks", f"127.0.0.1:{net.client_socks}",
        "--tor-control", f"127.0.0.1:{net.client_control}", "--wait", str(wait),
    ]  # fmt: skip
    if auth is not None:
        argv += ["--onion-auth", auth]
    return run(*argv, check=False, timeout=wait + 120)


def wait_for_status(data: Path, check: object, timeout: float) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    status: dict = {}  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        status = json.loads(run(AMANAH, "status", "--json", "--data", data).stdout)
        if check(status):  # type: ignore[operator]
            return status
        time.sleep(1)
    raise AssertionError(f"status never got there: {json.dumps(status)[:2000]}")


def test_a_drop_through_the_private_tor_network(tmp_path: Path, network: PrivateTorNetwork) -> None:
    data = tmp_path / "relay"
    run(AMANAH, "init", "--data", data)
    config = (data / "amanah.toml").read_text()
    (data / "amanah.toml").write_text(
        config.replace(
            "[tor]\n",
            f'[tor]\ninclude = "{network.torrc_fragment()}"\nsync_seconds = 1\n',
        )
    )
    handover = tmp_path / "handover"
    handover.mkdir()
    alice, bob = keygen(tmp_path / "alice.txt"), keygen(tmp_path / "bob.txt")
    run(AMANAH, "contact", "add", "the-daily", "--member", alice.card, "--auth-dir", handover,
        "--data", data)  # fmt: skip
    (alice_auth,) = handover.iterdir()
    (tmp_path / "alice.auth_private").write_bytes(alice_auth.read_bytes())
    alice_auth.unlink()
    run(AMANAH, "contact", "add", "the-weekly", "--member", bob.card, "--auth-dir", handover,
        "--data", data)  # fmt: skip
    (bob_auth,) = handover.iterdir()

    status = json.loads(run(AMANAH, "status", "--json", "--data", data).stdout)
    source_url = f"http://{status['source_onion']}"
    journalist_url = f"http://{status['journalist_onion']}"
    socks = f"127.0.0.1:{network.client_socks}"

    with serving_with_tor(data, tmp_path) as (relay, log):
        deadline = network.started_at + REACH_TIMEOUT
        try:
            page = asyncio.run(get_through_tor(socks, source_url, deadline))
        except AssertionError as exc:
            relay_tor = (data / "tor" / "tor.log").read_text().splitlines()
            raise AssertionError(
                f"{exc}\n{network.logs()}\n--- relay\n{log.read_text()}\n"
                + "\n".join(line for line in relay_tor if "No available nodes" not in line)[-3000:]
            ) from None
        reached = time.monotonic() - network.started_at
        rss = network.rss_mib() + rss_mib(int((data / "tor" / "tor.pid").read_text()))
        print(f"\nsource .onion reachable {reached:.1f} s after launch; 7 tors' RSS {rss:.0f} MiB")
        assert "csrf" in page
        message = f"testimony through tor {time.time()}"
        codename = asyncio.run(submit_drop(socks, source_url, message, ["the-daily", "the-weekly"]))
        assert len(codename.split()) == 7
        status = wait_for_status(data, lambda s: s["onion"]["source"]["descriptor_published"], 60)
        assert status["onion"]["source"]["proof_of_work"] is True

        # Without a client-auth key, the journalist service cannot be reached.
        refused = inbox_fetch(
            network, journalist_url, alice.identity_file, tmp_path / "x", None, 90
        )
        assert refused.returncode == 1, refused
        assert "client authorisation" in refused.stderr, refused.stderr

        # Bob's key reaches it, and he gets the drop.
        fetched = inbox_fetch(
            network, journalist_url, bob.identity_file, tmp_path / "bob", bob_auth, 120
        )
        assert fetched.returncode == 0, fetched.stderr
        (folder,) = [p for p in (tmp_path / "bob").iterdir() if not p.name.startswith(".")]
        assert (folder / "message.txt").read_text() == message

        # Bob's contact is removed: the service is re-published without his key.
        run(AMANAH, "contact", "remove", "the-weekly", "--data", data)
        wait_for_status(data, lambda s: s["onion"]["journalist"]["client_auth_keys"] == 1, 30)
        gone = inbox_fetch(
            network, journalist_url, bob.identity_file, tmp_path / "bob2", bob_auth, 90
        )
        assert gone.returncode == 1, gone.stdout + gone.stderr

        # Alice's key still reaches it.
        fetched = inbox_fetch(
            network, journalist_url, alice.identity_file, tmp_path / "alice",
            tmp_path / "alice.auth_private", 120,
        )  # fmt: skip
        assert fetched.returncode == 0, fetched.stderr
        (folder,) = [p for p in (tmp_path / "alice").iterdir() if not p.name.startswith(".")]
        assert (folder / "message.txt").read_text() == message
        assert network.running() == []
    text = log.read_text()
    assert relay.returncode == 0, text
    for secret in (alice.identity_file.read_text(), bob_auth.read_text().split(":")[3]):
        assert secret.strip() not in text

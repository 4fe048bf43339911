"""The relay published on a private Tor network on loopback (tests/onion/privnet.py),
started once for this module with one relay serving through it:

- a source reaches the source .onion and submits a drop; a member fetches it through the
  journalist .onion with their client-auth key; without a key, or after their contact is
  removed, the journalist service cannot be reached;
- `amanah-drop send` seals a drop on the source's device and uploads it through the
  source .onion; the member fetches it;
- the relay's self-check, through its own tor's SOCKS port, finds its source service
  reachable, and `amanah status` says so;
- both onion keys are rotated with a short overlap: the new addresses are in the signed
  directory (verified as a client verifies it) while the old ones still answer, the new
  ones serve the pages and the journalist API, and once the overlap is over the old ones
  no longer answer a client with fresh circuits.

The tests run in file order and share the relay's state (the rotation comes last). Bounded
in time; every process is stopped at the end.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from aiohttp_socks import ProxyConnector

from crypto.directory import DirectoryPin, verify_directory
from crypto.keys import VerifyKey
from onion import client as tor_client
from onion.tor import TorControl
from tests.clients.harness import codename_line, run_drop
from tests.onion.privnet import PrivateTorNetwork, rss_mib
from tests.relayharness import (
    AMANAH,
    INBOX,
    Member,
    codename_of,
    csrf_of,
    form,
    keygen,
    run,
    serving_with_tor,
)
from tests.sanitize import samples

pytestmark = [pytest.mark.tor, pytest.mark.slow]
T = TypeVar("T")

REACH_TIMEOUT = 240.0  # the notes measured 26-48 s; generous for a loaded CI machine
NOT_FOUND = "descriptor is not on the Tor network"  # onion.client's words for tor's F0
OVERLAP = 60  # seconds the old addresses stay published after the rotation in this test
SELF_CHECK_SECONDS = 10


@dataclass
class World:
    """The network, the relay serving through it, and two members of two contacts."""

    network: PrivateTorNetwork
    tmp: Path
    data: Path
    log: Path
    directory_key: str  # what `amanah init` printed: the key a client pins
    alice: Member
    alice_auth: Path
    bob: Member
    bob_auth: Path
    source_url: str
    journalist_url: str

    @property
    def socks(self) -> str:
        return f"127.0.0.1:{self.network.client_socks}"

    @property
    def control(self) -> str:
        return f"127.0.0.1:{self.network.client_control}"


def _prepare(tmp: Path, network: PrivateTorNetwork) -> tuple[Path, str, dict[str, Any]]:
    data = tmp / "relay"
    initialised = run(AMANAH, "init", "--data", data)
    directory_key = initialised.stdout.split("directory key:")[1].strip()
    config = (data / "amanah.toml").read_text()
    (data / "amanah.toml").write_text(
        config.replace(
            "[tor]\n",
            f'[tor]\ninclude = "{network.torrc_fragment()}"\nsync_seconds = 1\n'
            f"self_check_seconds = {SELF_CHECK_SECONDS}\n",
        )
    )
    return data, directory_key, status_of(data)


def _add_contact(data: Path, tmp: Path, name: str, member: Member) -> Path:
    handover = tmp / f"handover-{name}"
    handover.mkdir()
    run(AMANAH, "contact", "add", name, "--member", member.card, "--auth-dir", handover,
        "--data", data)  # fmt: skip
    (auth,) = handover.iterdir()
    return auth


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("tor-network")
    network = PrivateTorNetwork(tmp / "net")
    try:
        network.start()
        data, directory_key, status = _prepare(tmp, network)
        alice, bob = keygen(tmp / "alice.txt"), keygen(tmp / "bob.txt")
        alice_auth = _add_contact(data, tmp, "the-daily", alice)
        bob_auth = _add_contact(data, tmp, "the-weekly", bob)
        with serving_with_tor(data, tmp) as (relay, log):
            world = World(
                network, tmp, data, log, directory_key, alice, alice_auth, bob, bob_auth,
                f"http://{status['source_onion']}", f"http://{status['journalist_onion']}",
            )  # fmt: skip
            _wait_until_reachable(world)
            yield world
        text = log.read_text()
        assert relay.returncode == 0, text
        for secret in (alice.identity_file.read_text(), bob_auth.read_text().split(":")[3]):
            assert secret.strip() not in text
    finally:
        network.close()


def diagnosis(world: World) -> str:
    """The logs that say why an onion address did not answer: the network's tors, the
    relay's, and the relay's tor."""
    relay_tor = (world.data / "tor" / "tor.log").read_text().splitlines()
    return (
        f"{world.network.logs()}\n--- relay\n{world.log.read_text()[-4000:]}\n--- relay tor\n"
        + "\n".join(line for line in relay_tor if "No available nodes" not in line)[-3000:]
    )


def _wait_until_reachable(world: World) -> None:
    network = world.network
    deadline = network.started_at + REACH_TIMEOUT
    try:
        # The first try waits until an HSDir has the descriptor: earlier ones are wasted.
        wait_for_status(
            world.data,
            lambda s: s["onion"]["source"]["descriptor_published"],
            deadline - time.monotonic(),
        )
        page = asyncio.run(
            get_through_tor(world.socks, world.source_url, deadline, lambda: _newnym(world))
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnosis(world)}") from None
    assert "csrf" in page
    reached = time.monotonic() - network.started_at
    rss = network.rss_mib() + rss_mib(int((world.data / "tor" / "tor.pid").read_text()))
    print(f"\nsource .onion reachable {reached:.1f} s after launch; 7 tors' RSS {rss:.0f} MiB")


def fresh_connector(socks: str) -> ProxyConnector:
    """A SOCKS connector whose streams share no circuit with any other connector's: tor
    isolates streams by SOCKS credentials (IsolateSOCKSAuth, on by default)."""
    user, password = secrets.token_hex(8), secrets.token_hex(8)
    return ProxyConnector.from_url(f"socks5://{user}:{password}@{socks}", rdns=True)


async def get_once(socks: str, url: str, seconds: float) -> tuple[int, bytes] | str:
    """(status, body) of one GET through tor on fresh circuits, or why it failed."""
    try:
        async with aiohttp.ClientSession(
            connector=fresh_connector(socks), timeout=aiohttp.ClientTimeout(total=seconds)
        ) as session:
            async with session.get(url) as response:
                return response.status, await response.read()
    except TimeoutError:
        return f"no answer within {seconds:.0f} s"
    except tor_client.TRANSPORT_ERRORS as exc:
        return str(tor_client.explain(exc) or repr(exc))


async def get_through_tor(
    socks: str, url: str, deadline: float, forget: Callable[[], None] | None = None
) -> str:
    """GETs `url` through tor, retrying while tor says "not yet", until `deadline`. Where
    tor found no descriptor, `forget` (if given) runs before the next try: tor asks each
    HSDir for a descriptor at most once in 15 minutes, so a client that asked before the
    service's upload must forget that it did, as a client that comes later knows nothing
    of it (in a network of five HSDirs, a few early tries use them all up)."""
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
            if forget is not None and NOT_FOUND in last:
                forget()
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
    world: World, url: str, identity: Path, out: Path, auth: Path | None, wait: int
) -> subprocess.CompletedProcess[str]:
    argv: list[str | Path] = [
        INBOX, "fetch", "--relay", url, "--identity", identity, "--out", out,
        "--tor-socks", world.socks, "--tor-control", world.control, "--wait", str(wait),
    ]  # fmt: skip
    if auth is not None:
        argv += ["--onion-auth", auth]
    return run(*argv, check=False, timeout=wait + 120)


def status_of(data: Path) -> dict[str, Any]:
    return json.loads(run(AMANAH, "status", "--json", "--data", data).stdout)  # type: ignore[no-any-return]


def wait_for_status(
    data: Path, check: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    # Looks at least once, even when the caller's time is already spent.
    deadline = time.monotonic() + timeout
    while True:
        status = status_of(data)
        if check(status):
            return status
        if time.monotonic() >= deadline:
            break
        time.sleep(1)
    raise AssertionError(f"status never got there: {json.dumps(status)[:3000]}")


def test_a_drop_through_the_private_tor_network(world: World) -> None:
    message = f"testimony through tor {time.time()}"
    codename = asyncio.run(
        submit_drop(world.socks, world.source_url, message, ["the-daily", "the-weekly"])
    )
    assert len(codename.split()) == 7
    status = wait_for_status(world.data, lambda s: s["onion"]["source"]["descriptor_published"], 60)
    assert status["onion"]["source"]["proof_of_work"] is True
    assert status["onion"]["source"]["proof_of_work_note"] == ""

    # Without a client-auth key, the journalist service cannot be reached.
    tmp = world.tmp
    refused = inbox_fetch(
        world, world.journalist_url, world.alice.identity_file, tmp / "x", None, 90
    )
    assert refused.returncode == 1, refused
    assert "client authorisation" in refused.stderr, refused.stderr

    # Bob's key reaches it, and he gets the drop.
    bob = world.bob
    fetched = inbox_fetch(
        world, world.journalist_url, bob.identity_file, tmp / "bob", world.bob_auth, 120
    )
    assert fetched.returncode == 0, fetched.stderr
    (folder,) = [p for p in (tmp / "bob").iterdir() if not p.name.startswith(".")]
    assert (folder / "message.txt").read_text() == message

    # Bob's contact is removed: the service is re-published without his key, and his key,
    # still held by the client's tor, no longer opens the service's descriptor.
    run(AMANAH, "contact", "remove", "the-weekly", "--data", world.data)
    wait_for_status(world.data, lambda s: s["onion"]["journalist"]["client_auth_keys"] == 1, 30)
    gone = inbox_fetch(
        world, world.journalist_url, bob.identity_file, tmp / "bob2", world.bob_auth, 90
    )
    assert gone.returncode == 1, gone.stdout + gone.stderr
    # Refused by tor, not by the relay's API: the circuit Bob's tor already had to the
    # service was closed when his key was taken away (tor would keep it open).
    assert "the relay refused" not in gone.stderr, gone.stderr
    print(f"\nafter removal, bob's fetch: {gone.stderr.strip()}")

    # Alice's key still reaches it.
    fetched = inbox_fetch(
        world, world.journalist_url, world.alice.identity_file, tmp / "alice", world.alice_auth, 120
    )
    assert fetched.returncode == 0, fetched.stderr
    (folder,) = [p for p in (tmp / "alice").iterdir() if not p.name.startswith(".")]
    assert (folder / "message.txt").read_text() == message
    assert world.network.running() == []


def test_amanah_drop_sends_through_the_source_onion(world: World) -> None:
    """A source's own client: strips and seals on the device, uploads through tor to the
    source .onion (tus), and the member gets the same message and photo."""
    tmp = world.tmp
    photo = samples.jpeg(tmp)
    message = f"sealed on a device, sent through tor {time.time()}"
    sent = run_drop(
        "send", "--relay", world.source_url, "--tor-socks", world.socks, "--to", "the-daily",
        "-m", message, photo, "--wait", "120", state=tmp / "drop-state", timeout=300,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    assert len(codename_line(sent.stdout).split()) == 7
    out = tmp / "alice-device"
    fetched = inbox_fetch(
        world, world.journalist_url, world.alice.identity_file, out, world.alice_auth, 120
    )
    assert fetched.returncode == 0, fetched.stderr
    folders = [p for p in out.iterdir() if not p.name.startswith(".")]
    texts = {f: (f / "message.txt").read_text() for f in folders if (f / "message.txt").exists()}
    (folder,) = [f for f, text in texts.items() if text == message]
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json",
        "message.txt",
        "photo-1.jpg",
    ]


def test_the_relay_checks_its_own_source_service_through_tor(world: World) -> None:
    status = wait_for_status(world.data, lambda s: s["source_reachable"] is True, 90)
    check = status["onion"]["self_check"]
    assert check["state"] == "reachable" and check["address"] == status["source_onion"]
    assert time.time() - status["checked_at"] < 3 * SELF_CHECK_SECONDS + 60
    assert check["next_check_at"] > check["checked_at"]
    text = run(AMANAH, "status", "--data", world.data).stdout
    assert "self-check through tor: the source page answers (checked " in text, text
    checked = run(AMANAH, "status", "--check", "--data", world.data, check=False)
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    assert "self-check: the source service answers through Tor" in world.log.read_text()


async def _all(*waiting: Awaitable[T]) -> list[T]:
    return list(await asyncio.gather(*waiting))


def _newnym(world: World) -> None:
    """SIGNAL NEWNYM on the client's tor: new circuits, and its onion-service client state
    (cached descriptors, introduction points) forgotten, as a client that comes later."""
    control = TorControl.connect("127.0.0.1", world.network.client_control)
    try:
        control.command("SIGNAL NEWNYM", "ask for new circuits")
    finally:
        control.close()


def test_a_key_rotation_overlaps_then_withdraws_the_old_addresses(world: World) -> None:
    old_source, old_journalist = world.source_url, world.journalist_url
    tor_client.register_client_auth(world.alice_auth, old_journalist, world.control, None)
    rotated_at = time.monotonic()
    for key in ("source-onion", "journalist-onion"):
        done = run(AMANAH, "keys", "rotate", key, "--overlap", f"{OVERLAP}s", "--data", world.data)
        assert "stays published until" in done.stdout, done.stdout
    status = status_of(world.data)
    new_source = f"http://{status['source_onion']}"
    new_journalist = f"http://{status['journalist_onion']}"
    assert new_source != old_source and new_journalist != old_journalist

    # The signed directory names the new addresses, fetched as a member's client fetches
    # it (through the old journalist address, with their key) and verified against the key
    # `amanah init` printed.
    answer = asyncio.run(get_once(world.socks, old_journalist + "/api/v1/directory", 60))
    assert not isinstance(answer, str), answer
    assert answer[0] == 200, answer
    directory, _ = verify_directory(answer[1], DirectoryPin(VerifyKey.parse(world.directory_key)))
    assert dict(directory.services) == {
        "source": new_source.removeprefix("http://"),
        "journalist": new_journalist.removeprefix("http://"),
    }
    # ... while the old source address still serves the pages.
    answer = asyncio.run(get_once(world.socks, old_source, 60))
    assert not isinstance(answer, str) and answer[0] == 200, answer
    assert time.monotonic() - rotated_at < OVERLAP, "the old addresses were checked too late"

    # The new addresses work: the pages, and the journalist API with Alice's key.
    deadline = time.monotonic() + 180
    try:
        page = asyncio.run(
            get_through_tor(world.socks, new_source, deadline, lambda: _newnym(world))
        )
    except AssertionError as exc:
        onion = json.dumps(status_of(world.data)["onion"], indent=1)
        raise AssertionError(f"{exc}\n{onion}\n{diagnosis(world)}") from None
    assert "csrf" in page
    fetched = inbox_fetch(
        world, new_journalist, world.alice.identity_file, world.tmp / "alice-new",
        world.alice_auth, 120,
    )  # fmt: skip
    assert fetched.returncode == 0, fetched.stderr
    print(f"\nnew addresses answered {time.monotonic() - rotated_at:.0f} s after the rotation")

    # The overlap ends: both old services are withdrawn (DEL_ONION), and a client that
    # comes later, with fresh circuits and no cached descriptor, cannot reach them.
    wait_for_status(
        world.data,
        lambda s: (
            s["onion"]["source"]["retiring"] is None
            and s["onion"]["journalist"]["retiring"] is None
        ),
        # The withdrawal is due OVERLAP seconds after the rotation; the new addresses can
        # take longer than that to answer in this network (187 s seen), so a minute of
        # grace counts from whichever is later.
        max(OVERLAP - (time.monotonic() - rotated_at), 0) + 60,
    )
    withdrawn = world.log.read_text()
    assert f"withdrew {old_source.removeprefix('http://')} (source_retiring)" in withdrawn
    assert f"withdrew {old_journalist.removeprefix('http://')} (journalist_retiring)" in withdrawn
    _newnym(world)  # also forgets the client-auth keys given over the control port
    tor_client.register_client_auth(world.alice_auth, old_journalist, world.control, None)
    started = time.monotonic()
    olds = (old_source, old_journalist + "/api/v1/directory")
    answers = asyncio.run(_all(*(get_once(world.socks, url, 40) for url in olds)))
    for url, answer in zip(olds, answers, strict=True):
        assert isinstance(answer, str), f"{url} still answers after the overlap: {answer!r}"
        assert "client authorisation" not in answer, answer
        print(f"old address after the overlap: {answer}")
    print(f"both refusals took {time.monotonic() - started:.0f} s")
    # The new source address still answers, through the same client (so the refusals
    # above are the old services' absence, not a broken network).
    answer = asyncio.run(get_once(world.socks, new_source, 60))
    assert not isinstance(answer, str) and answer[0] == 200, answer
    status = status_of(world.data)
    assert status["onion"]["source"]["address"] == new_source.removeprefix("http://")
    assert status["onion"]["source"]["published"] and status["onion"]["journalist"]["published"]

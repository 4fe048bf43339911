"""`amanah-drop` pins the relay's directory key on first use and then trusts only its
signed rotation chain: another key at the same address, and a forked chain, are refused
before anything is sealed. The relays are real processes; the rotation records are signed
into a relay's own store, as a relay rotating its key would publish them."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crypto.directory import RotationRecord, rotate, sign_directory, verify_directory
from crypto.keys import SigningKey
from relay import datadir
from relay.store import Store
from tests.clients.harness import Proxy, Setup, run_drop
from tests.relayharness import add_contact, init_data, keygen


@pytest.fixture
def proxy(setup: Setup) -> Iterator[Proxy]:
    proxy = Proxy(setup.relay.source_port)
    yield proxy
    proxy.close()


def seal(relay_url: str, out: Path, state: Path) -> tuple[int, str, str]:
    done = run_drop("seal", "--relay", relay_url, "-m", "x", "-o", out, state=state)
    return done.returncode, done.stdout, done.stderr


def test_another_key_at_the_same_address_is_refused(
    setup: Setup, proxy: Proxy, tmp_path: Path
) -> None:
    state = tmp_path / "s"
    code, _, err = seal(proxy.url, tmp_path / "first.age", state)
    assert code == 0, err
    [pin] = list((state / "relays").glob("*/directory-pin.json"))
    pinned = pin.read_bytes()

    # The same address now answers with another relay (another directory key).
    other = tmp_path / "other"
    init_data(other)
    add_contact(other, "the-daily", [keygen(tmp_path / "mallory.txt")])
    impostor = setup.pool.new(other)
    proxy.reset(target=impostor.source_port)
    code, out, err = seal(proxy.url, tmp_path / "second.age", state)
    assert code == 1
    assert "does not verify against the key pinned" in err
    assert "hint: do not trust this relay" in err
    assert out == ""  # no codename: nothing was sealed
    assert not (tmp_path / "second.age").exists()
    assert pin.read_bytes() == pinned  # the pin is not moved
    impostor.stop()


async def publish(data: Path, key: SigningKey, chain: list[RotationRecord]) -> None:
    """Signs the relay's latest directory again, one version on, with `key` and `chain`,
    into the relay's own store (the relay serves the latest)."""
    async with await Store.open(data / "amanah.db") as store:
        latest = await store.latest_directory()
        assert latest is not None
        directory, _ = verify_directory(latest[1], None)
        following = dataclasses.replace(directory, version=latest[0] + 1)
        document = sign_directory(following, key, chain)
        await store.save_directory(following.version, int(time.time()), document)


async def test_rotation_is_followed_and_a_fork_refused(setup: Setup, tmp_path: Path) -> None:
    data = tmp_path / "data"
    init_data(data)
    add_contact(data, "the-daily", [keygen(tmp_path / "alice.txt")])
    relay = setup.pool.new(data)
    state = tmp_path / "s"
    code, _, err = seal(relay.source_url, tmp_path / "1.age", state)
    assert code == 0, err

    root = datadir.load_keys(data).directory_key
    successor, usurper = SigningKey.generate(), SigningKey.generate()
    now = int(time.time())
    await publish(data, successor, [rotate(root, successor, 1, now)])
    code, _, err = seal(relay.source_url, tmp_path / "2.age", state)
    assert code == 0, err  # a signed rotation is followed

    await publish(data, usurper, [rotate(root, usurper, 1, now)])
    code, out, err = seal(relay.source_url, tmp_path / "3.age", state)
    assert code == 1
    assert "fork" in err and "does not verify against the key pinned" in err
    assert out == "" and not (tmp_path / "3.age").exists()
    relay.stop()

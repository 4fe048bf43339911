"""onion.tor and onion.services against a real tor (Debian's, DisableNetwork 1): launch,
attach, ADD_ONION with persisted keys, client authorisation, proof-of-work, removal,
rotation, and the errors an operator sees."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from onion import keys as service_keys
from onion.address import ClientAuthKey, ServiceKey
from onion.errors import (
    ControlAuthFailed,
    ControlError,
    ControlUnreachable,
    ServiceError,
    TorNotInstalled,
    TorStartFailed,
)
from onion.keeper import KeeperSettings, ServiceKeeper, read_status
from onion.services import Attach, OnionServices
from onion.tor import LaunchSettings, TorControl, TorProcess, launch, pow_supported
from tests.onion.torfixtures import TOR, hash_password, offline_tor
from tests.relayharness import AMANAH, run

pytestmark = pytest.mark.tor
TARGET = {80: ("127.0.0.1", 8080)}


def recorded(control: TorControl) -> list[str]:
    """From now on, every command line `control` sends to tor (which still answers it)."""
    lines: list[str] = []
    send = control.command

    def recording(line: str, what: str) -> Any:
        lines.append(line)
        return send(line, what)

    control.command = recording  # type: ignore[method-assign]
    return lines


def add_onion_options(line: str) -> dict[str, str]:
    """The KEY=VALUE options of an ADD_ONION line but its key and its ports."""
    words = [w.split("=", 1) for w in line.split()[2:] if "=" in w]
    return {k: v for k, v in words if k not in ("Port", "ClientAuthV3")}


def test_the_address_survives_a_restart_and_matches_the_local_computation(
    tmp_path: Path,
) -> None:
    (tmp_path / "keys").mkdir()
    key = service_keys.ensure(tmp_path / "keys", "source")
    seen = []
    for attempt in range(2):
        with offline_tor(tmp_path / f"tor{attempt}") as (_, control):
            published = control.add_service("source", key, TARGET)
            assert published.address == key.address
            assert control.services() == [key.address]
            seen.append(published.address)
    assert seen[0] == seen[1] == service_keys.load(tmp_path / "keys", "source").address  # type: ignore[union-attr]


def test_several_client_auth_keys_and_pow_are_accepted(
    tor: tuple[TorProcess, TorControl],
) -> None:
    _, control = tor
    members = [ClientAuthKey.generate() for _ in range(3)]
    journalist = control.add_service(
        "journalist",
        ServiceKey.generate(),
        {80: ("127.0.0.1", 8081)},
        client_auth=[m.public_base32 for m in members],
    )
    assert journalist.client_auth == tuple(m.public_base32 for m in members)
    source = control.add_service("source", ServiceKey.generate(), TARGET, proof_of_work=True)
    assert source.proof_of_work and not source.warnings
    assert sorted(control.services()) == sorted([journalist.address, source.address])


def test_a_malformed_client_auth_key_is_refused(tor: tuple[TorProcess, TorControl]) -> None:
    _, control = tor
    with pytest.raises(ServiceError, match="tor refused"):
        control.add_service("journalist", ServiceKey.generate(), TARGET, client_auth=["AAAA"])
    assert control.services() == []


def test_the_same_key_twice_is_a_collision_not_a_pow_fallback(
    tor: tuple[TorProcess, TorControl],
) -> None:
    _, control = tor
    key = ServiceKey.generate()
    control.add_service("source", key, TARGET, proof_of_work=True)
    with pytest.raises(ServiceError, match="collision"):
        control.add_service("source", key, TARGET, proof_of_work=True)


def test_removal(tor: tuple[TorProcess, TorControl]) -> None:
    _, control = tor
    kept, removed = ServiceKey.generate(), ServiceKey.generate()
    control.add_service("a", kept, TARGET)
    control.add_service("b", removed, TARGET)
    control.remove_service(removed.address)
    assert control.services() == [kept.address]
    # No client ever connected (tor is offline): no rendezvous circuit to close.
    assert control.close_rendezvous_circuits(removed.address) == 0
    with pytest.raises(ServiceError):
        control.remove_service(removed.address)


def test_a_targets_off_loopback_is_refused(tor: tuple[TorProcess, TorControl]) -> None:
    _, control = tor
    with pytest.raises(ControlError, match="loopback"):
        control.add_service("source", ServiceKey.generate(), {80: ("192.0.2.1", 80)})


def test_a_client_tor_takes_a_members_key(tor: tuple[TorProcess, TorControl]) -> None:
    _, control = tor
    address = ServiceKey.generate().address
    key = ClientAuthKey.generate()
    control.add_client_auth(address, key)
    view = control.command("ONION_CLIENT_AUTH_VIEW", "list client-auth keys")
    assert address.removesuffix(".onion") in str(view)


def test_tor_missing_is_said_plainly(tmp_path: Path) -> None:
    with pytest.raises(TorNotInstalled) as caught:
        launch(LaunchSettings(tmp_path / "tor", binary=str(tmp_path / "no-tor-here")))
    assert caught.value.hint and "apt-get install tor" in caught.value.hint


def test_a_bad_torrc_line_shows_tors_own_words(tmp_path: Path) -> None:
    with pytest.raises(TorStartFailed) as caught:
        launch(
            LaunchSettings(
                tmp_path / "tor", binary=TOR, disable_network=True, extra=[("NoSuchOption", "1")]
            )
        )
    assert "NoSuchOption" in str(caught.value)


def test_a_line_break_cannot_inject_config(tmp_path: Path) -> None:
    with pytest.raises(TorStartFailed, match="line break"):
        launch(LaunchSettings(tmp_path / "tor", binary=TOR, include=Path("x\nControlPort 1")))


def test_a_hung_tor_is_killed_after_the_grace(tmp_path: Path) -> None:
    process = launch(LaunchSettings(tmp_path / "tor", binary=TOR, disable_network=True))
    control = TorControl.connect("127.0.0.1", process.control_port)
    assert control.version()  # tor is past start-up: its own SIGTERM handler is in place
    os.kill(process.pid, signal.SIGSTOP)  # a stopped tor cannot act on SIGTERM, as a hung one
    started = time.monotonic()
    status = process.stop(grace=1.0)
    elapsed = time.monotonic() - started
    # SIGTERM did not end it within the grace; SIGKILL did (the kernel may report the
    # pending SIGTERM as the cause once the SIGKILL wakes the stopped process).
    assert 1.0 <= elapsed < 5
    assert status in (-signal.SIGKILL, -signal.SIGTERM)
    assert not process.running()
    control.close()


def test_nothing_listening_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ControlUnreachable):
        TorControl.connect("127.0.0.1", port)


def test_attach_with_a_password(tmp_path: Path) -> None:
    data = tmp_path / "tor"
    data.mkdir(mode=0o700)
    (data / "torrc").write_text(
        f"DataDirectory {data}\nControlPort 127.0.0.1:auto\n"
        f"ControlPortWriteToFile {data}/control-port\n"
        f"HashedControlPassword {hash_password('right horse')}\n"
        "DisableNetwork 1\nSocksPort 0\n"
    )
    process = TorProcess(
        __import__("subprocess").Popen(
            [TOR, "--defaults-torrc", "/dev/null", "-f", str(data / "torrc"), "--quiet"]
        ),
        data,
        0,
    )
    try:
        deadline = time.monotonic() + 30
        while not (data / "control-port").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        port = int((data / "control-port").read_text().strip().rsplit(":", 1)[1])
        with pytest.raises(ControlAuthFailed, match="wants a password"):
            TorControl.connect("127.0.0.1", port)
        with pytest.raises(ControlAuthFailed, match="refused the password"):
            TorControl.connect("127.0.0.1", port, "wrong horse")
        control = TorControl.connect("127.0.0.1", port, "right horse")
        try:
            key = ServiceKey.generate()
            assert control.add_service("source", key, TARGET).address == key.address
        finally:
            control.close()
    finally:
        process.stop()


async def test_the_async_facade_attaches_and_republishes(
    tor: tuple[TorProcess, TorControl],
) -> None:
    process, _ = tor
    async with await OnionServices.start(Attach("127.0.0.1", process.control_port)) as services:
        key = ServiceKey.generate()
        first = await services.publish(
            "journalist", key, ("127.0.0.1", 8081), client_auth=["A" * 52]
        )
        assert first.client_auth == ("A" * 52,)
        second = await services.publish(
            "journalist", key, ("127.0.0.1", 8081), client_auth=["B" * 52]
        )
        assert second.address == first.address and second.client_auth == ("B" * 52,)
        assert list(services.published()) == [key.address]
        assert await services.bootstrap_percent() == 0


async def test_the_keeper_follows_members_and_rotation(tmp_path: Path) -> None:
    keys_dir = tmp_path / "keys"
    keys_dir.mkdir()
    authorised: list[str] = []
    signed: list[dict[str, str]] = []

    async def client_auth() -> list[str]:
        return list(authorised)

    async def addresses_changed(addresses: dict[str, str]) -> None:
        signed.append(addresses)

    settings = KeeperSettings(
        keys_dir=keys_dir,
        status_path=tmp_path / "status.json",
        source_target=("127.0.0.1", 8080),
        journalist_target=("127.0.0.1", 8081),
        sync_seconds=0.1,
    )
    how = LaunchSettings(tmp_path / "tor", binary=TOR, disable_network=True)
    keeper = await ServiceKeeper.start(how, settings, client_auth, addresses_changed)
    sent = recorded(keeper.services.control)
    try:
        source = service_keys.load(keys_dir, "source")
        journalist = service_keys.load(keys_dir, "journalist")
        assert source is not None and journalist is not None
        # No member key yet: the journalist service is not published at all.
        assert list(keeper.services.published()) == [source.address]
        assert keeper.services.published()[source.address].proof_of_work
        assert signed == [{"source": source.address, "journalist": journalist.address}]

        alice, bob = ClientAuthKey.generate(), ClientAuthKey.generate()
        authorised += [alice.public_base32, bob.public_base32]
        await keeper.sync()
        assert keeper.services.published()[journalist.address].client_auth == tuple(
            sorted([alice.public_base32, bob.public_base32])
        )
        authorised.remove(bob.public_base32)  # `amanah contact remove`
        await keeper.sync()
        assert keeper.services.published()[journalist.address].client_auth == (alice.public_base32,)

        new, retiring = service_keys.rotate(keys_dir, "source", 3600, int(time.time()))
        await keeper.sync()
        assert set(keeper.services.published()) == {new.address, source.address, journalist.address}
        assert signed[-1]["source"] == new.address
        assert sorted(await asyncio.to_thread(keeper.services.control.services)) == sorted(
            [new.address, source.address, journalist.address]
        )
        # The overlap ends: the old address is withdrawn and its key forgotten.
        service_keys.forget_retiring(keys_dir, "source")
        service_keys.rotate(keys_dir, "source", 0, int(time.time()))
        newest = service_keys.load(keys_dir, "source")
        await keeper.sync()
        assert newest is not None
        assert set(keeper.services.published()) == {newest.address, journalist.address}
        assert service_keys.load_retiring(keys_dir, "source") is None
        # Both services take at most 32 streams per rendezvous circuit; a source client
        # that asks for more loses its circuit, a member only the extra stream.
        journalist_options = {"Flags": "DiscardPK,V3Auth", "MaxStreams": "32"}
        source_options = {
            "PoWDefensesEnabled": "1",
            "Flags": "DiscardPK,MaxStreamsCloseCircuit",
            "MaxStreams": "32",
        }
        assert [add_onion_options(line) for line in sent if line.startswith("ADD_ONION")] == [
            journalist_options,
            journalist_options,
            source_options,
            source_options,
        ]

        status = read_status(settings.status_path, 60)
        assert status is not None
        assert status["services"]["source"]["address"] == newest.address
        assert status["services"]["journalist"]["client_auth_keys"] == 1
        assert alice.public_base32 not in settings.status_path.read_text()

        stop = asyncio.Event()
        runner = asyncio.create_task(keeper.run(stop))
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(runner, 5)
    finally:
        await keeper.close()
    assert keeper.services.process is not None and not keeper.services.process.running()
    assert read_status(settings.status_path, 60) is None


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("0.4.9.11", True),
        ("0.4.9.2-alpha (git-0123456789abcdef)", True),
        ("0.4.10.1", True),
        ("0.4.9.1-alpha", False),
        ("0.4.8.17", False),
        ("0.3.5.8", False),
        ("not a version", True),  # tor's own reply decides then
    ],
)
def test_which_tor_versions_take_pow_on_add_onion(version: str, supported: bool) -> None:
    assert pow_supported(version) is supported


# A tor older than 0.4.9.2-alpha answers `512 Bad arguments to ADD_ONION: Unrecognized
# keyword argument "PoWDefensesEnabled"`. The real tor here knows that keyword, so the
# tests give it one it does not know (the seam TorControl.pow_keyword): what is real is
# tor, its refusal and its version; what is forced is which keyword is refused.
FORCED_REFUSAL = "PoWDefensesEnabledInAFutureTor=1"


def test_a_tor_that_refuses_pow_gets_the_service_without_it(
    tor: tuple[TorProcess, TorControl],
) -> None:
    _, control = tor
    control.pow_keyword = FORCED_REFUSAL
    key = ServiceKey.generate()
    published = control.add_service("source", key, TARGET, proof_of_work=True)
    version = control.version().split()[0]
    assert published.address == key.address and control.services() == [key.address]
    assert published.proof_of_work is False
    assert published.pow_note == f"tor {version} does not support it"
    (warning,) = published.warnings
    assert "proof-of-work is OFF" in warning and "Unrecognized keyword" in warning


def test_max_streams_is_taken_and_bounded(tor: tuple[TorProcess, TorControl]) -> None:
    _, control = tor
    sent = recorded(control)
    source = control.add_service(
        "source", ServiceKey.generate(), TARGET, max_streams=32, close_circuit_over_max=True
    )
    journalist = control.add_service(
        "journalist",
        ServiceKey.generate(),
        TARGET,
        client_auth=[ClientAuthKey.generate().public_base32],
        max_streams=32,
    )
    assert sorted(control.services()) == sorted([source.address, journalist.address])
    assert [add_onion_options(line) for line in sent] == [
        {"Flags": "DiscardPK,MaxStreamsCloseCircuit", "MaxStreams": "32"},
        {"Flags": "DiscardPK,V3Auth", "MaxStreams": "32"},
    ]
    with pytest.raises(ServiceError, match="max_streams"):
        control.add_service("source", ServiceKey.generate(), TARGET, max_streams=70_000)


@pytest.mark.parametrize(
    "line",
    [
        "ADD_ONION NEW:ED25519-V3 HiddenServiceEnableIntroDoSDefense=1 Port=80,127.0.0.1:8080",
        "ADD_ONION NEW:ED25519-V3 EnableIntroDoSDefense=1 Port=80,127.0.0.1:8080",
        "ADD_ONION NEW:ED25519-V3 IntroDoSRatePerSec=25 Port=80,127.0.0.1:8080",
    ],
)
def test_this_tor_has_no_intro_point_dos_limits_for_add_onion(
    tor: tuple[TorProcess, TorControl], line: str
) -> None:
    """docs/scaling.md says introduction-point DoS limits cannot be set on an ephemeral
    service (ADD_ONION) in tor 0.4.9. If this fails, a newer tor takes them: use them."""
    _, control = tor
    with pytest.raises(ServiceError, match="Unrecognized keyword"):
        control.command(line, "publish with intro DoS limits")
    assert control.services() == []


def test_intro_point_dos_limits_are_per_service_options_only(
    tor: tuple[TorProcess, TorControl],
) -> None:
    """HiddenServiceEnableIntroDoSDefense belongs to a HiddenServiceDir block (an on-disk
    service); set alone it is refused, so there is no relay-wide default to set."""
    _, control = tor
    with pytest.raises(ControlError, match="Unacceptable option value"):
        control.command("SETCONF HiddenServiceEnableIntroDoSDefense=1", "set intro DoS defence")


async def test_the_keeper_warns_once_when_pow_is_refused(
    tmp_path: Path, tor: tuple[TorProcess, TorControl], caplog: pytest.LogCaptureFixture
) -> None:
    process, control = tor
    data = tmp_path / "relay"
    await asyncio.to_thread(run, AMANAH, "init", "--data", data)
    (data / "tor").mkdir(mode=0o700)
    keys_dir = data / "keys"
    settings = KeeperSettings(
        keys_dir=keys_dir,
        status_path=data / "tor" / "status.json",  # where `amanah status` looks
        source_target=("127.0.0.1", 8080),
        journalist_target=("127.0.0.1", 8081),
        self_check=False,
    )

    async def nobody() -> list[str]:
        return []

    async def signed(addresses: dict[str, str]) -> None:
        pass

    services = await OnionServices.start(Attach("127.0.0.1", process.control_port))
    services.control.pow_keyword = FORCED_REFUSAL
    keeper = ServiceKeeper(services, settings, nobody, signed)
    version = control.version().split()[0]
    try:
        with caplog.at_level("INFO", logger="amanah.onion"):
            await keeper.sync()
            service_keys.rotate(keys_dir, "source", 3600, int(time.time()))
            await keeper.sync()  # the new address is published, refused PoW again
        status = read_status(settings.status_path, 60)
        assert status is not None and status["self_check"] is None
        for role in ("source", "source_retiring"):
            assert status["services"][role]["proof_of_work"] is False
            assert status["services"][role]["proof_of_work_note"] == (
                f"tor {version} does not support it"
            )
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert sum("proof-of-work is OFF" in w for w in warnings) == 1, warnings
        assert sum("proof-of-work OFF: tor" in r.getMessage() for r in caplog.records) == 2
        shown = await asyncio.to_thread(run, AMANAH, "status", "--data", data)
        assert f"proof-of-work: off (tor {version} does not support it)" in shown.stdout
    finally:
        await keeper.close()

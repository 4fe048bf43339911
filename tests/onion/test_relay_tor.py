"""The relay's side of issue 6: the [tor] config section, the store's client-auth keys,
and `amanah serve`/`status`/`contact`/`keys rotate` with a real tor (DisableNetwork 1)."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import pytest

from crypto.directory import verify_directory
from onion.address import parse_auth_private, service_id
from relay import config as configuration
from relay.config import Tor
from relay.errors import ConfigError
from tests.relayharness import AMANAH, keygen, run, serving_with_tor

TOR_CONFIG = "[tor]\ndisable_network = true\nsync_seconds = 1\n"


def write_config(data: Path, text: str) -> None:
    (data / "amanah.toml").write_text(text)


def test_the_tor_section(tmp_path: Path) -> None:
    write_config(tmp_path, '[tor]\ncontrol = "127.0.0.1:9051"\nproof_of_work = false\n')
    config = configuration.load(tmp_path, {})
    assert config.tor == Tor(control="127.0.0.1:9051", proof_of_work=False)
    assert configuration.load(tmp_path, {"AMANAH_TOR_CONTROL": "[::1]:9051"}).tor.control == (
        "[::1]:9051"
    )
    for bad, needle in (
        ('control = "192.0.2.1:9051"', "loopback"),
        ('control = "tor.example:9051"', "loopback"),
        ('control = "9051"', "HOST:PORT"),
        ("proof_of_work = 1", "expected bool"),
        ('proof_of_work = "yes"', "expected bool"),
        ("sync_seconds = true", "expected int"),
    ):
        write_config(tmp_path, f"[tor]\n{bad}\n")
        with pytest.raises(ConfigError, match=needle):
            configuration.load(tmp_path, {})


def status(data: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(run(AMANAH, "status", "--json", "--data", data).stdout)  # type: ignore[no-any-return]


def directory_services(data: Path) -> dict[str, str]:
    import sqlite3

    connection = sqlite3.connect(data / "amanah.db")
    try:
        (document,) = connection.execute(
            "SELECT document FROM directories ORDER BY version DESC LIMIT 1"
        ).fetchone()
    finally:
        connection.close()
    directory, _ = verify_directory(document, None)
    return dict(directory.services)


@pytest.mark.tor
@pytest.mark.slow
def test_serve_publishes_both_services_and_follows_contact_changes(tmp_path: Path) -> None:
    data = tmp_path / "relay"
    run(AMANAH, "init", "--data", data)
    config = (data / "amanah.toml").read_text()
    write_config(data, config.replace("[tor]\n", TOR_CONFIG))
    before = status(data)
    source, journalist = before["source_onion"], before["journalist_onion"]
    assert service_id(source) and service_id(journalist) and source != journalist
    assert directory_services(data) == {"source": source, "journalist": journalist}
    assert before["onion"]["relay_running_with_tor"] is False

    auth_dir = tmp_path / "handed-over"
    auth_dir.mkdir()
    alice, bob = keygen(tmp_path / "alice.txt"), keygen(tmp_path / "bob.txt")
    added = run(
        AMANAH, "contact", "add", "the-daily", "--member", alice.card, "--member", bob.card,
        "--auth-dir", auth_dir, "--data", data,
    )  # fmt: skip
    files = sorted(auth_dir.iterdir())
    assert len(files) == 2 and all(f.name.endswith(".auth_private") for f in files)
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        sid, _ = parse_auth_private(f.read_text())
        assert sid + ".onion" == journalist
        assert f.read_text().split(":")[3].strip() not in added.stdout + added.stderr

    with serving_with_tor(data, tmp_path) as (relay, log):
        deadline = time.monotonic() + 30
        running = before
        while time.monotonic() < deadline:
            running = status(data)
            if running["onion"]["journalist"]["published"]:
                break
            time.sleep(0.2)
        onion = running["onion"]
        assert onion["relay_running_with_tor"], log.read_text()
        assert onion["source"]["published"] and onion["source"]["proof_of_work"] is True
        assert onion["journalist"]["client_auth_keys"] == 2
        assert onion["source"]["descriptor_published"] is False  # offline: pending
        assert len(onion["authorised_member_keys"]) == 2
        text = log.read_text()
        assert "descriptors stay pending" in text and source in text

        # The self-check cannot reach the source service through a tor without network,
        # and says why.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and running["onion"]["self_check"]["state"] == "pending":
            time.sleep(0.2)
            running = status(data)
        assert running["source_reachable"] is False, running["onion"]["self_check"]
        assert running["checked_at"] is not None
        check = running["onion"]["self_check"]
        assert check["state"] == "not_yet" and check["address"] == source
        assert check["detail"] == "tor has not reached the Tor network (bootstrap 0%)"
        shown = run(AMANAH, "status", "--data", data).stdout
        assert "self-check through tor: not reachable yet: tor has not reached the Tor " in shown
        assert "proof-of-work: on\n" in shown
        checked = run(AMANAH, "status", "--check", "--json", "--data", data, check=False)
        assert checked.returncode == 1 and json.loads(checked.stdout)["source_reachable"] is False
        assert checked.stderr.startswith("amanah: check failed: source service not reachable yet")

        removed = run(AMANAH, "contact", "remove", "the-daily", "--data", data)
        assert "re-publishes the journalist service" in removed.stdout
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and status(data)["onion"]["journalist"]["published"]:
            time.sleep(0.2)
        assert not status(data)["onion"]["journalist"]["published"], log.read_text()

        rotated = run(
            AMANAH, "keys", "rotate", "source-onion", "--overlap", "1", "--data", data
        )  # fmt: skip
        new_source = status(data)["source_onion"]
        assert new_source != source and new_source in rotated.stdout
        assert directory_services(data)["source"] == new_source
        assert status(data)["onion"]["source"]["retiring"]["address"] == source
        refused = run(
            AMANAH, "keys", "rotate", "source-onion", "--data", data, check=False
        )  # fmt: skip
        assert refused.returncode == 1 and "still overlapping" in refused.stderr
    assert relay.returncode == 0, log.read_text()
    stopped = status(data)
    assert stopped["source_reachable"] is None
    assert stopped["onion"]["self_check"]["state"] == "not_running"
    checked = run(AMANAH, "status", "--check", "--data", data, check=False)
    assert checked.returncode == 1 and "the relay is not running" in checked.stderr
    tor_pid = data / "tor" / "tor.pid"
    assert not tor_pid.exists() or not Path(f"/proc/{tor_pid.read_text().strip()}").exists()
    for f in files:
        secret = f.read_text().split(":")[3].strip()
        assert secret not in log.read_text()
        assert secret.encode() not in (data / "tor" / "tor.log").read_bytes()


async def test_the_store_keeps_client_auth_keys_with_their_members(tmp_path: Path) -> None:
    from relay.errors import Conflict
    from relay.store import MIGRATIONS, Store

    def member(n: int) -> tuple[str, str, str, str]:
        return (f"fp{n}", f"card{n}", f"age1r{n}", f"sig{n}")

    path = tmp_path / "amanah.db"
    async with await Store.open(path, migrations=MIGRATIONS[:1]) as store:
        await store.add_contact("old", "", None, False, [member(0)], 1)
    async with await Store.open(path) as store:
        assert await store.schema_version() == 2
        assert await store.onion_auth_keys() == []  # members from before v2 have none
        await store.add_contact(
            "a",
            "",
            None,
            False,
            [member(1), member(2)],
            2,
            onion_auth={"fp1": "A" * 52, "fp2": "B" * 52},
        )
        assert await store.onion_auth_keys() == [("a", "fp1", "A" * 52), ("a", "fp2", "B" * 52)]
        with pytest.raises(Conflict):
            await store.add_contact(
                "b", "", None, False, [member(3)], 3, onion_auth={"fp3": "A" * 52}
            )
        assert [c.name for c in await store.list_contacts()] == ["a", "old"]  # rolled back
        await store.replace_member("a", "fp2", member(4), 4, onion_auth="C" * 52)
        assert await store.onion_auth_keys() == [("a", "fp1", "A" * 52), ("a", "fp4", "C" * 52)]
        await store.remove_contact("a")
        assert await store.onion_auth_keys() == []


def test_issue_auth_gives_keys_to_members_from_before_client_auth(tmp_path: Path) -> None:
    import asyncio

    from relay.contacts import parse_card
    from relay.store import MIGRATIONS, Store

    data = tmp_path / "relay"
    run(AMANAH, "init", "--data", data)
    journalist = status(data)["journalist_onion"]
    alice, bob = keygen(tmp_path / "alice.txt"), keygen(tmp_path / "bob.txt")
    rows = [parse_card(member.card)[1] for member in (alice, bob)]

    async def register_before_v2() -> None:
        # A relay from before schema v2: the database made by the first migration alone,
        # its members registered with no client-auth key.
        (data / "amanah.db").unlink()
        async with await Store.open(data / "amanah.db", migrations=MIGRATIONS[:1]) as store:
            await store.add_contact("old-news", "", None, False, rows, 1)

    asyncio.run(register_before_v2())
    before = status(data)["onion"]
    assert before["authorised_member_keys"] == []
    assert [m["contact"] for m in before["members_without_client_auth"]] == ["old-news"] * 2
    assert "has NO client-auth key" in run(AMANAH, "status", "--data", data).stdout

    # Hostile and mistaken input first: nothing is stored, nothing is left behind.
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / f"old-news-{rows[1][0][:12]}.auth_private").write_text("someone else's\n")
    for argv, needle in (
        (["old-news", "--auth-dir", str(tmp_path / "nowhere")], "is not a directory"),
        (["old-news", "--auth-dir", str(taken)], "cannot write"),
        (["no-such", "--auth-dir", str(taken)], "no such contact"),
    ):
        refused = run(AMANAH, "contact", "issue-auth", *argv, "--data", data, check=False)
        assert refused.returncode == 1 and needle in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    assert sorted(p.name for p in taken.iterdir()) == [f"old-news-{rows[1][0][:12]}.auth_private"]
    assert len(status(data)["onion"]["members_without_client_auth"]) == 2

    out = tmp_path / "handed-over"
    out.mkdir()
    issued = run(AMANAH, "contact", "issue-auth", "old-news", "--auth-dir", out, "--data", data)
    assert "issued a client-auth key to 2 member(s) of old-news" in issued.stdout
    files = sorted(out.iterdir())
    assert len(files) == 2
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600
        sid, key = parse_auth_private(f.read_text())
        assert sid + ".onion" == journalist
        assert f.read_text().split(":")[3].strip() not in issued.stdout
    after = status(data)["onion"]
    assert after["members_without_client_auth"] == []
    assert sorted(m["member"] for m in after["authorised_member_keys"]) == sorted(
        r[0] for r in rows
    )
    again = run(AMANAH, "contact", "issue-auth", "old-news", "--data", data, check=False)
    assert again.returncode == 1 and "has a client-auth key already" in again.stderr

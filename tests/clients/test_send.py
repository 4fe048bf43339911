"""`amanah-drop send` against a real relay process: the drop sealed on the device reaches
the contact (`amanah-inbox fetch`) as the same files, the codename made on the device
logs in on the web pages and sees a reply, and the relay never sees the codename."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
from pathlib import Path

from tests.clients.harness import (
    INBOX,
    Setup,
    ack_all,
    codename_line,
    fetch,
    listing,
    run_drop,
    sha256_file,
)
from tests.relayharness import (
    AMANAH,
    add_contact,
    all_files,
    keygen,
    login,
    replies_of,
    run,
    scan_files,
    source_session,
)
from tests.sanitize import judge, samples

MESSAGE = "they moved the prisoners at night, AmanahDeviceMessage"
REPLY = "received, thank you; stay safe (AmanahReplyText)"


def sources(data: Path) -> list[tuple[str, str, str]]:
    connection = sqlite3.connect(data / "amanah.db")
    try:
        return connection.execute(
            "SELECT login_id, reply_recipient, reply_handle FROM sources"
        ).fetchall()
    finally:
        connection.close()


async def test_send_reaches_the_contact_and_the_codename_works(
    setup: Setup, tmp_path: Path
) -> None:
    relay = setup.relay
    photo = samples.jpeg(tmp_path)
    state = tmp_path / "state"
    done = run_drop(
        "send", "--relay", relay.source_url, "--to", "the-daily", "-m", MESSAGE, photo,
        state=state,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    codename = codename_line(done.stdout)
    assert "sealed on your device" in done.stderr
    assert "remember" in done.stderr or "learn it by heart" in done.stderr
    assert list((state / "outbox").iterdir()) == []  # completed state is removed

    [drop] = [d for d in await listing(relay, setup.alice) if d["sealed_on"] == "device"]
    assert [b["name"] for b in drop["blobs"]] == ["sealed"]
    assert drop["reply_handle"]
    assert not [d for d in await listing(relay, setup.bob) if d["id"] == drop["id"]]

    out = tmp_path / "inbox"
    fetched = fetch(relay, setup.alice, out)
    assert fetched.returncode == 0, fetched.stderr
    folder = out / drop["id"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "manifest.json",
        "message.txt",
        "photo-1.jpg",
    ]
    assert (folder / "message.txt").read_text() == MESSAGE
    assert judge.unexpected_tags(folder / "photo-1.jpg") == {}
    assert not judge.strings_found((folder / "photo-1.jpg").read_bytes(), set(samples.MARKERS))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["sealed_on"] == "device" and manifest["drop"] == drop["id"]
    assert manifest["reply"]["handle"] == drop["reply_handle"]
    assert manifest["files"][0]["sha256"] == sha256_file(folder / "photo-1.jpg")
    assert not (out / ".incoming").exists()
    assert await listing(relay, setup.alice) == []  # acknowledged, so deleted

    # The contact answers; the source logs in on the page with the codename made on the
    # device, and reads the answer.
    run(INBOX, "reply", drop["id"], "-m", REPLY, "--relay", relay.journalist_url,
        "--identity", setup.alice.identity_file, "--out", out)  # fmt: skip
    async with source_session() as session:
        status, page = await login(session, relay.source_url, codename)
    assert status == 200, page[:500]
    assert REPLY in replies_of(page)

    # The relay never received the codename: not in its database, blobs or logs.
    relay_files = all_files(setup.data, relay.tmpdir)
    assert scan_files(relay_files, [codename, MESSAGE, *samples.MARKERS]) == []
    assert codename not in relay.logs and MESSAGE not in relay.logs
    for word_pair in zip(codename.split(), codename.split()[1:], strict=False):
        assert " ".join(word_pair) not in relay.logs


async def test_codename_prompt_adds_a_drop_to_the_same_source(setup: Setup, tmp_path: Path) -> None:
    relay = setup.relay
    first = run_drop(
        "send", "--relay", relay.source_url, "--to", "the-daily", "-m", "first",
        state=tmp_path / "s",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    codename = codename_line(first.stdout)
    known = len(sources(setup.data))
    # Typed at the prompt (getpass reads stdin when there is no terminal), never in argv;
    # spelled loosely, as people type.
    typed = codename.upper().replace(" ", "-") + "\n"
    again = run_drop(
        "send", "--relay", relay.source_url, "--to", "the-daily", "--codename-prompt",
        "-m", "second", state=tmp_path / "s", stdin=typed,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert again.stdout == ""  # an existing codename is not printed again
    assert len(sources(setup.data)) == known  # the same source
    drops = await listing(relay, setup.alice)
    handles = {d["reply_handle"] for d in drops[-2:]}
    assert len(handles) == 1 and None not in handles

    # A codename the relay never saw: refused at once, nothing stored.
    before = len(await listing(relay, setup.alice))
    words = codename.split()
    unknown = " ".join(words[1:] + words[:1]) + "\n"
    refused = run_drop(
        "send", "--relay", relay.source_url, "--codename-prompt", "-m", "third",
        state=tmp_path / "s", stdin=unknown,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "no drop was sent with that codename" in refused.stderr
    not_words = run_drop(
        "send", "--relay", relay.source_url, "--codename-prompt", "-m", "third",
        state=tmp_path / "s", stdin="correct horse battery staple\n",
    )  # fmt: skip
    assert not_words.returncode == 1 and "not a codename" in not_words.stderr
    assert "horse" not in not_words.stderr  # what was typed is never echoed
    assert len(await listing(relay, setup.alice)) == before
    assert list((tmp_path / "s" / "outbox").iterdir()) == []
    await ack_all(relay, setup.alice)


async def test_send_sealed_delivers_a_file_made_by_seal(setup: Setup, tmp_path: Path) -> None:
    relay = setup.relay
    sealed = tmp_path / "drop.age"
    made = run_drop(
        "seal", "--relay", relay.source_url, "--to", "ohchr", "-m", "carried out on a stick",
        "-o", sealed, state=tmp_path / "s",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    sent = run_drop("send", "--sealed", sealed, "--relay", relay.source_url, state=tmp_path / "s")
    assert sent.returncode == 0, sent.stderr
    assert "sealed on your device" in sent.stderr
    [drop] = await listing(relay, setup.bob)
    assert drop["blobs"][0]["sha256"] == sha256_file(sealed)  # stored byte for byte
    assert sealed.exists()  # the person's own file is left alone
    assert list((tmp_path / "s" / "outbox").iterdir()) == []
    out = tmp_path / "inbox"
    assert fetch(relay, setup.bob, out).returncode == 0
    assert (out / drop["id"] / "message.txt").read_text() == "carried out on a stick"


async def test_stale_directory_is_a_clear_error(setup: Setup, tmp_path: Path) -> None:
    relay = setup.relay
    dave = keygen(tmp_path / "dave.txt")
    add_contact(setup.data, "night-desk", [dave])
    sealed = tmp_path / "drop.age"
    made = run_drop(
        "seal", "--relay", relay.source_url, "--to", "night-desk", "-m", "x", "-o", sealed,
        state=tmp_path / "s",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    # The contact's member rotates their key after the drop was sealed.
    erin = keygen(tmp_path / "erin.txt")
    run(AMANAH, "contact", "rotate", "night-desk", "--member", f"{dave.card}={erin.card}",
        "--data", setup.data)  # fmt: skip
    sent = run_drop("send", "--sealed", sealed, "--relay", relay.source_url, state=tmp_path / "s")
    assert sent.returncode == 1
    assert "your copy of the directory is out of date" in sent.stderr
    assert "hint: run the same command again" in sent.stderr
    assert list((tmp_path / "s" / "outbox").iterdir()) == []
    assert await listing(relay, erin) == []  # nothing was stored
    # Sealing again fetches the directory anew and picks up the new key.
    again = tmp_path / "again.age"
    resealed = run_drop(
        "seal", "--relay", relay.source_url, "--to", "night-desk", "-m", "x", "-o", again,
        state=tmp_path / "s",
    )  # fmt: skip
    assert resealed.returncode == 0, resealed.stderr
    new_route = json.loads((tmp_path / "again.age.route").read_text())
    assert new_route["recipients"] == [erin.identity.identity.recipient.fingerprint]
    sent = run_drop("send", "--sealed", again, "--relay", relay.source_url, state=tmp_path / "s")
    assert sent.returncode == 0, sent.stderr
    assert len(await listing(relay, erin)) == 1
    await ack_all(relay, erin)


def test_the_codename_is_never_on_the_command_line() -> None:
    done = subprocess.run(
        [str(Path(INBOX).parent / "amanah-drop"), "send", "--help"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0
    assert not re.search(r"--codename[ =]", done.stdout)

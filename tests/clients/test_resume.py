"""`amanah-drop send` over connections that break: cut every MiB within one run, cut off
for good so the run gives up and the next one carries on, and the client killed mid-upload.
A real loopback proxy breaks the connections; the relay and the client are real processes.
"Byte-identical" is judged by the relay's own SHA-256 of what it stored against the
ciphertext the device kept, and by `amanah-inbox fetch` opening the drop."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.clients.harness import (
    DROP,
    Proxy,
    Setup,
    ack_all,
    codename_line,
    fetch,
    listing,
    noisy_png,
    run_drop,
    sha256_file,
)
from tests.relayharness import all_files, child_env, scan_files

MESSAGE = "AmanahResumeMessage: the files from the second site"
MiB = 1 << 20


@pytest.fixture
def proxy(setup: Setup) -> Iterator[Proxy]:
    proxy = Proxy(setup.relay.source_port)
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def picture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return noisy_png(tmp_path_factory.mktemp("picture") / "site.png", 1100)  # ~3.6 MB


def pending(state: Path) -> list[Path]:
    outbox = state / "outbox"
    return sorted(outbox.iterdir()) if outbox.exists() else []


async def test_connections_cut_every_mib_within_one_run(
    setup: Setup, proxy: Proxy, picture: Path, tmp_path: Path
) -> None:
    proxy.cut_every = MiB
    done = run_drop(
        "send", "--relay", proxy.url, "--to", "the-daily", "-m", MESSAGE, picture,
        state=tmp_path / "s",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    cut = [n for n in proxy.carried if n >= MiB]
    assert len(cut) >= 3, (proxy.carried, done.stderr)  # ~3.6 MB: cut three times at least
    assert "connection lost" in done.stderr and "sent again" in done.stderr
    assert pending(tmp_path / "s") == []
    [drop] = await listing(setup.relay, setup.alice)
    out = tmp_path / "inbox"
    fetched = fetch(setup.relay, setup.alice, out)
    assert fetched.returncode == 0, fetched.stderr
    manifest = json.loads((out / drop["id"] / "manifest.json").read_text())
    assert manifest["files"][0]["sha256"] == sha256_file(out / drop["id"] / "photo-1.png")
    assert (out / drop["id"] / "message.txt").read_text() == MESSAGE


async def test_an_answer_lost_with_the_last_byte_is_asked_for_again(
    setup: Setup, proxy: Proxy, picture: Path, tmp_path: Path
) -> None:
    """The relay stored the drop but its answer never came back: the client asks HEAD,
    learns the drop was stored (the relay remembers the outcome), and says so."""
    await ack_all(setup.relay, setup.alice)
    proxy.lose_final_answer = True
    done = run_drop(
        "send", "--relay", proxy.url, "--to", "the-daily", "-m", MESSAGE, picture,
        state=tmp_path / "s",
    )  # fmt: skip
    assert proxy.lost_answers == 1
    assert done.returncode == 0, done.stderr
    assert "most likely stored" not in done.stderr
    assert pending(tmp_path / "s") == []
    assert len(await listing(setup.relay, setup.alice)) == 1  # stored once
    await ack_all(setup.relay, setup.alice)


async def test_a_run_that_gives_up_is_carried_on_by_the_next(
    setup: Setup, proxy: Proxy, picture: Path, tmp_path: Path
) -> None:
    state = tmp_path / "s"
    command: list[str | Path] = [
        "send",
        "--relay",
        proxy.url,
        "--to",
        "the-daily",
        "-m",
        MESSAGE,
        picture,
    ]
    proxy.budget = 3 * MiB // 2
    first = run_drop(*command, "--wait", "3", state=state)
    assert first.returncode == 1, first.stderr
    assert "made no progress" in first.stderr
    assert "hint: run the same command again" in first.stderr
    codename = codename_line(first.stdout)

    [folder] = pending(state)
    upload = json.loads((folder / "upload.json").read_text())
    assert upload["upload_url"].startswith(proxy.url + "/uploads/")
    # The offset last heard (the relay's HEAD is what counts when the next run starts).
    size = (folder / "drop.age").stat().st_size
    assert 0 <= upload["offset"] < size
    sealed_sha = sha256_file(folder / "drop.age")
    # The state on the device: ciphertext and routing, nothing readable.
    needles = [MESSAGE, codename, "site.png", str(picture)]
    assert scan_files(all_files(state), needles) == []

    proxy.reset()
    before = proxy.upstream
    second = run_drop(*command, "--wait", "30", state=state)
    assert second.returncode == 0, second.stderr
    assert proxy.upstream - before < size - MiB  # it resumed; it did not start over
    assert "carrying on the upload this command started earlier" in second.stderr
    assert second.stdout == ""  # the codename was shown once, by the first run
    assert pending(state) == []
    [drop] = await listing(setup.relay, setup.alice)
    assert drop["blobs"][0]["sha256"] == sealed_sha  # byte for byte what was sealed
    await ack_all(setup.relay, setup.alice)


def test_a_killed_client_is_carried_on_by_the_next_run(
    setup: Setup, proxy: Proxy, picture: Path, tmp_path: Path
) -> None:
    state = tmp_path / "s"
    command = ["send", "--relay", proxy.url, "--to", "the-daily", "-m", MESSAGE, str(picture)]
    proxy.stall_after = 2 * MiB
    client = subprocess.Popen(
        [DROP, *command, "--state", str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=child_env(),
    )
    try:
        deadline = time.monotonic() + 120
        while proxy.upstream < proxy.stall_after and time.monotonic() < deadline:
            assert client.poll() is None, client.communicate()
            time.sleep(0.1)
        assert proxy.upstream >= proxy.stall_after, "the upload never reached the stall"
    finally:
        client.send_signal(signal.SIGKILL)  # as a phone's battery dies
        client.communicate(timeout=30)
    [folder] = pending(state)
    sealed_sha = sha256_file(folder / "drop.age")
    size = (folder / "drop.age").stat().st_size

    proxy.reset()
    before = proxy.upstream
    again = run_drop(*command, "--wait", "60", state=state)
    assert again.returncode == 0, again.stderr
    assert "carrying on" in again.stderr
    assert pending(state) == []
    [drop] = asyncio.run(listing(setup.relay, setup.alice))
    assert drop["blobs"][0]["sha256"] == sealed_sha
    # The second run sent only what was missing (and its requests), not the whole file.
    assert proxy.upstream - before < size - MiB
    out = tmp_path / "inbox"
    assert fetch(setup.relay, setup.alice, out).returncode == 0
    assert (out / drop["id"] / "message.txt").read_text() == MESSAGE


def test_resume_with_nothing_waiting_says_so(tmp_path: Path) -> None:
    done = run_drop("send", "--resume", state=tmp_path / "s")
    assert done.returncode == 0
    assert "no unfinished upload" in done.stderr


async def test_an_upload_the_relay_lost_in_a_restart_starts_again(
    setup: Setup, proxy: Proxy, picture: Path, tmp_path: Path
) -> None:
    state = tmp_path / "s"
    command: list[str | Path] = ["send", "--relay", proxy.url, "--to", "the-daily", picture]
    proxy.budget = 3 * MiB // 2
    first = run_drop(*command, "--wait", "2", state=state)
    assert first.returncode == 1, first.stderr
    [folder] = pending(state)
    sealed_sha = sha256_file(folder / "drop.age")
    # The relay restarts: its RAM-only staging key is gone, and the upload with it.
    setup.relay.stop()
    setup.relay.start()
    proxy.reset(target=setup.relay.source_port)
    second = run_drop(*command, "--wait", "30", state=state)
    assert second.returncode == 0, second.stderr
    assert "starting this upload again" in second.stderr
    assert pending(state) == []
    [drop] = await listing(setup.relay, setup.alice)
    assert drop["blobs"][0]["sha256"] == sealed_sha
    await ack_all(setup.relay, setup.alice)

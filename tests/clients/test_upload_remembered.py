"""`amanah-drop send` with an upload remembered from an earlier run that is not one of the
relay's own uploads (a state file written before clients/upload.py checked the relay's
Location, or edited): the remembered upload is forgotten (its upload.json entry cleared,
the sealed file kept), one warning line says so, and the drop is sent again from the
start to the relay the person named. Before, every later run stopped at that check.

Nothing is ever sent where the remembered URL points: a counting listener there
(harness.Elsewhere, answering as a tus server would, so that a client that followed would
carry on) is offered no connection. The relay and the client are real processes; the
state is written by the client's own outbox code, then edited as an old or tampered file
would read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from clients import outbox
from tests.clients.harness import (
    Elsewhere,
    Proxy,
    Setup,
    ack_all,
    listing,
    run_drop,
    sha256_file,
)

UPLOAD = "/uploads/0123456789abcdef0123456789abcdef"
WARNING = "pointed somewhere other than this relay"


@asynccontextmanager
async def elsewhere_on(host: str, port: int = 0) -> AsyncIterator[tuple[Elsewhere, str]]:
    """A counting listener on `host` (and `port`, else a free one), and its URL."""
    elsewhere = Elsewhere(1, UPLOAD)
    bound = await elsewhere.start(host, port)
    try:
        yield elsewhere, f"http://{host}:{bound}"
    finally:
        await elsewhere.stop()


async def sealed_drop(relay_url: str, folder: Path, state: Path) -> Path:
    """`amanah-drop seal` to ohchr: the drop file (its .route beside it)."""
    sealed = folder / "drop.age"
    made = await asyncio.to_thread(
        run_drop, "seal", "--relay", relay_url, "--to", "ohchr", "-m", "remembered", "-o", sealed,
        state=state,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    return sealed.resolve()


def remember(state: Path, relay_url: str, sealed: Path, upload_url: Any) -> Path:
    """An unfinished `send --sealed` of `sealed` as this client records one, its upload
    URL then set to `upload_url` (and its offset to 40) by editing upload.json. Returns
    the upload's folder."""
    route = outbox.read_route(sealed)
    description = {"relay": outbox.origin(relay_url), "sealed": route.sha256}
    pending = outbox.new_pending(state, relay_url, description, sealed)
    outbox.publish(pending)
    record = pending.folder / outbox.UPLOAD
    value = json.loads(record.read_text())
    value["upload_url"], value["offset"] = upload_url, 40
    record.write_text(json.dumps(value))
    assert [p.folder for p in outbox.pending_uploads(state)] == [pending.folder]
    return pending.folder


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "warning:" in line]


# Where the remembered upload points: (host of the listener, on the relay's port?, the
# remembered value given the listener's URL).
REMEMBERED: dict[str, tuple[str, bool, Callable[[str], Any]]] = {
    "another port": ("127.0.0.1", False, lambda elsewhere: elsewhere + UPLOAD),
    "another host, the relay's port": ("127.0.0.2", True, lambda elsewhere: elsewhere + UPLOAD),
    "a query leading elsewhere": (
        "127.0.0.1",
        False,
        lambda elsewhere: "/uploads/abc?next=" + elsewhere + UPLOAD,
    ),
    "not a string": ("127.0.0.1", False, lambda elsewhere: [elsewhere + UPLOAD]),
}


@pytest.mark.parametrize(("host", "same_port", "remembered"), REMEMBERED.values(), ids=REMEMBERED)
async def test_a_remembered_upload_elsewhere_is_forgotten_and_sent_afresh(
    setup: Setup,
    tmp_path: Path,
    host: str,
    same_port: bool,
    remembered: Callable[[str], Any],
) -> None:
    relay, state = setup.relay, tmp_path / "s"
    sealed = await sealed_drop(relay.source_url, tmp_path, state)
    async with elsewhere_on(host, relay.source_port if same_port else 0) as (elsewhere, url):
        remember(state, relay.source_url, sealed, remembered(url))
        sent = await asyncio.to_thread(
            run_drop, "send", "--sealed", sealed, "--relay", relay.source_url, "--wait", "30",
            state=state,
        )  # fmt: skip
        await asyncio.sleep(0.1)  # a connection on its way would be counted by now
        assert elsewhere.connections == 0
    assert sent.returncode == 0, sent.stderr
    assert "carrying on the upload of this drop started earlier" in sent.stderr
    [warning] = warnings(sent.stderr)
    assert warning.startswith("amanah-drop: warning: ") and WARNING in warning
    assert "sent again from the start" in warning
    assert "the relay has your drop" in sent.stderr
    assert url not in sent.stderr  # the remembered URL is not echoed
    [drop] = await listing(relay, setup.bob)
    assert drop["blobs"][0]["sha256"] == sha256_file(sealed)  # stored byte for byte
    assert sealed.exists()  # the person's own file is left alone
    assert list((state / "outbox").iterdir()) == []
    await ack_all(relay, setup.bob)


async def test_the_forgetting_is_kept_when_the_fresh_upload_fails(
    setup: Setup, tmp_path: Path
) -> None:
    """The relay cannot be reached just after the remembered upload was forgotten: the
    state says so (no upload URL, offset 0, the sealed file kept), and the next run
    starts afresh without a second warning."""
    proxy = Proxy(setup.relay.source_port)
    try:
        state = tmp_path / "s"
        sealed = await sealed_drop(proxy.url, tmp_path, state)
        async with elsewhere_on("127.0.0.1") as (elsewhere, url):
            folder = remember(state, proxy.url, sealed, url + UPLOAD)
            proxy.budget = 0  # every connection to the relay is closed at once
            first = await asyncio.to_thread(
                run_drop, "send", "--sealed", sealed, "--relay", proxy.url, "--wait", "2",
                state=state,
            )  # fmt: skip
            assert first.returncode == 1, first.stderr
            assert "cannot reach the relay" in first.stderr
            [warning] = warnings(first.stderr)
            assert WARNING in warning
            record = json.loads((folder / outbox.UPLOAD).read_text())
            assert (record["upload_url"], record["offset"]) == (None, 0)
            assert sealed.exists() and record["ciphertext"] == str(sealed)

            proxy.reset()
            second = await asyncio.to_thread(
                run_drop, "send", "--resume", "--relay", proxy.url, "--wait", "30", state=state
            )
            await asyncio.sleep(0.1)
            assert elsewhere.connections == 0
        assert second.returncode == 0, second.stderr
        assert warnings(second.stderr) == []
        [drop] = await listing(setup.relay, setup.bob)
        assert drop["blobs"][0]["sha256"] == sha256_file(sealed)
        assert list((state / "outbox").iterdir()) == []
    finally:
        proxy.close()
    await ack_all(setup.relay, setup.bob)

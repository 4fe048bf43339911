"""The source's whole visit in a real browser (Debian's Chromium through Playwright), with
JavaScript off (Tor Browser at "Safest": plain forms) and on (files through tus), in
English and in Arabic: send a message and files, read the codename, come back later, log
in, read a contact's reply, send more. With JavaScript on, uploads survive a cut
connection and a reload of the page. Every page is checked for requests that leave
127.0.0.1 and for CSP violations; landing and receipt pages are photographed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Page, Response

from tests.browser.conftest import VIEWPORT, Watch, chromium
from tests.browser.cutproxy import CutProxy
from tests.relayharness import INBOX, Member, ServedRelay, run, sha256_file
from tests.sanitize import samples

pytestmark = pytest.mark.browser

SEALED = {
    "en": "sealed on the relay on arrival",
    "ar": "وتشفيره على الموقع فور وصوله",
}
ADDED = {
    "en": "Your drop was added to your earlier ones.",
    "ar": "أُضيف ما أرسلته إلى رسائلك السابقة.",
}
MESSAGE = {"en": "What I saw at the checkpoint", "ar": "ما رأيته عند الحاجز"}
TUS = {"Tus-Resumable": "1.0.0"}
CUT = 700_000  # bytes towards the relay after which the proxy cuts a connection
STALL = 1_500_000  # bytes towards the relay after which the proxy stalls one
LANDING_BUDGET = 50 * 1024


# --- helpers --------------------------------------------------------------------------------


async def check_direction(page: Page, lang: str) -> None:
    """The page is laid out in the language's direction: the attribute, the computed
    style, and where the brand (the header's first item) actually is."""
    rtl = lang == "ar"
    assert await page.get_attribute("html", "lang") == lang
    assert await page.get_attribute("html", "dir") == ("rtl" if rtl else "ltr")
    direction = await page.evaluate("getComputedStyle(document.body).direction")
    assert direction == ("rtl" if rtl else "ltr")
    brand = await page.locator(".brand").bounding_box()
    assert brand is not None
    middle = brand["x"] + brand["width"] / 2
    assert (middle > VIEWPORT["width"] / 2) == rtl, f"brand at x={brand['x']} in {lang}"


def fetch_drops(member: Member, relay_url: str, out: Path) -> list[Path]:
    """`amanah-inbox fetch`: every drop waiting for this member, saved and acknowledged."""
    run(INBOX, "fetch", "--relay", relay_url, "--identity", member.identity_file, "--out", out)
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def exif_tags(path: Path) -> dict[str, object]:
    done = subprocess.run(
        ["exiftool", "-j", "-G", "-a", str(path)], capture_output=True, check=True, timeout=60
    )
    tags: dict[str, object] = json.loads(done.stdout)[0]
    return tags


def head_offsets(page: Page) -> list[int]:
    """The Upload-Offset of every HEAD answer the page gets from now on: where each
    resume started, as the relay said."""
    offsets: list[int] = []

    def heard(response: Response) -> None:
        if response.request.method == "HEAD":
            offsets.append(int(response.headers["upload-offset"]))

    page.on("response", heard)
    return offsets


async def submit_and_wait(page: Page) -> None:
    async with page.expect_navigation(url="**/submit", timeout=120_000):
        await page.click("#send button[type=submit]")


# --- the whole visit ------------------------------------------------------------------------


@pytest.mark.parametrize("javascript", [False, True], ids=["js-off", "js-on"])
@pytest.mark.parametrize("lang", ["en", "ar"])
async def test_a_source_sends_reads_a_reply_and_sends_more(
    browser_relay: ServedRelay, tmp_path: Path, screenshots: Path, javascript: bool, lang: str
) -> None:
    relay, daily = browser_relay.process, browser_relay.members["daily-news"]
    fetch_drops(daily, relay.journalist_url, tmp_path / "before")  # earlier tests' drops
    js = "js-on" if javascript else "js-off"
    photo = samples.jpeg(tmp_path)  # GPS, make, model, serial, names: all to be removed
    notes = tmp_path / "notes-secret-name.bin"
    notes.write_bytes(os.urandom(300_000))

    async with chromium(tmp_path / "visit-1", javascript=javascript) as (_, page, watch):
        await page.goto(f"{relay.source_url}/?lang={lang}")
        await check_direction(page, lang)
        await page.screenshot(path=screenshots / f"landing-{lang}-{js}.png", full_page=True)
        await page.fill("#message", MESSAGE[lang])
        await page.set_input_files("#files", [photo, notes])
        await submit_and_wait(page)
        assert SEALED[lang] in await page.inner_text("main")
        codename = (await page.inner_text(".words")).strip()
        assert len(codename.split()) == 7
        await check_direction(page, lang)
        await page.screenshot(path=screenshots / f"receipt-{lang}-{js}.png", full_page=True)
        check_transport(watch, javascript, [photo, notes])

    # The contact receives it: the message, the photo without its hidden data, the file.
    (drop,) = fetch_drops(daily, relay.journalist_url, tmp_path / "inbox")
    assert (drop / "message.txt").read_text(encoding="utf-8") == MESSAGE[lang]
    (cleaned,) = drop.glob("*.jpg")
    tags = exif_tags(cleaned)
    assert not [k for k in tags if "GPS" in k], tags
    assert not [m for m in samples.MARKERS if m in json.dumps(tags)], tags
    (copied,) = drop.glob("*.bin")
    assert sha256_file(copied) == sha256_file(notes)
    reply = f"Received, thank you ({lang}, {js})"
    run(
        INBOX,
        "reply",
        drop.name,
        "-m",
        reply,
        "--relay",
        relay.journalist_url,
        "--identity",
        daily.identity_file,
        "--out",
        tmp_path / "inbox",
    )

    # Later, from a fresh browser: log in with the codename, read the reply, send more.
    async with chromium(tmp_path / "visit-2", javascript=javascript) as (_, page, watch):
        await page.goto(f"{relay.source_url}/login?lang={lang}")
        await check_direction(page, lang)
        await page.fill("#codename", codename)
        async with page.expect_navigation(url="**/login"):
            await page.click("main form button[type=submit]")
        assert reply in await page.inner_text("article.reply")
        await page.fill("#message", "more " + MESSAGE[lang])
        more = tmp_path / "more.bin"
        more.write_bytes(os.urandom(50_000))
        await page.set_input_files("#files", [more])
        await submit_and_wait(page)
        assert ADDED[lang] in await page.inner_text("main")
        assert await page.locator(".words").count() == 0  # no new codename
        check_transport(watch, javascript, [more])
    (follow_up,) = fetch_drops(daily, relay.journalist_url, tmp_path / "inbox-2")
    assert (follow_up / "message.txt").read_text(encoding="utf-8") == "more " + MESSAGE[lang]


def check_transport(watch: Watch, javascript: bool, files: list[Path]) -> None:
    """With JavaScript the files went by tus and the form carried only their ids; without,
    the form was posted with its files and no script ran."""
    submits = [r for r in watch.requests if r.method == "POST" and r.url.endswith("/submit")]
    assert len(submits) == 1
    body = submits[0].post_data_buffer or b""
    if javascript:
        assert watch.paths("POST").count("/uploads") == len(files)
        assert "/static/upload.js" in watch.paths()
        assert b'name="upload"' in body and b'name="files"' not in body
        assert all(f.read_bytes()[:4096] not in body for f in files)
    else:  # (Chromium does not show a form's file parts to the test: the drop proves them)
        assert "/uploads" not in watch.paths("POST") and "/static/upload.js" not in watch.paths()
        assert submits[0].headers["content-type"].startswith("multipart/form-data")


# --- uploads that break ----------------------------------------------------------------------


async def test_an_upload_cut_three_times_resumes_and_arrives_whole(
    browser_relay: ServedRelay, tmp_path: Path
) -> None:
    relay, daily = browser_relay.process, browser_relay.members["daily-news"]
    await asyncio.to_thread(fetch_drops, daily, relay.journalist_url, tmp_path / "before")
    video = tmp_path / "clip.bin"
    video.write_bytes(os.urandom(3 * 1024 * 1024 + 7))
    size = video.stat().st_size
    proxy = CutProxy(relay.source_port, cut_after=CUT, cuts=3)
    base = f"http://127.0.0.1:{await proxy.start()}"
    try:
        async with chromium(tmp_path / "profile", javascript=True) as (_, page, watch):
            offsets = head_offsets(page)
            await page.goto(base + "/")
            await page.fill("#message", "cut three times")
            await page.set_input_files("#files", [video])
            await submit_and_wait(page)
            assert SEALED["en"] in await page.inner_text("main")
            assert proxy.cut_done == 3
            # Resumed from what the relay held (HEAD), never started again: the first cut
            # connection's bytes (less the page's own requests on it) were all kept.
            assert watch.paths("POST").count("/uploads") == 1
            assert offsets == sorted(offsets) and offsets[-1] > CUT - 64 * 1024, offsets
    finally:
        await proxy.close()
    print(f"cut 3 times: {size} bytes, {proxy.upstream} through the proxy, resumed at {offsets}")
    (drop,) = await asyncio.to_thread(fetch_drops, daily, relay.journalist_url, tmp_path / "in")
    (received,) = drop.glob("*.bin")
    assert sha256_file(received) == sha256_file(video)


async def test_a_reload_mid_upload_resumes_from_the_relays_offset(
    browser_relay: ServedRelay, tmp_path: Path, screenshots: Path
) -> None:
    relay, daily = browser_relay.process, browser_relay.members["daily-news"]
    await asyncio.to_thread(fetch_drops, daily, relay.journalist_url, tmp_path / "before")
    video = tmp_path / "secret-name-of-the-clip.bin"
    video.write_bytes(os.urandom(4 * 1024 * 1024 + 11))
    size = video.stat().st_size
    proxy = CutProxy(relay.source_port, stall_after=STALL, stalls=1)
    base = f"http://127.0.0.1:{await proxy.start()}"
    try:
        async with chromium(tmp_path / "profile", javascript=True) as (_, page, watch):
            await page.goto(base + "/")
            await page.set_input_files("#files", [video])
            await page.click("#send button[type=submit]")
            await asyncio.wait_for(proxy.stalled.wait(), 60)
            # The source sees how far it got (the bar, and the share in words).
            # (The proxy swallows what it stalls, so the browser believes it all went.)
            for _ in range(100):  # (polled from here: the page's CSP forbids eval)
                if await page.evaluate("document.querySelector('#progress progress').value"):
                    break
                await asyncio.sleep(0.05)
            status = await page.locator("#progress p").inner_text()
            assert re.fullmatch(r"Sending your files: [1-9]\d*%", status), status
            await page.screenshot(path=screenshots / "progress-en-js-on.png", full_page=True)
            # What the browser keeps to resume: an upload address, under a key that says
            # nothing of the file's name.
            stored = await page.evaluate("JSON.stringify(Object.entries(localStorage))")
            assert "tus::amanah-" in stored and "secret-name" not in stored, stored
            before = proxy.upstream
            resumed = head_offsets(page)
            await page.reload()  # the upload in flight is abandoned with the page
            await page.set_input_files("#files", [video])  # the source picks it again
            await submit_and_wait(page)
            assert SEALED["en"] in await page.inner_text("main")
            assert watch.paths("POST").count("/uploads") == 1  # the same upload, resumed
            # Nothing is left in the browser once the upload is used.
            assert await page.evaluate("localStorage.length") == 0
        sent_again = proxy.upstream - before
    finally:
        await proxy.close()
    print(f"reload: {size} bytes, resumed at {resumed}, {sent_again} sent after the reload")
    # The relay kept what arrived before the stall (the first connection also carried the
    # page's own requests), and after the reload only what it lacked went up again (plus
    # the requests' headers and the form).
    assert resumed and STALL - 64 * 1024 < resumed[0] <= STALL, resumed
    assert size - resumed[0] <= sent_again < size - resumed[0] + 64 * 1024
    (drop,) = await asyncio.to_thread(fetch_drops, daily, relay.journalist_url, tmp_path / "in")
    (received,) = drop.glob("*.bin")
    assert sha256_file(received) == sha256_file(video)


# --- weight -------------------------------------------------------------------------------------


@pytest.mark.parametrize("lang", ["en", "ar"])
async def test_the_landing_page_weighs_under_50_kb(
    browser_relay: ServedRelay, tmp_path: Path, lang: str
) -> None:
    """Everything the browser fetches to show the landing page, JavaScript on: the page,
    its stylesheet, its small script. The uploader comes only when files are sent."""
    async with chromium(tmp_path / "profile", javascript=True) as (_, page, watch):
        responses: list[Response] = []

        def seen(response: Response) -> None:
            responses.append(response)

        page.on("response", seen)
        await page.goto(f"{browser_relay.process.source_url}/?lang={lang}")
        await page.wait_for_load_state("networkidle")
        sizes = {urlsplit(r.url).path: len(await r.body()) for r in responses}
        assert set(sizes) == {"/", "/static/style.css", "/static/enhance.js"}, sizes
        print(f"landing page ({lang}): {sum(sizes.values())} bytes: {sizes}")
        assert sum(sizes.values()) < LANDING_BUDGET, sizes
        assert "/static/upload.js" not in watch.paths()

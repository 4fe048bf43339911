"""Fixtures of the browser tests: a real relay (`amanah serve --no-tor`, two contacts),
Debian's Chromium driven by Playwright with a fresh profile per test, and a watch on every
request and console message of a page.

Playwright never downloads a browser here: Chromium is /usr/bin/chromium from Debian
(scripts/setup.sh installs it), launched with the flags this machine needs (no
background networking: the tests also check that no request leaves 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import (
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    async_playwright,
)

from tests.relayharness import (
    ServedRelay,
    served_relay,
)

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 800, "height": 900}
# Runs before any script of the page (with JavaScript on): CSP violations reach the console
# even when the browser itself would only count them.
REPORT_CSP = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error("CSP violation: " + event.violatedDirective + " " + event.blockedURI);
});
"""


@pytest.fixture(scope="module")
def browser_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRelay]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium")
    root = tmp_path_factory.mktemp("browser")
    contacts = {"daily-news": ["daily-news"], "un-inquiry": ["un-inquiry"]}
    with served_relay(root, contacts) as served:
        yield served


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where screenshots go: $AMANAH_SCREENSHOTS, or a directory of this test run."""
    chosen = os.environ.get("AMANAH_SCREENSHOTS")
    folder = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass
class Watch:
    """Every request a context made and every console message its pages printed."""

    requests: list[Request] = field(default_factory=list)
    console: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("request", self._request)
        page.on("console", self._console)

    def _request(self, request: Request) -> None:
        self.requests.append(request)

    def _console(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")

    def foreign(self) -> list[str]:
        """Requests to anywhere but 127.0.0.1 (data: and blob: URLs stay in the page)."""
        return [
            r.url
            for r in self.requests
            if urlsplit(r.url).scheme not in ("data", "blob")
            and urlsplit(r.url).hostname != "127.0.0.1"
        ]

    def csp_violations(self) -> list[str]:
        return [
            line
            for line in self.console
            if "Content Security Policy" in line or "CSP violation" in line
        ]

    def paths(self, method: str | None = None) -> list[str]:
        return [urlsplit(r.url).path for r in self.requests if method is None or r.method == method]


def _fresh_folder(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


@asynccontextmanager
async def chromium(
    profile: Path, *, javascript: bool, locale: str = "en-US"
) -> AsyncIterator[tuple[BrowserContext, Page, Watch]]:
    """Debian's Chromium with a fresh profile in `profile`, one page, and its watch. On
    leaving, asserts that nothing left 127.0.0.1 and that no CSP violation was reported."""
    await asyncio.to_thread(_fresh_folder, profile)
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            args=FLAGS,
            headless=True,
            java_script_enabled=javascript,
            locale=locale,
            viewport=VIEWPORT,  # type: ignore[arg-type]
        )
        watch = Watch()
        try:
            if javascript:
                await context.add_init_script(REPORT_CSP)
            page = context.pages[0] if context.pages else await context.new_page()
            watch.attach(page)
            yield context, page, watch
            assert not watch.foreign(), f"requests left 127.0.0.1: {watch.foreign()}"
            assert not watch.csp_violations(), watch.csp_violations()
        finally:
            await context.close()

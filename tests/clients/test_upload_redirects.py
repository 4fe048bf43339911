"""The tus client (clients/upload.py) sends to the relay it was given and nowhere else: an
upload URL (`Location`) on another port, host or scheme, and a redirect answered to the
POST, the HEAD or the PATCH, are each a clear error, and a second server standing where
the client was pointed sees no connection at all. A Location under the relay's own tus
path, relative or absolute, still works.

The relay here is a fake (a loopback aiohttp app answering tus the way a hostile or broken
relay would): a real relay never answers like this, which is the point. The "elsewhere"
server is a real TCP listener that counts the connections it is offered."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from clients.common import UserError, fetch_bytes
from clients.upload import Misdirected, Uploader, upload_url
from tests.clients.harness import Elsewhere, Proxy

LENGTH = 100
UPLOAD = "/uploads/0123456789abcdef0123456789abcdef"


@dataclass
class FakeRelay:
    """What the fake relay answers: `location` to the POST (a format string given the
    relay's and the elsewhere server's ports), a redirect to `elsewhere` for the methods
    in `redirect`. `seen` counts the requests it got, by method."""

    location: str = UPLOAD
    redirect: set[str] = field(default_factory=set)
    seen: Counter[str] = field(default_factory=Counter)
    elsewhere_url: str = ""
    own_port: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/uploads", self.handle)
        app.router.add_route("HEAD", UPLOAD, self.handle)
        app.router.add_patch(UPLOAD, self.handle)
        app.router.add_get("/directory", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        self.seen[request.method] += 1
        await request.read()
        headers = {"Tus-Resumable": "1.0.0"}
        if request.method in self.redirect:
            headers["Location"] = self.elsewhere_url + request.path
            return web.Response(status=302, headers=headers)
        if request.method == "POST":
            headers["Location"] = self.location.format(port=self.own_port)
            return web.Response(status=201, headers=headers)
        if request.method == "HEAD":
            return web.Response(status=200, headers={**headers, "Upload-Offset": "0"})
        if request.method == "GET":
            return web.Response(body=b"not a directory")
        return web.Response(status=204, headers={**headers, "Upload-Offset": str(LENGTH)})


@dataclass
class Run:
    relay: FakeRelay
    elsewhere: Elsewhere
    base: str  # the relay URL the person gave
    heard: list[tuple[str, int]]


@asynccontextmanager
async def running(
    relay: FakeRelay, elsewhere_host: str = "127.0.0.1", same_port: bool = False
) -> AsyncIterator[Run]:
    """The fake relay on 127.0.0.1, and an Elsewhere on `elsewhere_host` (on the relay's
    own port when `same_port`, so that only the host differs)."""
    elsewhere = Elsewhere(LENGTH, UPLOAD)
    async with TestServer(relay.app(), host="127.0.0.1") as server:
        assert server.port is not None
        relay.own_port = server.port
        port = await elsewhere.start(elsewhere_host, server.port if same_port else 0)
        relay.elsewhere_url = f"http://{elsewhere_host}:{port}"
        try:
            yield Run(relay, elsewhere, f"http://127.0.0.1:{server.port}", [])
        finally:
            await elsewhere.stop()


async def upload(run: Run, tmp_path: Path) -> None:
    """What `amanah-drop send` does with an Uploader: create, then send the file."""
    path = tmp_path / "drop.age"
    path.write_bytes(bytes(LENGTH))
    async with aiohttp.ClientSession() as session:
        uploader = Uploader(
            session, run.base + "/uploads", lambda url, n: run.heard.append((url, n)), 5.0
        )
        url = await uploader.create(LENGTH, {"filetype": "application/octet-stream"})
        await uploader.send(url, path, LENGTH)


# Locations that resolve elsewhere; {port} is the relay's own port.
ELSEWHERE_LOCATIONS = {
    "another port": ("127.0.0.1", False, "{elsewhere}" + UPLOAD),
    "another host, same port": ("127.0.0.2", True, "{elsewhere}" + UPLOAD),
    "another host, scheme-relative": ("127.0.0.2", True, "//127.0.0.2:{port}" + UPLOAD),
}


@pytest.mark.parametrize(
    ("host", "same_port", "location"), ELSEWHERE_LOCATIONS.values(), ids=ELSEWHERE_LOCATIONS
)
async def test_a_location_elsewhere_is_refused_before_the_file_is_sent(
    tmp_path: Path, host: str, same_port: bool, location: str
) -> None:
    relay = FakeRelay()
    async with running(relay, host, same_port) as run:
        relay.location = location.replace("{elsewhere}", relay.elsewhere_url)
        with pytest.raises(Misdirected, match="upload URL on another server") as caught:
            await upload(run, tmp_path)
        assert run.elsewhere.connections == 0
    assert isinstance(caught.value, UserError)  # exit 1 with the message, not a crash
    assert relay.seen == Counter({"POST": 1})  # no HEAD, no PATCH: not a byte of the file
    assert run.heard == []  # the foreign URL is not remembered for a later run


async def test_a_location_with_another_scheme_is_refused(tmp_path: Path) -> None:
    """https on the relay's own host and port: the relay (behind a counting TCP proxy,
    so a TLS attempt on it would show as a second connection) gets only the POST."""
    relay = FakeRelay()
    async with running(relay) as run:
        proxy = Proxy(relay.own_port)
        try:
            run.base = proxy.url
            relay.location = f"https://127.0.0.1:{proxy.port}{UPLOAD}"
            with pytest.raises(Misdirected, match="upload URL on another server"):
                await upload(run, tmp_path)
            await asyncio.sleep(0.1)  # a connection on its way would be counted by now
            assert proxy.connections == 1
        finally:
            proxy.close()
    assert relay.seen == Counter({"POST": 1})
    assert run.heard == []


@pytest.mark.parametrize("method", ["POST", "HEAD", "PATCH"])
async def test_a_redirect_is_an_error_not_followed(tmp_path: Path, method: str) -> None:
    relay = FakeRelay(redirect={method})
    async with running(relay) as run:
        with pytest.raises(Misdirected, match=f"answered {method} with a redirect \\(302\\)"):
            await upload(run, tmp_path)
        assert run.elsewhere.connections == 0
    assert relay.seen[method] == 1
    assert relay.seen["PATCH"] == (1 if method == "PATCH" else 0)


async def test_a_redirected_directory_is_an_error_not_followed() -> None:
    relay = FakeRelay(redirect={"GET"})
    async with running(relay) as run, aiohttp.ClientSession() as session:
        with pytest.raises(UserError, match=r"did not give its directory \(302\)"):
            await fetch_bytes(session, run.base + "/directory", "directory")
        assert run.elsewhere.connections == 0
    assert relay.seen == Counter({"GET": 1})


GOOD_LOCATIONS = {
    "absolute path": UPLOAD,
    "relative": UPLOAD.lstrip("/"),
    "absolute URL": "http://127.0.0.1:{port}" + UPLOAD,
    "upper-case scheme and host": "HTTP://127.0.0.1:{port}" + UPLOAD,
}


@pytest.mark.parametrize("location", GOOD_LOCATIONS.values(), ids=GOOD_LOCATIONS)
async def test_a_location_under_the_relay_works(tmp_path: Path, location: str) -> None:
    relay = FakeRelay(location=location)
    async with running(relay) as run:
        await upload(run, tmp_path)
        url = f"{run.base}{UPLOAD}"
        assert [(u.lower(), n) for u, n in run.heard] == [(url, 0), (url, 0), (url, LENGTH)]
        assert run.elsewhere.connections == 0
    assert relay.seen == Counter({"POST": 1, "HEAD": 1, "PATCH": 1})


# Without a server: what upload_url accepts and refuses, against this endpoint.
ENDPOINT = "http://abcdefghijklmnop.onion/uploads"
REFUSED = {
    "other path": "/elsewhere/1",
    "the endpoint itself": "/uploads",
    "empty name": "/uploads/",
    "two segments": "/uploads/a/b",
    "dot segment climbing out": "/uploads/../directory",
    "escaped slash": "/uploads/a%2Fb",
    "query": "/uploads/abc?next=http://evil.example",
    "fragment": "/uploads/abc#x",
    "user info": "http://me@abcdefghijklmnop.onion/uploads/abc",
    "another onion": "http://zyxwvutsrqponmlk.onion/uploads/abc",
    "explicit other port": "http://abcdefghijklmnop.onion:8080/uploads/abc",
    "https": "https://abcdefghijklmnop.onion/uploads/abc",
    "port out of range": "http://abcdefghijklmnop.onion:99999/uploads/abc",
    "another scheme": "ftp://abcdefghijklmnop.onion/uploads/abc",
    "unclosed IPv6 host": "http://[::1/uploads/abc",
    "unclosed IPv6 host, scheme-relative": "//[::1/uploads/abc",
}
ACCEPTED = {
    "absolute path": ("/uploads/abc", ENDPOINT + "/abc"),
    "default port written out": (
        "http://abcdefghijklmnop.onion:80/uploads/abc",
        "http://abcdefghijklmnop.onion:80/uploads/abc",
    ),
}


@pytest.mark.parametrize("location", REFUSED.values(), ids=REFUSED)
def test_upload_url_refuses(location: str) -> None:
    with pytest.raises(Misdirected):
        upload_url(ENDPOINT, location)


@pytest.mark.parametrize(("location", "url"), ACCEPTED.values(), ids=ACCEPTED)
def test_upload_url_accepts(location: str, url: str) -> None:
    assert upload_url(ENDPOINT, location) == url


async def test_a_remembered_url_elsewhere_is_not_resumed(tmp_path: Path) -> None:
    """An upload URL from a state file (written before this check, or edited) is checked
    too, before the HEAD that would carry on."""
    relay = FakeRelay()
    async with running(relay, "127.0.0.2", same_port=True) as run:
        path = tmp_path / "drop.age"
        path.write_bytes(bytes(LENGTH))
        async with aiohttp.ClientSession() as session:
            uploader = Uploader(session, run.base + "/uploads", lambda *_: None, 5.0)
            with pytest.raises(Misdirected):
                await uploader.send(relay.elsewhere_url + UPLOAD, path, LENGTH)
        assert run.elsewhere.connections == 0
    assert relay.seen == Counter()

"""docs/openapi.yaml against the running journalist API.

The relay runs in-process (relay.server.start) on free loopback ports, its event loop in a
background thread, with one contact, a member of it, a member of nobody, and one real drop
sealed the way the form path seals it. Then:

- schemathesis generates requests for every documented operation (well-formed and
  malformed: wrong types, missing fields, bodies that break the schema), sent without a
  token and with a valid bearer token; every answer must have a documented status, content
  type, headers and body;
- the happy paths that random data cannot reach (a real drop, a real blob with Range, a
  real reply handle) are called once each and judged by the same checks;
- the document and the router are compared both ways, and the source app must route no
  /api/ path at all.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import re
import secrets
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
import requests
import schemathesis
import yaml
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from crypto import age
from crypto.auth import auth_message
from crypto.card import MemberIdentity
from crypto.directory import verify_directory
from crypto.keys import VerifyKey
from relay import config as configuration
from relay import contacts, datadir, ingest, server
from relay.store import Store
from relay.web import common, journalist, source
from relay.web.common import RelayContext, store_drop
from tests.relayharness import free_ports

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
SCHEMA = schemathesis.openapi.from_path(DOCUMENT)
# No generated Authorization headers: each case is sent without one, or with a real token
# (generated ones are random strings, which the explicit 401 tests below cover).
SCHEMA.config.generation.update(with_security_parameters=False)
# Not `positive_data_acceptance`: a schema-valid key or token is still a random one.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
    missing_required_header,
    ignored_auth,
    unsupported_method,
]
CONTACT = "the-daily"
ROUTER_ERRORS = {"Not Found", "Method Not Allowed"}  # aiohttp's reasons, rendered as JSON
T = TypeVar("T")


def public_paths() -> set[str]:
    """Paths whose operations declare `security: []` (no token needed)."""
    document = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return {
        path
        for path, item in document["paths"].items()
        for operation in item.values()
        if isinstance(operation, dict) and operation.get("security") == []
    }


PUBLIC = public_paths()


@dataclass
class Relay:
    """A relay serving on loopback, driven from the test thread."""

    loop: asyncio.AbstractEventLoop
    context: RelayContext
    runners: list[web.AppRunner]
    member: MemberIdentity
    outsider: MemberIdentity  # a well-formed key that belongs to no contact
    drop_id: str
    reply_handle: str
    source_login: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.context.config.server.journalist_port}"

    @property
    def source_base(self) -> str:
        return f"http://127.0.0.1:{self.context.config.server.source_port}"

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def log_in(self, member: MemberIdentity) -> requests.Response:
        """The challenge-response a client does; the answer to its second step."""
        verify_key = str(member.signing_key.verify_key)
        issued = requests.post(
            f"{self.base}/api/v1/auth/challenge", json={"verify_key": verify_key}, timeout=10
        ).json()
        challenge = base64.b64decode(issued["challenge"])
        signature = member.signing_key.sign(
            auth_message(VerifyKey.parse(issued["relay_key"]), challenge)
        )
        return requests.post(
            f"{self.base}/api/v1/auth/token",
            json={
                "verify_key": verify_key,
                "challenge": issued["challenge"],
                "signature": base64.b64encode(signature).decode(),
            },
            timeout=10,
        )

    def new_contact(self, name: str) -> MemberIdentity:
        """Registers a contact `name` with one new member, and returns the member."""
        member = MemberIdentity.generate()
        adding = contacts.add_contact(
            self.context.store, name, [member.card.encode()], "", False, 1
        )
        self.run(adding)
        return member

    def token(self, member: MemberIdentity | None = None) -> str:
        """A bearer token for `member` (by default the contact's member)."""
        answered = self.log_in(member or self.member)
        assert answered.status_code == 200, answered.text
        return str(answered.json()["token"])


async def seed_drop(context: RelayContext, login_id: str, reply_handle: str) -> str:
    """A drop from a (codename-less) source, sealed and stored by the form path's own
    `store_drop`."""
    store = context.store
    reply_identity = MemberIdentity.generate().identity
    await store.add_source(login_id, str(reply_identity.recipient), reply_handle, 1_700_000_000)
    drop_id, _ = await store_drop(
        context,
        ingest.route(await store.list_contacts(), []),
        [],
        message="a testimony long enough to ask for a range of it",
        reply_to=ingest.ReplyTo(str(reply_identity.recipient), reply_handle),
        source_login=login_id,
    )
    return drop_id


async def start_relay(data_dir: Path, loop: asyncio.AbstractEventLoop) -> Relay:
    keys = datadir.initialise(data_dir)
    config = configuration.load(data_dir, environ={})
    source_port, journalist_port = free_ports(2)  # held together while chosen: distinct
    config = dataclasses.replace(
        config,
        server=dataclasses.replace(
            config.server, source_port=source_port, journalist_port=journalist_port
        ),
    )
    store = await Store.open(config.database)
    member, outsider = MemberIdentity.generate(), MemberIdentity.generate()
    now = int(time.time())
    await contacts.add_contact(store, CONTACT, [member.card.encode()], "The Daily", False, now)
    await contacts.publish_directory(store, keys.directory_key, now)
    context, runners = await server.start(config, keys, store)
    login_id, reply_handle = "a" * 64, ingest.new_drop_id()
    drop_id = await seed_drop(context, login_id, reply_handle)
    return Relay(loop, context, runners, member, outsider, drop_id, reply_handle, login_id)


async def stop_relay(relay: Relay) -> None:
    for runner in relay.runners:
        await runner.cleanup()
    await relay.context.store.close()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="relay", daemon=True)
    thread.start()
    data_dir = tmp_path_factory.mktemp("relay") / "d"
    started = asyncio.run_coroutine_threadsafe(start_relay(data_dir, loop), loop)
    running = started.result(timeout=30)
    try:
        yield running
    finally:
        running.run(stop_relay(running))
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


@pytest.fixture(scope="module")
def token(relay: Relay) -> str:
    return relay.token()


# Generated requests: every operation, with and without a token.


@SCHEMA.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@pytest.mark.parametrize("credentials", ["none", "token"])
def test_generated_requests_conform(
    case: schemathesis.Case, credentials: str, relay: Relay, token: str
) -> None:
    """Positive and negative cases (schemathesis' coverage and fuzzing phases): bodies of
    the wrong type, missing or extra fields, path parameters off their patterns, other
    methods. Without a token every protected operation must answer 401; with one, the
    documented statuses only."""
    assert "Authorization" not in case.headers
    # Given to the call, not put in the case, so that ignored_auth knows the token is real
    # and probes each 2xx again without it and with a wrong one.
    headers = bearer(token) if credentials == "token" else None
    response = case.call_and_validate(
        base_url=relay.base, headers=headers, checks=CHECKS, timeout=10
    )
    if credentials == "none" and case.operation.path not in PUBLIC:
        assert response.status_code == 401 or not reached_a_handler(response), response.text


def reached_a_handler(response: schemathesis.Response) -> bool:
    """False for the router's own 404/405 (a path parameter that broke the path, a method
    the path does not have): no handler, so no authentication, was involved."""
    if response.status_code not in (404, 405):
        return True
    return bool(response.content) and response.json()["error"] not in ROUTER_ERRORS


# The happy paths, which random ids and keys never reach.


def operation(path: str, method: str) -> schemathesis.APIOperation:
    return SCHEMA[path][method]


def judge(path: str, method: str, response: requests.Response) -> None:
    """Validates a response sent by hand against the document, with the same checks."""
    template = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path))
    sent = re.fullmatch(template, urlsplit(response.request.url or "").path)
    assert sent is not None, (path, response.request.url)
    case = operation(path, method).Case(path_parameters=sent.groupdict())
    # The request's own headers, so ignored_auth knows a token was given on purpose (and
    # probes the same request without it, and with a wrong one).
    case.validate_response(response, checks=CHECKS, headers=dict(response.request.headers))


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fresh_drop(relay: Relay) -> tuple[str, str, str]:
    """(drop id, reply handle, source login) of a new drop from a new source."""
    login_id, handle = secrets.token_hex(32), ingest.new_drop_id()
    return relay.run(seed_drop(relay.context, login_id, handle)), handle, login_id


def test_directory_is_the_signed_document(relay: Relay) -> None:
    response = requests.get(f"{relay.base}/api/v1/directory", timeout=10)
    assert response.status_code == 200
    judge("/api/v1/directory", "GET", response)
    document, _ = verify_directory(response.content, None)
    assert [c.name for c in document.contacts] == [CONTACT]
    assert response.json()["signing_key"] == str(relay.context.keys.directory_key.verify_key)


def test_challenge_and_token_conform(relay: Relay) -> None:
    verify_key = str(relay.member.signing_key.verify_key)
    issued = requests.post(
        f"{relay.base}/api/v1/auth/challenge", json={"verify_key": verify_key}, timeout=10
    )
    assert issued.status_code == 200
    judge("/api/v1/auth/challenge", "POST", issued)
    relay_key = VerifyKey.parse(issued.json()["relay_key"])
    assert relay_key == relay.context.keys.directory_key.verify_key
    challenge = issued.json()["challenge"]
    signature = relay.member.signing_key.sign(auth_message(relay_key, base64.b64decode(challenge)))
    body = {
        "verify_key": verify_key,
        "challenge": challenge,
        "signature": base64.b64encode(signature).decode(),
    }
    answered = requests.post(f"{relay.base}/api/v1/auth/token", json=body, timeout=10)
    assert answered.status_code == 200
    judge("/api/v1/auth/token", "POST", answered)
    replayed = requests.post(f"{relay.base}/api/v1/auth/token", json=body, timeout=10)
    assert replayed.status_code == 401
    judge("/api/v1/auth/token", "POST", replayed)
    listed = requests.get(
        f"{relay.base}/api/v1/drops", headers=bearer(answered.json()["token"]), timeout=10
    )
    assert listed.status_code == 200


def test_a_key_of_no_member_gets_no_token(relay: Relay) -> None:
    refused = relay.log_in(relay.outsider)  # signed correctly, but a member of nothing
    assert refused.status_code == 401
    judge("/api/v1/auth/token", "POST", refused)


def test_drops_and_drop_conform(relay: Relay, token: str) -> None:
    listed = requests.get(f"{relay.base}/api/v1/drops", headers=bearer(token), timeout=10)
    assert listed.status_code == 200
    judge("/api/v1/drops", "GET", listed)
    assert listed.json()["contact"] == CONTACT
    assert relay.drop_id in [d["id"] for d in listed.json()["drops"]]
    one = requests.get(
        f"{relay.base}/api/v1/drops/{relay.drop_id}", headers=bearer(token), timeout=10
    )
    assert one.status_code == 200
    judge("/api/v1/drops/{drop_id}", "GET", one)
    assert [b["name"] for b in one.json()["blobs"]] == ["manifest", "message"]


def test_blob_whole_and_ranges_conform(relay: Relay, token: str) -> None:
    path = "/api/v1/drops/{drop_id}/blobs/{name}"
    url = f"{relay.base}/api/v1/drops/{relay.drop_id}/blobs/message"
    whole = requests.get(url, headers=bearer(token), timeout=10)
    assert whole.status_code == 200
    assert whole.headers["Content-Type"] == "application/octet-stream"
    judge(path, "GET", whole)
    listed = requests.get(
        f"{relay.base}/api/v1/drops/{relay.drop_id}", headers=bearer(token), timeout=10
    ).json()
    message = next(b for b in listed["blobs"] if b["name"] == "message")
    assert hashlib.sha256(whole.content).hexdigest() == message["sha256"]
    assert age.decrypt(whole.content, [relay.member.identity]).startswith(b"a testimony")

    for header, expected in (
        ("bytes=10-", whole.content[10:]),
        ("bytes=0-9", whole.content[:10]),
        ("bytes=-7", whole.content[-7:]),
    ):
        part = requests.get(url, headers={**bearer(token), "Range": header}, timeout=10)
        assert part.status_code == 206, header
        assert part.content == expected
        judge(path, "GET", part)

    size = len(whole.content)
    refused = requests.get(url, headers={**bearer(token), "Range": f"bytes={size}-"}, timeout=10)
    assert refused.status_code == 416
    assert refused.headers["Content-Range"] == f"bytes */{size}"
    judge(path, "GET", refused)


def test_unknown_blob_and_foreign_drop_are_404(relay: Relay, token: str) -> None:
    path = "/api/v1/drops/{drop_id}/blobs/{name}"
    for url in (
        f"{relay.base}/api/v1/drops/{relay.drop_id}/blobs/item-1",  # well-formed, not there
        f"{relay.base}/api/v1/drops/{relay.drop_id}/blobs/..%2Fmanifest",
        f"{relay.base}/api/v1/drops/{ingest.new_drop_id()}/blobs/manifest",
    ):
        response = requests.get(url, headers=bearer(token), timeout=10)
        assert response.status_code == 404, url
        judge(path, "GET", response)


def test_ack_conforms_and_deletes(relay: Relay, token: str) -> None:
    drop_id, _, _ = fresh_drop(relay)
    url = f"{relay.base}/api/v1/drops/{drop_id}/ack"
    acked = requests.post(url, headers=bearer(token), timeout=10)
    assert acked.status_code == 200
    judge("/api/v1/drops/{drop_id}/ack", "POST", acked)
    assert acked.json() == {"id": drop_id, "deleted": True}
    assert not (relay.context.drops_root / drop_id).exists()
    again = requests.post(url, headers=bearer(token), timeout=10)
    assert again.status_code == 404
    judge("/api/v1/drops/{drop_id}/ack", "POST", again)
    gone = requests.get(f"{relay.base}/api/v1/drops/{drop_id}", headers=bearer(token), timeout=10)
    assert gone.status_code == 404


def test_reply_conforms(relay: Relay, token: str) -> None:
    path = "/api/v1/replies/{handle}"
    _, handle, login_id = fresh_drop(relay)
    source_key = relay.run(relay.context.store.get_source(login_id))
    assert source_key is not None
    sealed = age.encrypt(b"we received it; stay safe", [source_key[1]])
    url = f"{relay.base}/api/v1/replies/{handle}"
    headers = {**bearer(token), "Content-Type": "application/octet-stream"}
    created = requests.post(url, data=sealed, headers=headers, timeout=10)
    assert created.status_code == 201
    judge(path, "POST", created)
    stored = relay.run(relay.context.store.list_replies(login_id))
    assert [r.size for r in stored] == [len(sealed)]

    not_age = requests.post(url, data=b"plain text, not sealed", headers=headers, timeout=10)
    assert not_age.status_code == 400
    judge(path, "POST", not_age)
    unknown = requests.post(
        f"{relay.base}/api/v1/replies/{ingest.new_drop_id()}",
        data=sealed,
        headers=headers,
        timeout=10,
    )
    assert unknown.status_code == 404
    judge(path, "POST", unknown)
    limit = relay.context.config.limits.max_reply_bytes
    too_large = requests.post(url, data=b"x" * (limit + 1), headers=headers, timeout=10)
    assert too_large.status_code == 413
    judge(path, "POST", too_large)


def test_removed_member_is_refused_at_once(relay: Relay) -> None:
    member = relay.new_contact("the-weekly")
    token = relay.token(member)
    listed = requests.get(f"{relay.base}/api/v1/drops", headers=bearer(token), timeout=10)
    assert listed.status_code == 200
    relay.run(relay.context.store.remove_contact("the-weekly"))
    refused = requests.get(f"{relay.base}/api/v1/drops", headers=bearer(token), timeout=10)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Bearer realm="amanah"'
    judge("/api/v1/drops", "GET", refused)


def test_another_contacts_drop_does_not_exist_for_you(relay: Relay) -> None:
    member = relay.new_contact("the-monthly")
    token = relay.token(member)
    try:
        for method, url, unknown in (
            ("GET", f"/api/v1/drops/{relay.drop_id}", f"/api/v1/drops/{'f' * 32}"),
            (
                "GET",
                f"/api/v1/drops/{relay.drop_id}/blobs/manifest",
                f"/api/v1/drops/{'f' * 32}/blobs/manifest",
            ),
            ("POST", f"/api/v1/drops/{relay.drop_id}/ack", f"/api/v1/drops/{'f' * 32}/ack"),
            ("POST", f"/api/v1/replies/{relay.reply_handle}", f"/api/v1/replies/{'f' * 32}"),
        ):
            foreign = requests.request(method, relay.base + url, headers=bearer(token), timeout=10)
            absent = requests.request(
                method, relay.base + unknown, headers=bearer(token), timeout=10
            )
            assert foreign.status_code == absent.status_code == 404, url
            assert foreign.json() == absent.json()
        listed = requests.get(f"{relay.base}/api/v1/drops", headers=bearer(token), timeout=10)
        assert listed.json() == {"contact": "the-monthly", "drops": []}
    finally:
        relay.run(relay.context.store.remove_contact("the-monthly"))


MALFORMED = [
    pytest.param("application/json", b"", id="empty"),
    pytest.param("application/json", b"{not json", id="not-json"),
    pytest.param("application/json", b"\xff\xfe\x00", id="not-utf8"),
    pytest.param("application/json", b"[]", id="array"),
    pytest.param("application/json", b'"amanah-sig1"', id="string"),
    pytest.param("application/json", b"{}", id="no-fields"),
    pytest.param("application/json", b'{"verify_key": 5}', id="number-key"),
    pytest.param("application/json", b'{"verify_key": ""}', id="empty-key"),
    pytest.param("application/json", b'{"verify_key": "age1qqqq"}', id="wrong-key-kind"),
    pytest.param("text/plain", b'{"verify_key": "x"}', id="not-declared-json"),
    pytest.param("application/x-www-form-urlencoded", b"verify_key=x", id="form"),
]


@pytest.mark.parametrize("path", ["/api/v1/auth/challenge", "/api/v1/auth/token"])
@pytest.mark.parametrize(("content_type", "body"), MALFORMED)
def test_malformed_bodies_are_documented_400s(
    relay: Relay, path: str, content_type: str, body: bytes
) -> None:
    response = requests.post(
        relay.base + path, data=body, headers={"Content-Type": content_type}, timeout=10
    )
    assert response.status_code == 400
    judge(path, "POST", response)


def test_token_fields_malformed(relay: Relay) -> None:
    verify_key = str(relay.member.signing_key.verify_key)
    good = base64.b64encode(bytes(32)).decode()
    for body, status in (
        ({"verify_key": verify_key, "challenge": "***", "signature": good}, 400),
        ({"verify_key": verify_key, "challenge": good, "signature": "not base64!"}, 400),
        ({"verify_key": verify_key, "challenge": good}, 400),
        ({"verify_key": verify_key, "challenge": good, "signature": good}, 401),
        ({"verify_key": "x", "challenge": good, "signature": good}, 400),  # not a key
    ):
        response = requests.post(f"{relay.base}/api/v1/auth/token", json=body, timeout=10)
        assert response.status_code == status, body
        judge("/api/v1/auth/token", "POST", response)


@pytest.mark.parametrize("path", ["/api/v1/auth/challenge", "/api/v1/auth/token"])
def test_an_oversized_json_body_is_a_413(relay: Relay, path: str) -> None:
    body = b'{"verify_key": "' + b"q" * (relay.context.config.limits.max_reply_bytes + 65536)
    response = requests.post(
        relay.base + path,
        data=body + b'"}',
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413
    judge(path, "POST", response)


def test_deeply_nested_json_is_a_400(relay: Relay) -> None:
    # Was a 500 (json.loads' RecursionError); fixed in journalist._json_body.
    response = requests.post(
        f"{relay.base}/api/v1/auth/challenge",
        data=b"[" * 100_000,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    judge("/api/v1/auth/challenge", "POST", response)


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer !!!", "Bearer " + "A" * 43, "Token x"],
)
def test_bad_credentials_are_documented_401s(relay: Relay, authorization: str) -> None:
    response = requests.get(
        f"{relay.base}/api/v1/drops", headers={"Authorization": authorization}, timeout=10
    )
    assert response.status_code == 401
    judge("/api/v1/drops", "GET", response)


# The document and the router, both ways.


def documented() -> set[tuple[str, str]]:
    document = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    methods = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }


def routed(app: web.Application) -> set[tuple[str, str]]:
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    }


def test_the_document_is_valid_openapi() -> None:
    SCHEMA.validate()  # against the OpenAPI 3.0 meta-schema schemathesis carries


def test_every_route_is_documented_and_every_path_routed(relay: Relay) -> None:
    routes = routed(journalist.make_app(relay.context))
    heads = {(m, p) for m, p in routes if m == "HEAD"}
    # aiohttp answers HEAD for every GET; the document says so once, in its description.
    assert heads == {("HEAD", p) for m, p in routes if m == "GET"}
    assert routes - heads == documented()


def test_every_documented_operation_answers_on_the_journalist_port(relay: Relay) -> None:
    for method, path in sorted(documented()):
        url = relay.base + path.format(drop_id="0" * 32, name="manifest", handle="0" * 32)
        response = requests.request(method, url, timeout=10)
        assert response.status_code != 405, (method, path)
        if response.status_code == 404:  # the handler's own 404, not the router's
            assert response.json()["error"] != "Not Found", (method, path)


def test_source_app_routes_no_api_path(relay: Relay) -> None:
    routes = routed(source.make_app(relay.context))
    assert routes, "the source app routes something"
    assert not [p for _, p in routes if p.startswith("/api")]
    for method, path in sorted(documented()):
        url = relay.source_base + path.format(drop_id="0" * 32, name="manifest", handle="0" * 32)
        response = requests.request(method, url, timeout=10)
        assert response.status_code == 404, (method, path)
        assert response.headers["Content-Type"].startswith("text/html")


def test_every_answer_carries_the_security_headers(relay: Relay, token: str) -> None:
    """Pages, files, JSON, tus answers and every kind of error, on both ports (the
    description's "Headers on every response"; the source pages' CSP adds their script)."""
    blob = f"/api/v1/drops/{relay.drop_id}/blobs/manifest"
    journalist_answers = [
        ("GET", "/api/v1/directory", {}, 200),
        ("GET", blob, bearer(token), 200),  # a file response
        ("GET", blob, {**bearer(token), "Range": "bytes=99999999-"}, 416),
        ("GET", "/api/v1/drops", {}, 401),
        ("GET", "/nowhere", {}, 404),  # the router's
        ("PUT", "/api/v1/drops", {}, 405),
    ]
    source_answers = [
        ("GET", "/", {}, 200),
        ("GET", "/static/style.css", {}, 200),
        ("GET", "/nowhere", {}, 404),
        ("POST", "/login", {"Content-Type": "application/x-www-form-urlencoded"}, 403),
        ("OPTIONS", "/uploads", {}, 204),
        ("POST", "/uploads", {}, 412),  # no Tus-Resumable: a tus client's plain-text error
        ("HEAD", "/uploads/" + "0" * 32, {"Tus-Resumable": "1.0.0"}, 404),
    ]
    for base, answers, expected in (
        (relay.base, journalist_answers, common.SECURITY_HEADERS),
        (relay.source_base, source_answers, common.SOURCE_HEADERS),
    ):
        for method, path, headers, status in answers:
            response = requests.request(method, base + path, headers=headers, timeout=10)
            assert response.status_code == status, (method, path, response.text)
            got = {name: response.headers.get(name) for name in expected}
            assert got == expected, (method, path)
            policy = response.headers["Content-Security-Policy"]
            assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
            assert ("script-src 'self'" in policy) is (base == relay.source_base)
            assert response.headers["Cache-Control"] == "no-store"
            assert response.headers["Server"] == "Amanah"


# Where the relay breaks its own contract.


def test_unsupported_method_names_the_allowed_ones(relay: Relay) -> None:
    response = requests.put(f"{relay.base}/api/v1/drops", timeout=10)
    assert response.status_code == 405
    assert response.json()["error"]
    assert "GET" in response.headers.get("Allow", "")


def test_unsatisfiable_range_is_a_json_error(relay: Relay, token: str) -> None:
    url = f"{relay.base}/api/v1/drops/{relay.drop_id}/blobs/manifest"
    response = requests.get(url, headers={**bearer(token), "Range": "bytes=99999999-"}, timeout=10)
    assert response.status_code == 416
    assert response.headers["Content-Type"].startswith("application/json")
    assert "error" in response.json()


def test_a_reply_sent_in_chunks_is_stored_whole(relay: Relay, token: str) -> None:
    _, handle, login_id = fresh_drop(relay)
    source_key = relay.run(relay.context.store.get_source(login_id))
    assert source_key is not None
    sealed = age.encrypt(b"x" * 300_000, [source_key[1]])

    def chunks() -> Iterator[bytes]:  # as a slow link delivers it: the rest comes later
        yield sealed[: 16 * 1024]
        time.sleep(0.2)
        yield sealed[16 * 1024 :]

    response = requests.post(
        f"{relay.base}/api/v1/replies/{handle}", data=chunks(), headers=bearer(token), timeout=10
    )
    assert response.status_code == 201
    stored = relay.run(relay.context.store.list_replies(login_id))
    assert [r.size for r in stored] == [len(sealed)]

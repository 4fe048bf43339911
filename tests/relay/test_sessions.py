"""relay.web.sessions: source browser sessions in RAM, with the clock passed in."""

from __future__ import annotations

import pytest

from relay.web import sessions as sessions_module
from relay.web.sessions import IDLE_SECONDS, MAX_SESSIONS, Session, Sessions

NOW = 1_700_000_000.0


def test_a_new_session_has_random_id_and_csrf() -> None:
    store = Sessions()
    first_id, first = store.get_or_create(None, NOW)
    second_id, second = store.get_or_create(None, NOW)
    assert first_id != second_id and first.csrf != second.csrf
    assert len(first_id) >= 43 and len(first.csrf) >= 43  # 32 random bytes, base64url
    assert first.login_id is None and first.last_used == NOW


def test_the_cookie_finds_its_session() -> None:
    store = Sessions()
    session_id, session = store.get_or_create(None, NOW)
    again_id, again = store.get_or_create(session_id, NOW + 10)
    assert again_id == session_id and again is session and again.last_used == NOW + 10
    assert store.get(session_id, NOW + 20) is session


def test_an_unknown_cookie_gets_a_new_session_with_a_new_id() -> None:
    store = Sessions()
    session_id, _ = store.get_or_create("chosen-by-the-visitor", NOW)
    assert session_id != "chosen-by-the-visitor"  # no session fixation
    assert store.get("chosen-by-the-visitor", NOW) is None
    assert store.get(None, NOW) is None


def test_a_session_ends_after_idle_seconds() -> None:
    store = Sessions()
    session_id, _ = store.get_or_create(None, NOW)
    assert store.get(session_id, NOW + IDLE_SECONDS) is not None  # the edge still counts
    assert store.get(session_id, NOW + 2 * IDLE_SECONDS + 0.001) is None
    new_id, _ = store.get_or_create(session_id, NOW + 3 * IDLE_SECONDS)
    assert new_id != session_id


def test_use_keeps_a_session_alive() -> None:
    store = Sessions()
    session_id, _ = store.get_or_create(None, NOW)
    for step in range(1, 6):  # five uses, each within the idle time of the last
        assert store.get_or_create(session_id, NOW + step * (IDLE_SECONDS - 1))[0] == session_id
    assert store.get(session_id, NOW + 6 * (IDLE_SECONDS - 1)) is not None


def test_idle_sessions_expire_while_others_are_used() -> None:
    store = Sessions()
    idle_id, _ = store.get_or_create(None, NOW)
    busy_id, _ = store.get_or_create(None, NOW + 1)
    store.get_or_create(busy_id, NOW + IDLE_SECONDS)
    assert store.get(idle_id, NOW + IDLE_SECONDS + 0.5) is None
    assert store.get(busy_id, NOW + IDLE_SECONDS + 0.5) is not None


def test_a_session_touched_by_get_does_not_keep_others_alive() -> None:
    store = Sessions()
    active_id, _ = store.get_or_create(None, NOW)
    idle_id, _ = store.get_or_create(None, NOW + 1)
    store.get(active_id, NOW + IDLE_SECONDS)  # e.g. a POST /logout form check
    assert store.get(idle_id, NOW + IDLE_SECONDS + 2) is None


def test_end_removes_a_session() -> None:
    store = Sessions()
    session_id, _ = store.get_or_create(None, NOW)
    store.end(session_id)
    assert store.get(session_id, NOW) is None
    store.end(session_id)  # again: nothing to do
    store.end(None)


def test_csrf_is_compared_exactly() -> None:
    store = Sessions()
    _, session = store.get_or_create(None, NOW)
    assert Sessions.csrf_ok(session, session.csrf)
    for wrong in ("", session.csrf[:-1], session.csrf + "x", session.csrf.upper(), "é", "\x00"):
        assert not Sessions.csrf_ok(session, wrong), wrong
    assert not Sessions.csrf_ok(None, session.csrf)
    _, other = store.get_or_create(None, NOW)
    assert not Sessions.csrf_ok(other, session.csrf)


def test_csrf_compare_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []

    def record(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return a == b

    monkeypatch.setattr(sessions_module.hmac, "compare_digest", record)
    session = Session(csrf="token", login_id=None, last_used=NOW)
    assert Sessions.csrf_ok(session, "token")
    assert compared == [(b"token", b"token")]


def test_the_number_of_sessions_is_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions_module, "MAX_SESSIONS", 3)
    store = Sessions()
    ids = [store.get_or_create(None, NOW + i)[0] for i in range(3)]
    store.get_or_create(ids[0], NOW + 3)  # used again: now the most recent
    newest, _ = store.get_or_create(None, NOW + 4)
    assert len(store._sessions) == 3
    assert store.get(ids[1], NOW + 4) is None  # the least recently used went first
    for kept in (ids[0], ids[2], newest):
        assert store.get(kept, NOW + 4) is not None


def test_the_bound_holds_under_a_flood(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions_module, "MAX_SESSIONS", 100)
    store = Sessions()
    for _ in range(1_000):
        store.get_or_create(None, NOW)
    assert len(store._sessions) == 100


def test_the_real_limits() -> None:
    assert IDLE_SECONDS == 30 * 60
    assert 1_000 <= MAX_SESSIONS <= 1_000_000

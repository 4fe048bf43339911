"""The relay's check that its own source service answers through Tor.

A service can stop being reachable while everything local looks fine: tor lost its
introduction circuits, the descriptor expired unpublished, the clock drifted. The only
test that means anything is the one a source makes, so the relay makes it: it fetches its
own source page through its own tor's SOCKS port (on loopback, names resolved by tor) and
records what happened, for `amanah status`.

Rules:
- The decisions (what state the last result puts the check in, when to check next) are
  the plain `SelfCheck` record below, with no I/O; `SelfChecker` does the fetch.
- States: `pending` (no check yet), `reachable`, `not_yet` (never reachable, and
  published less than `grace` ago: a new descriptor takes a while to spread), `failing`
  (was reachable, or has not been within `grace`), `off` (nothing to check through).
- Nothing is fetched before an HSDir has accepted the service's descriptor (tor's HS_DESC
  UPLOADED event): tor asks each HSDir for a descriptor once per 15 minutes at most
  (REND_HID_SERV_DIR_REQUERY_PERIOD), so a fetch made before the upload would use up the
  HSDirs it may ask and keep the check failing for that long after the descriptor is up.
  Until then each check only looks, every `retry`.
- When reachable, the next check is `interval` later; after a failure, `retry` later,
  doubling each time up to `interval`, so a relay that cannot reach the network does not
  hammer its own tor, and a new service is seen as soon as it answers.
- What is recorded and logged: the state, times, and why a check failed in tor's terms.
  The relay's own address is the operator's to know; nothing about any visitor is here.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp
from aiohttp_socks import ProxyConnector

from .client import TRANSPORT_ERRORS, explain

log = logging.getLogger("amanah.onion")

INTERVAL = 600.0  # seconds between checks while the service answers
RETRY = 15.0  # first retry after a failure; doubles up to INTERVAL
GRACE = 600.0  # a new service has this long to become reachable before it is "failing"
TIMEOUT = 90.0  # one fetch: descriptor lookup, introduction, rendezvous, the page

STATES = ("pending", "reachable", "not_yet", "failing", "off")
NOT_UPLOADED = "no HSDir has accepted its descriptor yet"


@dataclass(frozen=True)
class SelfCheck:
    """What the checks found so far: a value, replaced after every check."""

    interval: float = INTERVAL
    retry: float = RETRY
    grace: float = GRACE
    state: str = "pending"
    detail: str = ""
    address: str | None = None
    checked_at: float | None = None
    last_reachable_at: float | None = None
    failures: int = 0  # in a row
    next_at: float = 0.0

    def succeeded(self, address: str, now: float) -> SelfCheck:
        return replace(
            self,
            state="reachable",
            detail="the source page answered through Tor",
            address=address,
            checked_at=now,
            last_reachable_at=now,
            failures=0,
            next_at=now + self.interval,
        )

    def failed(self, address: str, published_at: float, now: float, detail: str) -> SelfCheck:
        """After a failed fetch of `address` (published at `published_at`)."""
        moved = address != self.address
        reached = self.last_reachable_at is not None and not moved
        new = now - published_at < self.grace
        failures = 1 if moved else self.failures + 1
        return replace(
            self,
            state="failing" if reached or not new else "not_yet",
            detail=detail,
            address=address,
            checked_at=now,
            last_reachable_at=None if moved else self.last_reachable_at,
            failures=failures,
            next_at=now + min(self.retry * 2 ** (failures - 1), self.interval),
        )

    def off(self, address: str, detail: str, now: float) -> SelfCheck:
        """Nothing to check through (no SOCKS port on loopback); asks again later."""
        return replace(
            self,
            state="off",
            detail=detail,
            address=address,
            checked_at=now,
            next_at=now + self.interval,
        )

    @property
    def reachable(self) -> bool | None:
        """True or False once checked; None while pending or off."""
        if self.state in ("pending", "off"):
            return None
        return self.state == "reachable"

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reachable": self.reachable,
            "detail": self.detail,
            "address": self.address,
            "checked_at": _whole(self.checked_at),
            "last_reachable_at": _whole(self.last_reachable_at),
            "next_check_at": _whole(self.next_at) if self.next_at else None,
            "failures_in_a_row": self.failures,
        }


def _whole(value: float | None) -> int | None:
    return None if value is None else int(value)


# What the checker asks its owner before each check: the current source address, when it
# was published and whether an HSDir has accepted its descriptor (None: not published),
# the SOCKS listener, tor's bootstrap.
Target = Callable[[], tuple[str, float, bool] | None]
Socks = Callable[[], Awaitable[tuple[str, int] | None]]
Bootstrap = Callable[[], Awaitable[int | None]]


@dataclass
class SelfChecker:
    """Runs the checks. `target`, `socks` and `bootstrap` come from the keeper."""

    target: Target
    socks: Socks
    bootstrap: Bootstrap
    result: SelfCheck = field(default_factory=SelfCheck)
    timeout: float = TIMEOUT

    async def run(self, stop: asyncio.Event) -> None:
        """Checks whenever the record says it is time, until `stop` is set."""
        while not stop.is_set():
            delay = max(self.result.next_at - time.time(), 0.0)
            try:
                await asyncio.wait_for(stop.wait(), min(delay, 5.0) if delay else 0.5)
                return
            except TimeoutError:
                pass
            if time.time() >= self.result.next_at or self._moved():
                await self.check()

    def _moved(self) -> bool:
        """The source address changed (a key rotation): check the new one at once."""
        target = self.target()
        return target is not None and target[0] != self.result.address

    async def check(self) -> SelfCheck:
        """One check now; returns (and keeps) the new record. Never raises for tor's
        answers: they are the result."""
        before = self.result
        target = self.target()
        now = time.time()
        if target is None:
            self.result = replace(before, next_at=now + self.result.retry)
            return self.result  # nothing published yet: ask again soon
        address, published_at, uploaded = target
        # A tor that has not bootstrapped has no SOCKS listener either when its network is
        # disabled: the bootstrap is the reason an operator can act on, so it comes first.
        percent = await self.bootstrap()
        if percent is not None and percent < 100:
            failure = f"tor has not reached the Tor network (bootstrap {percent}%)"
            result = before.failed(address, published_at, time.time(), failure)
        elif not uploaded:  # nothing asked of tor, so no backing off: look again soon
            waiting = before.failed(address, published_at, now, NOT_UPLOADED)
            result = replace(waiting, failures=0, next_at=now + before.retry)
        elif (socks := await self.socks()) is None:
            result = before.off(address, "tor has no SOCKS port on loopback to check through", now)
        else:
            reason = await self._fetch(address, socks)
            now = time.time()
            result = (
                before.succeeded(address, now)
                if reason is None
                else before.failed(address, published_at, now, reason)
            )
        self.result = result
        self._log_change(before, result)
        return result

    async def _fetch(self, address: str, socks: tuple[str, int]) -> str | None:
        """None if the source page answered 200 through tor, else why not, in tor's terms.
        Each check uses new SOCKS credentials, so tor gives it new circuits
        (IsolateSOCKSAuth): an old rendezvous circuit would hide lost introduction points.
        tor's cached descriptor may still serve; it expires within hours."""
        host, port = socks
        isolation = secrets.token_hex(8)
        connector = ProxyConnector.from_url(
            f"socks5://check-{isolation}:{isolation}@{host}:{port}", rdns=True
        )
        try:
            async with aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as session:
                async with session.get(f"http://{address}/", allow_redirects=False) as response:
                    if response.status == 200:
                        return None
                    return f"the source page answered HTTP {response.status}"
        except TimeoutError:
            return f"no answer through Tor within {self.timeout:.0f} s"
        except TRANSPORT_ERRORS as exc:
            explained = explain(exc)
            if explained is not None:
                return str(explained)
            return f"the request through Tor failed ({type(exc).__name__})"

    def _log_change(self, before: SelfCheck, after: SelfCheck) -> None:
        if after.state == before.state and after.address == before.address:
            return
        if after.state == "reachable":
            log.info("self-check: the source service answers through Tor")
        elif after.state == "not_yet":
            log.info(
                "self-check: the source service does not answer through Tor yet: %s", after.detail
            )
        elif after.state == "failing":
            log.warning(
                "self-check: the source service does NOT answer through Tor: %s", after.detail
            )
        elif after.state == "off":
            log.warning("self-check: off: %s", after.detail)

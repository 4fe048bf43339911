"""Keeps the relay's two onion services published as the data directory says they should
be, for as long as the relay runs.

Every `sync_seconds` (and once at start) the keeper compares what tor has with what it
should have, and acts on the difference:
- the source service, under the current `source-onion.key`, with proof-of-work;
- the journalist service, under `journalist-onion.key`, with exactly the client-auth keys
  the relay's store lists (a removed or rotated member's key goes at the next tick);
  with no key at all it is not published: without client authorisation anyone holding
  the address could reach the journalist API's front door;
- during a key rotation, the retiring key's service beside the new one until its
  `withdraw-after` time, then withdrawn and its key file deleted.
It writes what it knows (addresses, PoW, descriptor uploads seen in HS_DESC events, tor's
bootstrap progress, the self-check's last result) to a status file that `amanah status`
reads, and logs each change. A warning (proof-of-work refused by an old tor, say) is
logged once per run, not at every re-publication.

While it runs, a `SelfChecker` (onion.selfcheck) fetches the current source address
through tor's own SOCKS port, on its own schedule, beside the sync loop.

The relay-specific parts (which client-auth keys are current; signing new addresses into
the contact directory) are passed in as coroutines, so this module knows nothing of the
relay's store. Logged: the relay's own onion addresses (the operator needs them), counts
of keys; never a key, and nothing about visitors.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import keys as service_keys
from .address import ServiceKey
from .errors import OnionError
from .selfcheck import INTERVAL, SelfCheck, SelfChecker
from .services import Attach, OnionServices
from .tor import LaunchSettings

log = logging.getLogger("amanah.onion")

STATUS_FILE = "status.json"
# Streams open at once on one rendezvous circuit (ADD_ONION MaxStreams). A browser opens
# at most 6 connections to one host (Firefox's default, so Tor Browser's); amanah-inbox
# and amanah-drop one at a time. 32 leaves room for both, and stops one circuit from
# holding hundreds of streams to the relay. On the source service a client that asks for
# more loses its circuit (MaxStreamsCloseCircuit): rebuilding it costs a new
# introduction, which proof-of-work prices. The journalist service, behind client
# authorisation, only refuses the extra stream.
MAX_STREAMS = 32


@dataclass(frozen=True)
class KeeperSettings:
    keys_dir: Path
    status_path: Path
    source_target: tuple[str, int]
    journalist_target: tuple[str, int]
    proof_of_work: bool = True
    sync_seconds: float = 2.0
    max_streams: int = MAX_STREAMS
    self_check: bool = True
    self_check_seconds: float = INTERVAL


ClientAuthSource = Callable[[], Awaitable[Sequence[str]]]
AddressesChanged = Callable[[dict[str, str]], Awaitable[None]]


class ServiceKeeper:
    def __init__(
        self,
        services: OnionServices,
        settings: KeeperSettings,
        client_auth: ClientAuthSource,
        addresses_changed: AddressesChanged,
    ) -> None:
        self.services = services
        self.settings = settings
        self._client_auth = client_auth
        self._addresses_changed = addresses_changed
        self._signed: dict[str, str] = {}
        self._warned_offline = False
        self._seen_uploads: set[str] = set()
        self._bootstrap: int | None = None
        self._warned: set[str] = set()
        self._roles: dict[str, str] = {}  # "source", "source_retiring", ...: address
        self.self_checker = SelfChecker(
            self._self_check_target,
            services.socks_listener,
            services.bootstrap_percent,
            SelfCheck(
                interval=settings.self_check_seconds,
                retry=min(15.0, settings.self_check_seconds),
            ),
        )

    @classmethod
    async def start(
        cls,
        how: LaunchSettings | Attach,
        settings: KeeperSettings,
        client_auth: ClientAuthSource,
        addresses_changed: AddressesChanged,
    ) -> ServiceKeeper:
        """Starts (or attaches to) tor and publishes the services once. Raises OnionError
        (the tor we launched is stopped again)."""
        services = await OnionServices.start(how)
        keeper = cls(services, settings, client_auth, addresses_changed)
        try:
            await keeper.sync()
        except BaseException:
            await services.close()
            raise
        return keeper

    async def run(self, stop: asyncio.Event) -> None:
        """Syncs every `sync_seconds` until `stop` is set, with the self-check beside it.
        A failed sync is logged and retried at the next tick; a tor that died ends the
        loop with OnionError."""
        checking = (
            asyncio.create_task(self.self_checker.run(stop)) if self.settings.self_check else None
        )
        try:
            await self._sync_until(stop)
        finally:
            if checking is not None:
                checking.cancel()
                await asyncio.gather(checking, return_exceptions=True)

    async def _sync_until(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), self.settings.sync_seconds)
                return
            except TimeoutError:
                pass
            process = self.services.process
            if process is not None and not process.running():
                raise OnionError(
                    "our tor exited unexpectedly; the onion services are gone",
                    f"its log is {process.log_path}",
                )
            try:
                await self.sync()
            except OnionError as exc:
                log.warning("onion services: %s", exc)

    async def sync(self) -> None:
        """One comparison of what is published with what should be, and the fixes."""
        keys_dir = self.settings.keys_dir
        now = int(time.time())
        source = service_keys.ensure(keys_dir, "source")
        journalist = service_keys.ensure(keys_dir, "journalist")
        client_auth = sorted(set(await self._client_auth()))
        published = self.services.published()

        wanted: dict[str, tuple[str, ServiceKey]] = {
            source.address: ("source", source),
        }
        if client_auth:
            wanted[journalist.address] = ("journalist", journalist)
        for name in service_keys.SERVICES:
            retiring = service_keys.load_retiring(keys_dir, name)
            if retiring is None:
                continue
            if retiring.withdraw_after <= now:
                service_keys.forget_retiring(keys_dir, name)
                log.info("the %s service's previous address is withdrawn (rotation done)", name)
            elif name == "source" or client_auth:
                wanted[retiring.key.address] = (f"{name}_retiring", retiring.key)

        was = {address: role for role, address in self._roles.items()}
        self._roles = {name: address for address, (name, _) in wanted.items()}
        for address in published.keys() - wanted.keys():
            await self.services.withdraw(address)
            log.info("withdrew %s (%s)", address, was.get(address, published[address].name))
        for address, (name, key) in wanted.items():
            is_journalist = name.startswith("journalist")
            auth = tuple(client_auth) if is_journalist else ()
            current = published.get(address)
            if current is not None and tuple(current.client_auth) == auth:
                continue
            done = await self.services.publish(
                name,
                key,
                self.settings.journalist_target if is_journalist else self.settings.source_target,
                client_auth=auth,
                proof_of_work=self.settings.proof_of_work and not is_journalist,
                max_streams=self.settings.max_streams,
                close_circuit_over_max=not is_journalist,
            )
            for warning in done.warnings:
                self._warn_once(done.pow_note or warning, warning)
            if is_journalist:
                log.info(
                    "%s service %s: %s with %d member key(s)",
                    name,
                    "re-published" if current else "published",
                    address,
                    len(auth),
                )
            else:
                why = done.pow_note or "turned off in the configuration"
                pow_state = "on" if done.proof_of_work else f"OFF: {why}"
                log.info("%s service published: %s (proof-of-work %s)", name, address, pow_state)
        if not client_auth and not self._signed:
            log.warning(
                "no member has a client-auth key: the journalist service is not published "
                "until `amanah contact add` gives one"
            )

        addresses = {"source": source.address, "journalist": journalist.address}
        if addresses != self._signed:
            await self._addresses_changed(addresses)
            self._signed = addresses
        await self._report()

    async def _report(self) -> None:
        self._bootstrap = await self.services.bootstrap_percent()
        if self._bootstrap is not None and self._bootstrap < 100 and not self._warned_offline:
            self._warned_offline = True
            log.warning(
                "tor has not reached the Tor network yet (bootstrap %d%%): the services are "
                "registered, and their descriptors stay pending until it does",
                self._bootstrap,
            )
        snapshot = self.services.snapshot(self._roles)
        for name, service in snapshot["services"].items():
            if service["descriptor_published"] and service["address"] not in self._seen_uploads:
                self._seen_uploads.add(service["address"])
                log.info("the %s service's descriptor is on the Tor network", name)
        snapshot["tor"]["bootstrap_percent"] = self._bootstrap
        snapshot["self_check"] = (
            self.self_checker.result.to_json() if self.settings.self_check else None
        )
        snapshot["relay_pid"] = os.getpid()
        snapshot["updated_at"] = int(time.time())
        await asyncio.to_thread(_write_json, self.settings.status_path, snapshot)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)

    def _self_check_target(self) -> tuple[str, float, bool] | None:
        """The current source address, when it was published and whether an HSDir has
        accepted its descriptor, if it is published."""
        address = self._roles.get("source")
        published_at = None if address is None else self.services.published_at(address)
        if address is None or published_at is None:
            return None
        return address, published_at, self.services.descriptor(address).uploads > 0

    async def close(self) -> None:
        """Withdraws the services and stops a tor we launched; marks the status stopped."""
        await self.services.close()
        await asyncio.to_thread(
            _write_json, self.settings.status_path, {"stopped_at": int(time.time())}
        )


def _write_json(path: Path, value: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(temporary, path)


def read_status(path: Path, stale_after: float) -> dict[str, Any] | None:
    """The last status a running relay wrote, or None if there is none, it is damaged, it
    says the relay stopped, or it is older than `stale_after` seconds."""
    try:
        status = json.loads(path.read_text(encoding="utf-8"))
        if time.time() - float(status["updated_at"]) > stale_after:
            return None
    except (OSError, ValueError, TypeError, KeyError):  # none, damaged, or a stopped relay's
        return None
    return status

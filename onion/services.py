"""Onion services for an asyncio program: the relay's door to `onion.tor`.

Every call to tor runs in a thread (`asyncio.to_thread`), one at a time (an asyncio
lock), so the event loop never waits on the control socket. `OnionServices.start()`
either launches a tor of our own or attaches to a running one; `close()` withdraws the
services (closing the control connection does that: they are not detached) and stops a
tor we launched, SIGKILLing it if it hangs.

Publishing the same key again (to change its client-auth keys) is DEL_ONION then
ADD_ONION: tor has no command to change an ephemeral service's keys in place. The service
is unreachable for the moment between the two, and its descriptor is uploaded anew. When
a key was taken away, and whenever a service is withdrawn, its rendezvous circuits are
closed too: tor leaves them open after DEL_ONION, and they would go on carrying a
removed member's (or a retired address's) connections.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from .address import ServiceKey
from .errors import ControlError
from .tor import DescriptorState, LaunchSettings, Published, TorControl, TorProcess, launch

_PROGRESS = re.compile(r"PROGRESS=(\d+)")


@dataclass(frozen=True)
class Attach:
    """A running tor to attach to: its loopback control port, and a password if it does
    not use cookie authentication."""

    host: str
    port: int
    password: str | None = None


class OnionServices:
    """A control connection (and perhaps the tor it controls), with the services it has
    published. Make one with `await OnionServices.start(...)`."""

    def __init__(self, control: TorControl, process: TorProcess | None) -> None:
        self.control = control
        self.process = process
        self._published: dict[str, Published] = {}  # by address
        self._published_at: dict[str, float] = {}
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, how: LaunchSettings | Attach) -> OnionServices:
        """Launches tor (LaunchSettings) or attaches to it (Attach), then authenticates.
        Raises TorNotInstalled, TorStartFailed, ControlUnreachable, ControlAuthFailed."""
        if isinstance(how, Attach):
            control = await asyncio.to_thread(TorControl.connect, how.host, how.port, how.password)
            return cls(control, None)
        process = await asyncio.to_thread(launch, how)
        try:
            control = await asyncio.to_thread(TorControl.connect, "127.0.0.1", process.control_port)
        except BaseException:
            await asyncio.to_thread(process.stop)
            raise
        return cls(control, process)

    async def publish(
        self,
        name: str,
        key: ServiceKey,
        target: tuple[str, int],
        *,
        client_auth: Sequence[str] = (),
        proof_of_work: bool = False,
        max_streams: int | None = None,
        close_circuit_over_max: bool = False,
        virtual_port: int = 80,
    ) -> Published:
        """Publishes (or re-publishes, replacing the previous one) `key`'s service,
        forwarding `virtual_port` to `target` on loopback (the other arguments are
        `TorControl.add_service`'s). Raises ServiceError."""
        async with self._lock:
            previous = self._published.get(key.address)
            if previous is not None:
                await asyncio.to_thread(self.control.remove_service, key.address)
                del self._published[key.address]
                if set(previous.client_auth) - set(client_auth):
                    await asyncio.to_thread(self.control.close_rendezvous_circuits, key.address)
            published = await asyncio.to_thread(
                self.control.add_service,
                name,
                key,
                {virtual_port: target},
                client_auth=tuple(client_auth),
                proof_of_work=proof_of_work,
                max_streams=max_streams,
                close_circuit_over_max=close_circuit_over_max,
            )
            self._published[key.address] = published
            self._published_at[key.address] = time.time()
            return published

    async def withdraw(self, address: str) -> None:
        """Withdraws one of our services (DEL_ONION), and closes the rendezvous circuits
        tor would otherwise leave open to it. Raises ServiceError, ControlError."""
        async with self._lock:
            await asyncio.to_thread(self.control.remove_service, address)
            await asyncio.to_thread(self.control.close_rendezvous_circuits, address)
            self._published.pop(address, None)
            self._published_at.pop(address, None)

    def published(self) -> dict[str, Published]:
        return dict(self._published)

    def descriptor(self, address: str) -> DescriptorState:
        """What HS_DESC events said about this service's descriptor so far."""
        state = self.control.descriptors.get(address.removesuffix(".onion"))
        return DescriptorState() if state is None else DescriptorState(**vars(state))

    async def bootstrap_percent(self) -> int | None:
        """tor's bootstrap progress (100: it can reach the Tor network), or None."""
        try:
            async with self._lock:
                phase = await asyncio.to_thread(self.control.get_info, "status/bootstrap-phase")
        except ControlError:
            return None
        found = _PROGRESS.search(phase)
        return int(found.group(1)) if found else None

    async def socks_listener(self) -> tuple[str, int] | None:
        async with self._lock:
            return await asyncio.to_thread(self.control.socks_listener)

    def published_at(self, address: str) -> float | None:
        """When this connection (last) published `address`, or None if it has not."""
        return self._published_at.get(address)

    def describe(self, address: str) -> dict[str, Any]:
        """One published service as `amanah status` shows it (no secret in it)."""
        published = self._published[address]
        state = self.descriptor(address)
        return {
            "address": address,
            "proof_of_work": published.proof_of_work,
            "proof_of_work_note": published.pow_note,
            "client_auth_keys": len(published.client_auth),
            "published_at": int(self._published_at[address]),
            "descriptor_uploads": state.uploads,
            "descriptor_failures": state.failures,
            "descriptor_published": state.uploads > 0,
        }

    def snapshot(self, roles: dict[str, str]) -> dict[str, Any]:
        """The services by role (`roles`: role name to address, e.g. "source" and
        "source_retiring"), those published, as `amanah status` shows them."""
        services = {
            role: self.describe(address)
            for role, address in roles.items()
            if address in self._published
        }
        return {
            "tor": {
                "launched": self.process is not None,
                "pid": None if self.process is None else self.process.pid,
            },
            "services": services,
        }

    async def close(self) -> None:
        """Closes the control connection (tor withdraws our services) and stops the tor
        we launched, if any: SIGTERM, then SIGKILL if it hangs."""
        async with self._lock:
            await asyncio.to_thread(self.control.close)
            self._published.clear()
            if self.process is not None:
                await asyncio.to_thread(self.process.stop)

    async def __aenter__(self) -> OnionServices:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

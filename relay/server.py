"""`amanah serve`: both web apps on loopback, until SIGINT or SIGTERM.

Start-up order, and why: staging is wiped first (files sealed to a key that died with the
last process), then unrecorded drop folders are removed (a crash between writing blobs
and recording the drop), then the apps start. Logging is configured here: the aiohttp
access log is off, because a request line is metadata about a source.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import time
from pathlib import Path

from aiohttp import web

from crypto.directory import verify_directory
from onion.keeper import STATUS_FILE, KeeperSettings, ServiceKeeper
from onion.services import Attach
from onion.tor import LaunchSettings, parse_host_port

from . import blobs, contacts, ingest
from .auth import Authenticator
from .config import Config
from .datadir import RelayKeys
from .errors import ConfigError
from .sanitize import Stripping
from .staging import StagingArea
from .store import Store
from .web import journalist, source
from .web.common import RelayContext, templates
from .web.sessions import Sessions

log = logging.getLogger("amanah")


def configure_logging() -> None:
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="amanah: %(levelname)s: %(message)s"
    )
    # Never a request line, an address or a user agent in a log.
    logging.getLogger("aiohttp.access").disabled = True


async def sweep_unrecorded(context: RelayContext) -> int:
    """Removes drop folders with no drop row (a crash after writing, before recording),
    and temporary files a crash left anywhere under the blob root."""
    root = context.config.blobs
    await asyncio.to_thread(blobs.BlobStore(root).sweep_temporaries)
    drops = root / "drops"
    if not drops.exists():
        return 0
    recorded = {drop_id for drop_id, _ in await context.store.all_blob_names()}
    unrecorded = [f.name for f in drops.iterdir() if f.is_dir() and f.name not in recorded]
    for name in unrecorded:
        await asyncio.to_thread(blobs.delete_tree, root, ingest.drop_path(name))
    return len(unrecorded)


async def start(
    config: Config, keys: RelayKeys, store: Store
) -> tuple[RelayContext, list[web.AppRunner]]:
    staging = StagingArea(config.staging, config.blobs)
    context = RelayContext(
        config=config,
        keys=keys,
        store=store,
        staging=staging,
        sanitizer=Stripping(forward_unsupported=config.sanitize.forward_unsupported),
        sessions=Sessions(),
        auth=Authenticator(
            keys.directory_key.verify_key, config.auth.challenge_seconds, config.auth.token_seconds
        ),
        templates=templates(),
    )
    wiped = await asyncio.to_thread(staging.wipe)
    swept = await sweep_unrecorded(context)
    if wiped or swept:
        log.info("removed %d abandoned upload(s) and %d unrecorded drop folder(s)", wiped, swept)
    if (version := await contacts.publish_codename_salt(store, keys, int(time.time()))) is not None:
        log.info("signed the codename salt into the contact directory (version %d)", version)
    runners = []
    for app, port in (
        (source.make_app(context), config.server.source_port),
        (journalist.make_app(context), config.server.journalist_port),
    ):
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, config.server.host, port).start()
        runners.append(runner)
    return context, runners


async def serve(config: Config, keys: RelayKeys, *, tor: bool = True) -> None:
    """Serves until SIGINT or SIGTERM. With `tor`, starts (or attaches to) tor and keeps
    both onion services published (`onion.keeper`); without, loopback only. Raises
    RelayError, and OnionError when tor cannot be started or refuses."""
    configure_logging()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with await Store.open(config.database) as store:
        # Tor first: a missing or refusing tor fails the start before anything listens.
        keeper = await start_onion(config, keys, store) if tor else None
        runners: list[web.AppRunner] = []
        try:
            _, runners = await start(config, keys, store)
            log.info(
                "serving sources on %s:%d and the journalist API on %s:%d (%s)",
                config.server.host,
                config.server.source_port,
                config.server.host,
                config.server.journalist_port,
                "reached through the onion services" if tor else "loopback only",
            )
            if keeper is not None:
                await keeper.run(stop)
            else:
                await stop.wait()
        finally:
            if keeper is not None:
                await keeper.close()
            for runner in runners:
                await runner.cleanup()
    log.info("stopped")


def tor_how(config: Config) -> LaunchSettings | Attach:
    """Launch our own tor, or attach to the one named in config. Raises ConfigError."""
    settings = config.tor
    if not settings.control:
        return LaunchSettings(
            data_dir=config.tor_data,
            binary=settings.binary,
            disable_network=settings.disable_network,
            include=Path(settings.include) if settings.include else None,
        )
    host, port = parse_host_port(settings.control, "tor.control")  # checked at load
    password = None
    if settings.control_password_file:
        try:
            password = Path(settings.control_password_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("cannot read tor.control_password_file") from exc
    return Attach(host, port, password)


async def start_onion(config: Config, keys: RelayKeys, store: Store) -> ServiceKeeper:
    """Starts tor (or attaches), publishes both services, and signs their addresses into
    the contact directory when they differ from the latest one's. Raises ConfigError, and
    OnionError (tor missing, refusing, or failing) for the CLI to explain."""

    async def client_auth() -> list[str]:
        return [public for _, _, public in await store.onion_auth_keys()]

    async def addresses_changed(addresses: dict[str, str]) -> None:
        latest = await store.latest_directory()
        if latest is not None:
            directory, _ = verify_directory(latest[1], None)
            if dict(directory.services) == addresses:
                return
        version = await contacts.publish_directory(
            store, keys.directory_key, int(time.time()), addresses, keys.codename_salt
        )
        log.info("signed the onion addresses into the contact directory (version %d)", version)

    server = config.server
    settings = KeeperSettings(
        keys_dir=config.keys,
        status_path=config.tor_data / STATUS_FILE,
        source_target=(server.host, server.source_port),
        journalist_target=(server.host, server.journalist_port),
        proof_of_work=config.tor.proof_of_work,
        sync_seconds=config.tor.sync_seconds,
        self_check=config.tor.self_check,
        self_check_seconds=config.tor.self_check_seconds,
    )
    config.tor_data.mkdir(mode=0o700, exist_ok=True)
    return await ServiceKeeper.start(tor_how(config), settings, client_auth, addresses_changed)

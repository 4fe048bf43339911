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

from aiohttp import web

from . import blobs
from .auth import Authenticator
from .config import Config
from .datadir import RelayKeys
from .sanitize import Unstripped
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
        await asyncio.to_thread(blobs.delete_tree, root, f"drops/{name}")
    return len(unrecorded)


async def start(
    config: Config, keys: RelayKeys, store: Store
) -> tuple[RelayContext, list[web.AppRunner]]:
    staging = StagingArea(config.staging)
    context = RelayContext(
        config=config,
        keys=keys,
        store=store,
        staging=staging,
        sanitizer=Unstripped(),
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


async def serve(config: Config, keys: RelayKeys) -> None:
    configure_logging()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with await Store.open(config.database) as store:
        _, runners = await start(config, keys, store)
        log.info(
            "serving sources on %s:%d and the journalist API on %s:%d (loopback only)",
            config.server.host,
            config.server.source_port,
            config.server.host,
            config.server.journalist_port,
        )
        try:
            await stop.wait()
        finally:
            for runner in runners:
                await runner.cleanup()
    log.info("stopped")

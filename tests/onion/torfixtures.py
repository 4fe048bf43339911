"""Real tor daemons for the onion tests: started in a test's temporary directory with
networking disabled (nothing leaves the machine), stopped and reaped at teardown."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from onion.tor import LaunchSettings, TorControl, TorProcess, launch

TOR = "/usr/sbin/tor"


@contextmanager
def offline_tor(
    data_dir: Path, disable_network: bool = True, **settings: object
) -> Iterator[tuple[TorProcess, TorControl]]:
    """A launched tor (DisableNetwork 1 unless told otherwise: then `settings` must keep it
    off any real network) and an authenticated control connection."""
    process = launch(
        LaunchSettings(data_dir, binary=TOR, disable_network=disable_network, **settings)  # type: ignore[arg-type]
    )
    try:
        control = TorControl.connect("127.0.0.1", process.control_port)
        try:
            yield process, control
        finally:
            control.close()
    finally:
        process.stop()


def hash_password(password: str) -> str:
    done = subprocess.run(
        [TOR, "--quiet", "--hash-password", password],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]

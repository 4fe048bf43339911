"""`amanah-drop`: the source's command-line client (strip, seal, send). Not built yet:
it arrives with the resumable-upload work. Until then it says so plainly."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "amanah-drop: error: not available yet in this version\n"
        "amanah-drop: hint: send through the relay's web page in Tor Browser",
        file=sys.stderr,
    )
    return 1

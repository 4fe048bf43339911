"""The `amanah-drop` command: `strip` goes to clients/strip.py before the network code of
clients/drop.py (aiohttp, Tor) is imported; everything else to clients/drop.py."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["strip"]:
        from clients import strip  # noqa: PLC0415 - the point: nothing else is imported

        return strip.main(args[1:])
    from clients import drop  # noqa: PLC0415

    return drop.main(args)

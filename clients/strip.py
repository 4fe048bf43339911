"""`amanah-drop strip`: the relay's sanitizer on the source's own device, and nothing else.

It imports no network code (aiohttp, Tor): a source who only cleans files starts no more
than the sanitizer needs (measured: the network stack was 0.3 s of a 0.6 s run on a
24-megapixel JPEG). `clients/amanah_drop.py` sends `strip` here before anything else is
imported; `amanah-drop --help` still lists it (clients/drop.py builds its parser with
`add_arguments`).

Rules: output names are generated (`photo-1.jpg`), never the input's; a result appears
under its name whole or not at all (written as `.partial-N`, then renamed); an existing
file is never replaced; a refused file is named by its position, and the others go on.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from relay.sanitize import SNIFF_BYTES, Refused, Stripping, detect

PROG = "amanah-drop"
EXAMPLE = """example:
  amanah-drop strip IMG_2024.jpg voice.m4a -o cleaned/
      (writes cleaned/photo-1.jpg and cleaned/audio-2.m4a)"""


class StripError(Exception):
    """A file that could not be read or written; the message names it by position."""


def strip_one(stripping: Stripping, position: int, source: Path, folder: Path) -> str:
    """Cleans one file into `folder`; returns the generated name. Raises Refused, OSError,
    StripError."""
    with source.open("rb") as src:
        detected = detect(src.read(SNIFF_BYTES))
        partial = folder / f".partial-{position}"
        with partial.open("xb") as dst:
            try:
                report = stripping.clean(detected, src, dst)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
    name = detected.name(position, report.mime)
    if (folder / name).exists():
        partial.unlink(missing_ok=True)
        raise StripError(f"file {position}: {name} exists already in the output folder")
    os.replace(partial, folder / name)
    return name


def run(args: argparse.Namespace) -> int:
    """Exit code: 0 when every file was cleaned, 1 when any was refused or failed."""
    folder = Path(args.output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"{PROG}: error: the output folder cannot be made ({exc.strerror})", file=sys.stderr)
        return 1
    stripping = Stripping(hash_originals=False)  # nothing here shows the original's hash
    failed = 0
    for position, source in enumerate(args.files, start=1):
        try:
            name = strip_one(stripping, position, Path(source), folder)
        except Refused as refusal:
            failed += 1
            print(f"{PROG}: file {position}: {refusal}", file=sys.stderr)
            continue
        except StripError as exc:
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(
                f"{PROG}: error: file {position} could not be read or written ({exc.strerror})",
                file=sys.stderr,
            )
            return 1
        print(f"file {position}: cleaned -> {name}")
    return 1 if failed else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write to")


def main(argv: list[str]) -> int:
    """`amanah-drop strip ARGS` (argv without "strip")."""
    parser = argparse.ArgumentParser(
        prog=f"{PROG} strip",
        description="Remove hidden data (location, camera, time) from photos, audio and "
        "video, on this device. Nothing is sent anywhere.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug is reported, never a traceback (as run_command does)
        print(f"{PROG}: error: unexpected {type(exc).__name__}", file=sys.stderr)
        return 2

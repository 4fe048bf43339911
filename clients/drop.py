"""`amanah-drop`: the source's command-line client (strip, seal, send).

`strip` is built: the relay's own sanitizer (relay.sanitize, the one part of the relay a
client may import), run here, on the source's device, in the same sandboxed worker.
`send` and `seal` arrive with the resumable-upload client work; until then they say so.

Rules:
- output names are generated (`photo-1.jpg`), never the input's, and nothing is written
  for a file that was refused;
- messages name files by their position on the command line, never by their name (a
  terminal's scrollback is a record too);
- an existing output file is never overwritten.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from relay.sanitize import SNIFF_BYTES, Refused, Stripping, detect, extension_for

EXAMPLE = """example:
  amanah-drop strip IMG_2024.jpg voice.m4a -o cleaned/
  (writes cleaned/photo-1.jpg and cleaned/audio-2.m4a)"""


class DropError(Exception):
    """A mistake the person running the command can fix; the message says how."""


def _strip_one(stripping: Stripping, position: int, source: Path, folder: Path) -> str:
    """Cleans one file into `folder`; returns the generated name. Raises Refused, OSError."""
    with source.open("rb") as src:
        detected = detect(src.read(SNIFF_BYTES))
        partial = folder / f".partial-{position}"
        with partial.open("xb") as dst:
            try:
                report = stripping.clean(detected, src, dst)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
    extension = extension_for(report.mime) if report.mime else detected.extension
    name = f"{detected.kind}-{position}.{extension}"
    if (folder / name).exists():
        partial.unlink(missing_ok=True)
        raise DropError(f"file {position}: {name} exists already in the output folder")
    os.replace(partial, folder / name)
    return name


def cmd_strip(args: argparse.Namespace) -> int:
    folder = Path(args.output)
    folder.mkdir(parents=True, exist_ok=True)
    stripping = Stripping()
    refused = 0
    for position, source in enumerate(args.files, start=1):
        try:
            name = _strip_one(stripping, position, Path(source), folder)
        except Refused as refusal:
            refused += 1
            print(f"amanah-drop: file {position}: {refusal}", file=sys.stderr)
            continue
        except OSError as exc:
            raise DropError(
                f"file {position} could not be read or written ({exc.strerror})"
            ) from None
        print(f"file {position}: cleaned -> {name}")
    return 1 if refused else 0


def cmd_not_yet(args: argparse.Namespace) -> int:
    raise DropError(f"`{args.command}` is not available yet in this version")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="amanah-drop",
        description="Strip identifying metadata from photos, audio and video on this device.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True)
    strip = sub.add_parser(
        "strip",
        help="remove hidden data (location, camera, time) from files",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    strip.add_argument("files", nargs="+", metavar="FILE")
    strip.add_argument("-o", "--output", required=True, metavar="DIR", help="folder to write to")
    strip.set_defaults(run=cmd_strip)
    for name in ("send", "seal"):
        later = sub.add_parser(name, help="not available yet")
        later.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
        later.set_defaults(run=cmd_not_yet)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except DropError as exc:
        print(f"amanah-drop: error: {exc}", file=sys.stderr)
        if args.command in ("send", "seal"):
            hint = "send through the relay's web page in Tor Browser"
            print(f"amanah-drop: hint: {hint}", file=sys.stderr)
        return 1

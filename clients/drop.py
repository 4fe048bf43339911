"""`amanah-drop`: the source's command-line client (strip, seal, send).

    amanah-drop strip FILE... -o DIR
    amanah-drop seal --relay URL [--to CONTACT]... [-m TEXT | --message-file F] FILE... -o drop.age
    amanah-drop send --relay URL [--to CONTACT]... [-m TEXT | --message-file F] FILE...
    amanah-drop send --sealed drop.age --relay URL
    amanah-drop send --resume [--relay URL]

`strip` runs the relay's own sanitizer (relay.sanitize, the one part of the relay a client
may import) on the source's device, in the same sandboxed worker. `seal` and `send` also
seal the drop here (clients/sealing.py), to the member keys of the addressed contacts as
the relay's signed directory lists them (pinned on first use, then followed along its
signed rotation chain; a fork is refused), under a codename made here: the relay receives
ciphertext it cannot open, a login id and a reply key derived from the codename, and
never the codename. `send` uploads with tus (clients/upload.py) and carries on across
broken connections and across runs (clients/outbox.py keeps the state, no plaintext).

Rules:
- output names are generated (`photo-1.jpg`, `item-1.jpg`), never the input's, and
  nothing is written for a file that was refused;
- messages name files by their position on the command line, never by their name (a
  terminal's scrollback is a record too);
- an existing output file is never overwritten;
- the codename is printed once, on standard output, and never written anywhere; an
  existing one is read with getpass (`--codename-prompt`), never from the command line,
  which other users of the computer can see;
- a relay is reached only through Tor (a `.onion` URL), or on loopback for testing.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from crypto.codename import derive_codename_keys, generate_codename, normalize_codename
from crypto.directory import Directory
from crypto.errors import CodenameError
from crypto.keys import Recipient
from onion import client as tor_client
from relay.sanitize import Stripping

from . import outbox, sealing
from . import strip as stripping
from .common import (
    UserError,
    end_progress,
    fetch_directory,
    is_loopback_url,
    run_command,
    unreachable,
)
from .upload import Gone, Unknown, Uploader, encode_metadata, remembered_upload
from .upload import Refused as UploadRefused

PROG = "amanah-drop"
EXAMPLE = """examples:
  amanah-drop strip IMG_2024.jpg voice.m4a -o cleaned/
      (writes cleaned/photo-1.jpg and cleaned/audio-2.m4a)
  amanah-drop send --relay http://ADDRESS.onion --to the-daily -m 'the crossing' video.mp4
      (strips, seals on this device, uploads; prints your codename once)
  amanah-drop seal --relay http://ADDRESS.onion video.mp4 -o drop.age
  amanah-drop send --sealed drop.age --relay http://ADDRESS.onion
  amanah-drop send --resume          (carries on an upload that was cut)"""
STALE_HINT = "run the same command again: it fetches the directory anew and seals again"
# The relay reads at most 4 KiB of Upload-Metadata (relay/web/tus.py): about 80 member
# keys, fewer when many contacts are named.
MAX_METADATA = 4096


class DropError(UserError):
    """A mistake the person running the command can fix; the message says how."""


def note(text: str) -> None:
    print(f"{PROG}: {text}", file=sys.stderr)


# --- reaching the relay -------------------------------------------------------------------


def _session(relay: str, tor_socks: str) -> aiohttp.ClientSession:
    """Through tor's SOCKS port for a .onion relay; directly on loopback; else refused."""
    if tor_client.is_onion_url(relay):
        connector: aiohttp.BaseConnector | None = tor_client.socks_connector(tor_socks)
    elif is_loopback_url(relay):
        connector = None
    else:
        raise DropError(
            "the relay must be a .onion address: reaching it any other way would show "
            "your internet address to its host",
            "give the relay's http://….onion URL (with tor or Tor Browser running)",
        )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=120, sock_read=300),
    )


@dataclass(frozen=True)
class Addressed:
    contacts: tuple[str, ...]
    recipients: tuple[Recipient, ...]
    salt: bytes
    version: int


def address(directory: Directory, wanted: list[str]) -> Addressed:
    """The contacts named (none: every contact) and all their member keys. Raises
    DropError for an unknown name, an empty directory, or a relay without a salt."""
    if directory.codename_salt is None:
        raise DropError(
            "this relay does not publish its codename salt, so drops cannot be sealed on "
            "this device for it",
            "its operator needs a newer Amanah; until then, use the relay's web page",
        )
    if not directory.contacts:
        raise DropError("this relay has no contacts yet; nothing can be sent")
    names = list(dict.fromkeys(wanted)) or [c.name for c in directory.contacts]
    chosen = []
    for name in names:
        contact = directory.contact(name)
        if contact is None:
            known = ", ".join(c.name for c in directory.contacts)
            raise DropError(f"this relay has no contact {name!r}", f"its contacts: {known}")
        chosen.append(contact)
    recipients = tuple(card.recipient for c in chosen for card in c.members)
    fingerprints = tuple(r.fingerprint for r in recipients)
    probe = outbox.Route(tuple(names), fingerprints, 0, "0" * 64, "age1" + "q" * 58, "0" * 64, 1)
    if len(encode_metadata({**probe.metadata(), "returning": "1"})) > MAX_METADATA:
        raise DropError(
            f"those {len(names)} contacts have {len(recipients)} member keys, more than one "
            "upload can name",
            "address fewer contacts with --to, and send a second drop to the others",
        )
    return Addressed(tuple(names), recipients, directory.codename_salt, directory.version)


def _message(args: argparse.Namespace) -> str | None:
    text = args.message
    if args.message_file:
        try:
            if args.message_file == "-":
                text = sys.stdin.read()
            else:
                text = Path(args.message_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise DropError(f"cannot read the message file ({reason})") from None
    if text is None:
        return None
    try:
        return sealing.normalise_message(text) or None
    except sealing.SealError as exc:
        raise DropError(str(exc)) from None


def _files(args: argparse.Namespace, message: str | None) -> list[Path]:
    files = [Path(f) for f in args.files]
    if not files and not message:
        raise DropError("nothing to send: give a message (-m, --message-file) or a file")
    for position, path in enumerate(files, start=1):
        if not path.is_file():
            raise DropError(f"file {position} is not a file that can be read")
    return files


# --- sealing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Codename:
    text: str | None  # None for a codename typed in (it is not printed again)
    login: str
    reply: str


def codename(salt: bytes, prompt: bool) -> Codename:
    """A new codename, or one typed at a prompt. Keys are derived here (Argon2id) with
    the relay's salt, exactly as the relay derives them at login. Raises DropError."""
    if prompt:
        try:
            typed = normalize_codename(getpass.getpass("your codename: "))
        except CodenameError as exc:
            raise DropError(f"that is not a codename: {exc}") from None
        except EOFError:
            raise DropError("no codename was typed") from None
        text = None
    else:
        typed = text = generate_codename()
    keys = derive_codename_keys(typed, salt)
    return Codename(text, keys.login_id, str(keys.reply_identity.recipient))


def _seal_to(
    target: Path, addressed: Addressed, name: Codename, files: list[Path], message: str | None
) -> outbox.Route:
    """Seals into a new file `target` (refused if it exists), writing first to a hidden
    partial file beside it. Returns the route (also written beside it). Raises DropError."""
    partial = target.with_name(f".{target.name}.partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise DropError(f"{partial} exists: is another amanah-drop writing there?") from None
    try:
        with os.fdopen(fd, "wb") as out:
            sealed = sealing.seal(
                out,
                addressed.recipients,
                files,
                message,
                name.reply,
                addressed.version,
                Stripping(),
                int(time.time()) // 3600 * 3600,  # to the hour, as the relay keeps time
                note,
                spool=partial.parent,  # where the output fits, and not a RAM disk if /tmp is
            )
            out.flush()
            os.fsync(out.fileno())
        os.link(partial, target)  # never over an existing file
    except FileExistsError:
        raise DropError(f"{target} exists already; not overwritten") from None
    except sealing.SealError as exc:
        raise DropError(str(exc)) from None
    finally:
        partial.unlink(missing_ok=True)
    route = outbox.Route(
        contacts=addressed.contacts,
        recipients=tuple(r.fingerprint for r in addressed.recipients),
        directory_version=addressed.version,
        login=name.login,
        reply=name.reply,
        sha256=sealed.sha256,
        size=sealed.size,
        returning=name.text is None,
    )
    outbox.write_route(target, route)
    refused = f", {len(sealed.refusals)} left out" if sealed.refusals else ""
    note(
        f"sealed on this device: {sealed.items} file(s){refused}"
        f"{' and a message' if sealed.has_message else ''}, {sealed.size / 1e6:.1f} MB, "
        f"to {len(addressed.recipients)} key(s) of {', '.join(addressed.contacts)}"
    )
    return route


def show_codename(name: Codename) -> None:
    if name.text is None:
        return
    print(name.text, flush=True)
    note(
        "the line above is your codename. It is shown only this once and the relay never "
        "sees it: learn it by heart, or keep it where only you can find it. With it you "
        "can log in on the relay's page in Tor Browser to read replies, and add to this "
        "drop later with --codename-prompt."
    )


async def _prepare(args: argparse.Namespace, root: Path) -> tuple[Addressed, Codename]:
    async with _session(args.relay, args.tor_socks) as session:
        directory = await fetch_directory(
            session,
            args.relay.rstrip("/") + "/directory",
            outbox.pin_path(root, args.relay),
            args.wait,
            note,
        )
    addressed = address(directory, args.to)
    return addressed, await asyncio.to_thread(codename, addressed.salt, args.codename_prompt)


async def cmd_seal(args: argparse.Namespace) -> int:
    message = _message(args)
    files = _files(args, message)
    root = outbox.state_root(args.state)
    target = Path(args.output)
    if target.exists():
        raise DropError(f"{target} exists already; not overwritten")
    addressed, name = await _prepare(args, root)
    await asyncio.to_thread(_seal_to, target, addressed, name, files, message)
    show_codename(name)
    note(
        f"wrote {target} and {target.name}{outbox.ROUTE_SUFFIX}; deliver both with "
        f"`amanah-drop send --sealed {target} --relay URL`"
    )
    return 0


# --- sending ------------------------------------------------------------------------------


async def upload(args: argparse.Namespace, pending: outbox.Pending) -> None:
    """Uploads one pending drop to its relay and forgets it once stored. Raises
    DropError (the state is kept when a later run can carry on)."""
    route = pending.route
    ciphertext = Path(pending.ciphertext)
    try:
        size = ciphertext.stat().st_size
    except OSError as exc:
        raise DropError(f"the sealed drop cannot be read ({exc.strerror})") from None
    if size != route.size:
        raise DropError("the sealed drop is not the one its .route file describes")
    with pending.locked() as mine:
        if not mine:
            raise DropError("another amanah-drop is sending this drop right now")

        def remember(url: str, offset: int) -> None:
            pending.upload_url, pending.offset = url, offset
            pending.save()

        async with _session(pending.relay, args.tor_socks) as session:
            endpoint = pending.relay.rstrip("/") + "/uploads"
            uploader = Uploader(session, endpoint, remember, args.wait)
            try:
                await _send(uploader, pending, ciphertext, route)
            except UploadRefused as refused:
                pending.finish()  # final: the same bytes would be refused again
                stale = "out of date" in refused.reason
                raise DropError(str(refused), STALE_HINT if stale else refused.hint) from None
            except Unknown:
                pending.finish()  # sending again would store it twice if it was stored
                raise
            except tor_client.TRANSPORT_ERRORS as exc:
                raise unreachable(exc) from None
    end_progress()
    pending.finish()
    resent = max(0, uploader.transfer.sent - size)
    extra = f" ({resent / 1e6:.1f} MB sent again after broken connections)" if resent else ""
    note(
        f"the relay has your drop for {', '.join(route.contacts)}: sealed on your device, "
        f"so the relay cannot read it{extra}"
    )


def _remembered(uploader: Uploader, pending: outbox.Pending) -> str | None:
    """The upload an earlier run started, to carry on. One that is not among the relay's
    own uploads (a state file written before clients/upload.py checked the relay's
    Location, or edited) is forgotten, not tried: the sealed file is kept, nothing is
    sent where it pointed, and the drop is sent again from the start."""
    if pending.upload_url is None:
        return None
    url = remembered_upload(uploader.endpoint, pending.upload_url)
    if url is None:
        pending.upload_url, pending.offset = None, 0
        pending.save()
        note(
            "warning: the upload remembered from an earlier run pointed somewhere other "
            "than this relay; nothing was sent there, and the drop is sent again from the start"
        )
    return url


async def _send(
    uploader: Uploader, pending: outbox.Pending, ciphertext: Path, route: outbox.Route
) -> None:
    url = _remembered(uploader, pending) or await uploader.create(route.size, route.metadata())
    for attempt in (1, 2):
        try:
            await uploader.send(url, ciphertext, route.size)
            return
        except Gone:
            if attempt == 2:
                raise DropError(
                    "the relay lost this upload twice (it expired, or the relay restarted)",
                    "run the same command again later",
                ) from None
            note(
                "the relay no longer has the earlier part (it expired, or the relay "
                "restarted); starting this upload again"
            )
            url = await uploader.create(route.size, route.metadata())


async def cmd_send(args: argparse.Namespace) -> int:
    root = outbox.state_root(args.state)
    if args.resume:
        return await _resume(args, root)
    if not args.relay:
        raise DropError("give the relay's URL with --relay")
    outbox.origin(args.relay)
    if args.sealed:
        return await _send_sealed(args, root)
    message = _message(args)
    files = _files(args, message)
    description = outbox.describe_command(args.relay, args.to, message, files, args.codename_prompt)
    for earlier in outbox.pending_uploads(root):
        if earlier.matches(description):
            note("carrying on the upload this command started earlier")
            await upload(args, earlier)
            return 0
    addressed, name = await _prepare(args, root)
    pending = outbox.new_pending(root, args.relay, description)
    try:
        await asyncio.to_thread(_seal_to, Path(pending.ciphertext), addressed, name, files, message)
        outbox.publish(pending)
    except BaseException:
        pending.finish()
        raise
    show_codename(name)
    await upload(args, pending)
    return 0


async def _send_sealed(args: argparse.Namespace, root: Path) -> int:
    if args.files or args.message or args.message_file or args.to or args.codename_prompt:
        raise DropError("--sealed sends a drop made by `seal`; give no files, message or --to")
    sealed = Path(args.sealed).resolve()
    route = outbox.read_route(sealed)
    description = {"relay": outbox.origin(args.relay), "sealed": route.sha256}
    for earlier in outbox.pending_uploads(root):
        if earlier.matches(description):
            note("carrying on the upload of this drop started earlier")
            await upload(args, earlier)
            return 0
    pending = outbox.new_pending(root, args.relay, description, sealed)
    outbox.publish(pending)
    await upload(args, pending)
    return 0


async def _resume(args: argparse.Namespace, root: Path) -> int:
    if args.files or args.sealed:
        raise DropError("--resume carries on earlier uploads; give no files or --sealed")
    waiting = [
        p
        for p in outbox.pending_uploads(root)
        if not args.relay or outbox.origin(p.relay) == outbox.origin(args.relay)
    ]
    if not waiting:
        note("no unfinished upload to carry on")
        return 0
    failed = 0
    for pending in waiting:
        try:
            await upload(args, pending)
        except UserError as exc:
            failed += 1
            note(f"error: {exc}")
            if exc.hint:
                note(f"hint: {exc.hint}")
    return 1 if failed else 0


# --- the command line ---------------------------------------------------------------------


def _relay_options(p: argparse.ArgumentParser, *, relay_required: bool) -> None:
    p.add_argument(
        "--relay",
        required=relay_required,
        metavar="URL",
        help="the relay's address (http://….onion), as its page or its people gave it",
    )
    p.add_argument(
        "--tor-socks",
        default=tor_client.DEFAULT_SOCKS,
        metavar="HOST:PORT",
        help="tor's SOCKS port (default: %(default)s; Tor Browser: 127.0.0.1:9150)",
    )
    p.add_argument(
        "--state",
        metavar="DIR",
        help="where pins and unfinished uploads are kept (default: $AMANAH_DROP_STATE, "
        "else ~/.local/state/amanah-drop)",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long to keep trying while the relay cannot be reached or an upload "
        "makes no progress (default: %(default)s)",
    )


def _drop_options(p: argparse.ArgumentParser, files: str) -> None:
    p.add_argument("files", nargs=files, metavar="FILE", help="photos, audio, video")
    p.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="CONTACT",
        help="a contact to send to (repeat for several; default: every contact)",
    )
    p.add_argument(
        "-m",
        "--message",
        metavar="TEXT",
        help="a message; other users of this computer can see a command's words, so "
        "prefer --message-file for anything sensitive",
    )
    p.add_argument("--message-file", metavar="FILE", help="the message, from a file (- : stdin)")
    p.add_argument(
        "--codename-prompt",
        action="store_true",
        help="add to an earlier drop: type its codename at a prompt (never on the command "
        "line) instead of getting a new one",
    )


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog=PROG,
        description="Strip identifying metadata from photos, audio and video, seal them on "
        "this device to the contacts of an Amanah relay, and send them over Tor.",
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
    stripping.add_arguments(strip)
    strip.set_defaults(run=stripping.run)
    seal = sub.add_parser(
        "seal",
        help="strip and seal a drop into a file, to carry out by other means",
        description="Strip files, seal them with a message on this device to the member keys "
        "of the relay's contacts, and write the sealed drop (and FILE.route beside it). "
        "Prints a new codename once.",
        epilog="example:\n  amanah-drop seal --relay http://ADDRESS.onion --to the-daily "
        "-m 'the crossing' video.mp4 -o drop.age\n  (later, from anywhere: amanah-drop send "
        "--sealed drop.age --relay http://ADDRESS.onion)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _drop_options(seal, "*")
    seal.add_argument("-o", "--output", required=True, metavar="FILE", help="the sealed drop")
    _relay_options(seal, relay_required=True)
    seal.set_defaults(run=cmd_seal)
    send = sub.add_parser(
        "send",
        help="strip, seal on this device and upload a drop, resuming when cut",
        description="Strip files, seal them with a message on this device, and upload the "
        "sealed drop to the relay over Tor. A cut upload carries on when the same command "
        "is run again (or with --resume). Prints a new codename once.",
        epilog="examples:\n  amanah-drop send --relay http://ADDRESS.onion --to the-daily "
        "-m 'the crossing' video.mp4\n  amanah-drop send --sealed drop.age --relay "
        "http://ADDRESS.onion\n  amanah-drop send --resume",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _drop_options(send, "*")
    send.add_argument("--sealed", metavar="FILE", help="upload a drop made by `seal`")
    send.add_argument("--resume", action="store_true", help="carry on every unfinished upload")
    _relay_options(send, relay_required=False)
    send.set_defaults(run=cmd_send)
    return top


def main(argv: list[str] | None = None) -> int:
    interrupted = "interrupted; run the same command again to carry on"
    return run_command(PROG, parser().parse_args(argv), interrupted)

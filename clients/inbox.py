"""`amanah-inbox`: a contact member's client. Keys, fetching drops, decrypting, replying.

    amanah-inbox keygen -o identity.txt            prints the member card on stdout
    amanah-inbox fetch --relay URL --identity identity.txt --out drops/
                       [--onion-auth FILE] [--tor-socks HOST:PORT] [--tor-control HOST:PORT]
    amanah-inbox decrypt FILE --identity identity.txt [-o OUT]
    amanah-inbox reply DROP --message TEXT --relay URL --identity identity.txt --out drops/

Rules for fetch, in order: verify the relay's signed directory against the pin kept in
OUT (trust on first use, then only a signed rotation chain may change the key); download
each sealed blob into OUT/.incoming (resuming with Range where a previous run stopped)
and check its SHA-256 against the listing; decrypt here, on this machine; write the drop
to OUT/<drop>.partial, fsync every file, rename the folder to OUT/<drop>, fsync OUT; only
then acknowledge, after which the relay deletes the drop once every contact has it.
A drop is never acknowledged before it is safely on this disk.

Every answer of the relay is read against docs/openapi.yaml before it is used (a drop id
and a blob name become paths under OUT, a size and a checksum judge a download, a contact
name is printed): a malformed one is one clear error naming the field (MalformedAnswer),
raised before anything is downloaded, written or acknowledged (clients/answers.py reads
them). No redirect is followed.

Over Tor: a `.onion` --relay URL is reached through tor's SOCKS port (--tor-socks, names
resolved by tor, never locally); --onion-auth FILE first gives the member's client-auth
key (the `.auth_private` file the operator handed over) to that tor's control port. A
loopback URL (the relay's `--no-tor` mode) is reached directly.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from crypto import age
from crypto.auth import auth_message
from crypto.card import MemberIdentity
from crypto.errors import CryptoError
from crypto.keys import VerifyKey
from onion import client as tor_client
from relay.sanitize import extension_for

from . import unpack
from .answers import (
    BLOB_NAME,
    CHALLENGE,
    DROP_ID,
    RELAY_KEY,
    TOKEN,
    Answer,
    InboxError,
    ListedDrop,
    MalformedAnswer,
    parse_listing,
    plain_path,
)
from .common import (
    ANSWER_LIMIT,
    UserError,
    bounded_answer,
    end_progress,
    error_body,
    fetch_directory,
    progress,
    relay_said,
    run_command,
    unreachable,
)

PIN_NAME = ".directory-pin.json"
INCOMING = ".incoming"
_SAFE_NAME = re.compile(r"[a-z]+-[0-9]{1,4}\.[a-z0-9]{1,5}|message\.txt")
# A file name already checked by its own rule (_SAFE_NAME, originals_for), checked again.
_ANY = re.compile(r"(?!\.{1,2}$)[^/\x00]{1,255}")


class RefusedDrop(InboxError):
    """One drop could not be opened safely: it is left on the relay (not acknowledged),
    nothing of it is saved, and the other drops are fetched."""


def load_identity(path: Path) -> MemberIdentity:
    try:
        return MemberIdentity.parse_file_text(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InboxError(f"cannot read the identity file: {exc.strerror}") from None
    except CryptoError as exc:
        raise InboxError(
            f"not an Amanah identity file: {exc}", "make one with `amanah-inbox keygen`"
        ) from None


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- keygen -------------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    identity = MemberIdentity.generate()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = identity.to_file_text(created)
    if args.output == "-":
        raise InboxError("refusing to print a secret key; give a file with -o")
    try:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise InboxError(f"{args.output} exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    print(identity.card.encode())
    print(
        f"amanah-inbox: wrote your secret keys to {args.output}; keep it private and backed up.\n"
        "amanah-inbox: the line above is your member card: give it to the relay's operator.",
        file=sys.stderr,
    )
    return 0


# --- the API ------------------------------------------------------------------------------


class Relay:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base.rstrip("/")
        self.token: str | None = None

    async def json(self, method: str, path: str, body: Any = None, answer: bool = True) -> Any:
        """The JSON of the relay's 2xx answer (None when `answer` is not wanted). Raises
        InboxError for a refusal or a redirect (never followed: the token must not go
        anywhere else), MalformedAnswer for an answer that is not JSON."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method, self.base + path, json=body, headers=headers, allow_redirects=False
        ) as response:
            if response.status >= 400:
                raise InboxError(await _refusal(f"the relay refused {path}", response))
            if response.status >= 300:
                raise InboxError(
                    f"the relay answered {path} with a redirect ({response.status}); not followed",
                    "check --relay; a relay does not redirect its API: tell its operator",
                )
            data = await bounded_answer(response)
        if data is None:
            limit = ANSWER_LIMIT >> 20
            raise MalformedAnswer(f"{method} {path}", f"it is larger than {limit} MiB")
        if not answer:
            return None
        try:
            return json.loads(data)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise MalformedAnswer(f"{method} {path}", "it is not JSON") from None

    async def login(self, identity: MemberIdentity) -> None:
        """Signs the relay's challenge; keeps the token. Raises InboxError."""
        verify_key = str(identity.signing_key.verify_key)
        path = "/api/v1/auth/challenge"
        read = Answer(f"POST {path}")
        issued = read.object(await self.json("POST", path, {"verify_key": verify_key}))
        challenge = read.text(issued, "challenge", CHALLENGE, "32 bytes in base64")
        relay_key = read.text(issued, "relay_key", RELAY_KEY, "a key")
        try:
            message = auth_message(VerifyKey.parse(relay_key), base64.b64decode(challenge))
        except CryptoError:
            raise read.malformed("relay_key is not a signing key") from None
        path = "/api/v1/auth/token"
        read = Answer(f"POST {path}")
        answer = read.object(
            await self.json(
                "POST",
                path,
                {
                    "verify_key": verify_key,
                    "challenge": challenge,
                    "signature": base64.b64encode(identity.signing_key.sign(message)).decode(),
                },
            )
        )
        self.token = read.text(answer, "token", TOKEN, "a token")


def _message(data: bytes) -> str:
    """The `error` of the relay's JSON refusal, as the relay wrote it: for relay_said."""
    try:
        return str(json.loads(data).get("error", ""))
    except (ValueError, AttributeError, RecursionError):
        return ""


async def _refusal(what: str, response: aiohttp.ClientResponse) -> str:
    """`WHAT: STATUS`, then what the relay's JSON `error` said (through relay_said: one
    line, no control character, bounded), for a refusal's message."""
    said = relay_said(_message(await error_body(response)))
    return f"{what}: {response.status}; {said}" if said else f"{what}: {response.status}"


async def download(
    relay: Relay, url: str, target: Path, size: int, sha256: str, label: str
) -> None:
    """Fetches `url` into `target`, resuming from what is already there."""
    have = target.stat().st_size if target.exists() else 0
    if have > size:
        target.unlink()
        have = 0
    if have < size:
        headers = {"Authorization": f"Bearer {relay.token}"}
        if have:
            headers["Range"] = f"bytes={have}-"
        async with relay.session.get(url, headers=headers, allow_redirects=False) as response:
            if response.status not in (200, 206):
                raise InboxError(f"download of {label} failed: {response.status}")
            if response.status == 200:
                have = 0
            with target.open("r+b" if have else "wb") as f:
                f.seek(have)
                last = 0.0
                async for chunk in response.content.iter_chunked(1 << 20):
                    if have + len(chunk) > size:  # more than listed: stop before the disk fills
                        break
                    f.write(chunk)
                    have += len(chunk)
                    if time.monotonic() - last > 0.5 or have == size:
                        progress(f"{label}: {have * 100 // max(size, 1)}% of {size / 1e6:.1f} MB")
                        last = time.monotonic()
    digest = hashlib.sha256()
    with target.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    if digest.hexdigest() != sha256:
        target.unlink()
        raise InboxError(f"{label} arrived damaged (checksum mismatch); run fetch again")


class Keys:
    """The member's identities: the first authenticates; all of them decrypt (a member
    whose keys were rotated keeps the old file to open drops sealed before the change)."""

    def __init__(self, paths: list[str]) -> None:
        self.members = [load_identity(Path(p)) for p in paths]
        self.current = self.members[0]
        self.decrypting = [m.identity for m in self.members]


def decrypt_file(sealed: Path, plain: Path, keys: Keys) -> None:
    fd = os.open(plain, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with sealed.open("rb") as src, os.fdopen(fd, "wb") as dst:
        age.decrypt_stream(src, dst, keys.decrypting)
        dst.flush()
        os.fsync(dst.fileno())


def originals_for(manifest: dict[str, Any], contact: str) -> list[tuple[str, str]]:
    """(blob, file name) of every original sealed to `contact` (a contact that accepts
    originals, when the source chose to send them). Raises InboxError for a bad name.
    The entries are objects (_manifest_items checked them)."""
    found = []
    for entry in manifest.get("files", []):
        original = entry.get("original")
        if original is not None and not isinstance(original, dict):
            raise InboxError("the manifest describes an original unsafely; not saved")
        if not original or contact not in original.get("contacts", []):
            continue
        number = re.fullmatch(r"original-([1-9][0-9]{0,3})", str(original.get("blob", "")))
        if number is None:
            raise InboxError("the manifest names an original unsafely; not saved")
        extension = extension_for(str(entry.get("detected_type", "")))
        found.append((number.group(0), f"original-{number.group(1)}.{extension}"))
    return found


def _manifest_items(manifest: Any, drop: ListedDrop) -> list[tuple[str, str]]:
    """(blob, file name) of the message and each file a relay-sealed manifest lists. Age
    does not say who sealed a file, so a hostile relay could seal its own manifest to us:
    each entry must be an object with a safe file name, once, and a blob the listing
    had. Raises InboxError."""
    listed = {b.name for b in drop.blobs}
    malformed = InboxError(f"drop {drop.id} has a malformed manifest; not saved")
    if not isinstance(manifest, dict):
        raise malformed
    message, files = manifest.get("message"), manifest.get("files", [])
    if not isinstance(files, list) or not isinstance(message, dict | None):
        raise malformed
    items = []
    for entry in ([message] if message else []) + files:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise malformed
        if not _SAFE_NAME.fullmatch(entry["name"]):
            raise InboxError(f"drop {drop.id} names a file unsafely; not saved")
        if entry.get("blob") not in listed:
            raise malformed
        items.append((entry["blob"], entry["name"]))
    if len({name for _, name in items}) != len(items):
        raise malformed
    return items


def _open_relay_sealed(
    incoming: Path, partial: Path, keys: Keys, contact: str, drop: ListedDrop
) -> bytes:
    """Blocking: a drop sealed on the relay (one age file per item) into `partial`.
    Returns the manifest's bytes. Raises InboxError."""
    try:
        manifest_bytes = age.decrypt((incoming / "manifest").read_bytes(), keys.decrypting)
        manifest = json.loads(manifest_bytes)
    except (CryptoError, ValueError, RecursionError) as exc:
        raise InboxError(f"drop {drop.id} has an unreadable manifest: {exc}") from None
    items = _manifest_items(manifest, drop)
    # Originals, with their metadata (evidence), only where they were sealed to us.
    originals = originals_for(manifest, contact)
    if any(blob not in {b.name for b in drop.blobs} for blob, _ in originals):
        raise InboxError(f"drop {drop.id} has a malformed manifest; not saved")
    for blob, name in items + originals:
        try:
            decrypt_file(
                plain_path(incoming, blob, BLOB_NAME), plain_path(partial, name, _ANY), keys
            )
        except CryptoError as exc:
            raise InboxError(f"drop {drop.id}: a sealed file cannot be opened: {exc}") from None
    return manifest_bytes


def _open_device_sealed(incoming: Path, partial: Path, keys: Keys, drop: ListedDrop) -> bytes:
    """Blocking: a drop sealed on the source's device (one age file holding a tar) into
    `partial`, laid out as a relay-sealed one. Returns the manifest's bytes, with the
    drop id and the reply handle the relay's listing gives (the device knew neither)."""
    try:
        manifest = unpack.unpack(incoming / "sealed", partial, keys.decrypting)
    except UserError as exc:
        raise RefusedDrop(f"drop {drop.id}: {exc}; nothing of it was saved") from None
    manifest["drop"] = drop.id
    reply = manifest.get("reply")
    if isinstance(reply, dict) and reply.get("recipient"):
        reply["handle"] = drop.reply_handle  # checked by parse_drop
    else:
        manifest["reply"] = None
    return json.dumps(manifest, indent=2, ensure_ascii=False).encode("utf-8")


def _clear(partial: Path) -> None:
    if partial.exists():
        for leftover in partial.iterdir():
            leftover.unlink()
        partial.rmdir()


async def fetch_drop(relay: Relay, drop: ListedDrop, keys: Keys, out: Path, contact: str) -> None:
    """Downloads, decrypts and saves one listed drop (checked by parse_drop), then
    acknowledges it. Raises InboxError (RefusedDrop: this drop only)."""
    drop_id = drop.id
    final = plain_path(out, drop_id, DROP_ID)
    if not final.exists():
        incoming = plain_path(out / INCOMING, drop_id, DROP_ID)
        incoming.mkdir(mode=0o700, parents=True, exist_ok=True)
        for blob in drop.blobs:
            url = f"{relay.base}/api/v1/drops/{drop_id}/blobs/{blob.name}"
            target = plain_path(incoming, blob.name, BLOB_NAME)
            label = f"{drop_id[:8]} {blob.name}"
            await download(relay, url, target, blob.size, blob.sha256, label)
        partial = out / f"{drop_id}.partial"
        _clear(partial)
        partial.mkdir(mode=0o700)
        try:
            if drop.sealed_on == "device":
                manifest_bytes = await asyncio.to_thread(
                    _open_device_sealed, incoming, partial, keys, drop
                )
            else:
                manifest_bytes = await asyncio.to_thread(
                    _open_relay_sealed, incoming, partial, keys, contact, drop
                )
        except BaseException:
            _clear(partial)
            raise
        fd = os.open(partial / "manifest.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(manifest_bytes)
        fsync_path(partial / "manifest.json")
        fsync_path(partial)
        partial.rename(final)
        fsync_path(out)
        for downloaded in incoming.iterdir():
            downloaded.unlink()
        incoming.rmdir()
        if not any(incoming.parent.iterdir()):
            incoming.parent.rmdir()
    await relay.json("POST", f"/api/v1/drops/{drop_id}/ack", answer=False)
    progress(f"{drop_id}: saved to {final}")
    end_progress()


def _connector(args: argparse.Namespace) -> aiohttp.BaseConnector | None:
    """Through tor's SOCKS port for a .onion URL; directly for a loopback one."""
    if tor_client.is_onion_url(args.relay):
        return tor_client.socks_connector(args.tor_socks)
    if args.onion_auth:
        raise InboxError("--onion-auth is for a .onion --relay URL")
    return None


async def _prepare_tor(args: argparse.Namespace) -> None:
    if not args.onion_auth:
        return
    password = None
    if args.tor_control_password_file:
        try:
            password = Path(args.tor_control_password_file).read_text().strip()
        except OSError as exc:
            raise InboxError(f"cannot read the password file: {exc.strerror}") from None
    address = await tor_client.register_client_auth_async(
        Path(args.onion_auth), args.relay, args.tor_control, password
    )
    print(f"amanah-inbox: your tor has your client-auth key for {address}", file=sys.stderr)


async def fetch(args: argparse.Namespace) -> int:
    keys = Keys(args.identity)
    out = Path(args.out)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    connector = _connector(args)
    await _prepare_tor(args)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None, sock_read=120)
    ) as session:
        relay = Relay(session, args.relay)
        try:
            url = relay.base + "/api/v1/directory"
            await fetch_directory(session, url, out / PIN_NAME, args.wait, progress)
            await relay.login(keys.current)
            # The whole listing is checked before the first drop is fetched: a malformed
            # one leaves nothing downloaded, written or acknowledged.
            listing = parse_listing(await relay.json("GET", "/api/v1/drops"))
            print(
                f"amanah-inbox: {len(listing.drops)} drop(s) waiting for {listing.contact}",
                file=sys.stderr,
            )
            refused = 0
            for drop in listing.drops:
                try:
                    await fetch_drop(relay, drop, keys, out, listing.contact)
                except RefusedDrop as exc:
                    refused += 1
                    print(f"amanah-inbox: error: {exc}", file=sys.stderr)
        except tor_client.TRANSPORT_ERRORS as exc:
            raise unreachable(exc) from None
    if refused:
        print(
            f"amanah-inbox: hint: {refused} drop(s) were refused and left on the relay; "
            "tell its operator",
            file=sys.stderr,
        )
    return 1 if refused else 0


# --- decrypt and reply --------------------------------------------------------------------


def cmd_decrypt(args: argparse.Namespace) -> int:
    keys = Keys(args.identity)
    try:
        with open(args.file, "rb") as src:
            if args.output:
                with open(args.output, "xb") as dst:
                    age.decrypt_stream(src, dst, keys.decrypting)
            else:
                age.decrypt_stream(src, sys.stdout.buffer, keys.decrypting)
    except OSError as exc:
        raise InboxError(f"cannot open a file: {exc.strerror}") from None
    except CryptoError as exc:
        raise InboxError(f"cannot decrypt: {exc}") from None
    return 0


async def reply(args: argparse.Namespace) -> int:
    keys = Keys(args.identity)
    manifest_path = Path(args.out) / args.drop / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        raise InboxError(
            f"no fetched drop {args.drop} in {args.out}", "run `amanah-inbox fetch` first"
        ) from None
    reply_to = manifest.get("reply")
    if not reply_to:
        raise InboxError("this drop cannot be answered: it came without a codename")
    sealed = age.encrypt(args.message.encode("utf-8"), [reply_to["recipient"]])
    connector = _connector(args)
    await _prepare_tor(args)
    async with aiohttp.ClientSession(connector=connector) as session:
        relay = Relay(session, args.relay)
        try:
            await relay.login(keys.current)
            async with session.post(
                f"{relay.base}/api/v1/replies/{reply_to['handle']}",
                data=sealed,
                headers={
                    "Authorization": f"Bearer {relay.token}",
                    "Content-Type": "application/octet-stream",
                },
                allow_redirects=False,
            ) as response:
                if response.status != 201:
                    raise InboxError(await _refusal("the relay refused the reply", response))
        except tor_client.TRANSPORT_ERRORS as exc:
            raise unreachable(exc) from None
    print("amanah-inbox: reply sealed to the source and sent", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amanah-inbox",
        description="Receive drops from an Amanah relay, decrypt them here, reply to sources.",
        epilog=(
            "example:\n"
            "  amanah-inbox keygen -o me.txt > me.card      # give me.card to the operator\n"
            "  amanah-inbox fetch --relay http://127.0.0.1:8081 --identity me.txt --out drops\n"
            "  amanah-inbox fetch --relay http://ADDRESS.onion --onion-auth me.auth_private \\\n"
            "      --identity me.txt --out drops          # over Tor (tor on 9050/9051)\n"
            "  amanah-inbox reply DROP_ID -m 'Thank you' --relay ... --identity me.txt --out drops"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("keygen", help="make your keys; prints your member card")
    p.add_argument("-o", "--output", required=True, help="identity file to create (mode 0600)")
    p.set_defaults(run=cmd_keygen)
    for name, helptext in (
        ("fetch", "download, decrypt and save waiting drops"),
        ("reply", "answer a drop's source"),
    ):
        p = sub.add_parser(name, help=helptext)
        if name == "reply":
            p.add_argument("drop", help="the drop's id (its folder name under --out)")
            p.add_argument("--message", "-m", required=True, help="the reply text")
        p.add_argument("--relay", required=True, help="the relay's journalist URL")
        p.add_argument(
            "--identity",
            "-i",
            required=True,
            action="append",
            help="your identity file; repeat to add old ones after a key rotation",
        )
        p.add_argument("--out", required=True, help="where drops are saved")
        p.add_argument(
            "--tor-socks",
            default=tor_client.DEFAULT_SOCKS,
            metavar="HOST:PORT",
            help="tor's SOCKS port, for a .onion relay (default: %(default)s; Tor Browser: 9150)",
        )
        p.add_argument(
            "--onion-auth",
            metavar="FILE",
            help="your client-auth key file (.auth_private) for the relay's journalist service",
        )
        p.add_argument(
            "--tor-control",
            default=tor_client.DEFAULT_CONTROL,
            metavar="HOST:PORT",
            help="your tor's control port, to give it --onion-auth (default: %(default)s)",
        )
        p.add_argument(
            "--tor-control-password-file",
            metavar="FILE",
            help="a control-port password, if your tor uses one instead of its cookie",
        )
        p.add_argument(
            "--wait",
            type=float,
            default=120.0,
            metavar="SECONDS",
            help="how long to keep trying a relay Tor cannot reach yet (default: %(default)s)",
        )
        p.set_defaults(run=fetch if name == "fetch" else reply)
    p = sub.add_parser("decrypt", help="decrypt one age file offline (like age -d)")
    p.add_argument("file")
    p.add_argument("--identity", "-i", required=True, action="append", help="identity file(s)")
    p.add_argument("-o", "--output", help="write here instead of standard output")
    p.set_defaults(run=cmd_decrypt)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_command("amanah-inbox", build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())

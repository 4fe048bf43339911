"""`amanah`: the operator's command. One dispatcher turns errors into `amanah: error: ...`
(and `amanah: hint: ...`) lines and exit codes; no user mistake prints a traceback."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from onion import keys as onion_keys
from onion.address import ClientAuthKey
from onion.errors import OnionError
from onion.keeper import STATUS_FILE, read_status

from . import config as configuration
from . import contacts, datadir
from .blobs import BlobStore
from .errors import ClientError, ConfigError, Conflict, NotFound, RelayError
from .ingest import drop_path
from .store import Store

EPILOG_MAIN = """\
example, a relay with one contact, published as two onion services:
  amanah init --data ./relay
  amanah-inbox keygen -o alice.txt > alice.card
  amanah contact add the-daily --member "$(cat alice.card)" --data ./relay
  amanah serve --data ./relay        # or --no-tor: loopback only

every subcommand takes --data DIR (default: $AMANAH_DATA, else ./amanah-data)
"""


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data or os.environ.get("AMANAH_DATA") or "amanah-data").resolve()


def _now() -> int:
    return int(time.time())


def _warn(message: str) -> None:
    print(f"amanah: warning: {message}", file=sys.stderr)


async def _open_store(data_dir: Path) -> Store:
    if not (data_dir / configuration.CONFIG_NAME).exists():
        raise ConfigError(f"{data_dir} is not an Amanah data directory (run `amanah init`)")
    return await Store.open(data_dir / "amanah.db")


async def cmd_init(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    keys = datadir.initialise(data_dir)
    async with await Store.open(data_dir / "amanah.db") as store:
        services = datadir.onion_addresses(data_dir)
        await contacts.publish_directory(
            store, keys.directory_key, _now(), services, keys.codename_salt
        )
    print(f"initialised {data_dir}", file=sys.stderr)
    print(f"directory key: {keys.directory_key.verify_key}")
    return 0


async def _with_store(
    args: argparse.Namespace, action: Callable[[Store], Coroutine[Any, Any, int]]
) -> int:
    async with await _open_store(_data_dir(args)) as store:
        return await action(store)


async def _republish(store: Store, data_dir: Path) -> int:
    keys = datadir.load_keys(data_dir)
    for warning in keys.warnings:
        _warn(warning)
    services = datadir.onion_addresses(data_dir, create=True)
    return await contacts.publish_directory(
        store, keys.directory_key, _now(), services, keys.codename_salt
    )


HANDOVER = "handover"


def _auth_dir(text: str | None, data_dir: Path) -> Path:
    """Where new client-auth key files go: --auth-dir, else DATA/handover (0700), which
    `amanah status` keeps reminding the operator to empty."""
    if text is None:
        path = data_dir / HANDOVER
        path.mkdir(mode=0o700, exist_ok=True)
        return path
    path = Path(text)
    if not path.is_dir():
        raise ConfigError(f"--auth-dir {path} is not a directory")
    return path


def _waiting_handover(data_dir: Path) -> int:
    folder = data_dir / HANDOVER
    return len(list(folder.glob("*.auth_private"))) if folder.is_dir() else 0


def _auth_file_name(contact: str, fingerprint: str) -> str:
    return f"{contact}-{fingerprint[:12]}.auth_private"


def _write_auth_files(
    data_dir: Path,
    out_dir: Path,
    contact: str,
    issued: list[tuple[str, ClientAuthKey]],
    all_or_nothing: bool = False,
) -> list[Path]:
    """Writes each member's client-auth private key, once, in the format of tor's
    ClientOnionAuthDir (0600, never overwriting). The relay keeps only the public half.
    With `all_or_nothing`, a failure removes the files this call wrote (for keys not
    stored yet)."""
    address = datadir.onion_addresses(data_dir, create=True)["journalist"]
    written: list[Path] = []
    for fingerprint, key in issued:
        path = out_dir / _auth_file_name(contact, fingerprint)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            if all_or_nothing:
                for done in written:
                    done.unlink(missing_ok=True)
                raise ConfigError(
                    f"cannot write a member's client-auth key to {path}: {exc.strerror}; "
                    "no key was issued"
                ) from None
            raise ConfigError(
                f"cannot write a member's client-auth key to {path}: {exc.strerror}; "
                "that member must be rotated to get a new one"
            ) from None
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(key.auth_private_line(address) + "\n")
        written.append(path)
    return written


def _explain_auth_files(paths: list[Path]) -> None:
    for path in paths:
        print(f"client-auth key for the journalist onion service: {path}")
    if paths:
        print(
            "give each file to its member, privately, then delete it here: the relay keeps only\n"
            "the public half. The member runs `amanah-inbox fetch --onion-auth FILE ...`, or puts\n"
            "the file in their tor's ClientOnionAuthDir."
        )


async def cmd_contact_add(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)

    async def action(store: Store) -> int:
        out_dir = _auth_dir(args.auth_dir, data_dir)
        issued = await contacts.add_contact(
            store, args.name, args.member, args.description, args.accepts_originals, _now()
        )
        version = await _republish(store, data_dir)
        print(f"added {args.name} ({len(args.member)} member(s)); directory version {version}")
        _explain_auth_files(_write_auth_files(data_dir, out_dir, args.name, issued))
        return 0

    return await _with_store(args, action)


async def cmd_contact_list(args: argparse.Namespace) -> int:
    async def action(store: Store) -> int:
        listed = await store.list_contacts()
        if args.json:
            print(json.dumps([_contact_json(c) for c in listed], indent=2))
            return 0
        if not listed:
            print("no contacts yet: add one with `amanah contact add NAME --member CARD`")
        for contact in listed:
            flags = " (accepts originals)" if contact.accepts_originals else ""
            print(f"{contact.name}{flags}: {contact.description}")
            for member in contact.members:
                print(f"  member {member.fingerprint}  {member.recipient}")
        return 0

    return await _with_store(args, action)


def _contact_json(contact: Any) -> dict[str, Any]:
    return {
        "name": contact.name,
        "description": contact.description,
        "accepts_originals": contact.accepts_originals,
        "members": [
            {"fingerprint": m.fingerprint, "recipient": m.recipient, "card": m.card}
            for m in contact.members
        ],
    }


async def cmd_contact_remove(args: argparse.Namespace) -> int:
    async def action(store: Store) -> int:
        deleted = await store.remove_contact(args.name)
        blob_store = BlobStore(_data_dir(args) / "blobs")
        for drop_id in deleted:
            await blob_store.delete_tree(drop_path(drop_id))
        version = await _republish(store, _data_dir(args))
        print(f"removed {args.name}; {len(deleted)} drop(s) no one else was waiting for deleted")
        print(f"directory version {version}")
        print(_withdraw_note(_data_dir(args), "its members' client-auth keys"))
        return 0

    return await _with_store(args, action)


async def cmd_contact_rotate(args: argparse.Namespace) -> int:
    old, sep, new = args.member.partition("=")
    if not sep:
        raise ClientError("--member takes OLDCARD=NEWCARD")
    data_dir = _data_dir(args)

    async def action(store: Store) -> int:
        out_dir = _auth_dir(args.auth_dir, data_dir)
        if old.strip() == new.strip():
            raise ClientError(
                "the new card is the old one; make new keys with `amanah-inbox keygen`"
            )
        issued = await contacts.rotate_member(store, args.name, old.strip(), new.strip(), _now())
        version = await _republish(store, data_dir)
        print(f"rotated a member of {args.name}; directory version {version}")
        print(_withdraw_note(data_dir, "the old client-auth key"))
        _explain_auth_files(_write_auth_files(data_dir, out_dir, args.name, [issued]))
        return 0

    return await _with_store(args, action)


async def cmd_contact_issue_auth(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)

    async def action(store: Store) -> int:
        out_dir = _auth_dir(args.auth_dir, data_dir)
        missing = await store.members_without_onion_auth(args.name)
        if not missing:
            raise ClientError(
                f"every member of {args.name} has a client-auth key already; "
                "`amanah contact rotate` gives one member new keys"
            )
        issued = [(fingerprint, ClientAuthKey.generate()) for fingerprint in missing]
        # The files first: a key stored but never handed over would lock its member out
        # until a rotation, while files without stored keys are only removed again.
        written = _write_auth_files(data_dir, out_dir, args.name, issued, all_or_nothing=True)
        try:
            await store.add_onion_auth({f: key.public_base32 for f, key in issued}, _now())
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        print(f"issued a client-auth key to {len(issued)} member(s) of {args.name}")
        config = configuration.load(data_dir)
        if _running_status(config) is None:
            print("the relay is not running; it publishes the journalist service with them")
        else:
            print(
                "the running relay re-publishes the journalist service with them "
                f"within {config.tor.sync_seconds} s"
            )
        _explain_auth_files(written)
        return 0

    return await _with_store(args, action)


def _withdraw_note(data_dir: Path, what: str) -> str:
    config = configuration.load(data_dir)
    if _running_status(config) is None:
        return f"the relay is not running; it will publish the journalist service without {what}"
    return (
        f"the running relay re-publishes the journalist service without {what} "
        f"within {config.tor.sync_seconds} s"
    )


def _running_status(config: configuration.Config) -> dict[str, Any] | None:
    return read_status(config.tor_data / STATUS_FILE, 3 * config.tor.sync_seconds + 30)


async def _onion_status(data_dir: Path, store: Store) -> dict[str, Any]:
    config = configuration.load(data_dir)
    addresses = datadir.onion_addresses(data_dir)
    running = _running_status(config)
    live = (running or {}).get("services", {})
    authorised = [
        {"contact": contact, "member": fingerprint}
        for contact, fingerprint, _ in await store.onion_auth_keys()
    ]
    keyless = [
        {"contact": contact.name, "member": fingerprint}
        for contact in await store.list_contacts()
        for fingerprint in await store.members_without_onion_auth(contact.name)
    ]
    onion: dict[str, Any] = {
        "relay_running_with_tor": running is not None,
        "client_auth_files_to_hand_over": _waiting_handover(data_dir),
        "tor_bootstrap_percent": (running or {}).get("tor", {}).get("bootstrap_percent"),
        "authorised_member_keys": authorised,
        "members_without_client_auth": keyless,
    }
    for name in onion_keys.SERVICES:
        retiring = onion_keys.load_retiring(config.keys, name)
        state = live.get(name, {})
        onion[name] = {
            "address": addresses.get(name),
            "published": bool(state),
            "descriptor_published": state.get("descriptor_published") if state else None,
            "descriptor_uploads": state.get("descriptor_uploads") if state else None,
            "proof_of_work": state.get("proof_of_work")
            if state
            else (config.tor.proof_of_work if name == "source" else False),
            "proof_of_work_note": _pow_note(name, state, config),
            "client_auth_keys": state.get("client_auth_keys") if state else None,
            "retiring": None
            if retiring is None
            else {
                "address": retiring.key.address,
                "withdraw_after": retiring.withdraw_after,
                "published": f"{name}_retiring" in live,
            },
        }
    onion["self_check"] = _self_check_status(running, config)
    return onion


def _pow_note(name: str, state: dict[str, Any], config: configuration.Config) -> str:
    """Why proof-of-work is off on the source service ("" when on, or for the journalist
    service, which client authorisation guards instead)."""
    if name != "source":
        return ""
    if not config.tor.proof_of_work:
        return "turned off in amanah.toml ([tor] proof_of_work)"
    return str(state.get("proof_of_work_note") or "")


def _self_check_status(
    running: dict[str, Any] | None, config: configuration.Config
) -> dict[str, Any]:
    """The running relay's last fetch of its own source page through tor."""
    if running is None:
        return {"state": "not_running", "reachable": None, "checked_at": None, "detail": ""}
    check = running.get("self_check")
    if not isinstance(check, dict):
        detail = "turned off in amanah.toml ([tor] self_check)" if not config.tor.self_check else ""
        return {"state": "off", "reachable": None, "checked_at": None, "detail": detail}
    return check


def _print_onion_status(onion: dict[str, Any]) -> None:
    running = onion["relay_running_with_tor"]
    print(
        "tor: "
        + (
            f"relay running, bootstrap {onion['tor_bootstrap_percent']}%"
            if running
            else "the relay is not running with tor (addresses below are from the keys)"
        )
    )
    for name in onion_keys.SERVICES:
        info = onion[name]
        if not running:
            state = "not published (relay not running)"
        elif not info["published"]:
            state = "not published"
        elif info["descriptor_published"]:
            state = f"published, descriptor on {info['descriptor_uploads']} HSDir(s)"
        else:
            state = "registered with tor, descriptor upload pending"
        print(f"{name} onion: {info['address']}  [{state}]")
        if name == "source":
            note = f" ({info['proof_of_work_note']})" if info["proof_of_work_note"] else ""
            print(f"  proof-of-work: {'on' if info['proof_of_work'] else 'off'}{note}")
        if info["retiring"]:
            when = time.strftime(
                "%Y-%m-%d %H:%M:%S UTC", time.gmtime(info["retiring"]["withdraw_after"])
            )
            print(f"  previous address {info['retiring']['address']} withdrawn after {when}")
    print("self-check through tor: " + _describe_self_check(onion["self_check"]))
    keys = onion["authorised_member_keys"]
    print(f"journalist service client-auth keys: {len(keys)}")
    if onion["client_auth_files_to_hand_over"]:
        print(
            f"  {onion['client_auth_files_to_hand_over']} client-auth key file(s) in the "
            f"handover folder: give each to its member, then delete it"
        )
    for entry in keys:
        print(f"  {entry['contact']} member {entry['member']}")
    for entry in onion["members_without_client_auth"]:
        print(
            f"  {entry['contact']} member {entry['member']} has NO client-auth key and cannot "
            f"reach the journalist service: amanah contact issue-auth {entry['contact']}"
        )


_SELF_CHECK_WORDS = {
    "pending": "not checked yet",
    "reachable": "the source page answers",
    "not_yet": "not reachable yet",
    "failing": "NOT REACHABLE",
    "off": "off",
    "not_running": "the relay is not running",
}


def _describe_self_check(check: dict[str, Any]) -> str:
    words = _SELF_CHECK_WORDS.get(str(check.get("state")), str(check.get("state")))
    if check.get("detail") and check.get("state") != "reachable":
        words += f": {check['detail']}"
    if check.get("checked_at"):
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(check["checked_at"]))
        words += f" (checked {when})"
    return words


async def cmd_status(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)

    async def action(store: Store) -> int:
        waiting = await store.waiting_counts()
        summary = await store.storage_summary()
        events = await store.recent_events(10)
        directory = await store.latest_directory()
        listed = await store.list_contacts()
        status: dict[str, Any] = {
            "data_dir": str(data_dir),
            "directory_version": directory[0] if directory else None,
            "contacts": {
                c.name: {"members": len(c.members), "waiting": waiting.get(c.name, 0)}
                for c in listed
            },
            "storage": summary,
            "recent_errors": [{"at": e.at, "kind": e.kind, "detail": e.detail} for e in events],
        }
        onion = await _onion_status(data_dir, store)
        status["source_onion"] = onion["source"]["address"]
        status["journalist_onion"] = onion["journalist"]["address"]
        status["source_reachable"] = onion["self_check"]["reachable"]
        status["checked_at"] = onion["self_check"]["checked_at"]
        status["onion"] = onion
        if args.json:
            print(json.dumps(status, indent=2))
            return _check_result(args.check, onion["self_check"])
        print(f"data directory: {data_dir}")
        print(f"directory version: {status['directory_version']}")
        for name, info in status["contacts"].items():
            print(f"contact {name}: {info['members']} member(s), {info['waiting']} drop(s) waiting")
        print("storage: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
        _print_onion_status(onion)
        for event in events:
            print(
                f"error at {time.strftime('%Y-%m-%d %H:%M', time.gmtime(event.at))}: "
                f"{event.kind}: {event.detail}"
            )
        return _check_result(args.check, onion["self_check"])

    return await _with_store(args, action)


def _check_result(check: bool, self_check: dict[str, Any]) -> int:
    """With --check: 0 if the running relay's last self-check reached the source service
    through tor, else 1 with one line saying why (for monitoring and container health)."""
    if not check or self_check.get("reachable") is True:
        return 0
    words = _SELF_CHECK_WORDS.get(str(self_check.get("state")), str(self_check.get("state")))
    detail = f": {self_check['detail']}" if self_check.get("detail") else ""
    print(f"amanah: check failed: source service {words}{detail}", file=sys.stderr)
    return 1


async def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    data_dir = _data_dir(args)
    config = configuration.with_ports(
        configuration.load(data_dir), args.source_port, args.journalist_port
    )
    config = configuration.with_tor_control(config, args.tor_control)
    keys = datadir.load_keys(data_dir)
    for warning in keys.warnings:
        _warn(warning)
    if not args.no_tor:
        datadir.onion_addresses(data_dir, create=True)
    await serve(config, keys, tor=not args.no_tor)
    return 0


async def cmd_keys_rotate(args: argparse.Namespace) -> int:
    data_dir = _data_dir(args)
    config = configuration.load(data_dir)
    name = args.key.removesuffix("-onion")
    new, retiring = onion_keys.rotate(config.keys, name, args.overlap, _now())

    async def action(store: Store) -> int:
        version = await _republish(store, data_dir)
        print(f"new {name} onion address: {new.address} (directory version {version})")
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(retiring.withdraw_after))
        print(f"the old address {retiring.key.address} stays published until {when}")
        if _running_status(config) is not None:
            print(f"the running relay publishes the new address within {config.tor.sync_seconds} s")
        if name == "journalist":
            print(
                "members keep their client-auth keys; `amanah-inbox fetch --onion-auth FILE` "
                "registers them for the new address (an .auth_private file in a ClientOnionAuthDir "
                "needs its address part changed)"
            )
        return 0

    return await _with_store(args, action)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _overlap(text: str) -> int:
    """--overlap: hours (72, 0.5), or a number with a unit (90s, 30m, 2h, 3d); in seconds.
    Tests use seconds; an operator thinks in hours or days."""
    value = text.strip().lower()
    unit = value[-1] if value[-1:] in _UNITS else "h"
    number = value[:-1] if value[-1:] in _UNITS else value
    try:
        seconds = float(number) * _UNITS[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (hours, or with a unit: 90s, 30m, 2h, 3d)"
        ) from None
    if not 0 <= seconds < 366 * 86400:  # also refuses nan and inf
        raise argparse.ArgumentTypeError("the overlap is from 0 to a year")
    return int(seconds)


def _command(
    sub: Any, name: str, help: str, example: str, parents: list[argparse.ArgumentParser]
) -> argparse.ArgumentParser:
    """A subcommand whose --help ends with a worked example, printed as written."""
    return sub.add_parser(  # type: ignore[no-any-return]
        name,
        parents=parents,
        help=help,
        description=help[0].upper() + help[1:] + ".",
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="amanah",
        description="Run an Amanah relay: register contacts, serve sources and contacts.",
        epilog=EPILOG_MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data", metavar="DIR", help="data directory (default: $AMANAH_DATA, else ./amanah-data)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(
        sub,
        "init",
        "create a data directory, its config and the relay's keys",
        "amanah init --data ./relay",
        [common],
    )
    p.set_defaults(run=cmd_init)

    p = _command(
        sub,
        "serve",
        "run the relay",
        "amanah serve --data ./relay    (loopback only: --no-tor --source-port 8080)",
        [common],
    )
    p.add_argument("--no-tor", action="store_true", help="loopback only, no onion services")
    p.add_argument(
        "--tor-control",
        metavar="HOST:PORT",
        help="attach to this running tor's control port instead of starting one",
    )
    p.add_argument("--source-port", type=int, metavar="P", help="port of the source pages")
    p.add_argument("--journalist-port", type=int, metavar="Q", help="port of the journalist API")
    p.set_defaults(run=cmd_serve)

    contact = _command(
        sub,
        "contact",
        "register, list and remove contacts; rotate members' keys",
        'amanah contact add the-daily --member "$(cat alice.card)"',
        [],
    )
    csub = contact.add_subparsers(dest="contact_command", required=True, metavar="ACTION")
    p = _command(
        csub,
        "add",
        "register a contact with its members' cards",
        'amanah contact add the-daily --member "$(cat alice.card)" --description "The Daily"',
        [common],
    )
    p.add_argument("name", help="short name: lowercase letters, digits and -")
    p.add_argument(
        "--member",
        action="append",
        default=[],
        metavar="CARD",
        help="a member card, as `amanah-inbox keygen` printed it (repeat for more)",
    )
    p.add_argument("--description", default="", help="what sources see about this contact")
    p.add_argument(
        "--auth-dir",
        metavar="DIR",
        help="where to write each member's client-auth key file (default: DATA/handover)",
    )
    p.add_argument(
        "--accepts-originals", action="store_true", help="may receive unstripped originals"
    )
    p.set_defaults(run=cmd_contact_add)
    p = _command(
        csub, "list", "list contacts and their members", "amanah contact list --json", [common]
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=cmd_contact_list)
    p = _command(
        csub,
        "remove",
        "remove a contact and revoke its members",
        "amanah contact remove the-daily",
        [common],
    )
    p.add_argument("name")
    p.set_defaults(run=cmd_contact_remove)
    p = _command(
        csub,
        "rotate",
        "replace one member's keys",
        'amanah contact rotate the-daily --member "$(cat old.card)=$(cat new.card)"',
        [common],
    )
    p.add_argument("name")
    p.add_argument("--member", required=True, metavar="OLDCARD=NEWCARD")
    p.add_argument(
        "--auth-dir",
        metavar="DIR",
        help="where to write the member's new client-auth key file (default: DATA/handover)",
    )
    p.set_defaults(run=cmd_contact_rotate)
    p = _command(
        csub,
        "issue-auth",
        "issue journalist-service client-auth keys to a contact's members who have none "
        "(registered before client authorisation), without rotating their other keys",
        "amanah contact issue-auth the-daily --auth-dir ./to-hand-over",
        [common],
    )
    p.add_argument("name")
    p.add_argument(
        "--auth-dir",
        metavar="DIR",
        help="where to write each member's client-auth key file (default: DATA/handover)",
    )
    p.set_defaults(run=cmd_contact_issue_auth)

    keys = _command(
        sub,
        "keys",
        "rotate the relay's onion service keys",
        "amanah keys rotate source-onion --overlap 72",
        [],
    )
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    p = _command(
        ksub,
        "rotate",
        "give an onion service a new key and address; the old one stays for the overlap",
        "amanah keys rotate journalist-onion --overlap 24",
        [common],
    )
    p.add_argument("key", choices=["source-onion", "journalist-onion"])
    p.add_argument(
        "--overlap",
        type=_overlap,
        default=72 * 3600,
        metavar="DURATION",
        help="how long the old address stays published beside the new one: hours (72, "
        "0.5), or with a unit (90s, 30m, 2h, 3d); default 72 hours. Sources and members "
        "learn the new address from the signed directory in that time",
    )
    p.set_defaults(run=cmd_keys_rotate)

    p = _command(
        sub,
        "status",
        "contacts, waiting drops, storage, onion services, recent errors",
        "amanah status --json",
        [common],
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 unless the running relay's last self-check reached its source service "
        "through tor (for monitoring: amanah status --check >/dev/null)",
    )
    p.set_defaults(run=cmd_status)
    return parser


HINTS: dict[type[Exception], str] = {
    Conflict: "use a different name, or remove the existing one first",
    NotFound: "`amanah contact list` shows what exists",
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return asyncio.run(args.run(args))
    except KeyboardInterrupt:
        return 130
    except RelayError as exc:
        print(f"amanah: error: {exc}", file=sys.stderr)
        hint = next((h for cls, h in HINTS.items() if isinstance(exc, cls)), None)
        if hint:
            print(f"amanah: hint: {hint}", file=sys.stderr)
        return 1
    except OnionError as exc:
        print(f"amanah: error: {exc}", file=sys.stderr)
        if exc.hint:
            print(f"amanah: hint: {exc.hint}", file=sys.stderr)
        return 1
    except Exception as exc:  # the one place that catches everything: no tracebacks
        print(f"amanah: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        print(
            "amanah: hint: this is a bug; please report it with the command you ran",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

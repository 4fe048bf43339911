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

from . import config as configuration
from . import contacts, datadir
from .blobs import BlobStore
from .errors import ClientError, ConfigError, Conflict, NotFound, RelayError
from .ingest import drop_path
from .store import Store

EPILOG_MAIN = """\
example, a relay with one contact on loopback:
  amanah init --data ./relay
  amanah-inbox keygen -o alice.txt > alice.card
  amanah contact add the-daily --member "$(cat alice.card)" --data ./relay
  amanah serve --no-tor --data ./relay

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
        await contacts.publish_directory(store, keys.directory_key, _now())
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
    return await contacts.publish_directory(store, keys.directory_key, _now())


async def cmd_contact_add(args: argparse.Namespace) -> int:
    async def action(store: Store) -> int:
        await contacts.add_contact(
            store, args.name, args.member, args.description, args.accepts_originals, _now()
        )
        version = await _republish(store, _data_dir(args))
        print(f"added {args.name} ({len(args.member)} member(s)); directory version {version}")
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
        return 0

    return await _with_store(args, action)


async def cmd_contact_rotate(args: argparse.Namespace) -> int:
    old, sep, new = args.member.partition("=")
    if not sep:
        raise ClientError("--member takes OLDCARD=NEWCARD")

    async def action(store: Store) -> int:
        if old.strip() == new.strip():
            raise ClientError(
                "the new card is the old one; make new keys with `amanah-inbox keygen`"
            )
        await contacts.rotate_member(store, args.name, old.strip(), new.strip(), _now())
        version = await _republish(store, _data_dir(args))
        print(f"rotated a member of {args.name}; directory version {version}")
        return 0

    return await _with_store(args, action)


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
        if args.json:
            print(json.dumps(status, indent=2))
            return 0
        print(f"data directory: {data_dir}")
        print(f"directory version: {status['directory_version']}")
        for name, info in status["contacts"].items():
            print(f"contact {name}: {info['members']} member(s), {info['waiting']} drop(s) waiting")
        print("storage: " + ", ".join(f"{k} {v}" for k, v in summary.items()))
        for event in events:
            print(
                f"error at {time.strftime('%Y-%m-%d %H:%M', time.gmtime(event.at))}: "
                f"{event.kind}: {event.detail}"
            )
        return 0

    return await _with_store(args, action)


async def cmd_serve(args: argparse.Namespace) -> int:
    from .server import serve

    data_dir = _data_dir(args)
    config = configuration.with_ports(
        configuration.load(data_dir), args.source_port, args.journalist_port
    )
    if not args.no_tor:
        raise ConfigError(
            "publishing onion services is not built yet: run `amanah serve --no-tor` "
            "(loopback only) until it is"
        )
    keys = datadir.load_keys(data_dir)
    for warning in keys.warnings:
        _warn(warning)
    await serve(config, keys)
    return 0


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
        "amanah serve --no-tor --source-port 8080 --journalist-port 8081",
        [common],
    )
    p.add_argument("--no-tor", action="store_true", help="loopback only, no onion services")
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
    p.set_defaults(run=cmd_contact_rotate)

    p = _command(
        sub,
        "status",
        "contacts, waiting drops, storage, recent errors",
        "amanah status --json",
        [common],
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
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
    except Exception as exc:  # the one place that catches everything: no tracebacks
        print(f"amanah: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        print(
            "amanah: hint: this is a bug; please report it with the command you ran",
            file=sys.stderr,
        )
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

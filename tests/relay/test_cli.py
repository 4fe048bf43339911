"""The `amanah` operator command, run as the operator runs it: a subprocess of the installed
console script. Every run is checked for a traceback; every error is one
`amanah: error:` line (and at most a hint) with exit status 1."""

from __future__ import annotations

import calendar
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from crypto.card import MemberIdentity

AMANAH = str(Path(sys.executable).parent / "amanah")
TIMEOUT = 30


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AMANAH_")}
    env["COLUMNS"] = "80"  # argparse wraps help to the terminal; fix it
    env.update(extra)
    return env


def amanah(*args: str, cwd: Path | None = None, **env: str) -> Ran:
    done = subprocess.run(
        [AMANAH, *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        env=environment(**env),
        check=False,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return Ran(done.returncode, done.stdout, done.stderr)


def assert_one_error(ran: Ran, *needles: str) -> str:
    """Exit 1, one `amanah: error:` line, nothing else but hints. Returns the error line."""
    lines = ran.err.splitlines()
    assert ran.code == 1, ran
    assert lines and lines[0].startswith("amanah: error: "), ran.err
    assert all(line.startswith("amanah: hint: ") for line in lines[1:]), ran.err
    assert len(lines) <= 2, ran.err
    for needle in needles:
        assert needle in ran.err, (needle, ran.err)
    return lines[0]


def card() -> str:
    return MemberIdentity.generate().card.encode()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    data_dir = tmp_path / "relay"
    ran = amanah("init", "--data", str(data_dir))
    assert ran.code == 0, ran.err
    return data_dir


def contacts_json(data_dir: Path) -> list[dict[str, object]]:
    ran = amanah("contact", "list", "--json", "--data", str(data_dir))
    assert ran.code == 0, ran.err
    listed = json.loads(ran.out)
    assert isinstance(listed, list)
    return listed


# --help

COMMANDS = [
    [],
    ["init"],
    ["serve"],
    ["contact"],
    ["contact", "add"],
    ["contact", "list"],
    ["contact", "remove"],
    ["contact", "rotate"],
    ["status"],
]


def with_example(*command: str) -> object:
    return pytest.param(list(command), id=" ".join(command))


@pytest.mark.parametrize("command", COMMANDS, ids=[" ".join(c) or "amanah" for c in COMMANDS])
def test_help_exits_zero(command: list[str]) -> None:
    ran = amanah(*command, "--help")
    assert ran.code == 0
    assert ran.out.startswith("usage: amanah")
    assert ran.err == ""


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([], id="amanah"),
        with_example("init"),
        pytest.param(["serve"], id="serve"),
        with_example("contact"),
        pytest.param(["contact", "add"], id="contact add"),
        with_example("contact", "list"),
        with_example("contact", "remove"),
        pytest.param(["contact", "rotate"], id="contact rotate"),
        with_example("status"),
    ],
)
def test_help_shows_an_example(command: list[str]) -> None:
    ran = amanah(*command, "--help")
    assert ran.code == 0
    assert re.search(r"^\s*example.*:", ran.out, re.MULTILINE), ran.out
    assert re.search(r"^\s*(example: )?amanah " + " ".join(command), ran.out, re.MULTILINE)


def example_lines(text: str) -> list[str]:
    found = (line.strip() for line in text.splitlines())
    return [line for line in found if re.match(r"(example: )?amanah(-inbox)? ", line)]


def wrapped(*command: str) -> object:
    return pytest.param(list(command), id=" ".join(command))


@pytest.mark.parametrize(
    "command",
    [
        pytest.param([], id="amanah"),
        pytest.param(["serve"], id="serve"),
        wrapped("contact", "add"),
        wrapped("contact", "rotate"),
    ],
)
def test_examples_are_not_wrapped_by_the_terminal_width(command: list[str]) -> None:
    wide = amanah(*command, "--help", COLUMNS="400")
    narrow = amanah(*command, "--help")
    examples = example_lines(wide.out)
    assert examples
    assert all(line in example_lines(narrow.out) for line in examples), narrow.out


# init and the data directory


def test_init_creates_private_keys_and_prints_the_directory_key(tmp_path: Path) -> None:
    data_dir = tmp_path / "relay"
    ran = amanah("init", "--data", str(data_dir))
    assert ran.code == 0
    assert re.fullmatch(r"directory key: amanah-sig1[a-z0-9]{58}\n", ran.out)
    for key in ("directory.key", "codename.salt"):
        assert stat.S_IMODE((data_dir / "keys" / key).stat().st_mode) == 0o600, key
    for folder in (data_dir, data_dir / "keys", data_dir / "blobs", data_dir / "staging"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert (data_dir / "amanah.toml").read_text().startswith("# Amanah relay configuration")


def test_init_twice_refuses_and_keeps_the_keys(data: Path) -> None:
    key = (data / "keys" / "directory.key").read_bytes()
    line = assert_one_error(amanah("init", "--data", str(data)))
    assert "already initialised" in line
    assert (data / "keys" / "directory.key").read_bytes() == key


def test_data_directory_from_the_environment_and_the_default(tmp_path: Path) -> None:
    from_env = tmp_path / "from-env"
    assert amanah("init", AMANAH_DATA=str(from_env)).code == 0
    assert (from_env / "amanah.toml").exists()
    assert amanah("status", "--json", AMANAH_DATA=str(from_env)).code == 0
    assert amanah("init", cwd=tmp_path).code == 0
    assert (tmp_path / "amanah-data" / "amanah.toml").exists()


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["status", "--json"],
        ["contact", "list"],
        ["contact", "add", "the-daily", "--member", "CARD"],
        ["contact", "remove", "the-daily"],
        ["contact", "rotate", "the-daily", "--member", "CARD=CARD"],
        ["serve", "--no-tor"],
    ],
    ids=" ".join,
)
def test_a_missing_data_directory_is_one_clear_error(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nowhere"
    assert_one_error(amanah(*command, "--data", str(missing)), "amanah init")
    assert not missing.exists()  # nothing was created by looking


def test_a_readable_key_file_is_warned_about(data: Path) -> None:
    key = data / "keys" / "directory.key"
    key.chmod(0o644)
    ran = amanah("contact", "add", "the-daily", "--member", card(), "--data", str(data))
    assert ran.code == 0, ran.err
    warnings = [line for line in ran.err.splitlines() if line.startswith("amanah: warning: ")]
    assert len(warnings) == 1, ran.err
    assert "directory.key" in warnings[0] and "chmod 600" in warnings[0]
    key.chmod(0o600)
    (data / "keys" / "codename.salt").chmod(0o640)
    ran = amanah("contact", "add", "the-weekly", "--member", card(), "--data", str(data))
    assert ran.code == 0
    warnings = [line for line in ran.err.splitlines() if line.startswith("amanah: warning: ")]
    assert len(warnings) == 1 and "codename.salt" in warnings[0], ran.err


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("directory.key", None, "missing key file directory.key"),
        ("directory.key", "AMANAH-SIGNING-KEY-1NOTAKEY\n", "not a valid signing key"),
        ("directory.key", "\xff\xfe", "cannot read key file directory.key"),
        ("codename.salt", None, "missing key file codename.salt"),
        ("codename.salt", "not hex at all\n", "must hold 16 bytes in hex"),
        ("codename.salt", "00" * 15 + "\n", "must hold 16 bytes in hex"),
        ("codename.salt", "00" * 17 + "\n", "must hold 16 bytes in hex"),
    ],
    ids=[
        "key-missing",
        "key-garbage",
        "key-not-text",
        "salt-missing",
        "salt-not-hex",
        "salt-short",
        "salt-long",
    ],  # fmt: skip
)
def test_a_damaged_key_file_is_one_clear_error(
    data: Path, name: str, text: str | None, needle: str
) -> None:
    path = data / "keys" / name
    if text is None:
        path.unlink()
    else:
        path.write_bytes(text.encode("latin-1"))
    ran = amanah("serve", "--no-tor", "--data", str(data))
    line = assert_one_error(ran, needle)
    if text is not None and text.strip():
        assert text.strip() not in line  # what the file held is not echoed


def test_private_key_files_are_not_warned_about(data: Path) -> None:
    ran = amanah("contact", "add", "the-daily", "--member", card(), "--data", str(data))
    assert ran.code == 0
    assert "warning" not in ran.err


# Contacts


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param("not-a-card", id="garbage"),
        pytest.param("amanah-member1qqqq", id="short"),
        pytest.param("swap-last", id="checksum"),
        pytest.param("cut", id="truncated"),
        pytest.param("mixed", id="mixed-case"),
        pytest.param("age1", id="an-age-recipient"),
    ],
)
def test_a_malformed_card_is_one_error_with_a_hint(data: Path, bad: str) -> None:
    good = card()
    text = {
        "swap-last": good[:-1] + ("q" if good[-1] != "q" else "p"),
        "cut": good[:-10],
        "mixed": good[:20] + good[20:].upper(),
        "age1": str(MemberIdentity.generate().identity.recipient),
    }.get(bad, bad)
    ran = amanah("contact", "add", "the-daily", "--member", text, "--data", str(data))
    line = assert_one_error(ran, "not a valid member card")
    assert "amanah-inbox keygen" in ran.err  # where a real card comes from
    assert text not in line  # the input is not echoed back
    assert contacts_json(data) == []


def test_contact_round_trip(data: Path) -> None:
    old, new, other = card(), card(), card()
    ran = amanah(
        "contact", "add", "the-daily", "--member", old, "--member", other,
        "--description", "The Daily", "--data", str(data),
    )  # fmt: skip
    assert ran.code == 0, ran.err
    assert "directory version 2" in ran.out
    listed = contacts_json(data)
    assert [c["name"] for c in listed] == ["the-daily"]
    assert listed[0]["description"] == "The Daily"
    assert {m["card"] for m in listed[0]["members"]} == {old, other}  # type: ignore[attr-defined]

    plain = amanah("contact", "list", "--data", str(data))
    assert plain.code == 0 and plain.out.startswith("the-daily: The Daily")

    ran = amanah("contact", "rotate", "the-daily", "--member", f"{old}={new}", "--data", str(data))
    assert ran.code == 0, ran.err
    assert "directory version 3" in ran.out
    cards = {m["card"] for m in contacts_json(data)[0]["members"]}  # type: ignore[attr-defined]
    assert cards == {new, other}

    again = amanah(
        "contact", "rotate", "the-daily", "--member", f"{old}={card()}", "--data", str(data)
    )
    assert_one_error(again, "no member with that card")

    ran = amanah("contact", "remove", "the-daily", "--data", str(data))
    assert ran.code == 0, ran.err
    assert "directory version 4" in ran.out
    assert contacts_json(data) == []
    assert "no contacts yet" in amanah("contact", "list", "--data", str(data)).out
    assert_one_error(amanah("contact", "remove", "the-daily", "--data", str(data)), "no such")


def test_contact_mistakes_are_one_error_each(data: Path) -> None:
    taken = card()
    assert amanah("contact", "add", "the-daily", "--member", taken, "--data", str(data)).code == 0
    for args, needle in (
        (["contact", "add", "the-daily", "--member", card()], "exists already"),
        (["contact", "add", "other", "--member", taken], "exists already"),
        (["contact", "add", "The Daily", "--member", card()], "contact name must match"),
        (["contact", "add", "empty"], "at least one --member"),
        (["contact", "rotate", "the-daily", "--member", taken], "OLDCARD=NEWCARD"),
        (["contact", "rotate", "nobody", "--member", f"{taken}={card()}"], "no such contact"),
        (["contact", "rotate", "the-daily", "--member", f"{taken}={taken}"], "is the old one"),
        (["contact", "remove", "nobody"], "no such contact"),
    ):
        assert_one_error(amanah(*args, "--data", str(data)), needle)


# status and serve


def test_status_json_is_one_json_object(data: Path) -> None:
    ran = amanah("status", "--json", "--data", str(data))
    assert ran.code == 0
    status = json.loads(ran.out)
    assert status["data_dir"] == str(data)
    assert status["directory_version"] == 1
    assert status["contacts"] == {} and status["recent_errors"] == []
    amanah("contact", "add", "the-daily", "--member", card(), "--data", str(data))
    status = json.loads(amanah("status", "--json", "--data", str(data)).out)
    assert status["directory_version"] == 2
    assert status["contacts"] == {"the-daily": {"members": 1, "waiting": 0}}
    plain = amanah("status", "--data", str(data))
    assert plain.code == 0 and "contact the-daily: 1 member(s), 0 drop(s) waiting" in plain.out


def test_serve_without_tor_installed_explains_itself(data: Path) -> None:
    config = data / "amanah.toml"
    config.write_text(config.read_text().replace("[tor]\n", '[tor]\nbinary = "/no/tor"\n'))
    ran = amanah(
        "serve", "--source-port", str(free_port()), "--journalist-port", str(free_port()),
        "--data", str(data),
    )  # fmt: skip
    assert_one_error(ran, "tor is not installed", "apt-get install tor")


def test_serve_refuses_equal_ports(data: Path) -> None:
    ran = amanah(
        "serve", "--no-tor", "--source-port", "9000", "--journalist-port", "9000",
        "--data", str(data),
    )  # fmt: skip
    assert_one_error(ran, "must differ")


@pytest.mark.parametrize("overlap", ["nan", "inf", "1e400", "-1", "", "h", "1y", "400d"])
def test_a_bad_overlap_is_refused_before_any_key_changes(data: Path, overlap: str) -> None:
    key = data / "keys" / "source-onion.key"
    before = key.read_bytes()
    ran = amanah("keys", "rotate", "source-onion", "--overlap", overlap, "--data", str(data))
    assert ran.code == 2, ran  # argparse's usage error
    assert "argument --overlap" in ran.err
    assert key.read_bytes() == before
    assert not (data / "keys" / "source-onion.retiring.key").exists()


@pytest.mark.parametrize(
    ("overlap", "seconds"),
    [("90s", 90), ("0.5", 1800), ("30m", 1800), ("2h", 7200), ("3d", 259200)],
)
def test_an_overlap_in_hours_or_with_a_unit(data: Path, overlap: str, seconds: int) -> None:
    started = time.time()
    ran = amanah("keys", "rotate", "source-onion", "--overlap", overlap, "--data", str(data))
    assert ran.code == 0, ran.err
    found = re.search(r"stays published until (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", ran.out)
    assert found, ran.out
    until = calendar.timegm(time.strptime(found.group(1), "%Y-%m-%d %H:%M:%S"))
    assert started + seconds - 1 <= until <= time.time() + seconds


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            return int(response.status)
    except urllib.error.HTTPError as refused:
        return refused.code


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_serve_no_tor_serves_and_stops_cleanly(data: Path, stop: signal.Signals) -> None:
    source_port, journalist_port = free_port(), free_port()
    process = subprocess.Popen(
        [
            AMANAH, "serve", "--no-tor", "--source-port", str(source_port),
            "--journalist-port", str(journalist_port), "--data", str(data),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                status = get_status(f"http://127.0.0.1:{journalist_port}/api/v1/directory")
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "did not start"
                time.sleep(0.05)
        assert status == 200
        assert get_status(f"http://127.0.0.1:{source_port}/api/v1/directory") == 404
        process.send_signal(stop)
        out, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert "Traceback" not in out + err
    assert "stopped" in err

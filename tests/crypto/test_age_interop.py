"""Interop with the real `age` tool (Debian package `age`), both ways: the judge of our
drop format. A contact must be able to open every drop with stock `age`, years from now."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from crypto import age
from crypto.errors import AgeError, NoIdentityMatchError, PayloadError
from crypto.keys import Identity, parse_identities

AGE = shutil.which("age") or "/usr/bin/age"
AGE_KEYGEN = shutil.which("age-keygen") or "/usr/bin/age-keygen"
# age's own example file and its key, from age's Go sources (Debian golang-filippo-age-dev).
AGE_SOURCES = Path("/usr/share/gocode/src/filippo.io/age")

SIZES = [0, 1, 65535, 65536, 65537, 10 * 1024 * 1024 + 3]


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, input=stdin, capture_output=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Path, Identity]]:
    """Three identities made by age-keygen, each with its file."""
    out = []
    for n in range(3):
        path = tmp_path_factory.mktemp("keys") / f"key{n}.txt"
        result = run(AGE_KEYGEN, "-o", str(path))
        assert result.returncode == 0, result.stderr
        (identity,) = parse_identities([path.read_text()])
        public = re.search(r"age1[0-9a-z]+", path.read_text())
        assert public and str(identity.recipient) == public.group(0)
        out.append((path, identity))
    return out


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("count", [1, 3])
def test_age_opens_ours(keys: list[tuple[Path, Identity]], size: int, count: int) -> None:
    data = os.urandom(size)
    sealed = age.encrypt(data, [str(i.recipient) for _, i in keys[:count]])
    for path, _ in keys[:count]:
        result = run(AGE, "-d", "-i", str(path), stdin=sealed)
        assert result.returncode == 0, result.stderr
        assert result.stdout == data


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("count", [1, 3])
def test_we_open_ages(keys: list[tuple[Path, Identity]], size: int, count: int) -> None:
    data = os.urandom(size)
    args = [a for _, i in keys[:count] for a in ("-r", str(i.recipient))]
    result = run(AGE, *args, stdin=data)
    assert result.returncode == 0, result.stderr
    for path, _ in keys[:count]:
        assert age.decrypt(result.stdout, [path.read_text()]) == data
    # Same format, same framing: the sizes match to the byte.
    assert len(age.encrypt(data, [i.recipient for _, i in keys[:count]])) == len(result.stdout)


@pytest.mark.parametrize("size", [0, 1, 100_000])
def test_we_open_ages_armor(keys: list[tuple[Path, Identity]], size: int) -> None:
    data = os.urandom(size)
    result = run(AGE, "-a", "-r", str(keys[0][1].recipient), stdin=data)
    assert result.stdout.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    assert age.decrypt(result.stdout, [keys[0][1]]) == data


def test_streaming_against_age(keys: list[tuple[Path, Identity]], tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_bytes(os.urandom(5 * 1024 * 1024 + 17))
    sealed = tmp_path / "sealed.age"
    with plain.open("rb") as src, sealed.open("wb") as dst:
        age.encrypt_stream(src, dst, [keys[1][1].recipient])
    result = run(AGE, "-d", "-i", str(keys[1][0]), str(sealed))
    assert hashlib.sha256(result.stdout).digest() == hashlib.sha256(plain.read_bytes()).digest()
    theirs = tmp_path / "theirs.age"
    assert run(AGE, "-r", str(keys[1][1].recipient), "-o", str(theirs), str(plain)).returncode == 0
    opened = tmp_path / "opened"
    with theirs.open("rb") as src, opened.open("wb") as dst:
        age.decrypt_stream(src, dst, [keys[1][1]])
    assert opened.read_bytes() == plain.read_bytes()


def test_wrong_identity_both_ways(keys: list[tuple[Path, Identity]]) -> None:
    ours = age.encrypt(b"for key 0 only", [keys[0][1].recipient])
    assert run(AGE, "-d", "-i", str(keys[1][0]), stdin=ours).returncode != 0
    theirs = run(AGE, "-r", str(keys[0][1].recipient), stdin=b"for key 0 only").stdout
    with pytest.raises(NoIdentityMatchError):
        age.decrypt(theirs, [keys[1][1]])


@pytest.mark.parametrize("where", ["header", "nonce", "payload", "tag"])
def test_flipped_byte_both_ways(keys: list[tuple[Path, Identity]], where: str) -> None:
    data = os.urandom(70_000)
    path, identity = keys[0]
    for sealed in [
        age.encrypt(data, [identity.recipient]),
        run(AGE, "-r", str(identity.recipient), stdin=data).stdout,
    ]:
        header_end = sealed.index(b"\n", sealed.index(b"\n---") + 1) + 1
        position = {
            "header": 30,
            "nonce": header_end + 3,
            "payload": header_end + 16 + 1000,
            "tag": len(sealed) - 1,
        }[where]
        changed = bytearray(sealed)
        changed[position] ^= 0x80
        assert run(AGE, "-d", "-i", str(path), stdin=bytes(changed)).returncode != 0
        with pytest.raises(AgeError):
            age.decrypt(bytes(changed), [identity])


def test_truncation_both_ways(keys: list[tuple[Path, Identity]]) -> None:
    path, identity = keys[0]
    sealed = age.encrypt(os.urandom(3 * 65536), [identity.recipient])
    cut = sealed[: -(65536 + 16)]  # drop the whole final chunk
    assert run(AGE, "-d", "-i", str(path), stdin=cut).returncode != 0
    with pytest.raises(PayloadError):
        age.decrypt(cut, [identity])


def test_ages_own_example_file() -> None:
    """The example file shipped with age's sources, and the key in age's own test."""
    example = (AGE_SOURCES / "testdata" / "example.age").read_bytes()
    source = (AGE_SOURCES / "age_test.go").read_text()
    key = re.search(r'privateKey = "(AGE-SECRET-KEY-1[0-9A-Z]+)"', source)
    assert key, "age's test key not found in its sources"
    assert age.decrypt(example, [key.group(1)]) == b"Black lives matter."


STREAM_SIZES = [0, 1, 65536, 1024 * 1024, 1024 * 1024 + 1, 3 * 1024 * 1024 + 65535]


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
@pytest.mark.parametrize("size", STREAM_SIZES)
def test_age_opens_streams_sealed_by_several_threads(
    keys: list[tuple[Path, Identity]], tmp_path: Path, size: int, threads: int
) -> None:
    data = os.urandom(size)
    source, sealed = tmp_path / "in", tmp_path / "in.age"
    source.write_bytes(data)
    with source.open("rb") as src, sealed.open("wb") as dst:
        written = age.encrypt_stream(src, dst, [keys[0][1].recipient], threads=threads)
    assert written == sealed.stat().st_size
    result = run(AGE, "-d", "-i", str(keys[0][0]), str(sealed))
    assert result.returncode == 0, result.stderr
    assert result.stdout == data

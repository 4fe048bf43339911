"""Fixtures for the sanitizer tests: the sanitizer itself (sandboxed, as the relay runs it),
and the real-world files of the test suites of Pillow, mutagen and pillow-heif (their source
distributions) and of ExifTool, TagLib and Exiv2 (their source archives in Debian),
downloaded once per machine into a cache outside the repository. If they cannot be
downloaded the tests that need them fail (not skip): a judge that quietly looks at nothing
is no judge."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from relay.sanitize import SNIFF_BYTES, Detected, Report, Stripping, detect

PILLOW_VERSION = "13.0.0"
MUTAGEN_VERSION = "1.48.1"
PILLOW_HEIF_VERSION = "1.8.1"  # its tests/images: HEIC and HEIF from phones and cameras
SDISTS = [
    f"Pillow=={PILLOW_VERSION}",
    f"mutagen=={MUTAGEN_VERSION}",
    f"pillow_heif=={PILLOW_HEIF_VERSION}",
]
CACHE = Path(os.environ.get("AMANAH_TEST_CACHE", Path.home() / ".cache" / "amanah-tests"))
DEBIAN_POOL = "https://deb.debian.org/debian/pool/main/"


@dataclass(frozen=True)
class DebianSource:
    """A project's test files, from its source archive in Debian's pool (bookworm's; not
    on PyPI), pinned by SHA-256."""

    path: str  # in the pool
    sha256: str
    folder: str  # the test files' folder in the archive
    at_least: int  # files expected there


DEBIAN_SOURCES = [
    # ExifTool's t/images: pictures from some forty makers of cameras and phones (maker
    # notes, every kind of JPEG APPn segment, a Multi-Picture JPEG) and metadata-only stubs
    # of audio and video containers.
    DebianSource(
        "libi/libimage-exiftool-perl/libimage-exiftool-perl_12.57+dfsg.orig.tar.xz",
        "9de7ccd6ed6adf92038c8d943b1960d087b58c00b3924d19f61a1d774b7610fc",
        "/t/images/",
        150,
    ),
    # TagLib's tests/data: MP3s with LAME, Xing and APE frames, ID3 v2.2 to 2.4, M4A with
    # cover art, WAVs with every kind of chunk, FLAC, Ogg, Opus; many broken on purpose.
    DebianSource(
        "t/taglib/taglib_1.13.orig.tar.gz",
        "58f08b4db3dc31ed152c04896ee9172d22052bc7ef12888028c01d8b1d60ade0",
        "/tests/data/",
        90,
    ),
    # Exiv2's test/data: pictures from cameras, and the proofs of concept of its security
    # bugs (files made to crash a metadata parser).
    DebianSource(
        "e/exiv2/exiv2_0.27.6.orig.tar.gz",
        "f16ee5ff08b6994c66106109417857f13e711fca100ac43c6a403d4f02b59602",
        "/test/data/",
        500,
    ),
]


@pytest.fixture(scope="session")
def stripping() -> Stripping:
    return Stripping()


def clean(stripping: Stripping, data: bytes) -> tuple[Detected, Report, bytes]:
    """Detects and cleans `data` the way the relay does. Raises Refused."""
    detected = detect(data[:SNIFF_BYTES])
    out = io.BytesIO()
    report = stripping.clean(detected, io.BytesIO(data), out)
    return detected, report, out.getvalue()


def _download(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    names = [w.replace("==", "-").lower() + ".tar.gz" for w in SDISTS]
    archives = [folder / name for name in names]
    if not all(a.exists() for a in archives):
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
             *SDISTS, "-d", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )  # fmt: skip
        if result.returncode != 0 or not all(a.exists() for a in archives):
            pytest.fail(
                "could not download the sdists of real-world test files ("
                + ", ".join(SDISTS)
                + "): "
                + result.stderr[-500:],
                pytrace=False,
            )
    return archives


def _debian_archive(source: DebianSource, folder: Path) -> Path:
    archive = folder / source.path.rsplit("/", 1)[1]
    if not archive.exists():
        folder.mkdir(parents=True, exist_ok=True)
        address = DEBIAN_POOL + source.path
        try:
            with urllib.request.urlopen(address, timeout=300) as response:  # noqa: S310 - fixed https
                data = response.read()
        except OSError as exc:
            pytest.fail(f"could not download {address}: {exc}", pytrace=False)
        if hashlib.sha256(data).hexdigest() != source.sha256:
            pytest.fail(f"{address} is not the archive pinned", pytrace=False)
        archive.write_bytes(data)
    return archive


def _extract(archive: Path, folder: Path, wanted: tuple[str, ...]) -> None:
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and any(w in m.name for w in wanted)]
        tar.extractall(folder, members=members, filter="data")


@pytest.fixture(scope="session")
def real_world_files() -> list[Path]:
    """Test files with metadata from the Pillow, mutagen and pillow-heif sdists, extracted
    once."""
    folder = CACHE / "sdists"
    extracted = CACHE / "real-world"
    marker = extracted / ".done"
    if not marker.exists() or marker.read_text() != " ".join(SDISTS):
        for archive in _download(folder):
            _extract(archive, extracted, ("/Tests/images/", "/tests/data/", "/tests/images/"))
        marker.write_text(" ".join(SDISTS))
    files = sorted(p for p in extracted.rglob("*") if p.is_file() and p.name != ".done")
    assert len(files) > 500, "the sdists hold fewer test files than expected"
    return files


@pytest.fixture(scope="session")
def debian_source_files() -> list[Path]:
    """The test files of ExifTool, TagLib and Exiv2 (DEBIAN_SOURCES), extracted once."""
    files: list[Path] = []
    for source in DEBIAN_SOURCES:
        extracted = CACHE / "real-world-debian" / source.path.rsplit("/", 1)[1]
        if not (extracted / ".done").exists():
            _extract(_debian_archive(source, CACHE / "sdists"), extracted, (source.folder,))
            (extracted / ".done").write_text("ok")
        theirs = sorted(p for p in extracted.rglob("*") if p.is_file() and p.name != ".done")
        assert len(theirs) >= source.at_least, f"fewer test files than expected: {source.path}"
        files += theirs
    return files

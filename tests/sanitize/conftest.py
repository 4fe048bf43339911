"""Fixtures for the sanitizer tests: the sanitizer itself (sandboxed, as the relay runs it),
and the real-world files of the Pillow, mutagen and pillow-heif source distributions and of
ExifTool's own test suite, downloaded once per machine into a cache outside the repository. If they
cannot be downloaded the tests that need them fail (not skip): a judge that quietly looks
at nothing is no judge."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import urllib.request
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
# ExifTool's t/images: files from some forty makers of cameras and phones (maker notes, every
# kind of JPEG APPn segment, Multi-Picture JPEGs) and metadata-only stubs of audio and video
# containers. Not on PyPI; Debian's source package holds them (bookworm's, pinned by hash).
EXIFTOOL_SOURCE = (
    "https://deb.debian.org/debian/pool/main/libi/libimage-exiftool-perl/"
    "libimage-exiftool-perl_12.57+dfsg.orig.tar.xz"
)
EXIFTOOL_SHA256 = "9de7ccd6ed6adf92038c8d943b1960d087b58c00b3924d19f61a1d774b7610fc"


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


def _exiftool_archive(folder: Path) -> Path:
    archive = folder / EXIFTOOL_SOURCE.rsplit("/", 1)[1]
    if not archive.exists():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(EXIFTOOL_SOURCE, timeout=120) as response:  # noqa: S310 - a fixed https address
                data = response.read()
        except OSError as exc:
            pytest.fail(f"could not download ExifTool's test files: {exc}", pytrace=False)
        if hashlib.sha256(data).hexdigest() != EXIFTOOL_SHA256:
            pytest.fail("ExifTool's source archive is not the one pinned", pytrace=False)
        archive.write_bytes(data)
    return archive


def _extract(archive: Path, folder: Path, wanted: tuple[str, ...]) -> None:
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and any(w in m.name for w in wanted)]
        tar.extractall(folder, members=members, filter="data")


@pytest.fixture(scope="session")
def real_world_files() -> list[Path]:
    """Test files with metadata from the Pillow, mutagen and pillow-heif sdists and from
    ExifTool's source, extracted once."""
    folder = CACHE / "sdists"
    extracted = CACHE / "real-world"
    marker = extracted / ".done"
    if not marker.exists() or marker.read_text() != " ".join(SDISTS):
        for archive in _download(folder):
            _extract(archive, extracted, ("/Tests/images/", "/tests/data/", "/tests/images/"))
        marker.write_text(" ".join(SDISTS))
    files = sorted(p for p in extracted.rglob("*") if p.is_file() and p.name != ".done")
    assert len(files) > 500, "the sdists hold fewer test files than expected"
    exiftool = CACHE / "real-world-exiftool"
    if not (exiftool / ".done").exists():
        _extract(_exiftool_archive(folder), exiftool, ("/t/images/",))
        (exiftool / ".done").write_text("ok")
    theirs = sorted(p for p in exiftool.rglob("*") if p.is_file() and p.name != ".done")
    assert len(theirs) > 150, "ExifTool's source holds fewer test files than expected"
    return files + theirs

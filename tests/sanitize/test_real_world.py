"""Real-world files with metadata, from the test suites of Pillow, mutagen and pillow-heif
(their sdists on PyPI) and of ExifTool, TagLib and Exiv2 (Debian's source archives),
downloaded at test time, never committed. Each file of a type the sanitizer supports must
come out clean by the judge, or be refused; a refusal is never a pass-through. The default
run takes the files whose names say they hold metadata; the `slow` run, all (two at a
time: each is a worker process of its own, and the machine has two cores)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from relay.sanitize import SNIFF_BYTES, Stripping, detect
from relay.sanitize.errors import Refused
from relay.sanitize.sandbox import SUPPORTED
from tests.sanitize import judge
from tests.sanitize.conftest import clean

METADATA_NAMES = re.compile(r"exif|xmp|iptc|gps|orient|icc|tag|id3|ape|lyric|comment|meta", re.I)
# Files that must be cleaned (not merely refused): common, well-formed, full of metadata.
MUST_CLEAN = {
    "exif_gps.jpg",
    "exif-200dpcm.jpg",
    "iptc.jpg",
    "xmp_test.jpg",
    "hopper_orientation_6.webp",
    "exif.png",
    "exif.avif",
    "silence-44-s.mp3",
    "silence-44-s.flac",
    "empty.ogg",
    "has-tags.m4a",  # FAAC's name ("libfaac 1.24") in its first AAC frame goes (aac.py)
    # Multi-Picture JPEGs (a Fujifilm 3D camera's two views; Pillow's own): the first image
    # is kept (in the `slow` run only: their names do not say metadata).
    "fujifilm.mpo",
    "sugarshack.mpo",
    "frozenpond.mpo",
    # ExifTool's: a picture holding every kind of APPn segment and a second image (MPF);
    # pictures from cameras, their maker notes; a TIFF; an Ogg Opus.
    "ExifTool.jpg",
    "GPS.jpg",
    "IPTC.jpg",
    "XMP.jpg",
    "Canon1DmkIII.jpg",
    "FLIR.jpg",
    "Minolta.jpg",
    "ExifTool.tif",
    "Opus.opus",
    # pillow-heif's: HEIF from a Sony camera (turned by its irot box), a Xiaomi phone, an
    # iPhone's spatial photo; EXIF, XMP and IPTC in a HEIC. A GIF whose frames repeat.
    "guitar_cw90.hif",
    "xiaomi.heic",
    "spatial_photo.heic",
    "L_exif_xmp_iptc.heic",
    "chi.gif",
    # TagLib's: APE and ID3v2 tags on one MP3; WAVs with duplicate INFO chunks, with a fact
    # chunk, of A-law and of 64-bit float samples; cover art in an M4A; an Opus file.
    "ape-id3v2.mp3",
    "duplicate_tags.wav",
    "pcm_with_fact_chunk.wav",
    "alaw.wav",
    "float64.wav",
    "covr-junk.m4a",
    "correctness_gain_silent_output.opus",
    # Exiv2's: pictures under 8 pixels a side; a PNG whose ICC profile inflates past 1 MiB.
    "exiv2-bug1080.jpg",
    "FujiTagsDRangeAutoRating1.jpg",
    "ReaganLargePng.png",
}


def _judge_one(stripping: Stripping, path: Path, tmp_path: Path) -> str:
    data = path.read_bytes()
    if detect(data[:SNIFF_BYTES]).mime not in SUPPORTED:
        return "unsupported"
    try:
        detected, _, out = clean(stripping, data)
    except Refused as refused:
        assert path.name not in MUST_CLEAN, f"{path.name} refused: {refused.reason}"
        return "refused"
    cleaned = tmp_path / f"{path.name}.cleaned.{detected.extension}"
    cleaned.write_bytes(out)
    assert judge.unexpected_tags(cleaned) == {}, path.name
    assert judge.strings_found(out, judge.identifying_strings(path)) == set(), path.name
    assert judge.encoder_strings(out) == set(), path.name
    if detected.kind in ("audio", "video"):
        assert judge.ffprobe_problems(cleaned) == [], path.name
    return "cleaned"


def _run(stripping: Stripping, files: list[Path], tmp_path: Path) -> dict[str, list[str]]:
    outcome: dict[str, list[str]] = {"cleaned": [], "refused": [], "unsupported": []}
    failures = []

    def judged(numbered: tuple[int, Path]) -> tuple[Path, str | AssertionError]:
        number, path = numbered
        folder = tmp_path / str(number)  # names repeat across the suites
        folder.mkdir()
        try:
            return path, _judge_one(stripping, path, folder)
        except AssertionError as failure:  # judged all, reported together
            return path, failure

    with ThreadPoolExecutor(max_workers=2) as pool:
        for path, result in pool.map(judged, enumerate(files)):
            if isinstance(result, AssertionError):
                detail = " ".join(str(result).split())[:300]
                failures.append(f"{path.parent.name}/{path.name}: {detail}")
            else:
                outcome[result].append(path.name)
    assert failures == [], failures
    return outcome


@pytest.fixture
def files(real_world_files: list[Path], debian_source_files: list[Path]) -> list[Path]:
    return real_world_files + debian_source_files


def test_real_world_files_with_metadata(
    stripping: Stripping, files: list[Path], tmp_path: Path
) -> None:
    chosen = [p for p in files if METADATA_NAMES.search(p.name)]
    assert len(chosen) > 50
    outcome = _run(stripping, chosen, tmp_path)
    assert MUST_CLEAN <= set(outcome["cleaned"]) | {
        n for n in MUST_CLEAN if n not in {p.name for p in chosen}
    }
    assert len(outcome["cleaned"]) >= 40, outcome


@pytest.mark.slow
def test_every_real_world_file(stripping: Stripping, files: list[Path], tmp_path: Path) -> None:
    outcome = _run(stripping, files, tmp_path)
    names = {p.name for p in files}
    assert MUST_CLEAN & names <= set(outcome["cleaned"])
    assert len(outcome["cleaned"]) >= 500, {k: len(v) for k, v in outcome.items()}

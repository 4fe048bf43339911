"""FLAC, decoded and encoded again in the worker, streamed (flac.py, video.py), judged by the
reference implementation: files made by libFLAC's own encoder (Debian's `flac`, 8 to 32
bits), results tested by its decoder (`flac -t`: every frame's checksum and the MD5 of the
samples) and listed by `metaflac`; the samples compared as libFLAC decodes them."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import av
import pytest
from mutagen.flac import FLAC, MetadataBlock, Picture

from relay.sanitize import Stripping, flac, video
from relay.sanitize.errors import Malformed
from relay.sanitize.media import MediaError
from relay.sanitize.sandbox import Sandboxed
from tests.sanitize import judge, samples
from tests.sanitize.conftest import clean


class _Application(MetadataBlock):
    """An APPLICATION block (type 2): an editor's own data, here a readable string."""

    code = 2


def _run(*command: str) -> bytes:
    return subprocess.run(command, capture_output=True, check=True).stdout


def _reference_flac(folder: Path, bits: int, channels: int, seconds: int) -> Path:
    """A FLAC made by libFLAC from noise of `bits` bits, with tags, a picture, a cue sheet,
    seek points and an APPLICATION block."""
    raw = folder / f"in-{bits}.raw"
    fmt = {8: "s8", 16: "s16le", 24: "s24le", 32: "s32le"}[bits]
    noise = f"anoisesrc=d={seconds}:r=44100:a=0.5"  # white: it hardly compresses
    samples.ffmpeg("-f", "lavfi", "-i", noise, "-ac", str(channels), "-f", fmt, str(raw))
    path = folder / f"in-{bits}.flac"
    _run(
        "flac", "-s", "-f", "--force-raw-format", "--endian=little", "--sign=signed",
        f"--channels={channels}", f"--bps={bits}", "--sample-rate=44100",
        f"--tag=ARTIST={samples.PERSON}", f"--tag=LOCATION={samples.PLACE}",
        "--seekpoint=1s", "-o", str(path), str(raw),
    )  # fmt: skip
    cues = folder / "cues.txt"
    cues.write_text(f'TITLE "{samples.SERIAL}"\nFILE "x.wav" WAVE\n  TRACK 01 AUDIO\n'
                    "    INDEX 01 00:00:00\n")  # fmt: skip
    _run("metaflac", f"--import-cuesheet-from={cues}", str(path))
    tagged = FLAC(path)
    picture = Picture()
    picture.type, picture.mime = 3, "image/png"
    picture.data = b"\x89PNG" + samples.SERIAL.encode()
    tagged.add_picture(picture)
    tagged.metadata_blocks.append(_Application(b"Amnh" + samples.MODEL.encode()))
    tagged.save()
    return path


def _blocks(path: Path) -> list[str]:
    """The names of its metadata blocks, in order."""
    listing = _run("metaflac", "--list", "--no-utf8-convert", str(path)).decode()
    types = [line for line in listing.splitlines() if line.startswith("  type:")]
    return [line.split("(")[1].rstrip(")") for line in types]


def _streaminfo(path: Path) -> list[str]:
    shown = ("--show-bps", "--show-total-samples", "--show-md5sum", "--show-channels")
    return _run("metaflac", *shown, str(path)).decode().split()


def _decoded(path: Path) -> bytes:
    """The samples as libFLAC decodes them: little-endian, interleaved."""
    return _run("flac", "-s", "-d", "-c", "--force-raw-format", "--endian=little",
                "--sign=signed", str(path))  # fmt: skip


@pytest.mark.parametrize(("bits", "channels"), [(8, 1), (16, 2), (24, 2), (24, 6), (32, 2)])
def test_a_flac_from_the_reference_encoder_comes_out_whole_and_bare(
    bits: int, channels: int, stripping: Stripping, tmp_path: Path
) -> None:
    """Every metadata block but STREAMINFO goes (the muxer adds an empty comment block,
    vendor "ffmpeg", and padding); the result passes libFLAC's test and holds its STREAMINFO
    totals (sample count, MD5: written last, so the file is encoded twice and the totals
    must reach the start of what was sent: it is larger than the muxer's buffer); its
    samples are the input's. FFmpeg writes 8 bits as 16: the same samples, 256 times as
    large (as FFmpeg decodes both)."""
    source = _reference_flac(tmp_path, bits, channels, seconds=max(8, 48 // (bits // 8 * channels)))
    assert source.stat().st_size > 2 * video.IO_BUFFER
    assert {"PICTURE", "APPLICATION", "CUESHEET", "SEEKTABLE"} <= set(_blocks(source))
    detected, report, data = clean(stripping, source.read_bytes())
    cleaned = tmp_path / "cleaned.flac"
    cleaned.write_bytes(data)
    assert report.mime == "audio/flac" and detected.extension == "flac"
    assert flac.ENCODER_NAME in report.removed and "cover art" in report.removed
    assert _blocks(cleaned) == ["STREAMINFO", "VORBIS_COMMENT", "PADDING"]
    _run("flac", "-s", "-t", str(cleaned))
    before, after = _decoded(source), _decoded(cleaned)
    if bits == 8:
        assert _streaminfo(cleaned)[0] == "16"
        assert after[1::2] == before and after[0::2] == bytes(len(before))
    else:
        assert _streaminfo(cleaned) == _streaminfo(source)
        assert after == before
    assert judge.unexpected_tags(cleaned) == {}
    secrets = judge.identifying_strings(source) | set(samples.MARKERS)
    assert judge.strings_found(data, secrets) == set()


def _damaged(source: bytes, how: str, folder: Path) -> bytes:
    data = bytearray(source)
    info = data.index(b"\x00\x00\x00\x22") + 4  # STREAMINFO's body, after its block header
    if how == "frame":
        at = len(data) * 2 // 3
        data[at : at + 16] = bytes(16)
    elif how == "md5":
        data[info + 20] ^= 0x01
    elif how == "count":  # one sample more than the frames hold
        total = int.from_bytes(data[info + 14 : info + 18], "big")
        data[info + 14 : info + 18] = (total + 1).to_bytes(4, "big")
    elif how == "cut":
        del data[-1000:]
    elif how == "frame-uncounted":  # a frame gone whole, in a FLAC of no totals
        data[info + 13] &= 0xF0
        data[info + 14 : info + 34] = bytes(20)
        with av.open(io.BytesIO(source), "r", format="flac") as container:
            frames = [(p.pos, p.size) for p in container.demux() if p.size]
        start, length = frames[len(frames) // 2]
        assert start is not None
        del data[start : start + length]
    else:  # trimmed by copying frames (ffmpeg -c copy -t): STREAMINFO still the whole's
        (folder / "whole.flac").write_bytes(source)
        samples.ffmpeg("-i", str(folder / "whole.flac"), "-map", "0:a", "-t", "3", "-c", "copy",
                       str(folder / "trimmed.flac"))  # fmt: skip
        return (folder / "trimmed.flac").read_bytes()
    return bytes(data)


@pytest.mark.parametrize("how", ["frame", "frame-uncounted", "md5", "count", "cut", "trimmed"])
def test_a_flac_that_is_not_what_its_streaminfo_says_is_refused(
    how: str, stripping: Stripping, tmp_path: Path
) -> None:
    """Sixteen bytes of a frame zeroed (FFmpeg's parser drops that frame), the MD5 or the
    sample count changed, the end cut, or the file trimmed by a copy that left the whole
    file's STREAMINFO: libFLAC's test fails each, and each is refused. A frame taken out
    whole from a FLAC whose STREAMINFO counts nothing passes libFLAC's test (it does not
    follow frame numbers), and is refused too: its frames' times leave a gap."""
    source = _reference_flac(tmp_path, 16, 2, seconds=8).read_bytes()
    damaged = _damaged(source, how, tmp_path)
    (tmp_path / "damaged.flac").write_bytes(damaged)
    tested = subprocess.run(["flac", "-s", "-t", str(tmp_path / "damaged.flac")],
                            capture_output=True)  # fmt: skip
    assert (tested.returncode == 0) == (how == "frame-uncounted")
    with pytest.raises(Malformed):
        clean(stripping, damaged)


def test_a_large_flac_streams(tmp_path: Path) -> None:
    """Through the relay's streamed path (not the memfds of before): the result is sent as
    it is made."""
    source = _reference_flac(tmp_path, 16, 2, seconds=20).read_bytes()
    out = io.BytesIO()
    outcome = Sandboxed().strip("audio/flac", io.BytesIO(source), out)
    assert outcome.mime == "audio/flac" and outcome.original_size == len(source)
    assert out.getvalue()[:4] == b"fLaC"


def _frame(values: list[int]) -> av.AudioFrame:
    """Mono 16-bit samples."""
    frame = av.AudioFrame(format="s16", layout="mono", samples=len(values))
    _fill(frame.planes[0], values)
    return frame


def _fill(plane: av.audio.plane.AudioPlane, values: list[int]) -> None:
    """Writes 16-bit `values` into `plane`, then zeros to the end of its buffer (aligned:
    longer than its samples)."""
    data = b"".join(v.to_bytes(2, "little", signed=True) for v in values)
    plane.update(data + bytes(plane.buffer_size - len(data)))


def _record(bits: int, total: int, md5: bytes) -> bytes:
    """A STREAMINFO body: 44.1 kHz, mono, `bits` bits, `total` samples, `md5`."""
    packed = 44100 << 44 | 0 << 41 | (bits - 1) << 36 | total
    return bytes(10) + packed.to_bytes(8, "big") + md5


def test_the_check_wants_every_sample_and_the_md5() -> None:
    """Pure: flac.check on hashed frames and STREAMINFO records (no files)."""
    md5 = bytes(range(16))

    def hashed(*frames: list[int]) -> flac.Samples:
        digest = flac.Samples()
        for values in frames:
            digest.add(_frame(values))
        return digest

    source = hashed([1, 2, 3], [4, 5])
    assert flac.streaminfo(_record(16, 5, md5)) == flac.StreamInfo(16, 5, md5)
    flac.check(_record(16, 5, md5), source, _record(16, 5, md5), hashed([1, 2], [3, 4, 5]))
    flac.check(_record(16, 0, bytes(16)), source, _record(16, 5, md5), hashed([1, 2, 3, 4, 5]))
    flac.check(_record(8, 5, md5), source, _record(16, 5, bytes(16)), hashed([1, 2, 3, 4, 5]))
    failures = [
        (_record(16, 6, md5), _record(16, 5, md5), hashed([1, 2, 3, 4, 5])),  # one missing
        (_record(16, 5, md5), _record(16, 5, md5), hashed([1, 2, 3, 4, 6])),  # one changed
        (_record(16, 5, md5), _record(16, 5, md5), hashed([1, 2, 3, 4])),  # one lost
        (_record(16, 5, md5), _record(16, 4, md5), hashed([1, 2, 3, 4, 5])),  # miscounted
        (_record(16, 5, md5), _record(16, 5, bytes(16)), hashed([1, 2, 3, 4, 5])),  # MD5
    ]
    for record, written, result in failures:
        with pytest.raises(MediaError):
            flac.check(record, source, written, result)


def test_a_planar_frame_is_hashed_per_channel() -> None:
    """Frames cut at other places hash the same, channel by channel; a plane's buffer past
    its samples (aligned) is not hashed."""
    one, two = flac.Samples(), flac.Samples()
    one.add(_planar([1, 2, 3], [7, 8, 9]))
    for frame in (_planar([1], [7]), _planar([2, 3], [8, 9])):
        two.add(frame)
    assert one.digest() == two.digest() and one.count == 3
    other = flac.Samples()
    other.add(_planar([1, 2, 3], [7, 8, 0]))
    assert other.digest() != one.digest()


def _planar(left: list[int], right: list[int]) -> av.AudioFrame:
    frame = av.AudioFrame(format="s16p", layout="stereo", samples=len(left))
    for plane, values in zip(frame.planes, (left, right), strict=True):
        _fill(plane, values)
    return frame

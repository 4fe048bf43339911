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
from relay.sanitize.rewrites import Rewrite, RewriteError
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


def _frame_sizes(path: Path) -> list[int]:
    """STREAMINFO's smallest and largest frame size."""
    shown = _run("metaflac", "--show-min-framesize", "--show-max-framesize", str(path))
    return [int(size) for size in shown.split()]


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
    totals (sample count, MD5), which must reach the start of what was sent (it is larger
    than the muxer's buffer); its samples are the input's. Where the result is as wide,
    the input's totals are its own, sent up front, and the file is encoded once: its frame
    sizes are 0, "not known". FFmpeg writes 8 bits as 16: the same samples, 256 times as
    large (as FFmpeg decodes both), and a new MD5, so that file is encoded twice, and its
    STREAMINFO gets the frame sizes of the first pass."""
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
        assert 0 < _frame_sizes(cleaned)[0] <= _frame_sizes(cleaned)[1]
    else:
        assert _streaminfo(cleaned) == _streaminfo(source)
        assert after == before
        assert _frame_sizes(cleaned) == [0, 0]
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


def test_a_flac_that_counts_nothing_gets_its_totals(stripping: Stripping, tmp_path: Path) -> None:
    """A FLAC whose STREAMINFO gives no count and no MD5 (a streaming encoder's): the file
    is encoded twice, and the result's STREAMINFO holds the count and the MD5 of its
    samples (FFmpeg's encoder computes them, and they equal the ones libFLAC wrote before
    they were wiped), and the frame sizes of the first pass."""
    path = _reference_flac(tmp_path, 24, 2, seconds=8)
    whole = _streaminfo(path)
    data = bytearray(path.read_bytes())
    info = data.index(b"\x00\x00\x00\x22") + 4
    data[info + 13] &= 0xF0
    data[info + 14 : info + 34] = bytes(20)
    uncounted = tmp_path / "uncounted.flac"
    uncounted.write_bytes(data)
    assert _streaminfo(uncounted) == ["24", "0", "0" * 32, "2"]
    _run("flac", "-s", "-t", str(uncounted))
    _, _, out = clean(stripping, bytes(data))
    cleaned = tmp_path / "cleaned.flac"
    cleaned.write_bytes(out)
    assert _streaminfo(cleaned) == whole
    assert 0 < _frame_sizes(cleaned)[0] <= _frame_sizes(cleaned)[1]
    _run("flac", "-s", "-t", str(cleaned))
    assert _decoded(cleaned) == _decoded(path)


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


def _record(bits: int, total: int, md5: bytes, frame_sizes: tuple[int, int] = (0, 0)) -> bytes:
    """A STREAMINFO body: blocks of 4096 samples, `frame_sizes`, 44.1 kHz, mono, `bits`
    bits, `total` samples, `md5`."""
    sizes = b"".join(size.to_bytes(3, "big") for size in frame_sizes)
    packed = 44100 << 44 | 0 << 41 | (bits - 1) << 36 | total
    return bytes.fromhex("10001000") + sizes + packed.to_bytes(8, "big") + md5


def test_the_check_wants_every_sample_and_the_md5() -> None:
    """Pure: flac.check on hashed frames and STREAMINFO records (no files): the input's
    record, the result's as written, the encoder's last, the result's samples."""
    md5, other = bytes(range(16)), bytes(range(1, 17))
    sized = _record(16, 5, md5, (12, 40))  # as the encoder ends it; up front: sizes of 0

    def hashed(*frames: list[int]) -> flac.Samples:
        digest = flac.Samples()
        for values in frames:
            digest.add(_frame(values))
        return digest

    source = hashed([1, 2, 3], [4, 5])
    assert flac.streaminfo(sized) == flac.StreamInfo(16, 5, md5)
    passing = [
        (_record(16, 5, md5), sized, sized, hashed([1, 2], [3, 4, 5])),  # encoded twice
        (_record(16, 5, md5), _record(16, 5, md5), sized, hashed([1, 2, 3, 4, 5])),  # once
        (_record(16, 0, bytes(16)), sized, sized, hashed([1, 2, 3, 4, 5])),  # none counted
        (_record(8, 5, other), sized, sized, hashed([1, 2, 3, 4, 5])),  # 8 bits written as 16
    ]
    for record, written, final, result in passing:
        flac.check(record, source, written, final, result)
    failures = [
        (_record(16, 6, md5), sized, sized, hashed([1, 2, 3, 4, 5])),  # one missing
        (_record(16, 5, md5), sized, sized, hashed([1, 2, 3, 4, 6])),  # one changed
        (_record(16, 5, md5), sized, sized, hashed([1, 2, 3, 4])),  # one lost
        (_record(16, 5, md5), sized, _record(16, 4, md5), hashed([1, 2, 3, 4, 5])),  # not all
        (_record(16, 5, md5), _record(16, 4, md5), sized, hashed([1, 2, 3, 4, 5])),  # miscounted
        (_record(16, 5, md5), _record(16, 5, other), sized, hashed([1, 2, 3, 4, 5])),  # said
        (_record(16, 5, other), sized, sized, hashed([1, 2, 3, 4, 5])),  # the MD5 differs
    ]
    for record, written, final, result in failures:
        with pytest.raises(MediaError):
            flac.check(record, source, written, final, result)


def test_totals_up_front_only_where_they_are_known() -> None:
    """Pure: flac.up_front gives the input's count and MD5, and frame sizes of 0, where the
    file at STREAMINFO's place would hold them; only where the input counts its samples,
    gives their MD5 and is as wide as the result. flac.wrote_back lets the muxer write
    back inside STREAMINFO only."""
    md5 = bytes(range(16))
    big = (1 << 36) - 1  # STREAMINFO's largest count: its top bits share a byte with the width
    for bits, total in ((16, 5), (24, big), (32, 1 << 32)):
        header = bytearray(b"fLaC\x80\x00\x00\x22" + _record(bits, 0, bytes(16), (9, 9)))
        for rewrite in flac.up_front(_record(bits, total, md5)) or []:
            header[rewrite.offset : rewrite.offset + len(rewrite.data)] = rewrite.data
        assert header[8:] == _record(bits, total, md5)
    for record in (_record(16, 0, md5), _record(16, 5, bytes(16)), _record(8, 5, md5),
                   _record(20, 5, md5)):  # fmt: skip
        assert flac.up_front(record) is None
    flac.wrote_back([Rewrite(8, bytes(34))])
    for outside in (Rewrite(7, bytes(34)), Rewrite(8, bytes(35)), Rewrite(100, b"x")):
        with pytest.raises(RewriteError):
            flac.wrote_back([outside])


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

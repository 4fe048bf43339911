"""Which codecs a video or audio file may hold to be cleaned, and what goes from inside the
AV1 bitstream: metadata OBUs (obu.py). A stream of a codec the sanitizer cannot vouch for
(PNG or DV frames, MP2, AC-3, Theora) makes the file unsupported: refused, or forwarded
unchanged and flagged where the operator chose that; never passed as cleaned."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.sanitize import Stripping, media, obu
from relay.sanitize.errors import Unsupported
from tests.sanitize import judge, samples
from tests.sanitize.conftest import clean

SEQUENCE = bytes([(1 << 3) | 0x02, 3, 0x00, 0x00, 0x0A])  # a (dummy) sequence header OBU
FRAME = bytes([(6 << 3) | 0x02, 4, 0x10, 0x20, 0x30, 0x40])
METADATA = bytes([(5 << 3) | 0x02, 5, 4, 0x26, 0x41, 0x42, 0x80])  # ITU-T T.35, "AB"
EXTENDED_METADATA = bytes([(5 << 3) | 0x06, 0x00, 2, 5, 0x80])  # timecode, extension byte


def test_metadata_obus_go_and_the_rest_stays_byte_for_byte() -> None:
    packet = SEQUENCE + METADATA + FRAME + EXTENDED_METADATA
    cleaned, dropped = obu.without_metadata(packet)
    assert (bytes(cleaned), dropped) == (SEQUENCE + FRAME, 2)
    unsized_last = FRAME + bytes([6 << 3, 0x55, 0x66])  # the last OBU without a size
    assert obu.without_metadata(METADATA + unsized_last) == (unsized_last, 1)
    plain = SEQUENCE + FRAME
    same, none = obu.without_metadata(plain)
    assert same is plain and none == 0  # not copied


def test_an_av1c_record_loses_its_metadata_obus() -> None:
    record = bytes([0x81, 0x00, 0x0C, 0x00])
    assert obu.av1c_without_metadata(record + SEQUENCE + METADATA) == (record + SEQUENCE, 1)
    with pytest.raises(obu.ObuError):
        obu.av1c_without_metadata(b"\x01\x00\x0c\x00" + SEQUENCE)  # no marker bit


@pytest.mark.parametrize(
    "packet",
    [
        bytes([0x80 | (6 << 3) | 0x02, 1, 0]),  # forbidden bit
        bytes([(6 << 3) | 0x02, 9, 0, 0]),  # size past the packet
        bytes([(6 << 3) | 0x02, 0x80, 0x80]),  # size field cut short
        bytes([(6 << 3) | 0x02]) + b"\xff" * 8 + b"\x01",  # size field over 8 bytes
        bytes([(6 << 3) | 0x06]),  # extension byte missing
    ],
)
def test_obus_that_do_not_add_up_are_errors(packet: bytes) -> None:
    with pytest.raises(obu.ObuError):
        obu.without_metadata(packet)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64))
def test_random_packets_give_obu_errors_or_fewer_bytes(data: bytes) -> None:
    try:
        cleaned, dropped = obu.without_metadata(data)
    except obu.ObuError:
        return
    assert len(cleaned) <= len(data) and (dropped > 0) == (len(cleaned) < len(data))
    assert all(kind != obu.METADATA for kind, _, _ in obu.obus(cleaned))


@pytest.mark.parametrize("name", ["av1", "av1-mp4"])
def test_av1_metadata_goes_and_every_frame_decodes_identical(
    name: str, stripping: Stripping, tmp_path: Path
) -> None:
    source = samples.SAMPLES[name][0](tmp_path)
    assert source.read_bytes().count(samples.SERIAL.encode()) >= 20  # before every frame
    detected, report, data = clean(stripping, source.read_bytes())
    cleaned = tmp_path / f"cleaned.{detected.extension}"
    cleaned.write_bytes(data)
    assert judge.strings_found(data, set(samples.MARKERS)) == set()
    assert media.OBU_NAME in report.removed
    plain = tmp_path / f"plain-{source.name}"  # the same video before the OBUs were added
    assert _frame_hashes(cleaned) == _frame_hashes(plain) != []


def _frame_hashes(path: Path) -> list[str]:
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(path), "-map", "0:v"]
        + ["-f", "framemd5", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split(",")[-1].strip() for line in out.splitlines() if not line.startswith("#")]


def _unsupported_png_mov(folder: Path) -> Path:
    """A QuickTime video of PNG frames, each carrying a text chunk."""
    frames = folder / "frames"
    frames.mkdir()
    samples.ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=5:duration=1",
                   str(frames / "f%02d.png"))  # fmt: skip
    samples.exiftool_write(frames, f"-PNG:Comment={samples.PLACE}")
    path = folder / "png.mov"
    samples.ffmpeg("-framerate", "5", "-i", str(frames / "f%02d.png"), "-c:v", "copy", str(path))
    return path


def _made(folder: Path, name: str, codec: list[str], video: str = "testsrc") -> Path:
    path = folder / name
    samples.ffmpeg(
        "-f", "lavfi", "-i", f"{video}=size=720x576:rate=25:duration=1",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=1:sample_rate=48000",
        *codec, "-shortest", str(path),
    )  # fmt: skip
    return path


UNSUPPORTED = {
    # DV writes the date and time of filming into every frame.
    "dv.avi": ["-c:v", "dvvideo", "-pix_fmt", "yuv420p", "-c:a", "pcm_s16le"],
    "mp2.mkv": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "mp2"],
    "ac3.mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "ac3"],
    "theora.mkv": ["-c:v", "libtheora", "-c:a", "libvorbis"],
}


@pytest.mark.parametrize("name", ["png.mov", *UNSUPPORTED])
def test_a_codec_that_cannot_be_vouched_for_is_unsupported(name: str, tmp_path: Path) -> None:
    if name == "png.mov":
        source = _unsupported_png_mov(tmp_path)
    else:
        source = _made(tmp_path, name, UNSUPPORTED[name])
    data = source.read_bytes()
    with pytest.raises(Unsupported):
        clean(Stripping(), data)
    detected, report, out = clean(Stripping(forward_unsupported=True), data)
    assert not report.stripped and out == data  # the operator's choice: passed on, flagged
    assert detected.kind == "video"


def test_the_codec_lists() -> None:
    assert media.codec_kept("video", "h264") and media.codec_kept("audio", "pcm_s24le")
    assert media.codec_kept("audio", "adpcm_ima_wav") and media.codec_kept("audio", "mp3")
    for kind, codec in [("video", "png"), ("video", "dvvideo"), ("audio", "mp2"),
                        ("audio", "ac3"), ("video", "theora"), ("audio", "speex")]:  # fmt: skip
        assert not media.codec_kept(kind, codec)

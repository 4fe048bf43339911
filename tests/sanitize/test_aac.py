"""aac.py: the encoder's name in a fill element that opens an AAC frame is made filler of
the same size, the decoded sound unchanged (Debian's ffmpeg judges); frames that open with
sound, fill elements of sound (dynamic range control), and frames too short for what they
announce are left as they are."""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import pytest

from relay.sanitize import Stripping, aac
from tests.sanitize.conftest import clean


def _frame(bits: str) -> bytes:
    """Bytes from a string of bits (spaces ignored), zero-padded to a whole byte."""
    bits = bits.replace(" ", "")
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big")


def _text(text: bytes) -> str:
    return "".join(f"{byte:08b}" for byte in text)


FILL = "110"  # ID_FIL


def _packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def _adts(path: Path, packets: list[bytes], tmp_path: Path) -> bytes:
    """The packets decoded by Debian's ffmpeg, in an ADTS stream (each frame's own header)
    made by PyAV from `path`'s stream."""
    out = tmp_path / "frames.aac"
    with av.open(str(path)) as source, av.open(str(out), "w", format="adts") as target:
        stream = target.add_stream_from_template(source.streams.audio[0])
        for data in packets:
            packet = av.Packet(data)
            packet.stream = stream
            target.mux(packet)
    command = ["ffmpeg", "-v", "error", "-i", str(out), "-f", "s16le", "-"]
    return subprocess.run(command, capture_output=True, check=True).stdout


def test_ffmpegs_name_goes_and_the_sound_stays(tmp_path: Path) -> None:
    path = tmp_path / "in.m4a"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=2", "-c:a", "aac",
         str(path)],
        check=True,
    )  # fmt: skip
    packets = _packets(path)
    assert b"Lavc" in packets[0]
    cleaned = [aac.without_names(p) for p in packets]
    assert [n for _, n in cleaned] == [1] + [0] * (len(packets) - 1)
    out = [bytes(data) for data, _ in cleaned]
    assert [len(p) for p in out] == [len(p) for p in packets]
    assert b"Lavc" not in b"".join(out)
    assert _adts(path, out, tmp_path) == _adts(path, packets, tmp_path)
    assert aac.without_names(out[0]) == (out[0], 0)  # filler already: nothing to count


def test_faacs_name_goes(real_world_files: list[Path], tmp_path: Path) -> None:
    """FAAC's name is also what FFmpeg's decoder reads to skip FAAC's 1024 priming samples:
    without it, FFmpeg plays those ~23 ms. The rest of the sound is unchanged."""
    (path,) = [p for p in real_world_files if p.name == "has-tags.m4a"]
    packets = _packets(path)
    out = [bytes(aac.without_names(p)[0]) for p in packets]
    assert b"libfaac" in packets[0] and b"libfaac" not in out[0]
    before, after = _adts(path, packets, tmp_path), _adts(path, out, tmp_path)
    assert after[1024 * 2 * 2 :] == before  # 16-bit stereo: the priming, then the same


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x21\x10\x04\x60\x8c\x1c",  # opens with a channel element
        _frame(FILL + "0011 1011" + "0" * 20),  # 3 bytes of dynamic range control (type 11)
        _frame(FILL + "1111 00000001" + "0000 0000" + _text(b"Lavc")),  # 15 announced, 5 held
        _frame(FILL + "1111 0"),  # an escape count cut off
    ],
    ids=["empty", "sound-first", "dynamic-range", "announces-more", "escape-cut"],
)
def test_frames_it_cannot_or_need_not_rewrite_are_left_as_they_are(data: bytes) -> None:
    assert aac.without_names(data) == (data, 0)


def test_fill_elements_in_a_row_are_each_made_filler() -> None:
    name = FILL + "0011" + "0000 0000" + _text(b"Lv")  # 3 bytes: EXT_FILL, nibble, "Lv"
    sound = "001" + "0" * 20  # a channel pair element follows: kept
    frame = _frame(name + name + sound)
    out, count = aac.without_names(frame)
    filler = FILL + "0011" + "0000 0000" + f"{aac.FILL_BYTE:08b}" * 2
    assert (out, count) == (_frame(filler + filler + sound), 2)


def test_a_video_s_aac_loses_its_name_through_the_worker(
    stripping: Stripping, tmp_path: Path
) -> None:
    path = tmp_path / "in.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:duration=2",
         "-f", "lavfi", "-i", "sine=duration=2", "-c:v", "mpeg4", "-c:a", "aac", str(path)],
        check=True,
    )  # fmt: skip
    data = path.read_bytes()
    assert b"Lavc" in data  # the AAC encoder's (MPEG-4's user data goes too: mpegvideo.py)
    _, report, out = clean(stripping, data)
    assert b"Lavc" not in out
    assert "encoder name in the AAC frames (fill element)" in report.removed

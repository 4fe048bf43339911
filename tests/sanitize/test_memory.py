"""What keeps the sanitizer's memory flat and its last gate quick: videos stream through
the worker (no copy of the file, nor of the result, is ever whole in memory), the input
memfd of the other types is emptied once nothing reads it again, and the gate's UTF-16
search finds both byte orders with one pattern where it can."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import PIPE
from typing import Any

import pytest

from relay.sanitize import SNIFF_BYTES, detect, gate, sandbox, video, worker
from relay.sanitize.sandbox import Sandboxed
from tests.relayharness import AGE
from tests.sanitize import processes, samples
from tests.sanitize.conftest import CACHE

ROOT = Path(__file__).resolve().parents[2]
MiB = 1024 * 1024
LIMIT_MIB = 150  # issue 4: relay + worker + ffmpeg, memfds included, whatever the size


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("test", 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def test_a_picture_input_memfd_is_emptied_once_read(tmp_path: Path) -> None:
    in_fd, out_fd = _memfd(samples.jpeg(tmp_path).read_bytes()), os.memfd_create("out", 0)
    try:
        assert worker.clean_image("image/jpeg", worker.Files(in_fd, out_fd))["ok"]
        assert os.fstat(in_fd).st_size == 0
        assert os.pread(out_fd, 2, 0) == b"\xff\xd8"
    finally:
        os.close(in_fd)
        os.close(out_fd)


class _CountingReader(io.BytesIO):
    """A seekable input that counts the bytes read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


def test_a_streamed_video_is_read_once_and_hashed_right(tmp_path: Path) -> None:
    """The relay hashes the input from the reads it serves: the hash is the file's, and
    the file is read about once (the index at the end is asked for before the media)."""
    data = samples.mp4(tmp_path).read_bytes()
    source, out = _CountingReader(data), io.BytesIO()
    outcome = Sandboxed().strip("video/mp4", source, out)
    assert outcome.original_sha256 == hashlib.sha256(data).hexdigest()
    assert outcome.original_size == len(data)
    assert len(data) <= source.bytes_read < 2 * len(data)
    assert out.getvalue()[4:8] == b"ftyp"


@pytest.mark.parametrize("value", ["AmanahPlace", "Café-Zürich", "مكان-سري-جدا", "東京都渋谷区"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le", "utf-16-be"])
def test_the_last_gate_finds_a_value_in_every_encoding(value: str, encoding: str) -> None:
    filler = os.urandom(3 << 20).replace(b"\x00", b"\x01")
    # Across the gate's 1 MiB window boundary, fed in pieces that cut it too; ASCII case
    # is ignored (a tag says "FAAC", the stream "libfaac"), other text is found as written.
    written = value.upper() if value.isascii() else value
    assert _found(filler[: gate.WINDOW - 5] + written.encode(encoding) + filler, value)
    assert not _found(filler, value)


def _found(data: bytes, value: str) -> bool:
    search = gate.Search({value})
    for start in range(0, len(data), 300_000):
        search.feed(data[start : start + 300_000], channel="stream")
    return search.found


def test_the_gate_finds_a_value_cut_between_two_pieces_of_one_channel() -> None:
    encoded = "AmanahPlace".encode("utf-16-le")
    search = gate.Search({"AmanahPlace"})
    assert not search.feed(b"x" * 100 + encoded[:7], channel="audio")
    assert not search.feed(encoded[7:] + b"y" * 100, channel="video")  # another channel
    assert not search.found
    assert search.feed(encoded[7:] + b"y" * 100, channel="audio")
    assert search.found


def test_latin_values_need_one_utf16_pattern() -> None:
    patterns = gate.search_patterns({"AmanahPlace", "مكان-سري-جدا"})
    assert len(patterns) == 2 + 3
    assert "amanahplace".encode("utf-16-le")[:-1] in patterns
    # Arabic in UTF-16 holds bytes in A-Z (U+0645 is 45 06): lowered as bytes, like the file.
    assert "مكان-سري-جدا".encode("utf-16-le").lower() in patterns


# --- a video larger than the memory limit, stripped as the relay strips it ----------------


def _cached(name: str, *arguments: str) -> Path:
    """CACHE/name, made once by ffmpeg with `arguments` (then the output) into a partial
    file that takes the name only when complete."""
    path = CACHE / name
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial" + path.suffix)
        samples.ffmpeg(*arguments, str(partial))
        partial.rename(path)
    return path


def _looped(name: str, clip: Path, loops: int) -> Path:
    """CACHE/name: `clip` and `loops` copies of it after it, with identifying tags."""
    return _cached(
        name, "-stream_loop", str(loops), "-i", str(clip), "-map", "0", "-c", "copy",
        *samples.FFMPEG_METADATA,
    )  # fmt: skip


def _large_video() -> Path:
    """A ~400 MB H.264/AAC MP4 with its index at the end and identifying tags: a 10 s noisy
    clip, copied five times over (made once per machine, ~5 s)."""
    clip = _cached(
        "clip-10s.mp4",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=10",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=10",
        "-vf", "noise=alls=7:allf=t", *samples.H264, "-qp", "20", "-c:a", "aac",
    )  # fmt: skip
    return _looped("video-400mb.mp4", clip, 4)


# The relay's side, in a process of its own so that its memory is what is measured: the
# video is staged (sealed to a RAM-only key), then stripped from the SealedReader into a
# SealingWriter, exactly as ingest does.
_RELAY = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from crypto.keys import Identity
from relay.sanitize import SNIFF_BYTES, Stripping, detect
from relay.staging import SealingWriter
from tests.sanitize.relaypath import stage
staged = stage(Path(sys.argv[2]), Path(sys.argv[3]))
with staged.open() as reader, open(sys.argv[4], "wb") as sink:
    detected = detect(reader.read(SNIFF_BYTES))
    sealing = SealingWriter(sink, [Identity.generate().recipient])
    report = Stripping().clean(detected, reader, sealing)
    sealing.finish()
print(json.dumps({"mime": report.mime, "size": sealing.plaintext_size,
                  "sha256": report.original_sha256, "removed": list(report.removed)}))
"""


def _resident(pid: int, memfds: dict[tuple[int, int], int]) -> int:
    """VmRSS of `pid` in bytes; adds the memfds it holds open to `memfds`."""
    processes.memfds(pid, memfds)
    return int(processes.status(pid).get("VmRSS", 0)) * 1024


class _Sampler:
    """The largest sum, at one instant, of VmRSS over a process tree plus the memfds it
    holds, polled every few milliseconds until stopped."""

    def __init__(self, root: int) -> None:
        self.peak = 0
        self.samples = 0
        self._root = root
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            memfds: dict[tuple[int, int], int] = {}
            total = sum(_resident(pid, memfds) for pid in processes.tree(self._root))
            self.peak = max(self.peak, total + sum(memfds.values()))
            self.samples += 1
            time.sleep(0.003)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def _large_avi() -> Path:
    """The same ~400 MB video in an AVI (H.264 with start codes, as AVIs hold it, no
    B-frames, and AAC): streamed and written as Matroska."""
    return _cached(
        "video-400mb.avi",
        "-i", str(_large_video()), "-map", "0", "-c", "copy", "-bsf:v", "h264_mp4toannexb",
        *samples.FFMPEG_METADATA,
    )  # fmt: skip


def _large_mpeg4_avi() -> Path:
    """~390 MB of MPEG-4 Part 2 with two B-frames in a row and MP3, in an AVI, as Xvid
    wrote them: streamed and written as Matroska (before, held in memory as an AVI)."""
    return _cached(
        "video-390mb-mpeg4.avi",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=25", "-f", "lavfi", "-i", "sine",
        "-t", "330", *samples.FFMPEG_METADATA, "-c:v", "mpeg4", "-bf", "2", "-b:v", "40M",
        "-maxrate", "40M", "-bufsize", "8M", "-vtag", "XVID", "-c:a", "libmp3lame",
    )  # fmt: skip


def _large_h264_avi() -> Path:
    """~420 MB of H.264 with B-frames and MP3 sound in an AVI: it cannot become Matroska
    (an AVI holds no presentation times for the B-frames), so it stays an AVI, muxed twice
    and sent forward (rewrites.py; before, held in memory twice)."""
    clip = _cached(
        "clip-10s-bframes.avi",
        "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30:duration=10",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=10",
        "-vf", "noise=alls=7:allf=t", *samples.H264, "-bf", "2", "-qp", "20",
        "-c:a", "libmp3lame",
    )  # fmt: skip
    return _looped("video-420mb-bframes.avi", clip, 5)


def _looped_audio(name: str, *codec: str) -> Path:
    """~400 MB of sound: a minute of stereo pink noise in `codec` (which hardly compresses
    it), copied over and over, with identifying tags."""
    minute = _cached(
        f"minute-{name}", "-f", "lavfi", "-i", "anoisesrc=d=60:c=pink:r=48000", "-ac", "2",
        *codec,
    )  # fmt: skip
    return _looped(f"audio-400mb-{name}", minute, 400 * MiB // minute.stat().st_size)


def _large_m4a() -> Path:
    """~38 minutes of Apple Lossless in an M4A (before, held in memory twice: 868 MiB)."""
    return _looped_audio("alac.m4a", "-c:a", "alac")


def _large_ogg() -> Path:
    """~52 minutes of FLAC in Ogg (before, held in memory twice: 866 MiB)."""
    return _looped_audio("flac.oga", "-c:a", "flac", "-f", "ogg")


def _large_mp3() -> Path:
    """~2.9 hours of 320 kb/s MP3 (LAME's version in its spare bytes), tagged (before,
    held in memory twice, and its tags cut out of the whole file by mutagen)."""
    return _looped_audio("320k.mp3", "-c:a", "libmp3lame", "-b:a", "320k")


def _large_wav() -> Path:
    """~23 minutes of 24-bit stereo in a WAV, as a field recorder writes."""
    return _looped_audio("s24.wav", "-c:a", "pcm_s24le")


def _large_flac() -> Path:
    """~56 minutes of 24-bit stereo FLAC (pink noise), encoded whole: frames copied over
    and over would keep the first minute's STREAMINFO, and be refused (before, it was held
    in memory twice)."""
    minute = _cached(
        "minute-s24.wav", "-f", "lavfi", "-i", "anoisesrc=d=60:c=pink:r=48000", "-ac", "2",
        "-c:a", "pcm_s24le",
    )  # fmt: skip
    return _cached(
        "audio-400mb-s24.flac", "-stream_loop", "55", "-i", str(minute), "-c:a", "flac",
        "-sample_fmt", "s32", *samples.FFMPEG_METADATA,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    ("make", "mime", "size_tolerance", "tag"),
    [
        (_large_video, "video/mp4", 0.01, "container tag artist"),
        (_large_avi, "video/x-matroska", 0.03, "container tag artist"),
        (_large_mpeg4_avi, "video/x-matroska", 0.03, "container tag artist"),
        (_large_h264_avi, "video/x-msvideo", 0.01, "container tag artist"),
        (_large_m4a, "audio/x-m4a", 0.01, "container tag artist"),
        (_large_ogg, "audio/ogg", 0.01, "stream tag artist"),  # Ogg's tags are its stream's
        (_large_wav, "audio/x-wav", 0.01, "container tag artist"),
        (_large_mp3, "audio/mpeg", 0.01, "container tag artist"),
        (_large_flac, "audio/flac", 0.01, "container tag artist"),
    ],
    ids=[
        "mp4",
        "avi",
        "avi-mpeg4-bframes",
        "avi-h264-bframes",
        "m4a-alac",
        "ogg-flac",
        "wav-s24",
        "mp3-320k",
        "flac-s24",
    ],
)
def test_a_large_file_is_stripped_in_flat_memory(
    make: Callable[[], Path], mime: str, size_tolerance: float, tag: str, tmp_path: Path
) -> None:
    source = make()
    assert source.stat().st_size > 2.5 * LIMIT_MIB * MiB
    result = tmp_path / "result.age"
    process = subprocess.Popen(
        [sys.executable, "-c", _RELAY, str(ROOT), str(source), str(tmp_path / "staging"),
         str(result)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    sampler = _Sampler(process.pid)
    stdout, _ = process.communicate(timeout=600)
    sampler.stop()
    assert process.returncode == 0
    report = json.loads(stdout)
    assert report["mime"] == mime
    assert tag in report["removed"]
    assert abs(report["size"] - source.stat().st_size) < size_tolerance * source.stat().st_size
    assert sampler.samples > 50, "the sampler did not keep up"
    assert 0 < sampler.peak < LIMIT_MIB * MiB, f"peak {sampler.peak / MiB:.0f} MiB"


# The source's side: `amanah-drop seal`'s sealing, in a process of its own, with the spool
# in a folder of the test's.
_DEVICE = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from clients import sealing
from crypto.keys import Identity
from relay.sanitize import Stripping
contact = Identity.generate()
with open(sys.argv[3], "wb") as out:
    drop = sealing.seal(out, [contact.recipient], [Path(sys.argv[2])], None,
                        str(contact.recipient), 1, Stripping(), 0, spool=Path(sys.argv[4]))
print(json.dumps({"items": drop.items, "identity": contact.encode()}))
"""


@pytest.mark.slow
def test_a_video_larger_than_the_limit_is_sealed_on_a_device_in_flat_memory(
    tmp_path: Path,
) -> None:
    source = _large_video()
    sealed, spool = tmp_path / "drop.age", tmp_path / "spool"
    spool.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-c", _DEVICE, str(ROOT), str(source), str(sealed), str(spool)],
        stdout=subprocess.PIPE,
        text=True,
    )
    sampler = _Sampler(process.pid)
    stdout, _ = process.communicate(timeout=600)
    sampler.stop()
    assert process.returncode == 0
    report = json.loads(stdout)
    assert report["items"] == 1
    assert sampler.samples > 50, "the sampler did not keep up"
    assert 0 < sampler.peak < LIMIT_MIB * MiB, f"peak {sampler.peak / MiB:.0f} MiB"
    # The drop holds the cleaned video whole: its manifest's hash and size, read with age.
    identity = tmp_path / "identity.txt"
    identity.write_text(report["identity"] + "\n")
    members: dict[str, tuple[int, str]] = {}
    manifest: dict[str, Any] = {}
    with subprocess.Popen([AGE, "-d", "-i", str(identity), str(sealed)], stdout=PIPE) as age:
        assert age.stdout is not None
        with tarfile.open(fileobj=age.stdout, mode="r|") as tar:
            for member in tar:
                data = tar.extractfile(member)
                assert data is not None
                digest = hashlib.sha256()
                while chunk := data.read(1 << 20):
                    digest.update(chunk)
                    if member.name == "manifest.json":
                        manifest = json.loads(chunk)
                members[member.name] = (member.size, digest.hexdigest())
    assert age.returncode == 0
    [entry] = manifest["files"]
    assert members[entry["blob"]] == (entry["size"], entry["sha256"])
    assert abs(entry["size"] - source.stat().st_size) < 0.01 * source.stat().st_size
    assert list(spool.iterdir()) == []


def _recording_modes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The modes of the workers started from now on, in order."""
    modes: list[str] = []
    run = Sandboxed._run

    def recording(self: Sandboxed, args: list[str], *rest: Any) -> dict[str, object]:
        modes.append(args[0])
        return run(self, args, *rest)

    monkeypatch.setattr(Sandboxed, "_run", recording)
    return modes


@pytest.mark.parametrize(
    ("name", "mode"),
    [("m4a", "stream"), ("opus", "stream"), ("ogg-vorbis", "stream"), ("wav", "stream"),
     ("mp3", "stream"), ("flac", "stream")],
)  # fmt: skip
def test_every_sound_format_streams(
    name: str, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MP3, an M4A, an Ogg, a WAV or a FLAC (encoded again: flac.py) is written
    forward only over the links (until session 15, FLAC took memfds)."""
    modes = _recording_modes(monkeypatch)
    make, mime = samples.SAMPLES[name]
    data = make(tmp_path).read_bytes()
    out = io.BytesIO()
    outcome = Sandboxed().strip(detect(data[:SNIFF_BYTES]).mime, io.BytesIO(data), out)
    assert modes == [mode]
    assert outcome.mime == mime
    assert outcome.original_sha256 == hashlib.sha256(data).hexdigest()
    assert len(out.getvalue()) > 0.5 * len(data)


def _decoded(path: Path) -> bytes:
    """The sound of `path` as Debian's ffmpeg decodes it (64-bit float samples)."""
    command = ["ffmpeg", "-v", "error", "-i", str(path), "-f", "f64le", "-"]
    return subprocess.run(command, capture_output=True, check=True).stdout


@pytest.mark.parametrize(
    "codec",
    [
        ("-c:a", "pcm_s16le", "-ac", "2"),
        ("-c:a", "pcm_s24le", "-ac", "6"),  # WAVE_FORMAT_EXTENSIBLE
        ("-c:a", "pcm_f32le", "-ac", "1"),
        ("-c:a", "pcm_u8", "-ac", "1", "-ar", "11025", "-t", "1"),  # 11025 bytes: padded
    ],
    ids=["s16-stereo", "s24-6ch", "f32-mono", "u8-odd"],
)
def test_a_streamed_wav_has_its_sizes_right(
    codec: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WAV's sizes are counted before its header is sent: RIFF's covers the file, the
    chunks (fmt, fact for float, data) tile it, the fact chunk counts the frames, and the
    samples decode as the input's (Debian's ffmpeg). For integer samples the file is byte
    for byte what that ffmpeg writes seeking back (its CLI, into a file); for float, its
    FFmpeg 5.1 writes WAVE_FORMAT_EXTENSIBLE, PyAV's FFmpeg 8 the plain float format."""
    modes = _recording_modes(monkeypatch)
    source = samples.tone(tmp_path, "in.wav", *codec, "-write_bext", "1")
    data = source.read_bytes()
    streamed = io.BytesIO()
    Sandboxed().strip("audio/x-wav", io.BytesIO(data), streamed)
    result = streamed.getvalue()
    assert modes == ["stream"]
    assert result[:4] == b"RIFF" and int.from_bytes(result[4:8], "little") == len(result) - 8
    chunks, at = {}, 12
    while at < len(result):
        size = int.from_bytes(result[at + 4 : at + 8], "little")
        chunks[result[at : at + 4]] = result[at + 8 : at + 8 + size]
        at += 8 + size + size % 2
    assert at == len(result)
    block_align = int.from_bytes(chunks[b"fmt "][12:14], "little")
    if b"fact" in chunks:
        assert int.from_bytes(chunks[b"fact"], "little") * block_align == len(chunks[b"data"])
    (tmp_path / "out.wav").write_bytes(result)
    decoded = [_decoded(path) for path in (source, tmp_path / "out.wav")]
    assert decoded[0] == decoded[1] and len(decoded[0]) > 8000
    if "pcm_f32le" not in codec:
        seeking = tmp_path / "seeking.wav"
        samples.ffmpeg("-i", str(source), "-map", "0:a", "-c", "copy", "-map_metadata", "-1",
                       "-fflags", "+bitexact", "-flags:a", "+bitexact", str(seeking))  # fmt: skip
        assert seeking.read_bytes() == result


@pytest.mark.parametrize("damage", ["cut", "unsized", "placeholder"])
def test_a_cut_or_unsized_wav_gets_the_sizes_of_what_it_holds(
    damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WAV's sizes cannot show a cut, because recorders that are stopped or stream
    leave sizes that say more than the file holds (measured, arecord 1.2.8): killed while
    recording 3000 s into a file, its header counts the 529,200,000 bytes it planned and
    the file holds 430,531,296; recording with no end into a pipe, it writes 0x80000000
    (FFmpeg into a pipe: 0xFFFFFFFF). Such a recording is whole up to where it stops, so
    its samples are kept and the result's sizes are counted, not copied. (A WAV that ends
    inside a sample frame is refused: test_hostile.py.)"""
    modes = _recording_modes(monkeypatch)
    data = bytearray(samples.wav(tmp_path).read_bytes())
    at = data.index(b"data")
    if damage == "cut":
        data = data[: at + 8 + (len(data) - at) * 3 // 5 // 4 * 4]
    elif damage == "unsized":
        data[4:8] = data[at + 4 : at + 8] = b"\xff" * 4
    else:
        data[4:8] = (0x80000000 + at).to_bytes(4, "little")
        data[at + 4 : at + 8] = (0x80000000).to_bytes(4, "little")
    result = io.BytesIO()
    Sandboxed().strip("audio/x-wav", io.BytesIO(bytes(data)), result)
    out = result.getvalue()
    assert modes == ["stream"]
    assert int.from_bytes(out[4:8], "little") == len(out) - 8
    held = len(data) - at - 8
    assert out[-held - 8 : -held] == b"data" + held.to_bytes(4, "little")
    assert out[-held:] == data[-held:]


def test_a_wav_of_compressed_sound_is_streamed_muxed_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """IMA ADPCM in a WAV: FFmpeg's header for it holds a fact chunk written last, so the
    worker muxes it twice (rewrites.py) and sends it forward over the link, its sizes and
    count right (before, it was held whole in memfds). Its sound decodes as the input's
    (Debian's ffmpeg)."""
    modes = _recording_modes(monkeypatch)
    source = tmp_path / "in.wav"
    samples.ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=30", *samples.FFMPEG_METADATA,
                   "-c:a", "adpcm_ima_wav", "-write_bext", "1", str(source))  # fmt: skip
    data = source.read_bytes()
    # Larger than FFmpeg's output buffer: the muxer's rewrites reach the worker's sink.
    assert len(data) > 2 * video.IO_BUFFER
    out = io.BytesIO()
    outcome = Sandboxed().strip("audio/x-wav", io.BytesIO(data), out)
    assert modes == ["stream"]
    assert outcome.mime == "audio/x-wav"
    result = out.getvalue()
    assert b"bext" not in result
    assert int.from_bytes(result[4:8], "little") == len(result) - 8
    fact = result.index(b"fact")
    frames = int.from_bytes(result[fact + 8 : fact + 12], "little")
    assert frames == int.from_bytes(data[data.index(b"fact") + 8 :][:4], "little") > 0
    (tmp_path / "out.wav").write_bytes(result)
    decoded = [_decoded(path) for path in (source, tmp_path / "out.wav")]
    assert decoded[0] == decoded[1] and len(decoded[0]) > 0


def test_a_callers_own_file_is_read_by_the_worker_and_gives_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """amanah-drop strip hands over a file of the source's own: the worker reads it through
    a read-only descriptor instead of asking for each block; the result is the same bytes
    (the remux is bit-exact) and the hash is still the relay's own."""
    modes = _recording_modes(monkeypatch)
    path = samples.mkv(tmp_path)
    data = path.read_bytes()
    through_channel, through_file = io.BytesIO(), io.BytesIO()
    served = Sandboxed().strip("video/x-matroska", io.BytesIO(data), through_channel)
    with path.open("r+b") as src:  # writable here; the worker's copy must not be
        assert sandbox._read_only_descriptor(io.BytesIO(data)) is None
        descriptor = sandbox._read_only_descriptor(src)
        assert descriptor is not None
        try:
            assert fcntl.fcntl(descriptor, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
        finally:
            os.close(descriptor)
        read_itself = Sandboxed().strip("video/x-matroska", src, through_file)
    assert modes == ["stream", "stream-file"]  # the buffer over the link, the file itself
    assert through_file.getvalue() == through_channel.getvalue()
    assert read_itself.original_sha256 == served.original_sha256 == hashlib.sha256(data).hexdigest()
    assert path.read_bytes() == data


def test_a_result_into_a_callers_own_file_is_written_by_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """amanah-drop strip writes into a file of the source's own: the worker writes it
    through a write-only descriptor sharing the file's offset (after what the caller wrote
    first), with no link between; the bytes equal those sent over the link. A file also
    open for reading is not handed over (the worker must not read the source's files)."""
    modes = _recording_modes(monkeypatch)
    path = samples.mkv(tmp_path)
    data = path.read_bytes()
    over_the_link = io.BytesIO()
    Sandboxed().strip("video/x-matroska", io.BytesIO(data), over_the_link)
    target = tmp_path / "out.mkv"
    with path.open("rb") as src, target.open("xb") as dst:
        dst.write(b"HEAD")  # buffered, not yet flushed: must land before the result
        outcome = Sandboxed().strip("video/x-matroska", src, dst)
        assert dst.tell() == 4 + len(over_the_link.getvalue())
        dst.write(b"TAIL")  # and the caller's next write lands after it
    with path.open("rb") as src, (tmp_path / "rw.mkv").open("w+b") as both:
        not_handed = Sandboxed().strip("video/x-matroska", src, both, hashed=False)
        both.seek(0)
        assert both.read() == over_the_link.getvalue()
    assert modes == ["stream", "stream-files", "stream-file"]
    assert target.read_bytes() == b"HEAD" + over_the_link.getvalue() + b"TAIL"
    assert outcome.original_sha256 == hashlib.sha256(data).hexdigest()
    assert outcome.original_size == len(data)
    assert not_handed.original_sha256 == ""  # not asked for: not computed


def test_a_result_into_a_file_past_its_limit_is_too_demanding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written by the worker itself, the result is bounded by the worker's limit on file
    size: past it a write fails (no SIGXFSZ), and the file is refused as too demanding."""
    from relay.sanitize.errors import TooDemanding

    monkeypatch.setattr(sandbox, "OUTPUT_FACTOR", 0)
    monkeypatch.setattr(sandbox, "OUTPUT_SLACK", 4096)
    path = samples.mkv(tmp_path)
    target = tmp_path / "out.mkv"
    with path.open("rb") as src, target.open("xb") as dst, pytest.raises(TooDemanding):
        Sandboxed().strip("video/x-matroska", src, dst, hashed=False)
    assert 0 < target.stat().st_size <= 4096


@pytest.mark.slow
def test_no_room_for_the_spool_is_a_clear_error(tmp_path: Path) -> None:
    """A spool that meets a full disk (here a limit on file size: the same refusal to
    write) stops the sealing with a message that says so, not 'could not be read'."""
    spool = tmp_path / "spool"
    spool.mkdir()

    def small_files() -> None:  # soft limit only: the worker sets its own
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))

    done = subprocess.run(
        [sys.executable, "-c", _DEVICE, str(ROOT), str(_large_video()),
         str(tmp_path / "drop.age"), str(spool)],
        capture_output=True, text=True, timeout=600, preexec_fn=small_files,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"SealError: file 1: no room for its cleaned copy in {spool}" in done.stderr
    assert list(spool.iterdir()) == []

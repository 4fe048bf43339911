"""FLAC through the ffmpeg CLI (re-encoded), keeping only the audio streams, and dropping
every tag, chapter and encoder string. Also the table of every audio and video format
(`FORMATS`), and the rules video.py shares.

Why the CLI here, and PyAV for videos, MP3, M4A, Ogg and WAV (video.py, streamed in flat
memory): FLAC is re-encoded, not remuxed, which takes the whole file (a memfd, ~2x its size
in RAM with the result); Debian's ffmpeg runs as its own process under the worker's limits,
and a crash in a demuxer kills that process, not the worker that reports it. (Until
session 14 an AVI that could not become Matroska, and a WAV of compressed sound, came here
too; they now stream, muxed twice: rewrites.py.)

Rules (measured in notes/metadata.md):
- the demuxer is forced from the type libmagic found and only the `file` protocol is
  allowed, so a playlist or a concat script cannot make ffmpeg open anything else;
- `-map 0:V? -map 0:a?` (capital V excludes cover art) drops telemetry (GoPro, DJI, Apple),
  GPS subtitle tracks, subtitles, attachments; `-map_metadata -1 -map_chapters -1` drops
  container and stream tags and chapters; `+bitexact` writes neutral handler names, no
  encoder version and no creation time;
- only streams of the codecs in `VIDEO_CODECS` and `AUDIO_CODECS` are kept (else the file
  is unsupported);
- FLAC is re-encoded (lossless; decoded samples identical): stale tags can hide in the audio
  area, and the vendor string, APPLICATION and CUESHEET blocks survive a tag deletion.

Runs only inside the sandboxed worker.
"""

from __future__ import annotations

import json
import re
import subprocess  # noqa: S404 - the worker runs ffmpeg, with fixed arguments
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from . import gate

# (forced demuxer, muxer, MIME type of the result, audio-only)
FORMATS: dict[str, tuple[str, str, str, bool]] = {
    "audio/mpeg": ("mp3", "mp3", "audio/mpeg", True),
    "audio/flac": ("flac", "flac", "audio/flac", True),
    "audio/x-flac": ("flac", "flac", "audio/flac", True),
    "audio/ogg": ("ogg", "ogg", "audio/ogg", True),
    "audio/x-wav": ("wav", "wav", "audio/x-wav", True),
    "audio/wav": ("wav", "wav", "audio/x-wav", True),
    "audio/x-m4a": ("mov", "ipod", "audio/x-m4a", True),
    "audio/mp4": ("mov", "ipod", "audio/x-m4a", True),
    "video/mp4": ("mov", "mp4", "video/mp4", False),
    "video/quicktime": ("mov", "mov", "video/quicktime", False),
    "video/3gpp": ("mov", "3gp", "video/3gpp", False),
    "video/3gpp2": ("mov", "3g2", "video/3gpp2", False),  # CDMA phones' 3GP
    "video/x-matroska": ("matroska", "matroska", "video/x-matroska", False),
    "video/webm": ("matroska", "webm", "video/webm", False),
    # Streamed by video.py as Matroska (WRITTEN_AS there) when it can be; else as an AVI.
    "video/x-msvideo": ("avi", "avi", "video/x-msvideo", False),
}
# The muxers of the MP4 family (ISO base media files), all read back by FFmpeg's "mov".
MP4_MUXERS = frozenset({"mp4", "mov", "3gp", "3g2", "ipod"})
SEI_NAME = "encoder data in the video stream (SEI)"
OBU_NAME = "metadata in the video stream (AV1 metadata OBUs)"
# The codecs (FFmpeg's names) whose streams are kept. In each, what can carry metadata
# inside the stream itself is removed (SEI: nal.py; metadata OBUs: obu.py; user data:
# mpegvideo.py; APPn and COM segments: jpeg.py; ancillary bytes: mp3.py; fill elements:
# aac.py; comment headers and metadata blocks: records.py), or the format has no place
# for it (VP8, VP9, H.263, Opus, AMR, ALAC, raw samples and ADPCM). Any other codec makes
# the file unsupported, not cleaned: a PNG or TIFF frame holds text chunks, a DV frame the
# date and time of filming, MP2 and AC-3 frames ancillary or auxiliary data of any kind,
# Theora and Speex a comment header this sanitizer does not rewrite.
VIDEO_CODECS = frozenset(
    {"h264", "hevc", "av1", "vp8", "vp9", "mpeg4", "h263", "mpeg1video", "mpeg2video", "mjpeg"}
)
AUDIO_CODECS = frozenset({"aac", "mp3", "opus", "vorbis", "flac", "alac", "amr_nb", "amr_wb"})
AUDIO_CODEC_FAMILIES = ("pcm_", "adpcm_")


def codec_kept(kind: str, codec: str) -> bool:
    """Whether a stream of this kind ("video", "audio") and codec can be cleaned."""
    if kind == "video":
        return codec in VIDEO_CODECS
    return codec in AUDIO_CODECS or codec.startswith(AUDIO_CODEC_FAMILIES)


# Names of tags go into the report; a name that is not a plain identifier is reported as
# "other tag" (a hostile container can use any string, including a name, as a key).
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.:@-]{1,48}")


class MediaError(Exception):
    """ffmpeg or ffprobe could not read or write the file (details are not kept: they may
    quote metadata values)."""


def run(command: Sequence[str], fds: Sequence[int], timeout: float) -> bytes:
    """Runs ffmpeg or ffprobe with the worker's memfds open. Raises MediaError."""
    result = subprocess.run(  # noqa: S603 - fixed argument lists built here
        list(command),
        pass_fds=tuple(fds),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise MediaError("ffmpeg failed")
    return result.stdout


def probe(path: str, demuxer: str, fds: Sequence[int], timeout: float) -> dict[str, Any]:
    """ffprobe's view of a file (streams, format, chapters) with the demuxer forced."""
    output = run(
        [
            "ffprobe",
            "-v",
            "error",
            "-protocol_whitelist",
            "file",
            "-f",
            demuxer,
            "-show_format",
            "-show_streams",
            "-show_chapters",
            "-of",
            "json",
            path,
        ],
        fds,
        timeout,
    )
    try:
        document = json.loads(output)
    except ValueError as exc:
        raise MediaError("unreadable probe") from exc
    if not isinstance(document, dict):
        raise MediaError("unreadable probe")
    return document


@dataclass(frozen=True)
class Layout:
    """What matters of a probe for checking a result: streams kept, sizes, duration."""

    video: tuple[tuple[str, int, int], ...]  # codec, width, height of each real video stream
    audio: tuple[str, ...]  # codec of each audio stream
    duration: float


def _is_picture(stream: dict[str, Any]) -> bool:
    return bool(stream.get("disposition", {}).get("attached_pic"))


def layout(document: dict[str, Any]) -> Layout:
    streams = document.get("streams", [])
    video = tuple(
        (str(s.get("codec_name")), int(s.get("width", 0)), int(s.get("height", 0)))
        for s in streams
        if s.get("codec_type") == "video" and not _is_picture(s)
    )
    audio = tuple(str(s.get("codec_name")) for s in streams if s.get("codec_type") == "audio")
    try:
        duration = float(document.get("format", {}).get("duration", 0.0))
    except (TypeError, ValueError):
        duration = 0.0
    return Layout(video, audio, duration)


def _tag_name(key: object) -> str:
    return str(key) if isinstance(key, str) and _PLAIN_NAME.fullmatch(key) else "other tag"


def removed_names(document: dict[str, Any], audio_only: bool) -> list[str]:
    """Names (never values) of what the remux leaves out, from the input's probe."""
    names = [f"container tag {_tag_name(k)}" for k in document.get("format", {}).get("tags", {})]
    for stream in document.get("streams", []):
        kind = stream.get("codec_type")
        dropped = kind not in ("audio", "video") or _is_picture(stream)
        dropped = dropped or (audio_only and kind == "video")
        if dropped:
            names.append("cover art" if _is_picture(stream) else f"{kind} stream")
        names += [f"stream tag {_tag_name(k)}" for k in stream.get("tags", {})]
    if document.get("chapters"):
        names.append("chapters")
    return list(dict.fromkeys(names))


def codecs_kept(source: Layout, audio_only: bool) -> bool:
    """Whether every stream the result keeps is of a codec that can be cleaned."""
    video = [] if audio_only else [codec for codec, _, _ in source.video]
    return all(codec_kept("video", c) for c in video) and all(
        codec_kept("audio", c) for c in source.audio
    )


def remux_command(
    source: str, target: str, formats: tuple[str, str, str, bool]
) -> tuple[list[str], list[str]]:
    """The ffmpeg command for one file (`formats` as in FORMATS), and names of what only
    the command removes."""
    demuxer, muxer, _, audio_only = formats
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error"]
    command += ["-protocol_whitelist", "file", "-f", demuxer, "-i", source]
    command += ["-map", "0:a?"] if audio_only else ["-map", "0:V?", "-map", "0:a?"]
    command += ["-c", "copy", "-map_metadata", "-1", "-map_chapters", "-1"]
    command += ["-disposition", "0", "-fflags", "+bitexact"]
    command += ["-flags:v", "+bitexact", "-flags:a", "+bitexact"]
    extra: list[str] = []
    if demuxer == "flac":
        command += ["-c:a", "flac"]
        extra.append("FLAC vendor string and non-audio blocks")
    command += ["-f", muxer, "-y", target]
    return command, extra


def tag_values(document: dict[str, Any]) -> set[str]:
    """The values the last gate searches for (gate.tag_values), from an ffprobe document."""
    tag_sets = [document.get("format", {}).get("tags", {})]
    tag_sets += [stream.get("tags", {}) for stream in document.get("streams", [])]
    tag_sets += [chapter.get("tags", {}) for chapter in document.get("chapters", [])]
    return gate.tag_values(tag_sets)


def readback_demuxer(muxer: str) -> str:
    """The demuxer that reads what `muxer` wrote (each result is read back)."""
    return "mov" if muxer in MP4_MUXERS else {"webm": "matroska"}.get(muxer, muxer)


def audio_only_formats(formats: tuple[str, str, str, bool]) -> tuple[str, str, str, bool]:
    """What to write for a video container that holds sound only (libmagic calls an M4A
    "video/mp4"; a phone may record audio into a WebM)."""
    demuxer, muxer, mime, _ = formats
    if demuxer == "mov":
        return demuxer, "ipod", "audio/x-m4a", True
    return demuxer, muxer, mime, True


def check(source: Layout, result: Layout, audio_only: bool) -> None:
    """The result must hold the same media. Raises MediaError otherwise."""
    if audio_only:
        if not source.audio or result.audio != source.audio or result.video:
            raise MediaError("audio streams differ")
    else:
        if not source.video or result.video != source.video:
            raise MediaError("video streams differ")
        if result.audio != source.audio:
            raise MediaError("audio streams differ")
    tolerance = max(0.25, source.duration * 0.02)
    if source.duration > 0 and abs(result.duration - source.duration) > tolerance:
        raise MediaError("duration differs")
    if result.duration <= 0:
        raise MediaError("no duration")


def decode_check(
    path: str, demuxer: str, audio_only: bool, fds: Sequence[int], timeout: float
) -> None:
    """Decodes the result: all of it for audio (cheap), the first frames for video (a full
    decode of a long video costs minutes; the probe has checked its layout and duration)."""
    command = ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-protocol_whitelist", "file"]
    command += ["-f", demuxer, "-i", path]
    command += [] if audio_only else ["-frames:v", "10"]
    command += ["-f", "null", "-"]
    run(command, fds, timeout)

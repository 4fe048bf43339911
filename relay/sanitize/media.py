"""The table of every audio and video format (`FORMATS`: the demuxer forced for each type
libmagic finds, the muxer that writes the result), the codecs that may be kept, and the
rules that read an input's tags (names for the report, values for the last gate). The
cleaning itself is video.py's (PyAV, streamed in flat memory; FLAC encoded again, flac.py).

Until session 15 FLAC went through Debian's ffmpeg CLI here, the whole file and its result
held in memfds (~2x its size in RAM); earlier, every format did (notes/metadata.md measured
the rules on that path, and video.py keeps them): only audio and non-picture video streams,
no container, stream or chapter tags, `+bitexact` (neutral handler names, no encoder
version, no creation time), and only streams of the codecs in `VIDEO_CODECS` and
`AUDIO_CODECS` (else the file is unsupported).

Runs only inside the sandboxed worker.
"""

from __future__ import annotations

import re
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
    """The file could not be read, written or checked as the rules want (details are not
    kept: they may quote metadata values)."""


def _is_picture(stream: dict[str, Any]) -> bool:
    return bool(stream.get("disposition", {}).get("attached_pic"))


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

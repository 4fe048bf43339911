"""The independent judge of "no identifying metadata remains": exiftool and ffprobe.

The rule (issue 4): dump every tag with `exiftool -j -a -G1 -s -u -ee`; ignore the ExifTool,
System and Composite groups; every other tag must be structural (on the allowlist below:
dimensions, codec layout, timing) or carry a neutral value; ffprobe must show only audio and
video streams with neutral tags and no chapters; and no identifying string of the input
(6+ characters, ASCII or UTF-16) may appear anywhere in the output bytes.

The allowlist is of tag *names*: a name here describes how the picture or sound is laid out,
never who, where, when or with what. Anything not on it fails the check, so a new kind of
leak fails loudly instead of passing quietly.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

IGNORED_GROUPS = {"ExifTool", "System", "Composite"}

STRUCTURAL = frozenset(
    """
    APP14Flags0 APP14Flags1 AlphaCompression AlphaFiltering AlphaPreprocessing AnimationFrames
    AnimationIterations AnimationPlays AudioBitrate AudioBitsPerSample AudioChannels
    AudioCodec AudioCodecID AudioFormat AudioLayer AudioSampleCount AudioSampleRate
    AudioStreamType AvgBytesPerSec Background BackgroundColor Balance BitDepth BitsPerPixel
    BitsPerSample BlockSizeMax BlockSizeMin BlueX BlueY ChannelLayout ChannelMode ChunkOffset
    CleanAperture CodecDelay CodecID CodecPrivate ColorComponents ColorPrimaries ColorProfiles
    ColorRepresentation ColorResolutionDepth ColorTransform ColorType CompatibleBrands
    CompositionTimeToSample Compression CompressorID CompressorName CopyrightFlag CreateDate
    CurrentTime DCTEncodeVersion DefaultDuration DisplayHeight DisplayUnit DisplayWidth
    DocType DocTypeReadVersion DocTypeVersion Duration EBMLReadVersion EBMLVersion EditList
    Emphasis EncodedPixelsDimensions Encoding EncodingProcess ExifByteOrder ExtraSamples
    FileType FileTypeExtension Filter FrameCount FrameRate FrameSizeMax FrameSizeMin
    GIFVersion Gamma GenBalance GenFlags GenGraphicsMode GenMediaVersion GenOpColor
    GraphicsMode GreenX GreenY HandlerDescription HandlerType HasColorMap HorizontalScale
    ID3Size ImageHeight ImageHeightVP8 ImageLength ImageSize ImageSizeVP8 ImageWidth
    ImageWidthVP8 IntensityStereo Interlace JFIFVersion LoopCount MD5Signature MIMEType
    MPEGAudioVersion MSStereo MajorBrand MatrixCoefficients MatrixStructure MaxDataRate
    MaximumBitrate MediaCreateDate MediaDataOffset MediaDataSize MediaDuration
    MediaHeaderVersion MediaLanguageCode MediaModifyDate MediaTimeScale MinimumBitrate
    MinorVersion ModifyDate MovieDataOffset MovieDataSize MovieHeaderVersion MuxingApp
    NextTrackID NominalBitrate NumChannels NumberOfFrames OpColor OpusVersion Orientation
    OriginalMedia OutputGain Palette PhotometricInterpretation PixelAspectRatio PixelUnits
    PixelsPerUnitX PixelsPerUnitY PlanarConfiguration Planes PlaybackFrameRate PosterTime
    Predictor PreferredRate PreferredVolume PreviewDuration PreviewTime
    ProductionApertureDimensions Quality RedX RedY ResolutionUnit Rotation RowsPerStrip
    SRGBRendering SampleFormat SampleRate SampleSize SampleSizes SampleToChunk SamplesPerPixel
    SeekPreRoll SelectionDuration SelectionTime SignificantBits Software SourceImageHeight
    SourceImageWidth StreamCount StreamType StripByteCounts StripOffsets SubfileType
    SyncSampleTable TagTrackUID TextFace TextSize TileByteCounts TileLength TileOffsets
    TileWidth TimeScale TimeToSampleTable TimecodeScale TotalFrameCount TotalSamples
    TrackCreateDate TrackDefault TrackDuration TrackForced TrackHeaderVersion TrackID
    TrackLacing TrackLanguage TrackLayer TrackModifyDate TrackNumber TrackTimecodeScale
    TrackType TrackUID TrackVolume TransferCharacteristics Transparency TransparentColor
    VP8Version Vendor VerticalScale VideoCodec VideoCodecID VideoFrameCount VideoFrameRate
    VideoFullRangeFlag VideoScanType VorbisVersion WebP_Flags WhitePointX WhitePointY
    WritingApp XResolution XingHeader YCbCrSubSampling YResolution
    Channels Padding HandlerVendorID Free MediaData Unknown_edts Unknown_esds
    SampleGroupDescription SampleToGroup Wide HandlerClass VendorID PurchaseFileFormat
    Unknown_mp4a LayoutFlags AVCConfiguration HEVCConfiguration EBMLMaxIDLength
    EBMLMaxSizeLength SeekID SeekPosition CRC-32 CueTime CueTrack CueClusterPosition
    Matroska_0x15b0 Matroska_0x16aa Matroska_0x16bb Matroska_0x0070 BMPVersion
    PixelsPerMeterX PixelsPerMeterY NumColors NumImportantColors RedMask GreenMask BlueMask
    AlphaMask ColorSpace Unknown_vprp Unknown_JUNK AverageBitrate BufferSize MaxBitrate
    Unknown_btrt Unknown_alac ColorMap AnimationLoopCount
    Unknown_mvex MovieFragmentSequence Unknown_tfhd Unknown_tfdt Unknown_trun Unknown_mfra
    Unknown_av1C Unknown_dOps VideoFieldOrder NumberOfSamples Unknown_d263
    """.split()
)
# Unknown_av1C and Unknown_dOps are MP4's AV1 and Opus configuration records, which exiftool
# 12.57 does not name; VideoFieldOrder is QuickTime's field order (a Motion JPEG's);
# NumberOfSamples is the count in a WAV's fact chunk (float or A-law samples); d263 is
# 3GPP's H.263 configuration (the muxer's vendor code, a version, the level and profile),
# written anew by FFmpeg with its own code, as is AMR's (EncoderVendor below).
# Matroska_0x15b0 is Colour, 0x16aa CodecDelay, 0x16bb SeekPreRoll (exiftool 12.57 does not
# name them); 0x0070 is read by exiftool inside the Cues. An AVI's stream format is a
# BITMAPINFOHEADER, which exiftool reports as if it were a BMP file (File:BMPVersion...).
# A fragmented MP4 (videos are written forward only) adds its fragment boxes: mvex (the
# tracks' defaults), mfhd's sequence number, tfhd/tfdt/trun (each fragment's track, start
# time and sample sizes) and mfra (the random-access index at the end).

# exiftool's Vorbis group: the identification header's fields and the comment header's
# vendor; any other name in it is a comment.
VORBIS_HEADER = frozenset(
    """
    VorbisVersion AudioChannels SampleRate MaximumBitrate NominalBitrate MinimumBitrate
    Vendor
    """.split()
)

# Values ffmpeg writes under +bitexact, or that mean "nothing".
NEUTRAL_VALUE = re.compile(
    r"^(|0|0000:00:00 00:00:00|Lavf|Lavc|ffmpeg|FFmpeg|FFMP|Apple|VideoHandler|SoundHandler|"
    r"DataHandler|und|Media Handler|Data Handler|Video Track|Sound Track)$"
)
# Tags that may exist only with a neutral value (they name software or times when filled).
NEUTRAL_ONLY = frozenset(
    """
    CompressorName CreateDate Encoder HandlerDescription MediaCreateDate MediaModifyDate
    ModifyDate MuxingApp Software TrackCreateDate TrackModifyDate Vendor WritingApp
    HandlerVendorID VendorID HandlerClass EncoderVendor EncoderVersion
    """.split()
)


def exiftool(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["exiftool", "-j", "-a", "-G1", "-s", "-u", "-ee", str(path)],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    if not out.strip():
        out = subprocess.run(
            ["exiftool", "-j", "-a", "-G1", "-s", "-u", "-ee", str(path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    return dict(json.loads(out)[0])


def _split(key: str) -> tuple[str, str]:
    group, _, name = key.rpartition(":")
    return group, name


def tags(dump: dict[str, Any]) -> dict[str, Any]:
    """Every tag of a dump outside the ignored groups, keyed `Group:Name`."""
    return {
        key: value
        for key, value in dump.items()
        if key != "SourceFile" and _split(key)[0].split("-")[0] not in IGNORED_GROUPS
    }


def unexpected_tags(path: Path) -> dict[str, Any]:
    """Tags in a cleaned file that are neither structural nor neutral."""
    found = {}
    for key, value in tags(exiftool(path)).items():
        group, name = _split(key)
        if name.startswith("Warning") or name == "Error":
            found[key] = value
        elif group == "Vorbis" and name not in VORBIS_HEADER:
            found[key] = value  # a comment, whatever its name (DURATION is no structure)
        elif name in NEUTRAL_ONLY:
            if not NEUTRAL_VALUE.match(str(value).strip()):
                found[key] = value
        elif name not in STRUCTURAL:
            found[key] = value
    return found


def identifying_strings(path: Path) -> set[str]:
    """String values of the input's tags (6+ characters) that are not structural."""
    strings: set[str] = set()
    for key, value in tags(exiftool(path)).items():
        name = _split(key)[1]
        if name in STRUCTURAL or not isinstance(value, str):
            continue
        for piece in re.findall(r"[\w@.\-+/ ]{6,}", value):
            piece = piece.strip()
            if len(piece) >= 6 and not NEUTRAL_VALUE.match(piece) and not piece.isdigit():
                strings.add(piece)
    return strings


def strings_found(data: bytes, strings: set[str]) -> set[str]:
    """Which of `strings` occur in `data`, as ASCII/UTF-8 or UTF-16 (either byte order)."""
    lowered = data.lower()
    found = set()
    for text in strings:
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            if text.lower().encode(encoding) in lowered:
                found.add(text)
    return found


# Encoder version strings the sanitizer removes from inside the streams: LAME writes
# "LAME3.100" into its Xing frame and into the spare (ancillary) bytes of ordinary frames;
# FAAC names itself in a fill element of the first AAC frame ("libfaac 1.24"), as FFmpeg's
# encoder does ("Lavc59.37.100"), and FFmpeg's Motion JPEG encoder in each frame's comment.
ENCODER_STRINGS = re.compile(rb"(?:LAME|libfaac |Lavc)\d[\w.]*")


def encoder_strings(data: bytes) -> set[bytes]:
    return set(ENCODER_STRINGS.findall(data))


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_format",
            "-show_streams",
            "-show_chapters",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(json.loads(out))


def decoder_complaints(path: Path) -> str:
    """What Debian's ffmpeg says decoding every frame of every stream to the end, stopping
    at the first error: "" for a file that decodes cleanly."""
    decode = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-xerror", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        check=False,
    )
    return decode.stderr or ("" if decode.returncode == 0 else f"exit {decode.returncode}")


def ffprobe_frames(path: Path) -> dict[str, Any]:
    """ffprobe decoding every frame of every stream (`nb_read_frames`)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_type,nb_read_frames", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout  # fmt: skip
    return dict(json.loads(out))


NEUTRAL_STREAM_TAGS = {"language", "handler_name", "vendor_id", "encoder", "DURATION"}


def ffprobe_problems(path: Path) -> list[str]:
    """What ffprobe shows that a cleaned audio or video file must not have."""
    document = ffprobe(path)
    problems = []
    if document.get("chapters"):
        problems.append("chapters")
    for key, value in document.get("format", {}).get("tags", {}).items():
        if key not in {"major_brand", "minor_version", "compatible_brands", "encoder"} or (
            key == "encoder" and not NEUTRAL_VALUE.match(value)
        ):
            problems.append(f"format tag {key}={value}")
    for stream in document.get("streams", []):
        if stream.get("codec_type") not in ("audio", "video"):
            problems.append(f"{stream.get('codec_type')} stream")
        if stream.get("disposition", {}).get("attached_pic"):
            problems.append("attached picture")
        for key, value in stream.get("tags", {}).items():
            if key not in NEUTRAL_STREAM_TAGS or not (
                NEUTRAL_VALUE.match(value) or key in ("language", "DURATION", "vendor_id")
            ):
                problems.append(f"stream tag {key}={value}")
    return problems

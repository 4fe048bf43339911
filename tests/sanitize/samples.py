"""Files with identifying metadata, made by the tests with Pillow, ffmpeg, mutagen and
exiftool. Every identifying value includes one of MARKERS, so a test can search the
cleaned bytes for them (ASCII and UTF-16) as well as asking exiftool.
"""

from __future__ import annotations

import random
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from PIL import Image

MARKERS = ("AmanahMakerCo", "AmanahModelX9", "SN-77331199", "AmanahPersonName", "AmanahPlace")
MAKER, MODEL, SERIAL, PERSON, PLACE = MARKERS

EXIF_ARGS = [
    f"-Make={MAKER}",
    f"-Model={MODEL}",
    f"-SerialNumber={SERIAL}",
    f"-Artist={PERSON}",
    f"-ImageDescription={PLACE}",
    "-GPSLatitude=31.5017",
    "-GPSLatitudeRef=N",
    "-GPSLongitude=34.4668",
    "-GPSLongitudeRef=E",
    "-DateTimeOriginal=2024:05:06 07:08:09",
]
XMP_ARGS = [f"-XMP-dc:Creator={PERSON}", f"-XMP-photoshop:City={PLACE}"]
IPTC_ARGS = [f"-IPTC:By-line={PERSON}", f"-IPTC:City={PLACE}"]
FFMPEG_METADATA = [
    "-metadata", f"title={PLACE}",
    "-metadata", f"artist={PERSON}",
    "-metadata", f"comment={SERIAL}",
    "-metadata", "creation_time=2024-05-06T07:08:09Z",
    "-metadata", "location=+31.5017+034.4668/",
    "-metadata", f"encoder={MODEL}",
]  # fmt: skip


def exiftool_write(path: Path, *args: str) -> None:
    subprocess.run(
        ["exiftool", "-q", "-q", "-overwrite_original", "-n", *args, str(path)], check=True
    )


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True
    )


def _picture(size: tuple[int, int] = (96, 64)) -> Image.Image:
    image = Image.new("RGB", size)
    for x in range(size[0]):
        for y in range(size[1]):
            image.putpixel((x, y), (x * 2 % 256, y * 3 % 256, (x + y) % 256))
    return image


def jpeg(folder: Path) -> Path:
    path = folder / "in.jpg"
    _picture().save(path, quality=90)
    exiftool_write(path, *EXIF_ARGS, *XMP_ARGS, *IPTC_ARGS, f"-Comment={PERSON}")
    return path


def jpeg_rotated(folder: Path) -> Path:
    path = jpeg(folder)
    exiftool_write(path, "-Orientation=6")
    return path


def jpeg_xmp_rotated(folder: Path) -> Path:
    """Orientation held in XMP only (no EXIF block at all)."""
    path = folder / "in.jpg"
    _picture().save(path, quality=90)
    exiftool_write(path, "-XMP-tiff:Orientation=8", *XMP_ARGS)
    return path


def jpeg_mpo(folder: Path) -> Path:
    """A Multi-Picture JPEG, as cameras write a preview after the photo (and 3D cameras a
    second view, phones a depth or gain map): each image carries identifying EXIF and a
    comment of its own."""
    path = folder / "in.mpo"
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x013B] = MAKER, MODEL, PERSON
    preview = _picture((48, 32)).transpose(Image.Transpose.ROTATE_180)
    _picture().save(
        path,
        "MPO",
        save_all=True,
        append_images=[preview],
        exif=exif.tobytes(),
        comment=PLACE.encode(),
        quality=90,
    )
    exiftool_write(path, *EXIF_ARGS, *XMP_ARGS)
    return path


def png(folder: Path) -> Path:
    path = folder / "in.png"
    _picture().save(path)
    exiftool_write(path, *XMP_ARGS, f"-PNG:Author={PERSON}", f"-PNG:Comment={PLACE}")
    return path


def png_rotated(folder: Path) -> Path:
    path = folder / "in.png"
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = MAKER
    _picture().save(path, exif=exif.tobytes())
    return path


def webp(folder: Path) -> Path:
    path = folder / "in.webp"
    _picture().save(path, quality=90)
    exiftool_write(path, *EXIF_ARGS, *XMP_ARGS)
    return path


def webp_rotated(folder: Path) -> Path:
    path = webp(folder)
    exiftool_write(path, "-Orientation=8")
    return path


def tiff(folder: Path) -> Path:
    path = folder / "in.tif"
    _picture().save(path)
    exiftool_write(path, *EXIF_ARGS, *XMP_ARGS, *IPTC_ARGS, "-Orientation=3")
    return path


def gif(folder: Path) -> Path:
    path = folder / "in.gif"
    frames = [_picture(), _picture().rotate(180)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=[100, 200], loop=0)
    exiftool_write(path, f"-Comment={PERSON}", *XMP_ARGS)
    return path


def heic(folder: Path) -> Path:
    import pillow_heif

    pillow_heif.register_heif_opener()
    path = folder / "in.heic"
    exif = Image.Exif()
    exif[0x010F] = MAKER
    exif[0x0110] = MODEL
    _picture().save(path, exif=exif.tobytes(), xmp=f"<x:xmpmeta>{PERSON}</x:xmpmeta>".encode())
    return path


def avif(folder: Path) -> Path:
    path = folder / "in.avif"
    exif = Image.Exif()
    exif[0x010F] = MAKER
    exif[0x0110] = MODEL
    _picture().save(path, exif=exif.tobytes(), xmp=f"<x:xmpmeta>{PERSON}</x:xmpmeta>".encode())
    return path


def tone(folder: Path, name: str, *codec: str) -> Path:
    path = folder / name
    ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=440:duration=2", *FFMPEG_METADATA, *codec, str(path)
    )
    return path


def mp3(folder: Path) -> Path:
    from mutagen import apev2, id3

    path = tone(folder, "in.mp3", "-c:a", "libmp3lame", "-id3v2_version", "3", "-write_id3v1", "1")
    tags = id3.ID3(path)
    tags.add(id3.TPE1(text=[PERSON]))
    tags.add(id3.TXXX(desc="where", text=[PLACE]))
    tags.add(id3.APIC(mime="image/png", data=b"\x89PNG" + SERIAL.encode()))
    tags.save(path, v1=2)
    ape = apev2.APEv2()
    ape["Artist"] = PERSON
    ape["Serial"] = SERIAL
    ape.save(path)
    return path


def flac(folder: Path) -> Path:
    from mutagen.flac import FLAC, Picture

    path = tone(folder, "in.flac", "-c:a", "flac")
    audio = FLAC(path)
    audio["artist"] = PERSON
    audio["location"] = PLACE
    picture = Picture()
    picture.data = b"\x89PNG" + SERIAL.encode()
    picture.mime = "image/png"
    audio.add_picture(picture)
    audio.save()
    return path


def ogg_vorbis(folder: Path) -> Path:
    return tone(folder, "in.ogg", "-c:a", "libvorbis")


def opus(folder: Path) -> Path:
    return tone(folder, "in.opus", "-c:a", "libopus", "-f", "ogg")


def wav(folder: Path) -> Path:
    return tone(folder, "in.wav", "-c:a", "pcm_s16le", "-write_bext", "1")


def wav_float(folder: Path) -> Path:
    """Float samples: the WAV holds a fact chunk (its count of samples)."""
    return tone(folder, "in-float.wav", "-c:a", "pcm_f32le", "-write_bext", "1")


def m4a(folder: Path) -> Path:
    return tone(folder, "in.m4a", "-c:a", "aac")


def _video(folder: Path, name: str, codec: list[str], fmt: list[str], extra: list[str]) -> Path:
    path = folder / name
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=2",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
        *extra, "-map", "0", "-map", "1", *FFMPEG_METADATA, *codec, *fmt, str(path),
    )  # fmt: skip
    return path


H264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]


def mp4(folder: Path) -> Path:
    """H.264 (x264 writes its settings in SEI), a GPS subtitle track, a rotation."""
    srt = folder / "gps.srt"
    srt.write_text(f"1\n00:00:00,000 --> 00:00:02,000\nGPS 31.5017 34.4668 {PLACE}\n")
    unrotated, path = folder / "unrotated.mp4", folder / "in.mp4"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=2",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-i", str(srt),
        "-map", "0", "-map", "1", "-map", "2", *FFMPEG_METADATA, *H264, "-c:a", "aac",
        "-c:s", "mov_text", "-metadata:s:v", f"handler_name={MODEL}",
        str(unrotated),
    )  # fmt: skip
    # ffmpeg 5.1 turns the rotate tag into a display matrix only when copying.
    ffmpeg("-i", str(unrotated), "-map", "0", "-c", "copy", "-metadata:s:v:0", "rotate=90",
           str(path))  # fmt: skip
    return path


def mov(folder: Path) -> Path:
    return _video(folder, "in.mov", [*H264, "-c:a", "aac"], [], [])


def threegp(folder: Path) -> Path:
    return _video(folder, "in.3gp", [*H264, "-c:a", "aac", "-ar", "8000", "-ac", "1"], [], [])


def threegp_amr(folder: Path) -> Path:
    """A feature phone's recording: H.263 video, AMR-NB sound in a 3GP. There is no AMR
    encoder here, so the sound is frames of random bits at 12.2 kbit/s (any bits are valid
    AMR parameters: FFmpeg decodes them to noise), written in AMR's storage format."""
    amr = folder / "in.amr"
    rng = random.Random(4867)  # RFC 4867: the storage format
    frames = [b"\x3c" + rng.randbytes(31) for _ in range(100)]  # 2 s of 20 ms frames
    amr.write_bytes(b"#!AMR\n" + b"".join(frames))
    path = folder / "in-amr.3gp"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=176x144:rate=15:duration=2", "-i", str(amr),
        "-map", "0", "-map", "1", *FFMPEG_METADATA, "-c:v", "h263", "-c:a", "copy", str(path),
    )  # fmt: skip
    # A phone's vendor codes in the sample entries' configuration boxes, as a Nokia writes.
    data = path.read_bytes()
    for box in (b"d263", b"damr"):
        assert data.count(box + b"FFMP") == 1
        data = data.replace(box + b"FFMP", box + b"NOKI")
    path.write_bytes(data)
    return path


def threeg2(folder: Path) -> Path:
    """3GPP2, as CDMA phones record: MPEG-4 Part 2 video, AAC sound."""
    codec = ["-c:v", "mpeg4", "-c:a", "aac", "-ar", "16000", "-ac", "1"]
    return _video(folder, "in.3g2", codec, ["-f", "3g2"], [])


def mkv(folder: Path) -> Path:
    chapters = folder / "chapters.txt"
    chapters.write_text(
        f";FFMETADATA1\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1000\ntitle={PLACE}\n"
    )
    path = folder / "in.mkv"
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=2",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-i", str(chapters),
        "-map", "0", "-map", "1", "-map_chapters", "2", *FFMPEG_METADATA,
        "-attach", str(chapters), "-metadata:s:t", "mimetype=text/plain",
        *H264, "-c:a", "libvorbis", str(path),
    )  # fmt: skip
    return path


def webm(folder: Path) -> Path:
    codec = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus"]
    return _video(folder, "in.webm", codec, [], [])


def avi(folder: Path) -> Path:
    return _video(folder, "in.avi", ["-c:v", "mpeg4", "-c:a", "libmp3lame"], [], [])


def avi_bframes(folder: Path) -> Path:
    """MPEG-4 Part 2 with two B-frames in a row: the AVI holds no presentation times, but
    FFmpeg's made-up ones are right for this codec, so it streams as Matroska."""
    codec = ["-c:v", "mpeg4", "-bf", "2", "-vtag", "XVID", "-c:a", "libmp3lame"]
    return _video(folder, "in-bframes.avi", codec, [], [])


def avi_xvid(folder: Path) -> Path:
    """Xvid (libxvidcore) without B-frames, its build in user data ("XviD0069"), which
    FFmpeg's decoder reads to choose Xvid's own IDCT: streamed as Matroska."""
    codec = ["-c:v", "libxvid", "-bf", "0", "-c:a", "libmp3lame"]
    return _video(folder, "in-xvid-plain.avi", codec, [], [])


def avi_xvid_packed(folder: Path) -> Path:
    """Xvid (libxvidcore) with B-frames, packed two to a packet as DivX did ("DivX503b1393p"
    in its user data): it stays an AVI, muxed twice (video.py, rewrites.py)."""
    codec = ["-c:v", "libxvid", "-bf", "2", "-c:a", "libmp3lame"]
    return _video(folder, "in-xvid.avi", codec, [], [])


def avi_h264(folder: Path) -> Path:
    """H.264 in AVI: start codes (no configuration record), x264's settings in an SEI, and
    B-frames, whose presentation times an AVI does not hold: not written as Matroska but
    as an AVI, muxed twice (video.WRITTEN_AS, rewrites.py)."""
    codec = ["-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-pix_fmt", "yuv420p"]
    return _video(folder, "in-h264.avi", [*codec, "-c:a", "libmp3lame"], [], [])


def avi_h264_aac(folder: Path) -> Path:
    """The same with AAC sound: FFmpeg's encoder names itself in the first AAC frame, which
    the worker rewrites in the AVI (aac.py)."""
    codec = ["-c:v", "libx264", "-preset", "veryfast", "-bf", "2", "-pix_fmt", "yuv420p"]
    return _video(folder, "in-h264-aac.avi", [*codec, "-c:a", "aac"], [], [])


def avi_interlaced_2016(folder: Path) -> Path:
    """Interlaced MPEG-4 as FFmpeg 3.0 (2016) wrote it: its user data names that build,
    "Lavc57.24.102" (written by today's encoder, the string then set to that build's, at
    the same length), for which FFmpeg's decoder imitates that release's interlaced motion
    compensation at the edges. Streamed as Matroska."""
    codec = ["-c:v", "mpeg4", "-flags", "+ildct+ilme", "-top", "1", "-c:a", "libmp3lame"]
    # Noise: motion vectors that point past the edges, where the two builds differ.
    path = _video(folder, "in-interlaced.avi", codec, [], ["-vf", "noise=alls=20:allf=t"])
    data = path.read_bytes()
    found = re.search(rb"Lavc\d+\.\d+\.\d+", data)
    assert found and len(found[0]) == len(b"Lavc57.24.102"), found
    path.write_bytes(data.replace(found[0], b"Lavc57.24.102"))
    return path


def avi_xvid_tag(folder: Path) -> Path:
    """FFmpeg's MPEG-4 under the fourcc XVID (as many tools label any MPEG-4 Part 2), with
    IMA ADPCM sound: it stays an AVI, muxed twice. Its user data names FFmpeg
    ("Lavc59.37.100"); without any name there, FFmpeg's decoder would take it for an early
    Xvid (mpegvideo.XVID_TAGS) and decode other pixels."""
    codec = ["-c:v", "mpeg4", "-vtag", "XVID", "-c:a", "adpcm_ima_wav"]
    return _video(folder, "in-xvid-tag.avi", codec, [], [])


def _camera_mjpeg(folder: Path, name: str, sound: str) -> Path:
    """Motion JPEG as cameras write it: every frame a JPEG holding the camera's EXIF (maker,
    model, serial number, GPS, time) and XMP, and FFmpeg's name in a comment segment."""
    frames = folder / "frames"
    frames.mkdir()
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=2",
           "-c:v", "mjpeg", str(frames / "f%02d.jpg"))  # fmt: skip
    exiftool_write(frames, *EXIF_ARGS, *XMP_ARGS)
    path = folder / name
    ffmpeg(
        "-framerate", "10", "-i", str(frames / "f%02d.jpg"),
        "-f", "lavfi", "-i", "sine=frequency=440:duration=2",
        "-map", "0", "-map", "1", *FFMPEG_METADATA, "-c:v", "copy", "-c:a", sound, str(path),
    )  # fmt: skip
    return path


def avi_mjpeg(folder: Path) -> Path:
    """Motion JPEG and PCM sound, as compact cameras record (streamed as Matroska)."""
    return _camera_mjpeg(folder, "in-mjpeg.avi", "pcm_s16le")


def avi_adpcm(folder: Path) -> Path:
    """Motion JPEG with IMA ADPCM sound, which Matroska's muxer does not list: it stays an
    AVI, muxed twice (video.WRITTEN_AS, rewrites.py), its frames rebuilt."""
    return _camera_mjpeg(folder, "in-adpcm.avi", "adpcm_ima_wav")


def mov_mjpeg(folder: Path) -> Path:
    """Motion JPEG in a QuickTime file, as some cameras write it."""
    return _camera_mjpeg(folder, "in-mjpeg.mov", "pcm_s16le")


def _av1_metadata_obu(text: str) -> bytes:
    """An AV1 metadata OBU of type ITU-T T.35 carrying `text` (as a camera's vendor data
    would), with its size field."""
    payload = bytes([4, 0x26]) + text.encode() + b"\x80"  # type, country code, trailing bit
    assert len(payload) < 128  # one byte of LEB128 size
    return bytes([(5 << 3) | 0x02, len(payload)]) + payload


def av1(folder: Path, name: str = "in-av1.mkv") -> Path:
    """AV1 (libaom) and Opus, with a metadata OBU naming the camera in its configuration
    record and before every frame."""
    import av  # noqa: PLC0415 - PyAV inserts the OBUs; only this sample needs it

    plain = _video(folder, f"plain-{name}", ["-c:v", "libaom-av1", "-cpu-used", "8",
                                             "-c:a", "libopus"], [], [])  # fmt: skip
    path = folder / name
    with av.open(str(plain)) as source, av.open(str(path), "w") as target:
        # opaque: the decoder's codec (libdav1d has no encoder to name the stream by)
        streams = {s.index: target.add_stream_from_template(s, opaque=True) for s in source.streams}
        video = source.streams.video[0]
        record = bytes(video.codec_context.extradata or b"")
        streams[video.index].codec_context.extradata = record + _av1_metadata_obu(MODEL)
        for packet in source.demux():
            if packet.size == 0:
                continue
            index = packet.stream.index
            if index == video.index:
                copy = av.Packet(_av1_metadata_obu(SERIAL) + bytes(packet))
                copy.pts, copy.dts, copy.time_base = packet.pts, packet.dts, packet.time_base
                copy.is_keyframe = packet.is_keyframe
                packet = copy
            packet.stream = streams[index]
            target.mux(packet)
    return path


def av1_mp4(folder: Path) -> Path:
    return av1(folder, "in-av1.mp4")


# name: (maker, MIME type of the cleaned file)
SAMPLES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "jpeg": (jpeg, "image/jpeg"),
    "jpeg-rotated": (jpeg_rotated, "image/jpeg"),
    "jpeg-xmp-rotated": (jpeg_xmp_rotated, "image/jpeg"),
    "jpeg-mpo": (jpeg_mpo, "image/jpeg"),
    "png": (png, "image/png"),
    "png-rotated": (png_rotated, "image/png"),
    "webp": (webp, "image/webp"),
    "webp-rotated": (webp_rotated, "image/webp"),
    "tiff": (tiff, "image/tiff"),
    "gif": (gif, "image/gif"),
    "heic": (heic, "image/jpeg"),
    "avif": (avif, "image/jpeg"),
    "mp3": (mp3, "audio/mpeg"),
    "flac": (flac, "audio/flac"),
    "ogg-vorbis": (ogg_vorbis, "audio/ogg"),
    "opus": (opus, "audio/ogg"),
    "wav": (wav, "audio/x-wav"),
    "wav-float": (wav_float, "audio/x-wav"),
    "m4a": (m4a, "audio/x-m4a"),
    "mp4": (mp4, "video/mp4"),
    "mov": (mov, "video/quicktime"),
    "3gp": (threegp, "video/3gpp"),
    "3gp-amr": (threegp_amr, "video/3gpp"),
    "3g2": (threeg2, "video/3gpp2"),
    "mkv": (mkv, "video/x-matroska"),
    "webm": (webm, "video/webm"),
    "avi": (avi, "video/x-matroska"),
    "avi-bframes": (avi_bframes, "video/x-matroska"),
    "avi-xvid": (avi_xvid, "video/x-matroska"),
    "avi-xvid-packed": (avi_xvid_packed, "video/x-msvideo"),
    "avi-h264": (avi_h264, "video/x-msvideo"),
    "avi-h264-aac": (avi_h264_aac, "video/x-msvideo"),
    "avi-interlaced-2016": (avi_interlaced_2016, "video/x-matroska"),
    "avi-xvid-tag": (avi_xvid_tag, "video/x-msvideo"),
    "avi-mjpeg": (avi_mjpeg, "video/x-matroska"),
    "avi-adpcm": (avi_adpcm, "video/x-msvideo"),
    "mov-mjpeg": (mov_mjpeg, "video/quicktime"),
    "av1": (av1, "video/x-matroska"),
    "av1-mp4": (av1_mp4, "video/mp4"),
}

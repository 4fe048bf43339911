"""Every supported format, made with identifying metadata, cleaned by the sandboxed worker
and judged by exiftool, ffprobe and a byte search; pictures keep their pixels (JPEG, PNG,
WebP: bit-identical) and orientation, audio and video their streams and duration."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageOps, ImageSequence, PngImagePlugin

from relay.sanitize import Stripping, images, video
from tests.sanitize import judge, samples
from tests.sanitize.conftest import clean

BYTEWISE = {"jpeg", "png", "webp", "jpeg-rotated", "jpeg-mpo"}  # pixels decode identical


def _oriented_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).size


@pytest.mark.parametrize("name", sorted(samples.SAMPLES))
def test_cleaned_file_passes_the_judge(name: str, stripping: Stripping, tmp_path: Path) -> None:
    make, expected_mime = samples.SAMPLES[name]
    source = make(tmp_path)
    detected, report, data = clean(stripping, source.read_bytes())
    cleaned = tmp_path / f"cleaned.{detected.extension}"
    cleaned.write_bytes(data)

    assert report.stripped and report.mime == expected_mime
    assert report.removed, "the report names nothing removed from a file full of metadata"
    assert not any(m in r for r in report.removed for m in samples.MARKERS)
    assert judge.unexpected_tags(cleaned) == {}
    secrets = judge.identifying_strings(source) | set(samples.MARKERS)
    assert judge.strings_found(data, secrets) == set()
    assert judge.encoder_strings(data) == set()
    if detected.kind in ("audio", "video"):
        assert judge.ffprobe_problems(cleaned) == []
        before, after = judge.ffprobe(source), judge.ffprobe(cleaned)
        duration = float(before["format"]["duration"])
        assert float(after["format"]["duration"]) == pytest.approx(duration, abs=0.25)
        kinds = [s["codec_type"] for s in after["streams"]]
        assert kinds.count("video") == (detected.kind == "video")
        assert kinds.count("audio") == 1
    else:
        assert _oriented_size(cleaned) == _oriented_size(source)


@pytest.mark.parametrize("name", sorted(BYTEWISE))
def test_bytewise_formats_keep_every_pixel(name: str, stripping: Stripping, tmp_path: Path) -> None:
    source = samples.SAMPLES[name][0](tmp_path)
    _, _, data = clean(stripping, source.read_bytes())
    cleaned = tmp_path / "cleaned"
    cleaned.write_bytes(data)
    with Image.open(source) as before, Image.open(cleaned) as after:
        assert after.tobytes() == before.tobytes()
        assert after.getexif().get(0x0112, 1) == before.getexif().get(0x0112, 1)


@pytest.mark.parametrize("name", ["jpeg-xmp-rotated", "png-rotated", "webp-rotated", "tiff"])
def test_orientation_survives_stripping(name: str, stripping: Stripping, tmp_path: Path) -> None:
    """Orientation held in XMP, a PNG eXIf chunk or WebP EXIF would be lost with the block
    that held it: the result must still display the same way up."""
    source = samples.SAMPLES[name][0](tmp_path)
    _, _, data = clean(stripping, source.read_bytes())
    cleaned = tmp_path / "cleaned"
    cleaned.write_bytes(data)
    with Image.open(source) as before, Image.open(cleaned) as after:
        upright_before = ImageOps.exif_transpose(before).convert("RGB")
        upright_after = ImageOps.exif_transpose(after).convert("RGB")
        assert upright_after.size == upright_before.size
        assert upright_before.size != before.size or name == "tiff"  # really rotated
        # Lossless paths are exact; a JPEG rebuild keeps the coefficients too.
        assert upright_after.tobytes() == upright_before.tobytes()


def test_h264_encoder_settings_are_removed(stripping: Stripping, tmp_path: Path) -> None:
    """x264 writes its version and settings into an SEI unit of the first frame."""
    source = samples.mp4(tmp_path)
    assert b"x264 - core" in source.read_bytes()
    _, report, data = clean(stripping, source.read_bytes())
    assert b"x264" not in data
    assert "encoder data in the video stream (SEI)" in report.removed


@pytest.mark.parametrize("name", ["avi", "avi-bframes"])
def test_mpeg4_encoder_strings_are_removed(name: str, stripping: Stripping, tmp_path: Path) -> None:
    """MPEG-4 Part 2 encoders write their name and version into user data ("Lavc59.37.100"
    from FFmpeg, "XviD0069", "DivX503b1393p"), in the stream header and before key frames."""
    source = samples.SAMPLES[name][0](tmp_path)
    assert source.read_bytes().count(b"Lavc") >= 2
    _, report, data = clean(stripping, source.read_bytes())
    assert b"Lavc" not in data
    assert "encoder data in the video stream (user data)" in report.removed


@pytest.mark.parametrize("name", ["avi-xvid", "avi-xvid-packed"])
def test_xvid_builds_keep_only_what_the_decoder_reads(
    name: str, stripping: Stripping, tmp_path: Path
) -> None:
    """libxvid writes its build ("XviD0069"), and for packed B-frames a DivX string too
    ("DivX503b1393p"): streamed as Matroska, or rewritten in place in an AVI that stays an
    AVI, each is cut to the class FFmpeg's decoder reads (the frames are compared in the
    test below)."""
    source = samples.SAMPLES[name][0](tmp_path)
    assert b"XviD0069" in source.read_bytes()
    _, report, data = clean(stripping, source.read_bytes())
    assert b"XviD0069" not in data and b"DivX503b1393" not in data
    assert b"XviD33" in data
    assert "encoder data in the video stream (user data)" in report.removed


@pytest.mark.parametrize("name", ["avi-mjpeg", "avi-adpcm", "mov-mjpeg"])
def test_motion_jpeg_frames_are_reported_rebuilt(
    name: str, stripping: Stripping, tmp_path: Path
) -> None:
    """A camera's EXIF in every frame goes (the judge's byte search finds none of it), and
    the report says what went: streamed, and rewritten in place in an AVI."""
    source = samples.SAMPLES[name][0](tmp_path)
    _, report, data = clean(stripping, source.read_bytes())
    assert samples.SERIAL.encode() in source.read_bytes()
    assert samples.SERIAL.encode() not in data
    assert video.MJPEG_NAME in report.removed


def _frame_times_and_hashes(path: Path) -> list[str]:
    """Each video frame Debian's ffmpeg shows, in order: its presentation time (in frames)
    and the MD5 of its pixels."""
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v"]
        + ["-fps_mode", "passthrough", "-f", "framemd5", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split(",") for line in out.splitlines() if line and not line.startswith("#")]
    return [f"{int(row[2])} {row[5].strip()}" for row in rows]


@pytest.mark.parametrize(
    "name",
    [
        "avi",
        "avi-bframes",
        "avi-xvid",
        "avi-xvid-packed",
        "avi-h264",
        "avi-interlaced-2016",
        "avi-xvid-tag",
    ],
)
def test_an_avi_keeps_every_frame_at_its_time(
    name: str, stripping: Stripping, tmp_path: Path
) -> None:
    """An AVI holds frames in decoding order, with no presentation times: where it becomes
    Matroska, the times FFmpeg makes up must show each frame, identical, when the AVI did
    (B-frames included); where they would not (packed B-frames, H.264 with B-pyramids),
    it stays an AVI. An Xvid video decodes to the same pixels only if FFmpeg still finds
    Xvid's build in it (mpegvideo.decoder_hint), an FFmpeg 3.0 interlaced one if it finds
    that build's class, and one that stays an AVI under the fourcc XVID if it finds that
    FFmpeg made it."""
    source = samples.SAMPLES[name][0](tmp_path)
    detected, _, data = clean(stripping, source.read_bytes())
    cleaned = tmp_path / f"cleaned.{detected.extension}"
    cleaned.write_bytes(data)
    before = _frame_times_and_hashes(source)
    assert len(before) >= 18  # 20 frames made; packed Xvid decodes 18 of them
    assert _frame_times_and_hashes(cleaned) == before


def test_an_avi_kept_as_an_avi_has_its_header_filled_in(
    stripping: Stripping, tmp_path: Path
) -> None:
    """An AVI that stays an AVI is sent forward, its muxer's rewrites (sizes, frame counts,
    filled in at the end) put in place from a first pass (rewrites.py). On a file larger
    than FFmpeg's output buffer, so that the rewrites reach the worker's sink: RIFF's size
    covers the file, and the header's frame count (ffprobe's nb_frames, from the stream
    header) is the number of video packets."""
    source = tmp_path / "in.avi"
    samples.ffmpeg(
        "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=8",
        "-f", "lavfi", "-i", "sine=duration=8", "-vf", "noise=alls=20:allf=t",
        *samples.H264, "-bf", "2", "-qp", "10", "-c:a", "adpcm_ima_wav", str(source),
    )  # fmt: skip
    _, report, data = clean(stripping, source.read_bytes())
    assert report.mime == "video/x-msvideo"
    assert len(data) > 4 * video.IO_BUFFER
    assert int.from_bytes(data[4:8], "little") == len(data) - 8
    cleaned = tmp_path / "cleaned.avi"
    cleaned.write_bytes(data)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
         "-show_entries", "stream=nb_frames,nb_read_packets", "-of", "csv=p=0", str(cleaned)],
        capture_output=True, text=True, check=True,
    ).stdout.split(",")  # fmt: skip
    assert int(probe[0]) == int(probe[1]) == 200


def test_mp4_keeps_rotation_and_drops_the_gps_track(stripping: Stripping, tmp_path: Path) -> None:
    source = samples.mp4(tmp_path)
    assert [s["codec_type"] for s in judge.ffprobe(source)["streams"]].count("subtitle") == 1
    _, _, data = clean(stripping, source.read_bytes())
    cleaned = tmp_path / "cleaned.mp4"
    cleaned.write_bytes(data)
    video = [s for s in judge.ffprobe(cleaned)["streams"] if s["codec_type"] == "video"][0]
    rotations = [d.get("rotation") for d in video.get("side_data_list", [])]
    assert rotations and abs(int(rotations[0])) == 90


def _frames(path: Path) -> list[tuple[str, int]]:
    """Frames decoded in each audio and video stream by Debian's ffmpeg (not PyAV's)."""
    streams = judge.ffprobe_frames(path)["streams"]
    return [
        (s["codec_type"], int(s["nb_read_frames"]))
        for s in streams
        if s["codec_type"] in ("video", "audio")
    ]


STREAMED_OR_AVI = [
    *("mp4", "mov", "3gp", "3gp-amr", "3g2", "mkv", "webm", "avi", "avi-bframes"),
    *("avi-xvid-packed", "avi-h264"),
    *("avi-mjpeg", "avi-adpcm", "mov-mjpeg", "av1", "av1-mp4"),
]  # not avi-h264-aac: Debian's ffmpeg complains of its AAC times in the input already


@pytest.mark.parametrize("name", STREAMED_OR_AVI)
def test_streamed_videos_decode_in_full(name: str, stripping: Stripping, tmp_path: Path) -> None:
    """Written forward only (fragmented MP4, Matroska without cues), the result still
    decodes to the end, every frame of every kept stream, with no decoder complaint."""
    source = samples.SAMPLES[name][0](tmp_path)
    detected, _, data = clean(stripping, source.read_bytes())
    cleaned = tmp_path / f"cleaned.{detected.extension}"
    cleaned.write_bytes(data)
    assert judge.decoder_complaints(cleaned) == ""
    before, after = _frames(source), _frames(cleaned)
    assert [kind for kind, _ in after] == [kind for kind, _ in before]
    for (kind, count_before), (_, count_after) in zip(before, after, strict=True):
        if kind == "video":
            assert count_after == count_before
        else:
            # A fragmented MP4 has no place for the trim of the encoder's padding at the end
            # (the edit list is written before the last packet): one more AAC frame decodes.
            assert count_before <= count_after <= count_before + 1


def _main_image_kept(
    stripping: Stripping, source: Path, tmp_path: Path, others: int
) -> tuple[bytes, Path]:
    """Cleans a file of several images into a JPEG whose report says `others` went."""
    _, report, data = clean(stripping, source.read_bytes())
    cleaned = tmp_path / "cleaned.jpg"
    cleaned.write_bytes(data)
    assert report.mime == "image/jpeg"
    assert f"{others} other image(s) in the file (only its main image is kept)" in report.removed
    return data, cleaned


def test_a_multi_picture_jpeg_keeps_its_first_image_only(
    stripping: Stripping, tmp_path: Path
) -> None:
    """The images after a JPEG's first (Multi-Picture Format) go, each with its metadata:
    the report says so, and the result is one picture, the first."""
    source = samples.jpeg_mpo(tmp_path)
    with Image.open(source) as before:
        assert before.format == "MPO" and getattr(before, "n_frames", 1) == 2
        first = before.convert("RGB").tobytes()
    data, cleaned = _main_image_kept(stripping, source, tmp_path, others=1)
    with Image.open(cleaned) as after:
        assert after.format == "JPEG" and getattr(after, "n_frames", 1) == 1
        assert after.convert("RGB").tobytes() == first
    assert judge.strings_found(data, set(samples.MARKERS)) == set()


def _heif_collection(path: Path, primary: int) -> list[tuple[int, int]]:
    """A HEIC holding three images of different sizes and colours, the identifying EXIF
    on each, `primary` the one viewers show."""
    import pillow_heif

    sizes, colours = [(64, 48), (32, 80), (16, 16)], [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    exif = Image.Exif()
    exif[0x010F] = samples.MAKER
    images = [Image.new("RGB", s, c) for s, c in zip(sizes, colours, strict=True)]
    collection = pillow_heif.from_pillow(images[0])
    for image in images[1:]:
        collection.add_from_pillow(image)
    collection.save(path, quality=90, primary_index=primary, exif=exif.tobytes())
    return sizes


@pytest.mark.parametrize("size", [(1, 1), (7, 5)])
def test_a_jpeg_smaller_than_a_block_is_cleaned(
    size: tuple[int, int], stripping: Stripping, tmp_path: Path
) -> None:
    """The check after cleaning decodes a JPEG at 1/8 of its size: one under 8 pixels a
    side (exiv2's test files hold several) is still decoded, not refused."""
    source = tmp_path / "tiny.jpg"
    Image.new("RGB", size, (200, 100, 50)).save(source)
    samples.exiftool_write(source, *samples.EXIF_ARGS)
    _, report, data = clean(stripping, source.read_bytes())
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == size
    assert judge.strings_found(data, set(samples.MARKERS)) == set()
    assert "EXIF Make" in report.removed


def test_a_png_with_a_large_compressed_block_is_cleaned(
    stripping: Stripping, tmp_path: Path
) -> None:
    """A compressed text chunk that inflates past Pillow's default limit (1 MiB: an XMP
    packet bloated by an editor's history) no longer makes the picture unreadable."""
    source = tmp_path / "large-text.png"
    info = PngImagePlugin.PngInfo()
    info.add_text("XML:com.adobe.xmp", "<history/>" * 300_000 + samples.PERSON, zip=True)
    picture = samples._picture()
    picture.save(source, pnginfo=info)
    _, _, data = clean(stripping, source.read_bytes())
    with Image.open(io.BytesIO(data)) as after:  # (the source: too large for this Pillow)
        assert after.convert("RGB").tobytes() == picture.tobytes()
    assert judge.strings_found(data, {samples.PERSON, "history"}) == set()


def _timeline(path: Path) -> list[tuple[bytes, float]]:
    """Each frame's pixels and how long it is shown; consecutive identical ones as one."""
    runs: list[tuple[bytes, float]] = []
    with Image.open(path) as image:
        for frame in ImageSequence.Iterator(image):
            pixels, shown = frame.convert("RGBA").tobytes(), float(frame.info["duration"])
            if runs and runs[-1][0] == pixels:
                runs[-1] = (pixels, runs[-1][1] + shown)
            else:
                runs.append((pixels, shown))
    return runs


def test_an_animation_whose_frames_repeat_keeps_its_timeline(
    stripping: Stripping, tmp_path: Path
) -> None:
    """Pillow's GIF writer merges consecutive identical frames into one shown as long: the
    result holds fewer frames, showing the same pictures for the same times."""
    source = tmp_path / "repeats.gif"
    # Four pictures, each written as three frames (ffmpeg keeps repeats; Pillow would not).
    samples.ffmpeg("-f", "lavfi", "-i", "testsrc2=s=96x64:r=2:d=2", "-vf", "fps=6", str(source))
    samples.exiftool_write(source, f"-Comment={samples.PERSON}")
    _, _, data = clean(stripping, source.read_bytes())
    cleaned = tmp_path / "cleaned.gif"
    cleaned.write_bytes(data)
    with Image.open(source) as before, Image.open(cleaned) as after:
        assert (getattr(before, "n_frames", 1), getattr(after, "n_frames", 1)) == (12, 4)
    assert _timeline(cleaned) == _timeline(source)
    assert judge.strings_found(data, {samples.PERSON}) == set()


@pytest.mark.parametrize(("shown", "passes"), [([100, 200], True), ([100, 150], False)])
def test_merged_frames_pass_only_if_shown_as_long(shown: list[int], passes: bool) -> None:
    """images.verify itself: a result of fewer frames than the animation it came from (3,
    shown 300 ms in all) passes only if its frames are shown as long."""
    red, blue = Image.new("RGB", (8, 8), (255, 0, 0)), Image.new("RGB", (8, 8), (0, 0, 255))
    out = io.BytesIO()
    red.save(out, "GIF", save_all=True, append_images=[blue], duration=shown)
    picture = images.Picture((8, 8), 3, 1, (), duration=300.0)
    if passes:
        images.verify(out.getvalue(), picture, 3)
    else:
        with pytest.raises(ValueError, match="lost frames"):
            images.verify(out.getvalue(), picture, 3)


@pytest.mark.parametrize("primary", [0, 1])
def test_a_heic_collection_keeps_its_primary_image_only(
    primary: int, stripping: Stripping, tmp_path: Path
) -> None:
    """A HEIF file may hold several images; viewers show the primary one, which need not
    be the first. That one is kept, and the report says the others went."""
    source = tmp_path / "collection.heic"
    sizes = _heif_collection(source, primary)
    data, cleaned = _main_image_kept(stripping, source, tmp_path, others=2)
    with Image.open(cleaned) as image:
        assert image.size == sizes[primary] and getattr(image, "n_frames", 1) == 1
        colour = image.convert("RGB").getpixel((8, 8))
    expected = [(255, 0, 0), (0, 255, 0)][primary]
    assert isinstance(colour, tuple)
    assert all(abs(a - b) < 24 for a, b in zip(colour, expected, strict=True))
    assert judge.unexpected_tags(cleaned) == {}
    assert judge.strings_found(data, {samples.MAKER}) == set()

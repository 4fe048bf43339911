"""Pictures through Pillow: reading orientation and tag names, re-encoding the formats whose
metadata cannot be cut out byte-wise, and decoding every result once more.

Rules (measured in notes/metadata.md):
- limits first: `Image.MAX_IMAGE_PIXELS` is set and a DecompressionBombWarning is an error,
  so a small file that would decode to gigabytes is refused before it is decoded;
- re-encoding makes a new image from pixels alone: orientation applied, `info` emptied
  (Pillow writes comments, ICC, IPTC and XMP back from it otherwise), saved with
  `exif=b""`; only frame timing, loop and transparency survive for animations;
- TIFF and GIF stay TIFF and GIF; HEIC/HEIF and AVIF become JPEG (quality 95): there is no
  byte-wise way to take the metadata boxes out of them that we have measured as clean. A
  HEIF file may hold several images: only its primary one (the one viewers show, not
  always the first) is kept, and the report says how many others went;
- PNG and WebP whose orientation is not 1 (held in eXIf or XMP, which the chunk allowlist
  drops) are re-encoded losslessly with the rotation applied.

Runs only inside the sandboxed worker: everything here parses hostile bytes.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageOps, ImageSequence, PngImagePlugin

# 110 megapixels: above the largest phone sensors in use (108 MP) at their full size; a
# decompression bomb is far beyond it. Pillow refuses at twice this with an error; the
# warning (at this size) is made an error too.
MAX_PIXELS = 110_000_000
# Pixels over all frames of an animation or a multi-page TIFF: bounds a GIF bomb made of
# many small frames as well as one huge one.
MAX_TOTAL_PIXELS = 400_000_000
MAX_FRAMES = 2000
# Pillow decompresses a PNG's text chunks and ICC profile whole to read them, and refuses
# one past 1 MiB (its default): an XMP packet bloated by an editor's history, a printer's
# profile (measured: exiv2's ReaganLargePng.png, a 1.1 MB iCCP). They go all the same
# (chunks.py); each may decompress to this much, all text chunks together to 4x.
PNG_BLOCK_BYTES = 16 << 20
ANIMATED = frozenset({"GIF", "PNG", "WEBP"})  # Pillow's formats whose frames have durations


# Read through pillow-heif; importing it costs ~40 ms, so only these load it.
HEIF_TYPES = frozenset({"image/heic", "image/heif", "image/avif"})


def configure(mime: str) -> None:
    """Pillow's limits for hostile input, and the HEIF reader where `mime` needs it. Call
    once in the worker before any decode."""
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    PngImagePlugin.MAX_TEXT_CHUNK = PNG_BLOCK_BYTES
    PngImagePlugin.MAX_TEXT_MEMORY = 4 * PNG_BLOCK_BYTES
    if mime not in HEIF_TYPES:
        return
    try:
        import pillow_heif  # noqa: PLC0415 - optional codec, registered only where used

        pillow_heif.register_heif_opener()
    except ImportError:  # HEIC is then refused as a file Pillow cannot open
        pass


@dataclass(frozen=True)
class Picture:
    """What the worker needs to know about an input picture."""

    size: tuple[int, int]  # after orientation
    frames: int
    orientation: int
    tags: tuple[str, ...]  # names of EXIF/GPS tags present, for the report
    duration: float = 0.0  # milliseconds an animation's frames are shown, all together


def _check_frames(image: Image.Image) -> int:
    frames = getattr(image, "n_frames", 1)
    if frames > MAX_FRAMES or frames * image.width * image.height > MAX_TOTAL_PIXELS:
        raise Image.DecompressionBombError("too many pixels over all frames")
    return int(frames)


def _tag_names(exif: Image.Exif) -> tuple[str, ...]:
    names = [f"EXIF {ExifTags.TAGS.get(tag, hex(tag))}" for tag in exif]
    try:
        gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    except (KeyError, ValueError, TypeError, OSError):  # a broken GPS IFD: named, not read
        gps = {}
    names += [f"GPS {ExifTags.GPSTAGS.get(tag, hex(tag))}" for tag in gps]
    return tuple(dict.fromkeys(names))


def _shown_for(image: Image.Image) -> float:
    """Milliseconds the frames of `image` are shown, all together (0 for a still)."""
    return sum(float(frame.info.get("duration") or 0) for frame in ImageSequence.Iterator(image))


def inspect(data: bytes) -> Picture:
    """Opens and measures a picture without decoding its pixels. Raises PIL errors,
    OSError or ValueError for what Pillow cannot read."""
    with Image.open(io.BytesIO(data)) as image:
        frames = _check_frames(image)
        duration = 0.0
        if frames > 1 and image.format in ANIMATED:  # (not a TIFF's pages, an MPO's views)
            duration = _shown_for(image)
            image.seek(0)
        exif = image.getexif()
        orientation = int(exif.get(ExifTags.Base.Orientation, 1) or 1)
        if orientation not in range(1, 9):
            orientation = 1
        width, height = image.size
        # Pillow's TIFF reader applies orientation itself (its size is already upright).
        if orientation in (5, 6, 7, 8) and image.format != "TIFF":
            width, height = height, width
        return Picture((width, height), frames, orientation, _tag_names(exif), duration)


def _upright(frame: Image.Image) -> Image.Image:
    """A copy turned the right way up, with no metadata. Pillow knows where each format
    keeps orientation (EXIF, XMP) and whether its reader applied it already (TIFF)."""
    result = ImageOps.exif_transpose(frame)
    result.info = {}
    return result


_FORMATS: dict[str, tuple[str, str, dict[str, object]]] = {
    "image/tiff": ("TIFF", "image/tiff", {"compression": "tiff_deflate"}),
    "image/gif": ("GIF", "image/gif", {}),
    "image/png": ("PNG", "image/png", {}),
    "image/webp": ("WEBP", "image/webp", {"lossless": True}),
    "image/heic": ("JPEG", "image/jpeg", {"quality": 95}),
    "image/heif": ("JPEG", "image/jpeg", {"quality": 95}),
    "image/avif": ("JPEG", "image/jpeg", {"quality": 95}),
}
_KEPT_INFO = ("duration", "loop", "transparency", "disposal")


def reencode(data: bytes, mime: str) -> tuple[bytes, str, list[str]]:
    """A new file from the pixels of `data` alone: (bytes, MIME type of the result, names
    of what else went). Raises PIL errors, OSError or ValueError for what Pillow cannot
    decode."""
    pillow_format, out_mime, options = _FORMATS[mime]
    with Image.open(io.BytesIO(data)) as image:
        count = _check_frames(image)
        if pillow_format == "JPEG":
            return _primary_as_jpeg(image, options), out_mime, other_images(count)
        frames, durations = [], []
        for frame in ImageSequence.Iterator(image):
            frame.load()
            durations.append(frame.info.get("duration"))
            frames.append(_upright(frame))
        kept = {k: image.info[k] for k in _KEPT_INFO if k in image.info}
    save: dict[str, object] = {**options, "exif": b""}
    if pillow_format == "GIF":
        save.update(kept)
        if all(d is not None for d in durations):
            save["duration"] = durations
    if len(frames) > 1:
        save.update(save_all=True, append_images=frames[1:])
    out = io.BytesIO()
    frames[0].save(out, pillow_format, **save)
    return out.getvalue(), out_mime, []


def _primary_as_jpeg(image: Image.Image, options: dict[str, object]) -> bytes:
    """The image a HEIF/AVIF file opens on (its primary: a file may hold a collection, and
    the primary is not always the first) as a JPEG; the others are not decoded."""
    image.load()
    copy = _upright(image)
    if copy.mode not in ("RGB", "L", "CMYK"):
        copy = copy.convert("RGB")
    out = io.BytesIO()
    copy.save(out, "JPEG", **{**options, "exif": b""})
    return out.getvalue()


def other_images(count: int) -> list[str]:
    """The report's name for what went of a file of `count` images when its main one is
    kept alone (a HEIF collection; a JPEG's Multi-Picture extra images: jpeg.py)."""
    if count <= 1:
        return []
    return [f"{count - 1} other image(s) in the file (only its main image is kept)"]


def verify(data: bytes, picture: Picture, frames: int) -> None:
    """Decodes the cleaned file (all of its data) and compares it with the input's
    measurements: the same size, and `frames` images (an animation's or a TIFF's pages
    all kept; one where only the main image is, `other_images`). An encoder may merge an
    animation's consecutive identical frames into one shown as long (Pillow's GIF and PNG
    writers do): fewer frames then pass if they are shown for the same time in all.
    Raises ValueError (or a PIL error) if it is not a valid picture of the same size."""
    with Image.open(io.BytesIO(data)) as image:
        oriented = picture.size
        exif = image.getexif()
        orientation = int(exif.get(ExifTags.Base.Orientation, 1) or 1)
        width, height = image.size
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        if (width, height) != oriented:
            raise ValueError("the cleaned picture has other dimensions")
        if image.format == "JPEG":
            # Decoded at 1/8 scale: every coefficient is still entropy-decoded (a damaged
            # or truncated scan fails the same way), the inverse DCT and colour conversion
            # are skipped. Measured on a 24-megapixel JPEG: 0.11 s and 1/64 of the memory,
            # against 0.20-0.25 s for a full decode.
            image.draft(image.mode, (max(1, image.width // 8), max(1, image.height // 8)))
        decoded = 0
        for frame in ImageSequence.Iterator(image):
            frame.load()
            decoded += 1
        if decoded == frames:
            return
        shown = _shown_for(image)
        merged = 0 < decoded < frames and picture.duration > 0
        if not merged or abs(shown - picture.duration) > frames:  # rounding: 1 ms a frame
            raise ValueError("the cleaned picture lost frames")

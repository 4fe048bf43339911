"""JPEG without metadata, pixels untouched: the file is rebuilt from its image segments.
The same for each frame of a Motion JPEG video (`rebuild_frame`, used by video.py): cameras
write EXIF (maker, model, serial number, GPS, time) into every frame, and FFmpeg's encoder
its name in a COM segment.

Rules (measured in notes/metadata.md):
- kept: SOI, DQT, DHT, DAC, SOFn, DRI, SOS with its entropy-coded data, DNL, EOI; a JFIF
  header is rewritten (version, density; never its thumbnail) and an Adobe APP14 is
  rewritten canonically (only its colour transform byte, which decoding needs);
- dropped: APP1-APP13 and APP15 (EXIF, XMP, ICC, MPF, IPTC, maker and vendor blocks), COM,
  anything after EOI (MPF images, gain maps, an appended ZIP);
- orientation is the one piece of metadata that changes what a viewer shows: when it is not
  1, a new EXIF block holding Orientation alone is written, so the picture stays upright;
- a video's frame may hold two images (an interlaced frame's fields) and keeps its AVI1
  header (the field order; FFmpeg's decoder reads it), with the sizes it states zeroed; a
  last scan cut short is kept as it is, with no EOI added (a camera that stopped
  mid-frame); a rebuilt frame is never longer than the frame it came from;
- the quantisation tables stay (changing them means re-encoding); they hint at the camera
  maker, and the README says so.

Pure: bytes in, bytes out. Raises ValueError for anything that is not a whole baseline,
extended or progressive JPEG with at least one frame and one scan.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

SOI, EOI, SOS, APP0, APP14, COM = 0xD8, 0xD9, 0xDA, 0xE0, 0xEE, 0xFE
DQT, DHT, DAC, DRI, DNL = 0xDB, 0xC4, 0xCC, 0xDD, 0xDC
SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
KEPT = SOF | {DQT, DHT, DAC, DRI, DNL}
RST = frozenset(range(0xD0, 0xD8))

# Segment names for the report: what kind of block went, never what it held.
_APP_NAMES = {
    b"Exif\x00": "EXIF",
    b"http://ns.adobe.com/xap/1.0/\x00": "XMP",
    b"http://ns.adobe.com/xmp/extension/\x00": "XMP extension",
    b"ICC_PROFILE\x00": "ICC profile",
    b"MPF\x00": "MPF (extra images)",
    b"Photoshop 3.0\x00": "Photoshop/IPTC",
    b"JFXX\x00": "JFIF thumbnail",
    b"Ducky": "Ducky",
}


def _app_name(marker: int, body: bytes) -> str:
    for prefix, name in _APP_NAMES.items():
        if body.startswith(prefix):
            return f"APP{marker - APP0} {name}"
    return f"APP{marker - APP0}"


def orientation_exif(orientation: int) -> bytes:
    """An APP1 EXIF segment that holds Orientation and nothing else (little-endian TIFF)."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def _jfif(body: bytes) -> bytes | None:
    """A canonical JFIF APP0 keeping the density fields, or None if this APP0 is not JFIF."""
    if not body.startswith(b"JFIF\x00") or len(body) < 14:
        return None
    units, xdensity, ydensity = body[7], body[8:10], body[10:12]
    out = b"JFIF\x00\x01\x01" + bytes([units if units <= 2 else 0]) + xdensity + ydensity
    out += b"\x00\x00"  # no thumbnail
    return b"\xff\xe0" + struct.pack(">H", len(out) + 2) + out


def _avi1(body: bytes) -> bytes | None:
    """A canonical AVI1 APP0 of a Motion JPEG frame: its field order byte (which FFmpeg's
    decoder reads), the two field sizes zeroed (they say nothing a decoder needs). None if
    this APP0 is not AVI1."""
    if not body.startswith(b"AVI1") or len(body) < 5:
        return None
    out = b"AVI1" + bytes([body[4]]) + bytes(min(len(body), 14) - 5)  # never longer
    return b"\xff\xe0" + struct.pack(">H", len(out) + 2) + out


def _adobe(body: bytes) -> bytes | None:
    """A canonical Adobe APP14: only the transform byte carries meaning for decoding."""
    if not body.startswith(b"Adobe") or len(body) < 12:
        return None
    out = b"Adobe" + struct.pack(">HHHB", 100, 0, 0, body[11])
    return b"\xff\xee" + struct.pack(">H", len(out) + 2) + out


_MARKER_AFTER_SCAN = re.compile(rb"\xff(?=[^\x00\xd0-\xd7\xff])")


def _scan_end(data: bytes, start: int, cut_short: bool) -> int:
    """The offset of the first marker after entropy-coded data (past stuffed zeros, fill
    bytes and restart markers). A scan that runs to the end is an error, or, where
    `cut_short` allows it (a video's frame: a camera that stopped mid-write), ends there."""
    found = _MARKER_AFTER_SCAN.search(data, start)
    if found is not None:
        return found.start()
    if cut_short:
        return len(data)
    raise ValueError("scan data runs past the end of the file")


@dataclass
class _Image:
    """One JPEG image read from SOI to EOI: what is kept, and the names of what is not."""

    header: list[bytes] = field(default_factory=list)  # JFIF (and a video frame's AVI1)
    body: list[bytes] = field(default_factory=list)  # Adobe, tables, frame, scans
    removed: list[str] = field(default_factory=list)
    end: int = 0  # offset after its EOI
    frames: int = 0
    scans: int = 0
    cut_short: bool = False  # a video frame's last scan ran to the end: no EOI

    def joined(self, extra: Sequence[bytes] = ()) -> bytes:
        end = b"" if self.cut_short else b"\xff\xd9"
        return b"".join([b"\xff\xd8", *self.header, *extra, *self.body, end])


def _read_image(data: bytes, start: int, frame_of_video: bool) -> _Image:
    """Reads the image whose SOI is at `start`. In a video's frame (Motion JPEG), an AVI1
    header is kept (its field order; the sizes it states are zeroed) and a scan cut short
    ends the image. Raises ValueError for anything else that is not a whole image."""
    if data[start : start + 2] != b"\xff\xd8":
        raise ValueError("not a JPEG")
    image = _Image()
    position = start + 2
    while True:
        if position >= len(data) and frame_of_video and image.scans:
            image.cut_short = True  # the data ends after (or inside) its last scan
            break
        if position + 2 > len(data) or data[position] != 0xFF:
            raise ValueError("expected a marker")
        marker = data[position + 1]
        if marker == 0xFF:  # fill bytes before a marker
            position += 1
            continue
        if marker == EOI:
            position += 2
            break
        if marker in RST or marker == SOI or marker == 0x01:
            raise ValueError("unexpected standalone marker")
        if position + 4 > len(data):
            raise ValueError("truncated segment header")
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        end = position + 2 + length
        if length < 2 or end > len(data):
            raise ValueError("segment runs past the end of the file")
        segment, content = data[position:end], data[position + 4 : end]
        if marker == SOS:
            scan_end = _scan_end(data, end, frame_of_video)
            image.body.append(data[position:scan_end])
            image.scans += 1
            position = scan_end
            continue
        if marker in KEPT:
            image.frames += marker in SOF
            image.body.append(segment)
        elif marker == APP0 and (jfif := _jfif(content)) is not None:
            if not any(h.startswith(b"\xff\xe0\x00\x10JFIF") for h in image.header):
                image.header.append(jfif)
            if jfif[4:] != segment[4:]:
                image.removed.append("APP0 JFIF extras")
        elif marker == APP0 and frame_of_video and (avi1 := _avi1(content)) is not None:
            if not any(h[4:8] == b"AVI1" for h in image.header):
                image.header.append(avi1)
        elif marker == APP14 and (adobe := _adobe(content)) is not None:
            image.body.insert(0, adobe)
        elif marker == COM:
            image.removed.append("COM (comment)")
        elif 0xE0 <= marker <= 0xEF:
            image.removed.append(_app_name(marker, content))
        else:
            raise ValueError("unknown segment")
        position = end
    if image.frames != 1 or image.scans == 0:
        raise ValueError("no single frame with image data")
    image.end = position
    return image


def rebuild(data: bytes, orientation: int = 1) -> tuple[bytes, list[str]]:
    """The image segments of `data`, and the names of the blocks left out.
    Raises ValueError for a file that is not a complete JPEG."""
    image = _read_image(data, 0, frame_of_video=False)
    removed = image.removed
    if image.end < len(data):
        removed.append("data after the end of the image")
    extra = [orientation_exif(orientation)] if orientation != 1 else []
    return image.joined(extra), list(dict.fromkeys(removed))


def rebuild_frame(data: bytes) -> tuple[bytes, int]:
    """A Motion JPEG video frame (one image, or two: an interlaced frame's fields) rebuilt
    from its image segments; returns it and how many blocks went (APPn, COM, bytes after
    its images). Zero or 0xFF bytes between and after the images are padding and go
    silently. Raises ValueError for a frame that does not parse."""
    images: list[bytes] = []
    position, dropped = 0, 0
    while position < len(data):
        if data[position] in (0x00, 0xFF) and data[position : position + 2] != b"\xff\xd8":
            position += 1  # padding
            continue
        if data[position : position + 2] != b"\xff\xd8":
            if not images:
                raise ValueError("not a JPEG")
            dropped += 1  # anything else after the images: a decoder never reads it
            break
        image = _read_image(data, position, frame_of_video=True)
        images.append(image.joined())
        dropped += len(image.removed)
        position = image.end
    if not images:
        raise ValueError("not a JPEG")
    return b"".join(images), dropped

"""JPEG without metadata, pixels untouched: the file is rebuilt from its image segments.

Rules (measured in notes/metadata.md):
- kept: SOI, DQT, DHT, DAC, SOFn, DRI, SOS with its entropy-coded data, DNL, EOI; a JFIF
  header is rewritten (version, density; never its thumbnail) and an Adobe APP14 is
  rewritten canonically (only its colour transform byte, which decoding needs);
- dropped: APP1-APP13 and APP15 (EXIF, XMP, ICC, MPF, IPTC, maker and vendor blocks), COM,
  anything after EOI (MPF images, gain maps, an appended ZIP);
- orientation is the one piece of metadata that changes what a viewer shows: when it is not
  1, a new EXIF block holding Orientation alone is written, so the picture stays upright;
- the quantisation tables stay (changing them means re-encoding); they hint at the camera
  maker, and the README says so.

Pure: bytes in, bytes out. Raises ValueError for anything that is not a whole baseline,
extended or progressive JPEG with at least one frame and one scan.
"""

from __future__ import annotations

import struct

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


def _adobe(body: bytes) -> bytes | None:
    """A canonical Adobe APP14: only the transform byte carries meaning for decoding."""
    if not body.startswith(b"Adobe") or len(body) < 12:
        return None
    out = b"Adobe" + struct.pack(">HHHB", 100, 0, 0, body[11])
    return b"\xff\xee" + struct.pack(">H", len(out) + 2) + out


def _scan_end(data: bytes, start: int) -> int:
    """The offset of the first marker after entropy-coded data (skipping stuffed zeros and
    restart markers)."""
    position = start
    while True:
        position = data.find(b"\xff", position)
        if position < 0 or position + 1 >= len(data):
            raise ValueError("scan data runs past the end of the file")
        following = data[position + 1]
        if following == 0x00 or following in RST or following == 0xFF:
            position += 1 if following == 0xFF else 2
            continue
        return position


def rebuild(data: bytes, orientation: int = 1) -> tuple[bytes, list[str]]:
    """The image segments of `data`, and the names of the blocks left out.
    Raises ValueError for a file that is not a complete JPEG."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    header: list[bytes] = []
    body: list[bytes] = []
    removed: list[str] = []
    frames = scans = 0
    position = 2
    while True:
        if position + 2 > len(data) or data[position] != 0xFF:
            raise ValueError("expected a marker")
        marker = data[position + 1]
        if marker == 0xFF:  # fill bytes before a marker
            position += 1
            continue
        if marker == EOI:
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
            scan_end = _scan_end(data, end)
            body.append(data[position:scan_end])
            scans += 1
            position = scan_end
            continue
        if marker in KEPT:
            frames += marker in SOF
            body.append(segment)
        elif marker == APP0 and (jfif := _jfif(content)) is not None:
            if not header:
                header.append(jfif)
            if jfif[4:] != segment[4:]:
                removed.append("APP0 JFIF extras")
        elif marker == APP14 and (adobe := _adobe(content)) is not None:
            body.insert(0, adobe)
        elif marker == COM:
            removed.append("COM (comment)")
        elif 0xE0 <= marker <= 0xEF:
            removed.append(_app_name(marker, content))
        else:
            raise ValueError("unknown segment")
        position = end
    if frames != 1 or scans == 0:
        raise ValueError("no single frame with image data")
    if position + 2 < len(data):
        removed.append("data after the end of the image")
    if orientation != 1:
        header.append(orientation_exif(orientation))
    out = b"".join([b"\xff\xd8", *header, *body, b"\xff\xd9"])
    return out, list(dict.fromkeys(removed))

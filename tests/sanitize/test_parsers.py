"""The byte-wise parsers (JPEG segments, PNG and WebP chunks) on random mutations of real
files with metadata: each either raises its own error (ValueError, which the worker turns
into a refusal) or returns a file that holds only allowed blocks and that the same parser
takes back unchanged. Any other exception is a parser bug."""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.sanitize import chunks, errors, jpeg, worker
from tests.sanitize import judge, samples

# The real files, made once for the module (exiftool writes their metadata).
_FILES: dict[str, list[bytes]] = {}


@pytest.fixture(autouse=True, scope="module")
def _real_files(tmp_path_factory: pytest.TempPathFactory) -> None:
    made: dict[str, list[bytes]] = {"jpeg": [], "png": [], "webp": []}
    for name, kind in [
        ("jpeg", "jpeg"),
        ("jpeg-rotated", "jpeg"),
        ("jpeg-xmp-rotated", "jpeg"),
        ("png", "png"),
        ("png-rotated", "png"),
        ("webp", "webp"),
        ("webp-rotated", "webp"),
    ]:
        made[kind].append(samples.SAMPLES[name][0](tmp_path_factory.mktemp(name)).read_bytes())
    _FILES.update(made)


@st.composite
def _mutated(draw: st.DrawFn, kind: str) -> bytes:
    """A real file with some of: bytes changed, a range cut out, a range repeated, random
    bytes inserted, the end cut off."""
    data = bytearray(draw(st.sampled_from(_FILES[kind])))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "cut", "repeat", "insert", "truncate"]))
        start = draw(st.integers(0, len(data) - 1))
        length = draw(st.integers(1, 64))
        if action == "flip":
            data[start] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[start : start + length]
        elif action == "repeat":
            data[start:start] = data[start : start + length]
        elif action == "insert":
            data[start:start] = draw(st.binary(min_size=1, max_size=length))
        else:
            del data[max(2, start) :]
        if len(data) < 4:
            break
    if kind == "png" and draw(st.booleans()):
        _fix_png_checksums(data)
    return bytes(data)


def _fix_png_checksums(data: bytearray) -> None:
    """Recomputes each chunk's CRC, as far as the lengths hold: a change inside a chunk
    then reaches the allowlist and the decoder instead of stopping at the checksum (counted:
    of 400 mutated PNGs, 1 was accepted without this, 14 with it)."""
    position = len(chunks.PNG_SIGNATURE)
    while position + 12 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        end = position + 12 + length
        if end > len(data):
            return
        data[end - 4 : end] = struct.pack(">I", zlib.crc32(data[position + 4 : end - 4]))
        position = end


def _jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, body) of each segment before the first scan of a rebuilt JPEG."""
    found, position = [], 2
    while data[position + 1] != jpeg.SOS:
        marker = data[position + 1]
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        found.append((marker, data[position + 4 : position + 2 + length]))
        position += 2 + length
    return found


def _png_kinds(data: bytes) -> list[bytes]:
    kinds, position = [], len(chunks.PNG_SIGNATURE)
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kinds.append(data[position + 4 : position + 8])
        position += 12 + length
    return kinds


def _webp_kinds(data: bytes) -> list[bytes]:
    kinds, position = [], 12
    while position + 8 <= len(data):
        (size,) = struct.unpack("<I", data[position + 4 : position + 8])
        kinds.append(data[position : position + 4])
        position += 8 + size + (size & 1)
    return kinds


# Chunks that carry metadata (chunks.py's rules), checked apart from the code's own allowlist.
PNG_METADATA = frozenset({b"tEXt", b"zTXt", b"iTXt", b"eXIf", b"tIME", b"iCCP"})
WEBP_METADATA = frozenset({b"EXIF", b"XMP ", b"ICCP"})

MUTATIONS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _clean_or_value_error(
    parse: Callable[[bytes], tuple[bytes, list[str]]], data: bytes, ours: tuple[str, ...] = ()
) -> bytes:
    """The parser's result, checked to be a fixed point (parsing it again changes nothing
    and removes nothing but `ours`, what the parser itself adds); b"" for a ValueError."""
    try:
        out, _ = parse(data)
    except ValueError:
        return b""
    again, removed = parse(out)
    assert again == out and removed == list(ours)
    return out


@MUTATIONS
@given(data=_mutated("jpeg"), orientation=st.integers(1, 8))
def test_jpeg_rebuild_on_mutated_files(data: bytes, orientation: int) -> None:
    ours = ("APP1 EXIF",) if orientation != 1 else ()  # the Orientation-only block
    out = _clean_or_value_error(lambda d: jpeg.rebuild(d, orientation), data, ours)
    if not out:
        return
    assert out.startswith(b"\xff\xd8") and out.endswith(b"\xff\xd9")
    for marker, body in _jpeg_segments(out):
        assert marker != jpeg.COM
        if jpeg.APP0 <= marker <= 0xEF:
            allowed = body.startswith((b"JFIF\x00", b"Adobe")) or (
                marker == 0xE1 and body == jpeg.orientation_exif(orientation)[4:]
            )
            assert allowed, f"APP{marker - jpeg.APP0} kept"


def _frame_images(data: bytes) -> list[bytes]:
    """The images of a rebuilt Motion JPEG frame, each from its SOI (a rebuilt frame holds
    no padding, and only scans can hold FF D8: stuffed, so never)."""
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xd8"]
    return [data[a:b] for a, b in zip(starts, [*starts[1:], len(data)], strict=True)]


@MUTATIONS
@given(data=_mutated("jpeg"), fields=st.sampled_from([1, 2]), padding=st.integers(0, 3))
def test_jpeg_frame_rebuild_on_mutated_files(data: bytes, fields: int, padding: int) -> None:
    """A video's frame: one image or two (an interlaced frame's fields), zero padding
    after. The result is never longer, and holds only image segments, JFIF, Adobe, AVI1."""
    frame = (data + bytes(padding)) * fields
    try:
        out, dropped = jpeg.rebuild_frame(frame)
    except ValueError:
        return
    assert len(out) <= len(frame)
    assert jpeg.rebuild_frame(out) == (out, 0)
    assert out.startswith(b"\xff\xd8")
    for image in _frame_images(out):
        for marker, body in _jpeg_segments(image):
            assert marker != jpeg.COM
            if jpeg.APP0 <= marker <= 0xEF:
                assert body.startswith((b"JFIF\x00", b"Adobe", b"AVI1")), f"APP{marker - 0xE0}"
                assert not body.startswith(b"AVI1") or body[5:] == bytes(len(body) - 5)


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def test_jpeg_frame_keeps_both_fields_the_avi1_order_and_a_scan_cut_short() -> None:
    image = _FILES["jpeg"][0]
    bare, removed = jpeg.rebuild(image, 1)
    assert removed  # the sample's EXIF, XMP, IPTC, comment
    avi1 = _segment(jpeg.APP0, b"AVI1\x01\x00" + bytes.fromhex("0000abcd0000abcc"))
    field = image[:2] + avi1 + image[2:]
    out, dropped = jpeg.rebuild_frame(field + b"\x00\x00" + field + b"\xff\xffjunk")
    assert dropped == 2 * len(removed) + 1  # each field's blocks, and the bytes after them
    first, second = _frame_images(out)
    assert first == second
    assert _segment(jpeg.APP0, b"AVI1\x01" + bytes(9)) in first  # polarity kept, sizes zeroed
    assert first.replace(_segment(jpeg.APP0, b"AVI1\x01" + bytes(9)), b"") == bare
    # A camera that stopped mid-frame: the scan is kept as far as it goes, with no EOI.
    cut = field[: len(field) - 100]
    out, _ = jpeg.rebuild_frame(cut)
    assert out == bare[:2] + _segment(jpeg.APP0, b"AVI1\x01" + bytes(9)) + bare[2:-100]
    with pytest.raises(ValueError, match="runs past the end"):
        jpeg.rebuild(cut, 1)  # a photo cut short is refused
    for hostile in (b"", bytes(16), b"junk" + field, field[:40]):
        with pytest.raises(ValueError):
            jpeg.rebuild_frame(hostile)


@MUTATIONS
@given(data=_mutated("png"))
def test_png_chunks_on_mutated_files(data: bytes) -> None:
    out = _clean_or_value_error(chunks.strip_png, data)
    if out:
        assert set(_png_kinds(out)) <= chunks.PNG_KEPT
        assert not set(_png_kinds(out)) & PNG_METADATA


@MUTATIONS
@given(data=_mutated("webp"))
def test_webp_chunks_on_mutated_files(data: bytes) -> None:
    out = _clean_or_value_error(chunks.strip_webp, data)
    if out:
        assert set(_webp_kinds(out)) <= chunks.WEBP_KEPT
        assert not set(_webp_kinds(out)) & WEBP_METADATA
        if out[12:16] == b"VP8X":
            assert out[20] & 0x2C == 0  # no ICC, EXIF or XMP announced


def test_the_mutations_reach_both_outcomes() -> None:
    """The property tests above mean something only if mutated files are sometimes still
    accepted and sometimes refused: checked on a fixed sample of each kind."""
    outcomes: dict[str, set[str]] = {"jpeg": set(), "png": set(), "webp": set()}
    parsers: dict[str, Callable[[bytes], tuple[bytes, list[str]]]] = {
        "jpeg": lambda d: jpeg.rebuild(d, 1),
        "png": chunks.strip_png,
        "webp": chunks.strip_webp,
    }
    for kind, parse in parsers.items():
        original = _FILES[kind][0]
        for variant in (original, original[: len(original) // 2]):
            try:
                parse(variant)
                outcomes[kind].add("clean")
            except ValueError:
                outcomes[kind].add("refused")
    assert all(found == {"clean", "refused"} for found in outcomes.values()), outcomes


@pytest.mark.parametrize("name", ["jpeg", "png", "webp"])
def test_the_real_files_have_metadata_to_lose(name: str, tmp_path: Path) -> None:
    data = samples.SAMPLES[name][0](tmp_path).read_bytes()
    if name == "jpeg":
        _, removed = jpeg.rebuild(data, 1)
    else:
        _, removed = (chunks.strip_png if name == "png" else chunks.strip_webp)(data)
    assert removed


def _clean_in_worker(mime: str, data: bytes) -> tuple[dict[str, object], bytes]:
    """The worker's answer for `data`, run in this process (its memfds, not its sandbox)."""
    in_fd, out_fd = os.memfd_create("in", 0), os.memfd_create("out", 0)
    try:
        os.write(in_fd, data)
        answer = worker.run(lambda: worker.clean_image(mime, worker.Files(in_fd, out_fd)))
        size = os.fstat(out_fd).st_size
        return answer, os.pread(out_fd, size, 0) if size else b""
    finally:
        os.close(in_fd)
        os.close(out_fd)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["jpeg", "png", "webp"]), data=st.data())
def test_mutated_pictures_are_refused_or_come_out_clean(kind: str, data: st.DataObject) -> None:
    """Through the whole worker (parser, Pillow's checks, the decode of the result): a
    refusal with a known reason, or a picture without the identifying values."""
    mime = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}[kind]
    answer, out = _clean_in_worker(mime, data.draw(_mutated(kind)))
    if not answer["ok"]:
        assert answer["reason"] in errors.MESSAGES
        return
    assert out and judge.strings_found(out, set(samples.MARKERS)) == set()

"""MPEG-1/2/4 Part 2 start-code streams: user data goes, every other byte stays; VOP types
are read from the two bits after each VOP start code, whatever the packet holds."""

from __future__ import annotations

import pytest

from relay.sanitize import mpegvideo

VOS = b"\x00\x00\x01\xb0\x01"
VOL = b"\x00\x00\x01\x20\x08\xc8\x0d\x40"
USER = b"\x00\x00\x01\xb2XviD0069"
DIVX = b"\x00\x00\x01\xb2DivX503b1393p"
I_VOP = b"\x00\x00\x01\xb6\x10\x60\x51\x82"
B_VOP = b"\x00\x00\x01\xb6\x90\x11"


def test_user_data_goes_and_the_rest_stays_in_order() -> None:
    cleaned, removed = mpegvideo.without_user_data(VOS + USER + DIVX + VOL + USER + I_VOP)
    assert removed == 3
    assert bytes(cleaned) == VOS + VOL + I_VOP


def test_user_data_at_the_end_runs_to_the_end() -> None:
    cleaned, removed = mpegvideo.without_user_data(I_VOP + USER + b"\x00\x00")
    assert (bytes(cleaned), removed) == (I_VOP, 1)


@pytest.mark.parametrize("packet", [b"", I_VOP, VOS + VOL, b"\xb2" * 64, b"\x00\x00\x01"])
def test_a_packet_without_user_data_is_handed_back_uncopied(packet: bytes) -> None:
    view = memoryview(packet)
    cleaned, removed = mpegvideo.without_user_data(view)
    assert cleaned is view and removed == 0


def test_a_memoryview_is_searched_like_bytes() -> None:
    packet = USER + I_VOP
    assert mpegvideo.without_user_data(memoryview(packet)) == (I_VOP, 1)


def test_a_packet_of_user_data_only_becomes_empty() -> None:
    assert mpegvideo.without_user_data(USER * 1000) == (b"", 1000)


@pytest.mark.parametrize(
    ("content", "hint"),
    [
        (b"XviD0069", b"XviD33"),
        (b"XviD0001", b"XviD0"),
        (b"XviD3", b"XviD2"),
        (b"XviD12", b"XviD4"),
        (b"XviD32", b"XviD13"),
        (b"DivX503b1393p", b"DivX503b0p"),
        (b"DivX503Build2150", b"DivX503b1814"),
        (b"DivX612b2850p\x00", b"DivX503b1814p"),
        (b"DivX501b20020416", b"DivX501b20020416"),  # FFmpeg fixes this one build's padding
        (b"DivX400b100\x00p", b"DivX0b0"),  # the "p" must follow the build to mean packed
        (b"ffmpeg", b"FFmpegb0"),
        (b"FFmpeg0.4.6b4654", b"FFmpegb4653"),
        (b"FFmpeg v0.4.9 / libavcodec build: 4712", b"FFmpegb4670"),
        (b"Lavc0.18.3", b"FFmpegb0"),  # build 0x1203
        (b"Lavc59.37.100", None),  # FFmpeg since 2005: nothing to work around, but for
        (b"Lavc57.24.102", b"FFmpegb3621477"),  # 2014-2016: interlaced edges (FF_BUG_IEDGE)
        (b"Lavc55.66.100", None),  # the last build before that range
        (b"Lavc57.64.101", None),  # 3.2.1 to 3.2.x: fixed
        (b"Lavc57.65.100", b"FFmpegb3621477"),  # after 3.2.x, until 3.3
        (b"Lavc57.89.100", None),  # 3.3
        (b"Lavc56.60.99", None),  # Libav (micro version under 100): never had the bug
        (b"AmanahModelX9 2024-05-06", None),
        (b"XviD", None),
        (b"", None),
    ],
)
def test_decoder_hints_keep_only_what_ffmpeg_reads(content: bytes, hint: bytes | None) -> None:
    assert mpegvideo.decoder_hint(content) == hint


def test_under_an_xvid_fourcc_ffmpeg_is_still_named() -> None:
    """Finding no encoder named, FFmpeg's decoder takes a stream tagged XVID for an early
    Xvid: a stream kept under that tag keeps a modern FFmpeg's name in its place."""
    assert mpegvideo.decoder_hint(b"Lavc59.37.100", tagged=True) == b"FFmpegb4713"
    assert mpegvideo.decoder_hint(b"Lavc57.24.102", tagged=True) == b"FFmpegb3621477"
    assert mpegvideo.decoder_hint(b"XviD0069", tagged=True) == b"XviD33"
    assert mpegvideo.decoder_hint(b"AmanahModelX9", tagged=True) is None  # none named before
    unit = b"\x00\x00\x01\xb2Lavc59.37.100"
    cleaned, changed = mpegvideo.without_user_data(VOS + unit + VOL, hints=True, tagged=True)
    assert (bytes(cleaned), changed) == (VOS + b"\x00\x00\x01\xb2FFmpegb4713" + VOL, 1)
    assert mpegvideo.without_user_data(VOS + unit + VOL, hints=True) == (VOS + VOL, 1)


def test_hints_stay_in_mpeg4_and_the_rest_goes() -> None:
    lavc = b"\x00\x00\x01\xb2Lavc59.37.100"
    packet = VOS + USER + DIVX + lavc + VOL + I_VOP
    cleaned, changed = mpegvideo.without_user_data(packet, hints=True)
    hinted = VOS + b"\x00\x00\x01\xb2XviD33\x00\x00\x01\xb2DivX503b0p" + VOL + I_VOP
    assert (bytes(cleaned), changed) == (hinted, 3)
    again = mpegvideo.without_user_data(cleaned, hints=True)
    assert again[0] is cleaned and again[1] == 0  # already canonical: not copied
    assert mpegvideo.without_user_data(packet) == (VOS + VOL + I_VOP, 3)  # MPEG-1/2: all goes


def test_vop_types_are_read_in_order() -> None:
    assert mpegvideo.vop_types(VOS + USER + I_VOP) == [mpegvideo.I_VOP]
    assert mpegvideo.vop_types(memoryview(I_VOP + B_VOP)) == [mpegvideo.I_VOP, mpegvideo.B_VOP]
    assert mpegvideo.vop_types(VOS + VOL) == []


def test_a_vop_cut_after_its_start_code_still_counts() -> None:
    """A packet ending right after a VOP start code still holds that frame."""
    assert mpegvideo.vop_types(B_VOP + b"\x00\x00\x01\xb6") == [mpegvideo.B_VOP, mpegvideo.P_VOP]

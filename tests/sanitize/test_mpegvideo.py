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


def test_vop_types_are_read_in_order() -> None:
    assert mpegvideo.vop_types(VOS + USER + I_VOP) == [mpegvideo.I_VOP]
    assert mpegvideo.vop_types(memoryview(I_VOP + B_VOP)) == [mpegvideo.I_VOP, mpegvideo.B_VOP]
    assert mpegvideo.vop_types(VOS + VOL) == []


def test_a_vop_cut_after_its_start_code_still_counts() -> None:
    """A packet ending right after a VOP start code still holds that frame."""
    assert mpegvideo.vop_types(B_VOP + b"\x00\x00\x01\xb6") == [mpegvideo.B_VOP, mpegvideo.P_VOP]

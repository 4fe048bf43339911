"""H.264/HEVC units: SEI goes, every other unit stays byte for byte; what does not add up
is a NalError, never another exception nor a guess (random mutations of real packets)."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.sanitize import nal
from tests.sanitize import samples

SEI = b"\x06\x05\x10" + b"x264 - core 164 - settings AmanahModelX9" + b"\x80"
AUD = b"\x09\xf0"
SLICE = b"\x65\x88\x84\x00\x33\xff\x12\x00\x03\x01\x77"  # an IDR slice (emulation bytes in)


def _prefixed(*units: bytes, size: int = 4) -> bytes:
    return b"".join(len(u).to_bytes(size, "big") + u for u in units)


def test_sei_goes_and_the_rest_stays_byte_for_byte() -> None:
    packet = _prefixed(AUD, SEI, SLICE)
    cleaned, dropped = nal.without_sei(packet, nal.H264, 4)
    assert dropped == 1
    assert bytes(cleaned) == _prefixed(AUD, SLICE)


def test_a_packet_without_sei_is_not_copied() -> None:
    packet = _prefixed(AUD, SLICE)
    cleaned, dropped = nal.without_sei(packet, nal.H264, 4)
    assert dropped == 0 and cleaned is packet


def test_two_byte_lengths() -> None:
    cleaned, dropped = nal.without_sei(_prefixed(SEI, SLICE, size=2), nal.H264, 2)
    assert (bytes(cleaned), dropped) == (_prefixed(SLICE, size=2), 1)


def test_annex_b_start_codes() -> None:
    packet = b"\x00\x00\x00\x01" + AUD + b"\x00\x00\x00\x01" + SEI + b"\x00\x00\x01" + SLICE
    cleaned, dropped = nal.without_sei(packet, nal.H264, 0)
    assert dropped == 1
    assert [u.kind for u in nal.units(cleaned, nal.H264, 0)] == [9, 5]
    assert b"x264" not in bytes(cleaned) and bytes(cleaned).endswith(SLICE)


def test_hevc_prefix_and_suffix_sei() -> None:
    prefix_sei, suffix_sei = b"\x4e\x01" + b"AmanahMakerCo", b"\x50\x01" + b"AmanahModelX9"
    idr = b"\x26\x01\xaf\x00\x11"  # IDR_W_RADL (19)
    cleaned, dropped = nal.without_sei(_prefixed(prefix_sei, idr, suffix_sei), nal.HEVC, 4)
    assert (bytes(cleaned), dropped) == (_prefixed(idr), 2)


@pytest.mark.parametrize(
    "packet",
    [
        b"\x00\x00\x00\x09" + AUD,  # length past the end
        b"\x00\x00\x00\x00" + AUD,  # an empty unit
        _prefixed(AUD) + b"\x00\x00\x00\x00",  # an empty unit at the end: no header byte
        b"\x00\x00",  # a length cut short
    ],
)
def test_lengths_that_do_not_add_up_are_errors(packet: bytes) -> None:
    with pytest.raises(nal.NalError):
        nal.without_sei(packet, nal.H264, 4)


def test_annex_b_without_a_start_code_is_an_error() -> None:
    with pytest.raises(nal.NalError):
        nal.without_sei(SLICE, nal.H264, 0)


def test_the_gate_sees_every_unit_but_slices() -> None:
    pieces = list(nal.searchable(_prefixed(AUD, SEI, SLICE), nal.H264, 4))
    assert pieces == [AUD, SEI]


def _hvcc(*arrays: tuple[int, list[bytes]]) -> bytes:
    header = bytearray(22)
    header[0] = 1
    header[21] = 0x03  # lengthSizeMinusOne = 3
    body = bytearray([len(arrays)])
    for kind, units in arrays:
        body += bytes([0x80 | kind]) + len(units).to_bytes(2, "big")
        for unit in units:
            body += len(unit).to_bytes(2, "big") + unit
    return bytes(header + body)


def test_hvcc_loses_its_sei_arrays_only() -> None:
    vps, sps, pps = b"\x40\x01\x0c", b"\x42\x01\x01", b"\x44\x01\xc1"
    record = _hvcc((32, [vps]), (33, [sps]), (34, [pps]), (39, [b"\x4e\x01AmanahMakerCo"]))
    cleaned, dropped = nal.hvcc_without_sei(record)
    assert dropped == 1
    assert cleaned == _hvcc((32, [vps]), (33, [sps]), (34, [pps]))
    assert nal.length_size("hevc", cleaned) == 4


@pytest.mark.parametrize("cut", [10, 24, 27, 30])
def test_a_truncated_hvcc_is_an_error(cut: int) -> None:
    record = _hvcc((32, [b"\x40\x01\x0c"]), (39, [b"\x4e\x01AmanahMakerCo"]))
    with pytest.raises(nal.NalError):
        nal.hvcc_without_sei(record[:cut])


def test_length_size_from_the_configuration_records() -> None:
    avcc = bytes([1, 0x64, 0, 0x1F, 0xFF, 0xE1]) + b"\x00\x04" + b"\x67\x64\x00\x1f"
    assert nal.length_size("h264", avcc) == 4
    assert nal.length_size("h264", b"") == 0  # Annex B
    assert nal.length_size("h264", b"\x00\x00\x00\x01\x67") == 0
    assert nal.length_size("hevc", b"\x00\x00\x01\x40") == 0
    with pytest.raises(nal.NalError):
        nal.length_size("h264", b"\x01\x64")


def _real_packets(tmp_path: Path) -> tuple[bytes, list[bytes]]:
    with av.open(str(samples.mp4(tmp_path))) as container:
        stream = container.streams.video[0]
        extradata = bytes(stream.codec_context.extradata or b"")
        packets = [bytes(p) for p in container.demux(stream) if p.size]
    return extradata, packets


def test_x264_settings_leave_a_real_packet(tmp_path: Path) -> None:
    extradata, packets = _real_packets(tmp_path)
    size = nal.length_size("h264", extradata)
    assert size == 4 and b"x264 - core" in packets[0]
    cleaned, dropped = nal.without_sei(packets[0], nal.H264, size)
    assert dropped >= 1 and b"x264" not in bytes(cleaned)
    assert [u.kind for u in nal.units(cleaned, nal.H264, size)] == [
        u.kind for u in nal.units(packets[0], nal.H264, size) if u.kind != 6
    ]


_PACKETS: list[bytes] = []


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    """Real packets of the test MP4 with random bytes changed, cut or added."""
    packet = bytearray(draw(st.sampled_from(_PACKETS)))
    for _ in range(draw(st.integers(1, 8))):
        where = draw(st.integers(0, len(packet) - 1))
        packet[where] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(packet)))
    return bytes(packet[:cut]) + draw(st.binary(max_size=16))


@settings(max_examples=300, deadline=None)
@given(packet=_mutated(), size=st.sampled_from([0, 4]))
def test_mutated_packets_give_a_clean_packet_or_a_nal_error(packet: bytes, size: int) -> None:
    try:
        cleaned, _ = nal.without_sei(packet, nal.H264, size)
    except nal.NalError:
        return
    kinds = [u.kind for u in nal.units(cleaned, nal.H264, size)]
    assert 6 not in kinds
    assert len(cleaned) <= len(packet)


@pytest.fixture(autouse=True, scope="module")
def _packets(tmp_path_factory: pytest.TempPathFactory) -> None:
    _PACKETS[:] = _real_packets(tmp_path_factory.mktemp("nal"))[1][:5]

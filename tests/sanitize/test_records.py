"""Tags inside a stream's configuration record: a Vorbis comment header (vendor and
NAME=value tags) and FLAC metadata blocks, which no container tag list shows, leave with
the remux; the headers decoding needs stay byte for byte."""

from __future__ import annotations

from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.sanitize import Stripping, records
from tests.sanitize import judge, samples
from tests.sanitize.conftest import clean


def _comment(vendor: bytes, tags: list[bytes]) -> bytes:
    out = b"\x03vorbis" + len(vendor).to_bytes(4, "little") + vendor
    out += len(tags).to_bytes(4, "little")
    for tag in tags:
        out += len(tag).to_bytes(4, "little") + tag
    return out + b"\x01"


TAGS = [f"ARTIST={samples.PERSON}".encode(), f"LOCATION={samples.PLACE}".encode()]


def _remux_with_record(
    source: Path, target: Path, kind: str, record: bytes, video: bool = True
) -> None:
    """`source` copied into `target` (Matroska) with the record of its `kind` stream
    replaced: a file whose tags live only in that record, as some muxers write them."""
    with av.open(str(source)) as container, av.open(str(target), "w") as output:
        chosen = [s for s in container.streams if s.type == kind or (video and s.type == "video")]
        copies = {}
        for stream in chosen:
            copy = output.add_stream_from_template(stream)
            if stream.type == kind:
                copy.codec_context.extradata = record
            copies[stream.index] = copy
        for packet in container.demux(chosen):
            if packet.size:
                packet.stream = copies[packet.stream.index]
                output.mux(packet)


def test_a_vorbis_comment_header_in_matroska_is_emptied(
    stripping: Stripping, tmp_path: Path
) -> None:
    source = samples.mkv(tmp_path)
    with av.open(str(source)) as container:
        record = container.streams.audio[0].codec_context.extradata or b""
        headers = records._xiph_unlace(bytes(record))
    headers[1] = _comment(b"AmanahVendor 1.0", TAGS)
    tagged = tmp_path / "tagged.mkv"
    _remux_with_record(source, tagged, "audio", records._xiph_lace(headers))
    assert samples.PERSON.encode() in tagged.read_bytes()

    _, report, data = clean(stripping, tagged.read_bytes())
    assert "Vorbis comment header (vendor and tags)" in report.removed
    assert judge.strings_found(data, {samples.PERSON, samples.PLACE, "AmanahVendor"}) == set()
    cleaned = tmp_path / "cleaned.mkv"
    cleaned.write_bytes(data)
    with av.open(str(cleaned)) as container:
        kept = records._xiph_unlace(
            bytes(container.streams.audio[0].codec_context.extradata or b"")
        )
        assert kept[0] == headers[0] and kept[2] == headers[2]  # what decoding needs
        frames = sum(len(p.decode()) for p in container.demux(container.streams.audio[0]))
    assert frames > 0


def test_flac_metadata_blocks_leave_the_record(tmp_path: Path) -> None:
    """FFmpeg 8's muxers write only a FLAC record's STREAMINFO; the record is cut down
    anyway, so what reaches any muxer holds no tags."""
    with av.open(str(samples.flac(tmp_path))) as container:
        streaminfo = bytes(container.streams.audio[0].codec_context.extradata or b"")
    assert len(streaminfo) == records.STREAMINFO_SIZE
    comment = b"\x04\x00\x00\x00" + bytes(4) + len(TAGS).to_bytes(4, "little")
    comment += b"".join(len(t).to_bytes(4, "little") + t for t in TAGS)
    record = b"fLaC" + b"\x00\x00\x00\x22" + streaminfo
    record += bytes([0x84]) + len(comment).to_bytes(3, "big") + comment  # the last block
    assert records.flac_streaminfo(record) == (streaminfo, True)
    assert records.flac_streaminfo(streaminfo) == (streaminfo, False)


@pytest.mark.parametrize(
    "record",
    [
        b"",
        b"\x02",  # three packets announced, no sizes
        b"\x02\xff\xff",  # a size that never ends
        b"\x02\x1e\x10" + b"\x01vorbis",  # sizes past the end
        records._xiph_lace([b"\x01vorbis", b"\x05vorbis", b"\x03vorbis"]),  # out of order
        records._xiph_lace([b"\x01vorbis", b"\x03theora"]),
    ],
)
def test_a_vorbis_record_that_does_not_parse_is_an_error(record: bytes) -> None:
    with pytest.raises(records.RecordError):
        records.vorbis_without_comments(record)


@pytest.mark.parametrize(
    "record",
    [b"fLaC", b"fLaC" + b"\x04\x00\x00\x22" + bytes(34), b"OggS" + bytes(40)],
)
def test_a_flac_record_that_does_not_parse_is_an_error(record: bytes) -> None:
    with pytest.raises(records.RecordError):
        records.flac_streaminfo(record)


def test_xiph_lacing_round_trips_long_packets() -> None:
    packets = [b"\x01vorbis" + bytes(600), b"\x03vorbis" + bytes(255 - 7), b"\x05vorbis"]
    assert records._xiph_unlace(records._xiph_lace(packets)) == packets


VORBIS = records._xiph_lace(
    [b"\x01vorbis" + bytes(23), _comment(b"AmanahVendor 1.0", TAGS), b"\x05vorbis" + bytes(40)]
)
FLAC = b"fLaC\x00\x00\x00\x22" + bytes(34) + b"\x84\x00\x00\x08" + bytes(8)


@settings(max_examples=300, deadline=None)
@given(
    record=st.sampled_from([VORBIS, FLAC]),
    cut=st.integers(0, len(VORBIS)),
    flips=st.lists(st.tuples(st.integers(0, len(VORBIS)), st.integers(0, 255)), max_size=3),
    noise=st.binary(max_size=16),
)
def test_damaged_records_raise_only_their_own_error(
    record: bytes, cut: int, flips: list[tuple[int, int]], noise: bytes
) -> None:
    """Records cut short, with bytes changed or added: RecordError, or a record holding no
    tags (the empty comment header; STREAMINFO alone)."""
    damaged = bytearray(record[:cut] + noise)
    for where, value in flips:
        if where < len(damaged):
            damaged[where] = value
    for parse in (records.vorbis_without_comments, records.flac_streaminfo):
        try:
            cleaned, _ = parse(bytes(damaged))
        except records.RecordError:
            continue
        if parse is records.flac_streaminfo:
            assert len(cleaned) == records.STREAMINFO_SIZE
        else:
            assert records._xiph_unlace(cleaned)[1] == records.EMPTY_VORBIS_COMMENT

"""An Ogg file that ends inside a page is cut short and refused (ogg.py): FFmpeg's demuxer
drops such a page without a word. Junk after the last page is not a cut; a cut at a page
boundary cannot be seen."""

from __future__ import annotations

import io
import random
import subprocess
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.sanitize import Stripping, ogg
from relay.sanitize.errors import Malformed
from tests.sanitize import samples
from tests.sanitize.conftest import clean


def _page(lacing: list[int]) -> bytes:
    """A page of `lacing` values (its body bytes random; the checksum is not read)."""
    body = random.Random(len(lacing)).randbytes(sum(lacing))
    return ogg.CAPTURE + bytes(21) + bytes([len(lacing), *lacing]) + body


@settings(max_examples=200, deadline=None)
@given(
    pages=st.lists(st.lists(st.integers(0, 255), max_size=40), min_size=1, max_size=6),
    data=st.data(),
)
def test_only_a_cut_inside_a_page_is_found(pages: list[list[int]], data: st.DataObject) -> None:
    """Pure: whole pages end where a page does; a file cut anywhere inside one (header,
    lacing values, body) ends inside it; junk that starts no page is not a page."""
    built = [_page(lacing) for lacing in pages]
    whole = b"".join(built)
    ends = {sum(len(p) for p in built[:i]) for i in range(len(built) + 1)}
    start = data.draw(st.sampled_from(sorted(ends - {len(whole)})), label="start")
    cut = data.draw(st.integers(start, len(whole)), label="cut")
    found = ogg.ends_inside_a_page(io.BytesIO(whole[:cut]), start, cut)
    assert found == (cut not in ends)
    junk = data.draw(st.binary(min_size=1, max_size=64).filter(lambda b: b[:1] != b"O"))
    assert not ogg.ends_inside_a_page(io.BytesIO(whole + junk), start, len(whole) + len(junk))


def _page_ends(data: bytes) -> list[int]:
    """Where each page of an Ogg file ends, walking its headers."""
    ends, at = [], 0
    while at < len(data):
        count = data[at + 26]
        at += 27 + count + sum(data[at + 27 : at + 27 + count])
        ends.append(at)
    return ends


def _long(folder: Path, name: str, codec: str) -> bytes:
    """Ten seconds of a tone: many pages."""
    path = folder / name
    samples.ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=10",
                   *samples.FFMPEG_METADATA, "-c:a", codec, "-f", "ogg", str(path))  # fmt: skip
    return path.read_bytes()


@pytest.mark.parametrize("codec", ["libopus", "libvorbis", "flac"])
def test_an_ogg_cut_inside_a_page_is_refused(
    codec: str, stripping: Stripping, tmp_path: Path
) -> None:
    """Cut in the middle of its fourth page from the end (FFmpeg's demuxer still reads
    it as a whole, shorter file), it is refused; cut where that page ends, it is a
    shorter recording and is cleaned, ending where the cut is."""
    data = _long(tmp_path, "in.ogg", codec)
    ends = _page_ends(data)
    assert ends[-1] == len(data) and len(ends) > 6
    inside = (ends[-5] + ends[-4]) // 2
    with av.open(io.BytesIO(data[:inside]), "r", format="ogg") as container:
        assert all(not packet.is_corrupt for packet in container.demux())
    with pytest.raises(Malformed):
        clean(stripping, data[:inside])
    detected, _, out = clean(stripping, data[: ends[-4]])
    assert detected.mime == "audio/ogg" and out[:4] == b"OggS"


def test_junk_after_the_last_page_is_not_a_cut(stripping: Stripping, tmp_path: Path) -> None:
    """An ID3v1 tag appended to an Opus file (a tagger that knows only MP3 writes one):
    not a page, so not a cut; the demuxer skips it and the result does not hold it."""
    data = samples.opus(tmp_path).read_bytes()
    tag = b"TAG" + samples.PERSON.encode().ljust(125, b"\0")
    _, _, out = clean(stripping, data + tag)
    assert samples.PERSON.encode() not in out
    (tmp_path / "out.opus").write_bytes(out)
    probed = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
         str(tmp_path / "out.opus")],
        capture_output=True, check=True,
    )  # fmt: skip
    assert float(probed.stdout) == pytest.approx(2.0, abs=0.1)

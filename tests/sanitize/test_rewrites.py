"""rewrites.py: a muxer that goes back over what it wrote, made to write forward only in
two passes. Judged against the file the same writes make in a seekable file (a BytesIO),
for random write patterns and for FFmpeg's own AVI and WAV muxers (PyAV, real packets)."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.sanitize import rewrites
from tests.sanitize import samples

# A write pattern: (seek target as a fraction of the size so far, or None to stay; data).
_STEPS = st.lists(
    st.tuples(st.one_of(st.none(), st.floats(0, 1.2)), st.binary(min_size=1, max_size=40)),
    max_size=30,
)


def _play(steps: list[tuple[float | None, bytes]], sink: object) -> None:
    for where, data in steps:
        if where is not None:
            end = sink.seek(0, io.SEEK_END)  # type: ignore[attr-defined]
            sink.seek(int(where * end))  # type: ignore[attr-defined]
        sink.write(data)  # type: ignore[attr-defined]


def _forward(steps: list[tuple[float | None, bytes]]) -> bytes:
    first = rewrites.Recorder()
    _play(steps, first)
    sent: list[bytes] = []
    second = rewrites.Overlay(sent.append, first)
    _play(steps, second)
    second.finish()
    return b"".join(sent)


@settings(max_examples=300, deadline=None)
@given(_STEPS)
def test_two_passes_send_forward_what_a_seekable_file_holds(
    steps: list[tuple[float | None, bytes]],
) -> None:
    """Whatever the seeks (back, forward past the end: a gap of zeros), the bytes sent
    forward are the final file's."""
    seekable = io.BytesIO()
    _play(steps, seekable)
    assert _forward(steps) == seekable.getvalue()


def test_a_second_pass_that_writes_otherwise_is_an_error() -> None:
    first = rewrites.Recorder()
    _play([(None, b"RIFF0000data"), (0.0, b"RIFF"), (None, b"1234")], first)
    second = rewrites.Overlay(lambda _: None, first)
    _play([(None, b"RIFF0000data"), (0.0, b"RIFF"), (None, b"1235")], second)
    with pytest.raises(rewrites.RewriteError):
        second.finish()
    longer = rewrites.Overlay(lambda _: None, first)
    _play([(None, b"RIFF0000data!"), (0.0, b"RIFF"), (None, b"1234")], longer)
    with pytest.raises(rewrites.RewriteError):
        longer.finish()


def test_rewrites_past_the_limit_are_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rewrites, "MAX_REWRITTEN", 100)
    first = rewrites.Recorder()
    first.write(bytes(200))
    first.seek(0)
    first.write(bytes(100))  # exactly the limit
    first.seek(0)
    with pytest.raises(rewrites.RewriteError):
        first.write(b"x")


def _mux(source: Path, muxer: str, sink: object) -> None:
    """Every packet of `source` copied into `muxer`, written to `sink`."""
    with av.open(str(source)) as container, av.open(sink, "w", format=muxer) as output:
        streams = {
            s.index: output.add_stream_from_template(s, opaque=True) for s in container.streams
        }
        for packet in container.demux():
            if packet.size:
                packet.stream = streams[packet.stream.index]
                output.mux(packet)


@pytest.mark.parametrize(
    ("name", "muxer"),
    [("avi-h264", "avi"), ("avi-xvid-packed", "avi"), ("adpcm-wav", "wav")],
)
def test_ffmpegs_muxers_written_forward_give_the_file_they_write_seeking(
    name: str, muxer: str, tmp_path: Path
) -> None:
    """FFmpeg's AVI muxer (sizes, frame counts and the index's entries filled in at the
    end) and WAV muxer (sizes, the fact chunk's count), muxing the same packets twice:
    what goes forward is byte for byte the file they write into a seekable file, and the
    first pass keeps only a few hundred bytes."""
    if name == "adpcm-wav":
        source = samples.tone(tmp_path, "in.wav", "-c:a", "adpcm_ima_wav")
    else:
        source = samples.SAMPLES[name][0](tmp_path)
    seekable = io.BytesIO()
    _mux(source, muxer, seekable)
    first = rewrites.Recorder()
    _mux(source, muxer, first)
    sent: list[bytes] = []
    second = rewrites.Overlay(sent.append, first)
    _mux(source, muxer, second)
    second.finish()
    assert first.rewrites, "this muxer seeks back: the test would show nothing"
    assert sum(len(r.data) for r in first.rewrites) < 1024
    assert b"".join(sent) == seekable.getvalue()

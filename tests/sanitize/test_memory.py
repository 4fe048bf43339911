"""What keeps the worker's memory down and its last gate quick: the input memfd is emptied
once nothing reads it again, and the gate's UTF-16 search finds both byte orders with one
pattern where it can."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from relay.sanitize import media, worker
from tests.sanitize import samples


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("test", 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


@pytest.mark.parametrize("name", ["mp4", "mp3"])
def test_the_input_memfd_is_emptied_after_the_remux(name: str, tmp_path: Path) -> None:
    source = samples.SAMPLES[name][0](tmp_path).read_bytes()
    in_fd, out_fd = _memfd(source), os.memfd_create("out", 0)
    try:
        answer = worker.clean_media(samples.SAMPLES[name][1], worker.Files(in_fd, out_fd))
        assert answer["ok"], answer
        assert os.fstat(in_fd).st_size == 0
        assert os.fstat(out_fd).st_size > 0
    finally:
        os.close(in_fd)
        os.close(out_fd)


def test_a_picture_input_memfd_is_emptied_once_read(tmp_path: Path) -> None:
    in_fd, out_fd = _memfd(samples.jpeg(tmp_path).read_bytes()), os.memfd_create("out", 0)
    try:
        assert worker.clean_image("image/jpeg", worker.Files(in_fd, out_fd))["ok"]
        assert os.fstat(in_fd).st_size == 0
        assert os.pread(out_fd, 2, 0) == b"\xff\xd8"
    finally:
        os.close(in_fd)
        os.close(out_fd)


@pytest.mark.parametrize("value", ["AmanahPlace", "Café-Zürich", "مكان-سري-جدا", "東京都渋谷区"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16-le", "utf-16-be"])
def test_the_last_gate_finds_a_value_in_every_encoding(
    value: str, encoding: str, tmp_path: Path
) -> None:
    path = tmp_path / "result"
    filler = os.urandom(3 << 20).replace(b"\x00", b"\x01")
    # Across the gate's 1 MiB window boundary; ASCII case is ignored (a tag says "FAAC", the
    # stream "libfaac"), other text is found as written.
    written = value.upper() if value.isascii() else value
    path.write_bytes(filler[: (1 << 20) - 5] + written.encode(encoding) + filler)
    assert media.leaked(str(path), {value})
    path.write_bytes(filler)
    assert not media.leaked(str(path), {value})


def test_latin_values_need_one_utf16_pattern() -> None:
    patterns = media.search_patterns({"AmanahPlace", "مكان-سري-جدا"})
    assert len(patterns) == 2 + 3
    assert "amanahplace".encode("utf-16-le")[:-1] in patterns
    # Arabic in UTF-16 holds bytes in A-Z (U+0645 is 45 06): lowered as bytes, like the file.
    assert "مكان-سري-جدا".encode("utf-16-le").lower() in patterns

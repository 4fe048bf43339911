"""`amanah-drop strip`: the sanitizer on the source's device, as a command."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.sanitize import samples

DROP = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "amanah-drop")


def test_strip_writes_generated_names_and_refuses_by_position(tmp_path: Path) -> None:
    photo = samples.jpeg(tmp_path)
    script = tmp_path / "secret-name.jpg"
    script.write_text("#!/bin/sh\necho hi\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [DROP, "strip", str(photo), str(script), "-o", str(out)], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert sorted(p.name for p in out.iterdir()) == ["photo-1.jpg"]
    assert "file 2: " in result.stderr and "secret-name" not in result.stderr
    assert not any(m.encode() in (out / "photo-1.jpg").read_bytes() for m in samples.MARKERS)


def test_send_and_seal_without_a_relay_say_what_is_missing(tmp_path: Path) -> None:
    # They work now (tests/clients); without their arguments they say what is missing.
    for command, code, expected in (("send", 1, "--relay"), ("seal", 2, "--relay")):
        result = subprocess.run([DROP, command], capture_output=True, text=True)
        assert result.returncode == code, result.stderr
        assert expected in result.stderr
        assert "Traceback" not in result.stderr

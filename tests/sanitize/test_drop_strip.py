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


def test_strip_loads_no_network_code(tmp_path: Path) -> None:
    """`amanah-drop strip` starts only the sanitizer: aiohttp and the Tor client are not
    imported (they were half of a photo's run), while send and seal still reach them."""
    photo = samples.jpeg(tmp_path)
    code = (
        "import sys\n"
        "from clients.amanah_drop import main\n"
        "status = main(sys.argv[1:])\n"
        "loaded = ('aiohttp', 'onion.client', 'clients.drop')\n"
        "print(sorted(m for m in loaded if m in sys.modules))\n"
        "raise SystemExit(status)\n"
    )
    python = str(Path(DROP).parent / "python")
    strip = [python, "-c", code, "strip", str(photo), "-o", str(tmp_path / "out")]
    result = subprocess.run(strip, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "photo-1.jpg").exists()
    help_of_send = subprocess.run(
        [python, "-c", code, "send", "--help"], capture_output=True, text=True
    )
    assert "--relay" in help_of_send.stdout


def test_strip_errors_are_clear(tmp_path: Path) -> None:
    photo = samples.jpeg(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo-1.jpg").write_bytes(b"already here")
    clash = subprocess.run(
        [DROP, "strip", str(photo), "-o", str(out)], capture_output=True, text=True
    )
    assert clash.returncode == 1
    assert "exists already" in clash.stderr and "Traceback" not in clash.stderr
    assert (out / "photo-1.jpg").read_bytes() == b"already here"
    assert [p.name for p in out.iterdir()] == ["photo-1.jpg"]  # no partial left behind
    missing = subprocess.run(
        [DROP, "strip", str(tmp_path / "nope.jpg"), "-o", str(out)], capture_output=True, text=True
    )
    assert missing.returncode == 1
    assert "file 1 could not be read" in missing.stderr and "nope" not in missing.stderr
    usage = subprocess.run([DROP, "strip"], capture_output=True, text=True)
    assert usage.returncode == 2 and "-o" in usage.stderr

"""docker/: what can be checked without a Docker engine: the files parse, everything the
Dockerfile copies exists, the image's command is a real `amanah` command, the compose file
mounts the data volume where the image expects it and publishes no port."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.relayharness import AMANAH

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def instructions() -> list[tuple[str, str]]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def test_the_base_image_is_pinned_debian() -> None:
    (base,) = [rest for keyword, rest in instructions() if keyword == "FROM"]
    assert re.fullmatch(r"debian:bookworm-\d{8}-slim(@sha256:[0-9a-f]{64})?", base), base


def test_everything_copied_exists() -> None:
    for keyword, rest in instructions():
        if keyword == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                assert (ROOT / source).exists(), source


def test_tor_and_the_runtime_packages_are_installed_and_the_user_is_not_root() -> None:
    steps = dict(instructions())
    run = " ".join(rest for keyword, rest in instructions() if keyword == "RUN")
    for package in ("tor", "ffmpeg", "libmagic1", "bubblewrap", "python3-venv"):
        assert re.search(rf"\b{re.escape(package)}\b", run), package
    assert steps["USER"] not in ("root", "0")


def test_the_command_is_a_real_amanah_command() -> None:
    steps = dict(instructions())
    command = json.loads(steps["CMD"])
    entrypoint = json.loads(steps["ENTRYPOINT"])
    assert entrypoint == ["/usr/local/bin/amanah-entrypoint"]
    script = (DOCKER / "entrypoint.sh").read_text()
    assert 'exec amanah "$@"' in script and "amanah init" in script
    done = subprocess.run(
        [AMANAH, *command, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(steps["VOLUME"]) == ["/data"]
    assert "AMANAH_DATA=/data" in steps["ENV"]


def test_compose_mounts_the_data_volume_and_publishes_no_port() -> None:
    compose = yaml.safe_load((DOCKER / "compose.yml").read_text())
    (service,) = compose["services"].values()
    assert "ports" not in service and "network_mode" not in service
    assert service["build"]["dockerfile"] == "docker/Dockerfile"
    assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).exists()
    volumes = [v.split(":") for v in service["volumes"]]
    assert [target for _, target in volumes] == ["/data"]
    assert {name for name, _ in volumes} <= set(compose["volumes"])
    # The health check is a real amanah command (argparse accepts it).
    kind, program, *arguments = service["healthcheck"]["test"]
    assert (kind, program) == ("CMD", "amanah") and "--check" in arguments
    done = subprocess.run(
        [AMANAH, *arguments, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0 and "--check" in done.stdout, done.stderr

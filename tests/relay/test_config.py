"""relay.config: defaults, the commented file `amanah init` writes, every refusal, and the
environment, each through `load()` on a real file."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from onion.services import Attach
from onion.tor import LaunchSettings
from relay import config as configuration
from relay.config import (
    CONFIG_NAME,
    DEFAULT_TOML,
    Auth,
    Config,
    Limits,
    Sanitize,
    Server,
    Tor,
)
from relay.errors import ConfigError
from relay.server import tor_how

NO_ENV: dict[str, str] = {}


def write(data_dir: Path, text: str) -> Path:
    data_dir.mkdir(exist_ok=True)
    (data_dir / CONFIG_NAME).write_text(text, encoding="utf-8")
    return data_dir


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    return configuration.load(write(tmp_path / "d", text), NO_ENV if environ is None else environ)


def uncommented(text: str) -> str:
    """DEFAULT_TOML with every `# key = value` setting line made live."""
    setting = re.compile(r"^# ([a-z_]+ = \S+)")
    return "\n".join(
        setting.sub(r"\1", line) if setting.match(line) else line for line in text.splitlines()
    )


def test_defaults() -> None:
    config = Config(Path("/data"))
    assert config.server == Server("127.0.0.1", 8080, 8081)
    assert config.limits == Limits(2048 * 1024 * 1024, 20, 100_000, 1024 * 1024)
    assert config.auth == Auth(60, 900)
    assert config.database == Path("/data/amanah.db")
    assert config.blobs == Path("/data/blobs")
    assert config.staging == Path("/data/staging")
    assert config.keys == Path("/data/keys")
    configuration.validate(config)


def test_config_is_frozen() -> None:
    config = Config(Path("/data"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.server.source_port = 1  # type: ignore[misc]


def test_the_commented_default_file_loads_to_the_defaults(tmp_path: Path) -> None:
    data_dir = write(tmp_path / "d", DEFAULT_TOML)
    assert configuration.load(data_dir, NO_ENV) == Config(data_dir)


def test_every_commented_value_is_the_real_default(tmp_path: Path) -> None:
    """Uncommenting every setting must change nothing: the comments tell the truth."""
    live = uncommented(DEFAULT_TOML)
    settings = [line for line in live.splitlines() if re.match(r"^[a-z_]+ = ", line)]
    sections = (Server, Limits, Auth, Tor, Sanitize)
    fields = {f.name for cls in sections for f in dataclasses.fields(cls)}
    assert {line.split(" = ")[0] for line in settings} == fields  # every setting is shown
    data_dir = write(tmp_path / "d", live)
    assert configuration.load(data_dir, NO_ENV) == Config(data_dir)


def test_an_empty_file_is_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "") == Config(tmp_path / "d")


def test_settings_are_read(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "[server]\nsource_port = 9000\njournalist_port = 9001\nhost = '::1'\n"
        "[limits]\nmax_files = 3\nmax_reply_bytes = 4096\n"
        "[auth]\ntoken_seconds = 120\n",
    )
    assert config.server == Server("::1", 9000, 9001)
    assert config.limits.max_files == 3 and config.limits.max_reply_bytes == 4096
    assert config.limits.max_total_bytes == Limits().max_total_bytes
    assert config.auth == Auth(challenge_seconds=60, token_seconds=120)


def test_a_missing_file_says_to_run_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="amanah init"):
        configuration.load(tmp_path, NO_ENV)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[serve]\nhost = '127.0.0.1'\n", r"unknown section \[serve\]"),
        ("port = 8080\n", r"unknown section \[port\]"),
        ("[server]\nport = 8080\n", r"server: unknown setting 'port'"),
        ("[limits]\nmax_file = 3\n", r"limits: unknown setting 'max_file'"),
        ("[auth]\ntoken_second = 3\n", r"auth: unknown setting 'token_second'"),
    ],
)
def test_unknown_sections_and_keys_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nsource_port = '8080'\n", r"server.source_port: expected int"),
        ("[server]\nsource_port = 8080.0\n", r"server.source_port: expected int"),
        ("[server]\nsource_port = true\n", r"server.source_port: expected int"),
        ("[server]\nhost = 127\n", r"server.host: expected str"),
        ("[limits]\nmax_files = [1]\n", r"limits.max_files: expected int"),
        ("[limits]\nmax_files = 0\n", r"limits.max_files: must be positive"),
        ("[auth]\ntoken_seconds = -5\n", r"auth.token_seconds: must be positive"),
        ("[server]\nsource_port = 70000\n", r"port 70000 is out of range"),
    ],
)
def test_wrong_types_and_values_are_refused(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, text)


@pytest.mark.parametrize("text", ["[server\n", "a = \n", "[server]\nhost = 'x\n", "\x00"])
def test_unparseable_toml_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match="cannot be read"):
        load(tmp_path, text)


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    data_dir = tmp_path / "d"
    data_dir.mkdir()
    (data_dir / CONFIG_NAME).write_bytes(b"[server]\nhost = '\xff'\n")
    with pytest.raises(ConfigError, match="cannot be read"):
        configuration.load(data_dir, NO_ENV)


@pytest.mark.parametrize("text", ["server = 1\n", "auth = 'x'\n", "limits = [1, 2]\n"])
def test_a_section_that_is_not_a_table_is_a_config_error(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load(tmp_path, text)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "[server]\nsource_port = 9000\njournalist_port = 9001\n",
        {
            "AMANAH_SOURCE_PORT": "7000",
            "AMANAH_JOURNALIST_PORT": "7001",
            "AMANAH_HOST": "127.0.0.2",
            "AMANAH_UNRELATED": "ignored",
        },
    )
    assert config.server == Server("127.0.0.2", 7000, 7001)


def test_environment_overrides_the_defaults(tmp_path: Path) -> None:
    config = load(tmp_path, DEFAULT_TOML, {"AMANAH_JOURNALIST_PORT": "9999"})
    assert config.server == Server("127.0.0.1", 8080, 9999)


def test_the_process_environment_is_read_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMANAH_SOURCE_PORT", "7100")
    data_dir = write(tmp_path / "d", "")
    assert configuration.load(data_dir).server.source_port == 7100


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AMANAH_SOURCE_PORT", "eighty", "server.source_port: expected int"),
        ("AMANAH_SOURCE_PORT", "", "server.source_port: expected int"),
        ("AMANAH_SOURCE_PORT", "-1", "server.source_port: expected int"),
        ("AMANAH_SOURCE_PORT", "0", "must be positive"),
        ("AMANAH_JOURNALIST_PORT", "65536", "out of range"),
        ("AMANAH_HOST", "0.0.0.0", "loopback"),  # noqa: S104 (refused, never bound)
    ],
)
def test_bad_environment_values_are_refused(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, "", {variable: value})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "127.1.2.3", "::1", "localhost"])
def test_loopback_hosts_are_accepted(tmp_path: Path, host: str) -> None:
    assert load(tmp_path, f"[server]\nhost = '{host}'\n").server.host == host


@pytest.mark.parametrize(
    "host",
    ["0.0.0.0", "::", "192.168.1.10", "10.0.0.1", "example.org", "", "128.0.0.1"],  # noqa: S104
)
def test_non_loopback_hosts_are_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        load(tmp_path, f"[server]\nhost = '{host}'\n")


@pytest.mark.parametrize("host", ["127.attacker.example", "127.0.0.1.nip.io", "127."])
def test_names_that_only_look_like_loopback_are_refused(tmp_path: Path, host: str) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        load(tmp_path, f"[server]\nhost = '{host}'\n")


@pytest.mark.parametrize("control", ["127.0.0.1:9051", "[::1]:9051", "localhost:9051"])
def test_a_loopback_tor_control_port_is_accepted(tmp_path: Path, control: str) -> None:
    assert load(tmp_path, f"[tor]\ncontrol = '{control}'\n").tor.control == control
    from_env = load(tmp_path, "", {"AMANAH_TOR_CONTROL": control})
    assert from_env.tor.control == control


@pytest.mark.parametrize(
    "control",
    [
        "9051",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:port",
        "127.0.0.1:-1",
        "10.0.0.1:9051",
        "0.0.0.0:9051",  # noqa: S104 (refused, never bound)
        "example.org:9051",
        "127.0.0.1.nip.io:9051",
        ":9051",
    ],
)
def test_a_tor_control_port_off_loopback_or_malformed_is_refused(
    tmp_path: Path, control: str
) -> None:
    with pytest.raises(ConfigError, match="tor.control"):
        load(tmp_path, f"[tor]\ncontrol = '{control}'\n")
    with pytest.raises(ConfigError, match="tor.control"):
        load(tmp_path, "", {"AMANAH_TOR_CONTROL": control})
    with pytest.raises(ConfigError, match="tor.control"):
        configuration.with_tor_control(load(tmp_path, ""), control)


def test_the_relay_attaches_to_the_configured_control_port(tmp_path: Path) -> None:
    assert tor_how(load(tmp_path, "[tor]\ncontrol = '[::1]:9051'\n")) == Attach("::1", 9051)
    password = tmp_path / "control.pass"
    password.write_text("s3cret\n")
    text = f"[tor]\ncontrol = '127.0.0.1:9151'\ncontrol_password_file = '{password}'\n"
    config = load(tmp_path, text)
    assert tor_how(config) == Attach("127.0.0.1", 9151, "s3cret")
    password.unlink()
    with pytest.raises(ConfigError, match="control_password_file"):
        tor_how(config)
    launched = tor_how(load(tmp_path, ""))  # no control port: our own tor
    assert isinstance(launched, LaunchSettings) and launched.data_dir == config.tor_data


def test_equal_ports_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must differ"):
        load(tmp_path, "[server]\nsource_port = 9000\njournalist_port = 9000\n")
    with pytest.raises(ConfigError, match="must differ"):  # the default journalist port
        load(tmp_path, "", {"AMANAH_SOURCE_PORT": "8081"})


def test_command_line_ports_override_and_are_validated(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    moved = configuration.with_ports(config, 9100, None)
    assert moved.server == Server("127.0.0.1", 9100, 8081)
    assert configuration.with_ports(config, None, None) == config
    assert config.server.source_port == 8080  # the original is untouched
    with pytest.raises(ConfigError, match="must differ"):
        configuration.with_ports(config, 8081, None)
    with pytest.raises(ConfigError, match="out of range"):
        configuration.with_ports(config, None, 0)

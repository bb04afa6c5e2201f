"""Config loading: defaults equal README.md's "Configuration"; errors are one line: file, key."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from smtpgate.config import Config, ConfigError, ListenerConfig, load_config
from smtpgate.config.load import find_config_path
from smtpgate.config.schema import ImportConfig, parse_address


def write(tmp_path: Path, text: str, name: str = "smtpgate.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{path}: ")
    return info.value


# --- defaults --------------------------------------------------------------------------------


def test_builtin_defaults_equal_the_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config.data_dir == tmp_path / "smtpgate-data"
    assert config.hostname == socket.getfqdn()
    assert config.server.workers == 0
    assert config.listeners == (
        ListenerConfig("127.0.0.1:2587", "127.0.0.1", 2587, "starttls", True),
        ListenerConfig("127.0.0.1:2465", "127.0.0.1", 2465, "implicit", True),
    )
    assert config.tls.cert == tmp_path / "smtpgate-data" / "tls" / "cert.pem"
    assert config.tls.key == tmp_path / "smtpgate-data" / "tls" / "key.pem"
    auth = config.auth
    assert auth.mechanisms == (
        "SCRAM-SHA-256-PLUS",
        "SCRAM-SHA-256",
        "SCRAM-SHA-1-PLUS",
        "SCRAM-SHA-1",
        "PLAIN",
        "LOGIN",
    )
    assert auth.plaintext_requires_tls is True
    assert auth.failure_delay == 2.0
    assert auth.max_failures_per_connection == 3
    assert (auth.ip_failure_limit, auth.ip_failure_window) == (10, 300)
    assert (auth.user_failure_limit, auth.user_failure_window) == (20, 900)
    assert auth.show_user_in_received is False
    assert auth.enforce_sender is False
    limits = config.limits
    assert limits.max_message_size == 26214400
    assert limits.max_recipients == 100
    assert limits.max_connections == 1000
    assert limits.max_connections_per_ip == 20
    assert (limits.command_timeout, limits.data_timeout) == (300, 600)
    assert limits.max_errors == 10
    assert config.store.url == "sqlite:///users.db"
    assert config.delivery.mode == "maildir"


def test_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), environ={})
    assert config.listeners == Config().listeners
    assert config.auth == Config().auth
    assert config.data_dir == tmp_path / "smtpgate-data"


def test_config_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Config().hostname = "x"  # type: ignore[misc]


def test_full_file_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        data_dir = "/var/lib/smtpgate"
        hostname = "mail.example.org"
        [server]
        workers = 4
        [[listener]]
        address = "[::1]:587"
        tls = "none"
        require_auth = false
        [[listener]]
        address = "localhost:2465"
        tls = "implicit"
        [auth]
        mechanisms = ["scram-sha-256", "Plain", "CRAM-MD5"]
        failure_delay = 0
        ip_failure_window = 60
        show_user_in_received = true
        [limits]
        command_timeout = 1.5
        [store]
        url = "sqlite:////srv/users.db"
        [delivery]
        mode = "discard"
        """,
    )
    config = load_config(path, environ={})
    assert config.data_dir == Path("/var/lib/smtpgate")
    assert config.hostname == "mail.example.org"
    assert config.server.workers == 4
    assert config.listeners == (
        ListenerConfig("[::1]:587", "::1", 587, "none", False),
        ListenerConfig("localhost:2465", "localhost", 2465, "implicit", True),
    )
    assert config.auth.mechanisms == ("SCRAM-SHA-256", "PLAIN", "CRAM-MD5")
    assert config.auth.failure_delay == 0.0
    assert isinstance(config.auth.failure_delay, float)
    assert config.auth.ip_failure_window == 60.0
    assert config.auth.show_user_in_received is True
    assert config.limits.command_timeout == 1.5
    assert config.limits.max_errors == 10
    assert config.store.url == "sqlite:////srv/users.db"
    assert config.delivery.mode == "discard"
    assert config.tls.cert == Path("/var/lib/smtpgate/tls/cert.pem")


# --- path resolution ---------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = write(folder, 'data_dir = "data"\n[tls]\ncert = "c.pem"\nkey = "/abs/k.pem"\n')
    config = load_config(path, environ={})
    assert config.data_dir == folder / "data"
    assert config.tls.cert == folder / "data" / "c.pem"
    assert config.tls.key == Path("/abs/k.pem")
    assert config.store.url == "sqlite:///users.db"  # the store resolves it against data_dir


def test_relative_config_path_gives_absolute_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", 'data_dir = "../d"\n', name="x.toml")
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("conf/x.toml"), environ={})
    assert config.data_dir == tmp_path / "d"
    assert config.data_dir.is_absolute()


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert find_config_path(environ={}) is None
    write(tmp_path, 'hostname = "local.example"\n')
    assert find_config_path(environ={}) == Path("smtpgate.toml")
    assert load_config(environ={}).hostname == "local.example"
    other = write(tmp_path, 'hostname = "env.example"\n', name="other.toml")
    env = {"SMTPGATE_CONFIG": str(other)}
    assert load_config(environ=env).hostname == "env.example"
    explicit = write(tmp_path, 'hostname = "arg.example"\n', name="arg.toml")
    assert load_config(explicit, environ=env).hostname == "arg.example"


def test_missing_file_is_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(environ={"SMTPGATE_CONFIG": str(missing)})
    assert str(info.value) == f"{missing}: cannot read: No such file or directory"


# --- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("colour = 1", "colour", "unknown key"),
        ("[auth]\nfailure_dealy = 1", "auth.failure_dealy", "did you mean 'failure_delay'"),
        ("[[listener]]\naddress = 'a:1'\nport = 25", "listener[1].port", "unknown key"),
        ("[limits]\nmax_recipients = true", "limits.max_recipients", "expected an integer"),
        ("[limits]\nmax_recipients = 1.5", "limits.max_recipients", "expected an integer"),
        ("[limits]\nmax_recipients = 0", "limits.max_recipients", "at least 1"),
        ("[limits]\nmax_message_size = -5", "limits.max_message_size", "at least 1"),
        ("[limits]\ncommand_timeout = 0", "limits.command_timeout", "greater than 0"),
        ("[limits]\ndata_timeout = nan", "limits.data_timeout", "finite"),
        ("[auth]\nip_failure_window = 0", "auth.ip_failure_window", "greater than 0"),
        ("[auth]\nuser_failure_window = -1", "auth.user_failure_window", "greater than 0"),
        ("[auth]\nfailure_delay = -1", "auth.failure_delay", "at least 0"),
        ("[auth]\nfailure_delay = true", "auth.failure_delay", "expected a number, got true"),
        ("[auth]\nplaintext_requires_tls = 1", "auth.plaintext_requires_tls", "true or false"),
        ("[auth]\nmechanisms = 'PLAIN'", "auth.mechanisms", "array of strings"),
        ("[auth]\nmechanisms = ['PLAIN', 3]", "auth.mechanisms", "array of strings"),
        ("[auth]\nmechanisms = ['PLAIN', 'NTLM']", "auth.mechanisms", 'unknown mechanism "NTLM"'),
        ("[auth]\nmechanisms = ['PLAIN', 'plain']", "auth.mechanisms", "listed twice"),
        ("[auth]\nmechanisms = []", "auth.mechanisms", "require_auth"),
        ("[server]\nworkers = -1", "server.workers", "at least 0"),
        ("server = 3", "server", "expected a table, got 3"),
        ("hostname = 5", "hostname", "expected a string"),
        ("hostname = 'bad host'", "hostname", "not a valid host name"),
        ("data_dir = ''", "data_dir", "expected a path"),
        ("[store]\nurl = 'mysql://x'", "store.url", "sqlite:///PATH"),
        ("[delivery]\nmode = 'mbox'", "delivery.mode", "must be one of maildir, discard, relay"),
        ("listener = []", "listener", "at least one"),
        ("[listener]\naddress = 'a:1'", "listener", "[[listener]]"),
        ("[[listener]]\ntls = 'none'", "listener[1].address", "required"),
        ("[[listener]]\naddress = '127.0.0.1'", "listener[1].address", "host:port"),
        ("[[listener]]\naddress = '127.0.0.1:0'", "listener[1].address", "between 1 and 65535"),
        ("[[listener]]\naddress = '127.0.0.1:65536'", "listener[1].address", "65535"),
        ("[[listener]]\naddress = '127.0.0.1:x'", "listener[1].address", "must be a number"),
        ("[[listener]]\naddress = '::1:25'", "listener[1].address", "brackets"),
        ("[[listener]]\naddress = '[::zz]:25'", "listener[1].address", "not an IPv6"),
        ("[[listener]]\naddress = '300.1.1.1:25'", "listener[1].address", "not an IPv4"),
        ("[[listener]]\naddress = 'a b:25'", "listener[1].address", "not a host name"),
        ("[[listener]]\naddress = 25", "listener[1].address", "expected a string"),
        (
            "[[listener]]\naddress = 'a:1'\n[[listener]]\naddress = 'a:2'\ntls = 'tls'",
            "listener[2].tls",
            "must be one of none, starttls, implicit",
        ),
        (
            "[[listener]]\naddress = 'A:1'\n[[listener]]\naddress = 'a:1'",
            "listener[2].address",
            "same address as listener[1]",
        ),
        ("[[listener]]\naddress = 'a:1'\nrequire_auth = 'yes'", "listener[1].require_auth", ""),
    ],
)
def test_errors_name_file_and_key(tmp_path: Path, text: str, key: str, reason: str) -> None:
    error = load_error(tmp_path, text)
    assert error.key == key
    assert str(error).startswith(f"{tmp_path / 'smtpgate.toml'}: {key}: ")
    assert reason in str(error)


def test_wrong_type_message_matches_the_brief(tmp_path: Path) -> None:
    error = load_error(tmp_path, '[auth]\nfailure_delay = "fast"\n')
    expected = 'auth.failure_delay: expected a number, got "fast"'
    assert str(error) == f"{tmp_path / 'smtpgate.toml'}: {expected}"


def test_hostile_string_values_stay_on_one_line(tmp_path: Path) -> None:
    error = load_error(tmp_path, 'hostname = "a\\nb\\r\\u0000c"\n')
    assert error.key == "hostname"


@pytest.mark.parametrize(
    "text",
    ["[auth\nx = 1", "a = ", "a = 1\na = 2", "x = 'unterminated\n"],
)
def test_syntax_errors_are_one_line_with_file(tmp_path: Path, text: str) -> None:
    error = load_error(tmp_path, text)
    assert error.key is None
    assert "invalid TOML" in str(error)


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "smtpgate.toml"
    path.write_bytes(b'hostname = "\xff"\n')
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path, environ={})


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:2587", ("127.0.0.1", 2587)),
        ("[::1]:2587", ("::1", 2587)),
        ("0.0.0.0:25", ("0.0.0.0", 25)),
        ("localhost:2587", ("localhost", 2587)),
        ("[::]:465", ("::", 465)),
        ("mail.example.org.:587", ("mail.example.org.", 587)),
    ],
)
def test_parse_address_accepts(address: str, expected: tuple[str, int]) -> None:
    assert parse_address(address) == expected


@pytest.mark.parametrize(
    "address", ["", ":25", "host", "host:", "[::1]", "[::1]25", "h:+25", "h:２５", "-x:25"]
)
def test_parse_address_refuses(address: str) -> None:
    with pytest.raises(ValueError):
        parse_address(address)


# --- [import]: the work one imported hash may ask of every AUTH ---------------------------------


def test_import_limits_defaults_and_overrides(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, ""), environ={}).import_ == ImportConfig(
        max_argon2_memory_kib=131072,
        max_argon2_passes=6,
        max_argon2_parallelism=16,
        max_bcrypt_cost=13,
        max_sha_crypt_rounds=1_000_000,
        max_scram_iterations=1_000_000,
    )
    text = "[import]\nmax_argon2_memory_kib = 262144\nmax_bcrypt_cost = 4\n"
    limits = load_config(write(tmp_path, text), environ={}).import_
    assert (limits.max_argon2_memory_kib, limits.max_bcrypt_cost) == (262144, 4)
    assert limits.max_scram_iterations == ImportConfig().max_scram_iterations


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[import]\nmax_bcrypt_cost = 3", "import.max_bcrypt_cost", "at least 4, got 3"),
        ("[import]\nmax_sha_crypt_rounds = 999", "import.max_sha_crypt_rounds", "at least 1000"),
        ("[import]\nmax_argon2_memory_kib = 7", "import.max_argon2_memory_kib", "at least 8"),
        ("[import]\nmax_argon2_passes = 0", "import.max_argon2_passes", "at least 1"),
        ("[import]\nmax_argon2_parallelism = 0", "import.max_argon2_parallelism", "at least 1"),
        ("[import]\nmax_scram_iterations = 0", "import.max_scram_iterations", "at least 1"),
        ("[import]\nmax_scram_iterations = 1e6", "import.max_scram_iterations", "an integer"),
        ("[import]\nmax_bcrypt = 12", "import.max_bcrypt", "did you mean 'max_bcrypt_cost'"),
        ("import = 1", "import", "expected a table"),
        ("import_ = {}", "import_", "unknown key"),
    ],
)
def test_import_limit_errors(tmp_path: Path, text: str, key: str, reason: str) -> None:
    error = load_error(tmp_path, text)
    assert (error.key, reason in error.reason) == (key, True), str(error)

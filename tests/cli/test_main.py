"""The smtpgate command: in-process through main(), and the installed script as a subprocess."""

from __future__ import annotations

import asyncio
import getpass
import io
import os
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

from smtpgate.cli import main as cli
from smtpgate.config.schema import Config
from smtpgate.credentials.base import Account
from smtpgate.credentials.passwords import verify_account_password
from smtpgate.credentials.sqlite import open_store
from tests.e2e.conftest import free_port

SCRIPT = Path(sys.executable).parent / "smtpgate"
PASSWORD = "correct horse battery"


@pytest.fixture
def conf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A config file with its data in tmp_path/data; cwd is tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SMTPGATE_CONFIG", raising=False)
    path = tmp_path / "smtpgate.toml"
    path.write_text('data_dir = "data"\nhostname = "mx.example"\n')
    return path


def stdin(monkeypatch: pytest.MonkeyPatch, data: bytes, *, tty: bool = False) -> None:
    stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    monkeypatch.setattr(stream, "isatty", lambda: tty)
    monkeypatch.setattr(sys, "stdin", stream)


def account(conf: Path, name: str) -> Account | None:
    async def get() -> Account | None:
        store = open_store("sqlite:///users.db", conf.parent / "data")
        try:
            return await store.get(name)
        finally:
            await store.close()

    return asyncio.run(get())


def one_line(text: str) -> str:
    assert text.endswith("\n") and text.count("\n") == 1, repr(text)
    return text.strip()


# --- check-config and config errors -----------------------------------------------------------


def test_check_config_builtin_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SMTPGATE_CONFIG", raising=False)
    assert cli.main(["check-config"]) == 0
    assert capsys.readouterr().out == (
        "built-in defaults: OK\n"
        "listener 127.0.0.1:2587 tls=starttls require_auth=true\n"
        "listener 127.0.0.1:2465 tls=implicit require_auth=true\n"
        "reload (SIGHUP): tls.cert, tls.key, log.format, log.user_names;"
        " users and passwords: at the next AUTH\n"
        "restart needed: data_dir, hostname, server.*, listener, auth.*, limits.*, store.*,"
        " state.*, delivery.*, submission.*, import.*, admin.*, relay.*\n"
    )


def test_check_config_names_the_file(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check-config"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "smtpgate.toml: OK"
    assert cli.main(["--config", str(conf), "check-config"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{conf}: OK"


def test_check_config_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "env.toml"
    path.write_text("[[listener]]\naddress = '[::1]:587'\ntls = 'none'\nrequire_auth = false\n")
    monkeypatch.setenv("SMTPGATE_CONFIG", str(path))
    assert cli.main(["check-config"]) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [
        f"{path}: OK", "listener [::1]:587 tls=none require_auth=false"
    ]


@pytest.mark.parametrize("command", [["check-config"], ["user", "list"], ["serve"]])
def test_bad_config_key_exits_2_with_one_line(
    conf: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    conf.write_text("[limits]\nmax_recipient = 5\n")
    assert cli.main(command) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert one_line(captured.err).startswith("smtpgate.toml: limits.max_recipient: unknown key")
    assert not (conf.parent / "data").exists()  # nothing was created


def test_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", str(tmp_path / "none.toml"), "check-config"]) == 2
    assert "cannot read" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "argv", [[], ["user"], ["user", "add"], ["frobnicate"], ["user", "list", "extra"]]
)
def test_usage_errors_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "try --help" in one_line(capsys.readouterr().err)


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    assert "check-config" in capsys.readouterr().out


# --- serve ------------------------------------------------------------------------------------


def test_serve_calls_the_server_with_the_config(
    conf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Config] = []

    sources: list[Path | None] = []

    def serve(config: Config, source: Path | None = None) -> int:
        seen.append(config)
        sources.append(source)
        return 0

    fake = types.ModuleType("smtpgate.server.run")
    fake.serve = serve  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "smtpgate.server.run", fake)
    assert cli.main(["serve"]) == 0
    assert seen[0].hostname == "mx.example"
    assert seen[0].data_dir == conf.parent / "data"
    assert sources[0] == Path("smtpgate.toml")  # read again on SIGHUP


# --- user commands in-process ------------------------------------------------------------------


def test_user_round_trip(
    conf: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, f"{PASSWORD}\n".encode())
    argv = ["user", "add", "alice", "--password-stdin", "--allow-mechanisms", "scram-sha-256,Plain"]
    assert cli.main([*argv, "--may-act-as", "team@x,boss@x"]) == 0
    alice = account(conf, "alice")
    assert alice is not None
    assert verify_account_password(alice, PASSWORD)
    assert alice.allowed_mechanisms == frozenset({"SCRAM-SHA-256", "PLAIN"})
    assert alice.may_act_as == frozenset({"team@x", "boss@x"})
    assert alice.scram_sha256 is not None and alice.cram_md5 is None  # CRAM-MD5 is off

    assert cli.main(["user", "list"]) == 0
    out = capsys.readouterr().out
    assert "alice\tmechanisms=PLAIN,SCRAM-SHA-256\tmay-act-as=boss@x,team@x\t" in out

    stdin(monkeypatch, b"new password\r\n")
    assert cli.main(["user", "passwd", "alice", "--password-stdin"]) == 0
    alice = account(conf, "alice")
    assert alice is not None
    assert verify_account_password(alice, "new password")
    assert not verify_account_password(alice, PASSWORD)

    assert cli.main(["user", "del", "alice"]) == 0
    assert account(conf, "alice") is None
    captured = capsys.readouterr()
    assert PASSWORD not in captured.out + captured.err
    assert "new password" not in captured.out + captured.err
    assert "$argon2" not in captured.out + captured.err


def test_cram_md5_secret_only_when_enabled(conf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf.write_text('data_dir = "data"\n[auth]\nmechanisms = ["CRAM-MD5", "PLAIN"]\n')
    stdin(monkeypatch, b"pw\n")
    assert cli.main(["user", "add", "bob", "--password-stdin"]) == 0
    bob = account(conf, "bob")
    assert bob is not None and bob.cram_md5 is not None


def test_prompt_twice_on_a_terminal(conf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([PASSWORD, PASSWORD])
    stdin(monkeypatch, b"", tty=True)
    monkeypatch.setattr(getpass, "getpass", lambda prompt: next(answers))
    assert cli.main(["user", "add", "carol"]) == 0
    carol = account(conf, "carol")
    assert carol is not None and verify_account_password(carol, PASSWORD)


def test_mismatched_prompts_refused(
    conf: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter(["one", "two"])
    stdin(monkeypatch, b"", tty=True)
    monkeypatch.setattr(getpass, "getpass", lambda prompt: next(answers))
    assert cli.main(["user", "add", "carol"]) == 1
    assert one_line(capsys.readouterr().err) == "smtpgate: the passwords do not match"
    assert account(conf, "carol") is None


def test_no_terminal_and_no_password_stdin(
    conf: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, b"pw\n", tty=False)
    assert cli.main(["user", "add", "dave"]) == 1
    assert "--password-stdin" in one_line(capsys.readouterr().err)
    assert account(conf, "dave") is None


@pytest.mark.parametrize("data", [b"", b"\n", b"\r\n"])
def test_empty_password_refused(
    conf: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], data: bytes
) -> None:
    stdin(monkeypatch, data)
    assert cli.main(["user", "add", "erin", "--password-stdin"]) == 1
    assert "empty password" in one_line(capsys.readouterr().err)


def test_password_stdin_reads_one_line_only(conf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stdin(monkeypatch, b" spaced pw \nsecond line\n")
    assert cli.main(["user", "add", "fay", "--password-stdin"]) == 0
    fay = account(conf, "fay")
    assert fay is not None and verify_account_password(fay, " spaced pw ")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["user", "del", "nobody"], "smtpgate: unknown user nobody"),
        (["user", "passwd", "nobody", "--password-stdin"], "smtpgate: unknown user nobody"),
        (["user", "import", "/nonexistent/file"], "cannot read"),
        (["user", "add", "x", "--password-stdin", "--allow-mechanisms", "NTLM"], "NTLM"),
    ],
)
def test_user_errors_exit_1(
    conf: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    message: str,
) -> None:
    stdin(monkeypatch, b"pw\n")
    assert cli.main(argv) == 1
    assert message in one_line(capsys.readouterr().err)


def test_user_exists(
    conf: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stdin(monkeypatch, b"pw\n")
    assert cli.main(["user", "add", "gus", "--password-stdin"]) == 0
    stdin(monkeypatch, b"other\n")
    assert cli.main(["user", "add", "gus", "--password-stdin"]) == 1
    assert "already exists" in one_line(capsys.readouterr().err)
    gus = account(conf, "gus")
    assert gus is not None and verify_account_password(gus, "pw")


def test_import_is_all_or_nothing(
    conf: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    good = tmp_path / "good.passwd"
    good.write_text("hana:{PLAIN}secret:1000:1000::/home/hana\n# comment\nivan:{PLAIN}other\n")
    assert cli.main(["user", "import", str(good)]) == 0
    assert "imported 2 users" in capsys.readouterr().out
    hana = account(conf, "hana")
    assert hana is not None and verify_account_password(hana, "secret")
    bad = tmp_path / "bad.passwd"
    bad.write_text("jo:{PLAIN}a\nkim:{NOPE}b\n")
    assert cli.main(["user", "import", str(bad)]) == 1
    assert "line 2" in one_line(capsys.readouterr().err)
    assert account(conf, "jo") is None


# --- the installed script -------------------------------------------------------------------------


def run(
    args: list[str], cwd: Path, *, env: dict[str, str] | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "SMTPGATE_CONFIG"}
    environ.update(env or {})
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        env=environ,
        input=stdin.decode(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_script_check_config(tmp_path: Path) -> None:
    done = run(["check-config"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "built-in defaults: OK"
    assert len(done.stdout.splitlines()) == 5  # 2 listeners, then reload and restart keys


def test_script_bad_config_key(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('[auth]\nfailure_delay = "fast"\n')
    done = run(["check-config"], tmp_path, env={"SMTPGATE_CONFIG": "c.toml"})
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == 'c.toml: auth.failure_delay: expected a number, got "fast"\n'


def test_script_user_round_trip(tmp_path: Path) -> None:
    (tmp_path / "smtpgate.toml").write_text('data_dir = "d"\n')
    add = run(["user", "add", "alice", "--password-stdin"], tmp_path, stdin=b"s3cret!\n")
    assert add.returncode == 0, add.stderr
    passwd = run(["user", "passwd", "alice", "--password-stdin"], tmp_path, stdin=b"n3w\n")
    assert passwd.returncode == 0, passwd.stderr
    (tmp_path / "import.passwd").write_text("bob:{PLAIN}x\n")
    assert run(["user", "import", "import.passwd"], tmp_path).returncode == 0
    listing = run(["user", "list"], tmp_path)
    assert listing.returncode == 0
    assert [line.split("\t")[0] for line in listing.stdout.splitlines()] == ["alice", "bob"]
    assert run(["user", "del", "bob"], tmp_path).returncode == 0
    again = run(["user", "del", "bob"], tmp_path)
    assert again.returncode == 1
    assert again.stderr == "smtpgate: unknown user bob\n"
    assert "s3cret" not in add.stdout + add.stderr + listing.stdout
    assert (tmp_path / "d" / "users.db").exists()
    no_tty = run(["user", "add", "carol"], tmp_path)
    assert no_tty.returncode == 1
    assert no_tty.stderr.count("\n") == 1


def test_script_serve_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "smtpgate.toml").write_text(
        f'hostname = "mx.test"\n[server]\nworkers = 1\n'
        f'[[listener]]\naddress = "127.0.0.1:{port}"\ntls = "none"\n'
    )
    environ = {k: v for k, v in os.environ.items() if k != "SMTPGATE_CONFIG"}
    proc = subprocess.Popen(
        [str(SCRIPT), "serve"],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        greeting = b""
        deadline = time.monotonic() + 60  # generous: CI machines can be slow
        while time.monotonic() < deadline and not greeting:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                    greeting = conn.recv(512)
            except OSError:
                time.sleep(0.1)
        if not greeting.startswith(b"220 mx.test "):
            proc.kill()
            pytest.fail(f"no greeting ({greeting!r}); server said: {proc.communicate()[1]!r}")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


# Issue 8: names the passwd-file format or a mechanism cannot carry (RFC 4013, RFC 4616),
# passwords PLAIN cannot carry, and imported hashes too costly to verify.
BCRYPT_COST_20 = "$2b$20$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"


@pytest.mark.parametrize(
    ("name", "password", "problem"),
    [
        (" ", b"pw\n", "the user name is only white space"),
        ("a:b", b"pw\n", "the user name contains ':'"),
        ("x" * 5000, b"pw\n", "the user name is 5000 octets long; at most 255"),
        ("esc\x1bname", b"pw\n", "the user name contains a control character"),
        ("nul", b"pa5s\x00w0rd\n", "the password contains NUL"),
    ],
)
def test_script_user_add_refuses_what_cannot_be_carried(
    tmp_path: Path, name: str, password: bytes, problem: str
) -> None:
    (tmp_path / "smtpgate.toml").write_text('data_dir = "d"\n')
    done = run(["user", "add", name, "--password-stdin"], tmp_path, stdin=password)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith(f"smtpgate: {problem}") and done.stderr.count("\n") == 1
    assert "w0rd" not in done.stderr
    listing = run(["user", "list"], tmp_path)
    assert (listing.returncode, listing.stdout) == (0, "")


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (
            f"bob:{{BLF-CRYPT}}{BCRYPT_COST_20}",
            "user 'bob': BLF-CRYPT costs too much to verify: "
            "20 is over import.max_bcrypt_cost = 13",
        ),
        ("a\uff1ab:{PLAIN}x", "the user name contains ':', which a passwd-file cannot carry"),
        (" :{PLAIN}x", "the user name is only white space"),
        (f"{'y' * 300}:{{PLAIN}}x", "the user name is 300 octets long; at most 255"),
        (
            "carol:{PLAIN}se\x00cret",
            "user 'carol': the PLAIN password has a NUL, which SASL PLAIN (RFC 4616) cannot carry",
        ),
    ],
)
def test_script_import_refuses_bad_lines_by_number(tmp_path: Path, line: str, problem: str) -> None:
    (tmp_path / "smtpgate.toml").write_text('data_dir = "d"\n')
    (tmp_path / "import.passwd").write_text(f"alice:{{PLAIN}}x\n\n{line}\n", "utf-8")
    done = run(["user", "import", "import.passwd"], tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"smtpgate: import.passwd, line 3: {problem}\n"
    assert BCRYPT_COST_20 not in done.stderr and "cret" not in done.stderr
    assert run(["user", "list"], tmp_path).stdout == ""  # all or nothing: alice neither


def test_script_import_limit_comes_from_the_config(tmp_path: Path) -> None:
    (tmp_path / "smtpgate.toml").write_text('data_dir = "d"\n[import]\nmax_bcrypt_cost = 20\n')
    (tmp_path / "import.passwd").write_text(f"bob:{{BLF-CRYPT}}{BCRYPT_COST_20}\n")
    done = run(["user", "import", "import.passwd"], tmp_path)
    assert (done.returncode, done.stdout) == (0, "imported 1 user from import.passwd\n")
    (tmp_path / "smtpgate.toml").write_text('data_dir = "d"\n[import]\nmax_bcrypt_cost = 3\n')
    bad = run(["user", "import", "import.passwd"], tmp_path)
    assert bad.returncode == 2
    assert bad.stderr == "smtpgate.toml: import.max_bcrypt_cost: must be at least 4, got 3\n"

"""``smtpgate user ...`` on a PostgreSQL store, and ``smtpgate store migrate`` into one."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import pytest

from smtpgate.cli import main as cli
from smtpgate.credentials.base import Account
from smtpgate.credentials.open import open_store
from smtpgate.credentials.passwords import verify_account_password
from tests.postgres.cluster import PgCluster

PASSWORD = "correct horse battery"


def config_file(tmp_path: Path, url: str) -> Path:
    path = tmp_path / f"smtpgate-{len(list(tmp_path.glob('*.toml')))}.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\nhostname = "mx.example"\n'
                    f'[auth]\nmechanisms = ["SCRAM-SHA-256", "PLAIN", "CRAM-MD5"]\n'
                    f'[store]\nurl = "{url}"\n')
    return path


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str,
        password: str | None = None) -> tuple[int, str, str]:
    if password is not None:
        stream = io.TextIOWrapper(io.BytesIO(password.encode() + b"\n"), encoding="utf-8")
        monkeypatch.setattr(sys, "stdin", stream)
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def everything(url: str, data_dir: Path) -> tuple[dict[str, Account], bytes]:
    async def read() -> tuple[dict[str, Account], bytes]:
        store = open_store(url, data_dir)
        try:
            accounts = {name: await store.get(name) for name in await store.names()}
            key = await store.fake_secret_key()
            return {k: v for k, v in accounts.items() if v is not None}, key
        finally:
            await store.close()

    return asyncio.run(read())


def test_user_commands_work_unchanged(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conf = str(config_file(tmp_path, pg_url))
    added = run(monkeypatch, capsys, "--config", conf, "user", "add", "alice", "--password-stdin",
                "--may-act-as", "sales@example.org", password=PASSWORD)
    assert added[:2] == (0, "added user alice\n")
    status, _, err = run(monkeypatch, capsys, "--config", conf, "user", "add", "alice",
                         "--password-stdin", password=PASSWORD)
    assert status == 1 and "already exists" in err
    assert run(monkeypatch, capsys, "--config", conf, "user", "passwd", "alice",
               "--password-stdin", password="new password")[0] == 0
    status, out, _ = run(monkeypatch, capsys, "--config", conf, "user", "list")
    assert status == 0
    assert out == ("alice\tmechanisms=any\tmay-act-as=sales@example.org"
                   "\tcredentials=ARGON2ID,SCRAM-SHA-1,SCRAM-SHA-256,CRAM-MD5\n")
    accounts, _ = everything(pg_url, tmp_path)
    assert verify_account_password(accounts["alice"], "new password")
    assert not verify_account_password(accounts["alice"], PASSWORD)
    assert run(monkeypatch, capsys, "--config", conf, "user", "del", "alice")[0] == 0
    status, _, err = run(monkeypatch, capsys, "--config", conf, "user", "del", "alice")
    assert status == 1 and "unknown user alice" in err
    assert everything(pg_url, tmp_path)[0] == {}


def test_store_migrate_copies_everything(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sqlite_url = "sqlite:///users.db"
    conf = str(config_file(tmp_path, sqlite_url))
    for name in ("alice", "bob", "carol@example.org"):
        assert run(monkeypatch, capsys, "--config", conf, "user", "add", name,
                   "--password-stdin", "--allow-mechanisms", "SCRAM-SHA-256,PLAIN",
                   password=f"{name} {PASSWORD}")[0] == 0
    passwd = tmp_path / "passwd"
    passwd.write_text("dave:{PLAIN}legacy\n")  # a legacy hash, no SCRAM secrets
    assert run(monkeypatch, capsys, "--config", conf, "user", "import", str(passwd))[0] == 0
    before = everything(sqlite_url, tmp_path / "data")
    status, out, _ = run(monkeypatch, capsys, "--config", conf, "store", "migrate",
                         "--from", sqlite_url, "--to", pg_url)
    assert (status, out) == (0, "copied 4 users and the fake-secret key\n")
    assert everything(pg_url, tmp_path) == before
    assert before[0]["alice"].scram_sha256 is not None
    assert before[0]["dave"].password_hash == "{PLAIN}legacy"


def test_store_migrate_is_all_or_nothing(
    tmp_path: Path, pg_url: str, pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sqlite_url = "sqlite:///users.db"
    conf = str(config_file(tmp_path, sqlite_url))
    pg_conf = str(config_file(tmp_path, pg_url))
    for name in ("alice", "bob"):
        assert run(monkeypatch, capsys, "--config", conf, "user", "add", name,
                   "--password-stdin", password=PASSWORD)[0] == 0
    assert run(monkeypatch, capsys, "--config", pg_conf, "user", "add", "bob",
               "--password-stdin", password="other")[0] == 0
    target_before = everything(pg_url, tmp_path)
    status, out, err = run(monkeypatch, capsys, "--config", conf, "store", "migrate",
                           "--from", sqlite_url, "--to", pg_url)
    assert (status, out) == (1, "")
    assert err == "smtpgate: user bob already exists in the destination; nothing copied\n"
    assert everything(pg_url, tmp_path) == target_before

    down = pg_cluster.url("t_no_such_database")
    status, _, err = run(monkeypatch, capsys, "--config", conf, "store", "migrate",
                         "--from", sqlite_url, "--to", down)
    assert status == 1 and "store unavailable" in err and pg_cluster.password not in err
    status, _, err = run(monkeypatch, capsys, "--config", conf, "store", "migrate",
                         "--from", "sqlite:///typo.db", "--to", pg_url)
    assert status == 1 and "no such file" in err
    assert not (tmp_path / "data" / "typo.db").exists()
    status, _, err = run(monkeypatch, capsys, "--config", conf, "store", "migrate",
                         "--from", pg_url, "--to", sqlite_url)
    assert status == 1 and "--to must be a postgresql:// URL" in err


def test_check_config_refuses_a_bad_url_without_quoting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    good = config_file(tmp_path, "postgresql://smtpgate@127.0.0.1:5432/smtpgate")
    assert run(monkeypatch, capsys, "--config", str(good), "check-config")[0] == 0
    bad = config_file(tmp_path, "postgresql://u:SECRET-XYZZY@h/db?nosuchoption=1")
    status, _, err = run(monkeypatch, capsys, "--config", str(bad), "check-config")
    assert status == 2 and "store.url: not a valid PostgreSQL connection URL" in err
    assert "XYZZY" not in err
    status, _, err = run(monkeypatch, capsys, "--config", str(good), "store", "migrate",
                         "--from", "sqlite:///users.db",
                         "--to", "postgresql://u:SECRET-XYZZY@h/db?nosuchoption=1")
    assert status == 1 and "not a PostgreSQL connection URL" in err and "XYZZY" not in err

"""``smtpgate device ...`` and ``user add --address`` through main(), on a real store."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from smtpgate.cli import main as cli
from smtpgate.credentials.passwords import verify_account_password
from tests.cli.test_main import account, conf, one_line, stdin

__all__ = ["conf"]  # the fixture, shared with test_main

PASSWORD_LINE = re.compile(r"([a-z2-9]{4}-){5}[a-z2-9]{4}")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def add(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    status, out, err = run(capsys, "device", "add", *argv)
    assert (status, err) == (0, ""), err
    password = out.splitlines()[-1]
    assert out.endswith(password + "\n") and PASSWORD_LINE.fullmatch(password), out
    return password


def test_add_prints_the_password_alone_on_the_last_line(
    conf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    password = add(capsys, "copier", "--sender", "scan@example.org", "--sender", "*@example.net",
                   "--network", "192.0.2.0/24", "--network", "127.0.0.2", "--max-per-day", "50",
                   "--expires", "2030-01-31", "--mechanisms", "PLAIN,LOGIN")
    stored = account(conf, "copier")
    assert stored is not None and verify_account_password(stored, password)
    assert stored.networks == ("192.0.2.0/24", "127.0.0.2/32")
    status, out, _ = run(capsys, "device", "show", "copier")
    assert status == 0
    assert "senders: scan@example.org,*@example.net\n" in out
    assert "networks: 192.0.2.0/24,127.0.0.2/32\n" in out
    assert "max-per-day: 50\n" in out and "expires: 2030-01-31\n" in out
    assert "mechanisms: PLAIN,LOGIN\n" in out and "state: active\n" in out
    assert password not in out


def test_list_disable_enable_rotate_revoke(conf: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    first = add(capsys, "copier", "--sender", "scan@example.org")
    add(capsys, "old-fax", "--sender", "fax@example.org", "--expires", "2001-01-01")
    stdin(monkeypatch, b"a person's password\n")
    assert run(capsys, "user", "add", "alice", "--password-stdin")[0] == 0
    status, out, _ = run(capsys, "device", "list")
    assert status == 0
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["copier", "old-fax"]  # no person
    assert "\tstate=expired\t" in lines[1]
    assert run(capsys, "device", "disable", "copier")[:2] == (0, "disabled device copier\n")
    assert "\tstate=disabled\t" in run(capsys, "device", "list")[1]
    assert run(capsys, "device", "enable", "copier")[0] == 0
    assert "\tstate=active\t" in run(capsys, "device", "list")[1]
    status, out, _ = run(capsys, "device", "rotate", "copier")
    second = out.splitlines()[-1]
    assert status == 0 and PASSWORD_LINE.fullmatch(second) and second != first
    stored = account(conf, "copier")
    assert stored is not None and verify_account_password(stored, second)
    assert not verify_account_password(stored, first)
    assert run(capsys, "device", "revoke", "copier")[0] == 0
    assert account(conf, "copier") is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["device", "add", "x", "--sender", "nobody"], (1, "bad sender 'nobody'")),
        (["device", "add", "x", "--sender", "a@b.example", "--network", "10.1.0.0/8"],
         (1, "bad network")),
        (["device", "add", "x", "--sender", "a@b.example", "--expires", "2030-02-30"],
         (1, "bad date")),
        (["device", "add", "x", "--sender", "a@b.example", "--max-per-day", "0"],
         (1, "max-per-day")),
        (["device", "add", "x", "--sender", "a@b.example", "--max-per-day", "many"],
         (2, "invalid int value")),
        (["device", "add", "x"], (2, "--sender")),
        (["device", "add", "x", "--sender", "a@b.example", "--mechanisms", "ROT13"],
         (1, "unknown mechanism")),
        (["device", "show", "ghost"], (1, "unknown user ghost")),
        (["device", "revoke", "alice"], (1, "alice is not a device")),
        (["device", "frobnicate"], (2, "invalid choice")),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    conf: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    argv: list[str], expected: tuple[int, str],
) -> None:
    status, message = expected
    stdin(monkeypatch, b"a person's password\n")
    assert run(capsys, "user", "add", "alice", "--password-stdin")[0] == 0
    got, out, err = run(capsys, *argv)
    assert (got, out) == (status, "")
    assert message in one_line(err)
    assert account(conf, "x") is None
    assert account(conf, "alice") is not None


def test_user_add_address(conf: Path, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    stdin(monkeypatch, b"a person's password\n")
    status, _, _ = run(capsys, "user", "add", "bob", "--password-stdin",
                       "--address", "Bob@Example.org", "--address", "sales@example.org")
    assert status == 0
    bob = account(conf, "bob")
    assert bob is not None and bob.senders == ("bob@example.org", "sales@example.org")
    assert bob.kind == "person"
    stdin(monkeypatch, b"a person's password\n")
    status, out, err = run(capsys, "user", "add", "eve", "--password-stdin", "--address", "eve")
    assert (status, out) == (1, "") and "bad sender 'eve'" in one_line(err)
    assert account(conf, "eve") is None

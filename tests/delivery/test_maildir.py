"""Maildir delivery: names that cannot escape mail/, all-or-nothing commits."""

from __future__ import annotations

import errno
import json
import os
import stat
import threading
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpgate.config.load import build_config
from smtpgate.delivery.base import DeliveryError, Envelope
from smtpgate.delivery.discard import DiscardTarget
from smtpgate.delivery.factory import make_target
from smtpgate.delivery.maildir import MaildirTarget, maildir_name

MESSAGE = b"Subject: hi\r\n\r\nbody line\r\n"


def envelope(*recipients: str, user: str | None = "alice") -> Envelope:
    return Envelope(
        session_id="S1",
        peer="192.0.2.7:4567",
        helo="client.example",
        esmtp=True,
        tls=True,
        authenticated_user=user,
        mail_from="alice@example.org",
        recipients=recipients,
        auth_param="alice@example.org",
        received_at=1_700_000_000.5,
    )


def files(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "name"),
    [
        ("Bob@Example.ORG", "bob@example.org"),
        ("a.b+tag-x_y@d.example", "a.b+tag-x_y@d.example"),
        (".hidden@x", "%2ehidden@x"),
        (".", "%2e"),
        ("..", "%2e."),
        ("../../etc/passwd", "%2e.%2f..%2fetc%2fpasswd"),
        ("a/b", "a%2fb"),
        ("a\\b", "a%5cb"),
        ("a\0b", "a%00b"),
        ("%2f", "%252f"),
        ("a b", "a%20b"),
        ('"quoted local"@x', "%22quoted%20local%22@x"),
        ("jörg@x", "j%c3%b6rg@x"),
        ("ÄÖ@x", "%c3%a4%c3%b6@x"),
        ("a\r\nb", "a%0d%0ab"),
    ],
)
def test_maildir_name_examples(address: str, name: str) -> None:
    assert maildir_name(address) == name


def test_empty_name_is_refused() -> None:
    with pytest.raises(ValueError):
        maildir_name("")


@given(st.text(min_size=1))
def test_any_address_is_one_safe_path_component(address: str) -> None:
    name = maildir_name(address)
    assert name not in ("", ".", "..")
    assert not name.startswith(".")
    assert "/" not in name and "\\" not in name and "\0" not in name
    assert name.isascii() and name.isprintable()
    root = Path("/srv/mail")
    assert (root / name).parent == root
    assert Path(os.path.normpath(root / name)).parent == root


@given(st.text(min_size=1), st.text(min_size=1))
def test_names_are_distinct_after_lowercasing(a: str, b: str) -> None:
    if a.lower() != b.lower():
        assert maildir_name(a) != maildir_name(b)


@pytest.mark.parametrize("address", ["..", "../x", "/etc", "\\..\\x", "a\0b", "%2f..", ".."])
def test_hostile_addresses_stay_inside_mail(tmp_path: Path, address: str) -> None:
    root = tmp_path / "mail"
    target = MaildirTarget(root, hostname="h")
    delivery = target.start(envelope(address))
    delivery.write(MESSAGE)
    delivery.commit()
    for path in tmp_path.rglob("*"):
        assert path.resolve().is_relative_to(root.resolve())
    assert files(target.maildir(address) / "new")


# --- committing ---------------------------------------------------------------------------------


def test_commit_puts_message_in_every_recipients_new(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    target = MaildirTarget(root, hostname="mx.example")
    delivery = target.start(envelope("bob@example.org", "Carol@Example.org"))
    for chunk in (MESSAGE[:5], MESSAGE[5:]):
        delivery.write(chunk)
    delivery.commit()
    for name in ("bob@example.org", "carol@example.org"):
        maildir = root / name
        assert files(maildir / "tmp") == []
        assert files(maildir / "cur") == []
        (message,) = files(maildir / "new")
        assert message == delivery.unique_name
        assert (maildir / "new" / message).read_bytes() == MESSAGE
        assert stat.S_IMODE(os.stat(maildir).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(maildir / "new" / message).st_mode) == 0o600


def test_nothing_is_visible_before_commit(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    delivery = MaildirTarget(root, hostname="h").start(envelope("bob@x"))
    assert all_files(tmp_path) == []  # start does no I/O
    delivery.write(MESSAGE)
    assert files(root / "bob@x" / "new") == []
    delivery.commit()
    assert len(files(root / "bob@x" / "new")) == 1


def test_sidecar_holds_the_envelope_not_the_headers(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    delivery = MaildirTarget(root, hostname="h").start(envelope("bob@x", "carol@x"))
    delivery.write(MESSAGE)
    delivery.commit()
    for rcpt in ("bob@x", "carol@x"):
        sidecar = root / rcpt / "smtpgate-envelope" / f"{delivery.unique_name}.json"
        record = json.loads(sidecar.read_text())
        assert record["authenticated_user"] == "alice"
        assert record["mail_from"] == "alice@example.org"
        assert record["recipients"] == [rcpt]  # never the other (possibly Bcc) recipients
        assert record["auth_param"] == "alice@example.org"
        assert record["peer"] == "192.0.2.7:4567"
        assert record["tls"] is True
        assert record["session_id"] == "S1"
        assert record["received_at"] == 1_700_000_000.5
    assert (root / "bob@x" / "new" / delivery.unique_name).read_bytes() == MESSAGE


def test_same_mailbox_twice_is_delivered_once(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    delivery = MaildirTarget(root, hostname="h").start(envelope("bob@x", "BOB@x"))
    delivery.write(MESSAGE)
    delivery.commit()
    assert len(files(root / "bob@x" / "new")) == 1


def test_empty_message_is_stored(tmp_path: Path) -> None:
    delivery = MaildirTarget(tmp_path, hostname="h").start(envelope("bob@x"))
    delivery.commit()
    (name,) = files(tmp_path / "bob@x" / "new")
    assert (tmp_path / "bob@x" / "new" / name).read_bytes() == b""


def test_copy_when_hard_links_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    delivery = MaildirTarget(tmp_path, hostname="h").start(envelope("a@x", "b@x"))
    delivery.write(MESSAGE)
    delivery.commit()
    for rcpt in ("a@x", "b@x"):
        (name,) = files(tmp_path / rcpt / "new")
        assert (tmp_path / rcpt / "new" / name).read_bytes() == MESSAGE


def test_unique_names_many_per_second(tmp_path: Path) -> None:
    target = MaildirTarget(tmp_path, hostname="h/o:st")
    names: list[str] = []

    def deliver() -> None:
        for _ in range(50):
            delivery = target.start(envelope("bob@x"))
            delivery.write(MESSAGE)
            delivery.commit()
            names.append(delivery.unique_name)

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(names)) == 200
    assert len(files(tmp_path / "bob@x" / "new")) == 200
    for name in names:
        assert "/" not in name and ":" not in name
        assert name.endswith(".h\\057o\\072st")


def test_write_after_commit_is_refused(tmp_path: Path) -> None:
    delivery = MaildirTarget(tmp_path, hostname="h").start(envelope("bob@x"))
    delivery.commit()
    with pytest.raises(DeliveryError):
        delivery.write(b"more")
    delivery.abort()  # a no-op after commit
    assert len(files(tmp_path / "bob@x" / "new")) == 1


@pytest.mark.parametrize("recipients", [(), ("",), ("x" * 100 + "é" * 100,)])
def test_unusable_recipients_are_permanent_errors(
    tmp_path: Path, recipients: tuple[str, ...]
) -> None:
    with pytest.raises(DeliveryError) as info:
        MaildirTarget(tmp_path, hostname="h").start(envelope(*recipients))
    assert info.value.temporary is False


# --- abort and failures ------------------------------------------------------------------------


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    delivery = MaildirTarget(tmp_path, hostname="h").start(envelope("bob@x", "carol@x"))
    delivery.write(MESSAGE * 10_000)  # more than the buffer: really on disk
    assert all_files(tmp_path)
    delivery.abort()
    assert all_files(tmp_path) == []
    delivery.abort()  # idempotent
    with pytest.raises(DeliveryError):
        delivery.commit()


def test_fsync_enospc_gives_disk_full_and_nothing_in_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    delivery = MaildirTarget(tmp_path, hostname="h").start(envelope("bob@x", "carol@x"))
    delivery.write(MESSAGE)
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(DeliveryError) as info:
        delivery.commit()
    assert info.value.disk_full is True
    assert info.value.temporary is True
    assert all_files(tmp_path) == []


def test_failure_on_last_directory_fsync_unlinks_renamed_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync
    new_dir_syncs = 0

    def flaky(fd: int) -> None:
        nonlocal new_dir_syncs
        if os.readlink(f"/proc/self/fd/{fd}").endswith("/new"):
            new_dir_syncs += 1
            if new_dir_syncs == 2:
                raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", flaky)
    delivery = MaildirTarget(tmp_path, hostname="h").start(envelope("bob@x", "carol@x"))
    delivery.write(MESSAGE)
    with pytest.raises(DeliveryError) as info:
        delivery.commit()
    assert info.value.disk_full is False
    assert files(tmp_path / "bob@x" / "new") == []
    assert files(tmp_path / "carol@x" / "new") == []
    assert all_files(tmp_path) == []


def test_rename_failing_midway_unlinks_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_rename = os.rename
    calls = 0

    def flaky(src: str | Path, dst: str | Path) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", flaky)
    delivery = MaildirTarget(tmp_path, hostname="h").start(envelope("bob@x", "carol@x"))
    delivery.write(MESSAGE)
    with pytest.raises(DeliveryError) as info:
        delivery.commit()
    assert info.value.disk_full is True
    assert calls == 2
    assert all_files(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_unwritable_maildir(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    root.chmod(0o500)
    try:
        delivery = MaildirTarget(root, hostname="h").start(envelope("bob@x"))
        with pytest.raises(DeliveryError) as info:
            delivery.write(MESSAGE)
        assert info.value.disk_full is False
        delivery.abort()
    finally:
        root.chmod(0o700)
    assert all_files(root) == []


def test_unwritable_second_maildir_even_as_root(tmp_path: Path) -> None:
    # A file where carol's Maildir should be: mkdir/link fail for any user.
    root = tmp_path / "mail"
    root.mkdir()
    (root / "carol@x").write_bytes(b"in the way")
    delivery = MaildirTarget(root, hostname="h").start(envelope("bob@x", "carol@x"))
    delivery.write(MESSAGE)
    with pytest.raises(DeliveryError):
        delivery.commit()
    assert files(root / "bob@x" / "new") == []
    assert files(root / "bob@x" / "tmp") == []
    assert all_files(root) == [root / "carol@x"]


# --- discard and the factory ---------------------------------------------------------------------


def test_discard_accepts_and_drops(tmp_path: Path) -> None:
    delivery = DiscardTarget().start(envelope("bob@x"))
    delivery.write(MESSAGE)
    delivery.commit()
    assert delivery.bytes_written == len(MESSAGE)
    with pytest.raises(DeliveryError):
        delivery.write(b"x")


def test_make_target(tmp_path: Path) -> None:
    maildir = make_target(build_config({"hostname": "h.example"}, file="t", base_dir=tmp_path))
    assert isinstance(maildir, MaildirTarget)
    assert maildir.root == tmp_path / "smtpgate-data" / "mail"
    discard = make_target(
        build_config({"delivery": {"mode": "discard"}}, file="t", base_dir=tmp_path)
    )
    assert isinstance(discard, DiscardTarget)

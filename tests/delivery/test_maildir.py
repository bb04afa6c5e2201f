"""Maildir delivery: names that cannot escape mail/ nor collide, refusals at RCPT,
all-or-nothing commits, private modes (maildir(5); RFC 5321 section 4.5.3.1 limits)."""

from __future__ import annotations

import errno
import gc
import os
import stat
import string
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpgate.config.load import build_config
from smtpgate.delivery.base import DeliveryError, Envelope
from smtpgate.delivery.discard import DiscardTarget
from smtpgate.delivery.envelopes import ENVELOPE_DIR, find_envelope, read_envelopes
from smtpgate.delivery.factory import make_target
from smtpgate.delivery.groupcommit import Committer
from smtpgate.delivery.maildir import NAME_MAX, MaildirDelivery, MaildirTarget, maildir_name
from smtpgate.delivery.spool import SPILL

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
    """Every file under ``root`` but the envelope logs, where the line of a message
    that failed stays (the log is append-only: ``delivery/envelopes.py``)."""
    if not root.exists():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and ENVELOPE_DIR not in p.parts)


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
        ("ÄÖ@x", "%c3%84%c3%96@x"),  # only ASCII is case-mapped
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


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@given(st.text(min_size=1), st.text(min_size=1))
def test_names_collide_only_by_ascii_case(a: str, b: str) -> None:
    same = a.translate(_ASCII_LOWER) == b.translate(_ASCII_LOWER)
    assert (maildir_name(a) == maildir_name(b)) == same


# Characters whose Unicode case mappings land in ASCII (UnicodeData / SpecialCasing).
@pytest.mark.parametrize(
    ("other", "ascii_twin"),
    [
        ("\u212aate@example.org", "kate@example.org"),  # KELVIN SIGN lowers to "k"
        ("\u0130@example.org", "i\u0307@example.org"),  # I WITH DOT ABOVE lowers to i + U+0307
        ("\u0130@example.org", "i@example.org"),
        ("\u017fam@example.org", "sam@example.org"),  # LONG S upper/casefolds to "s"
        ("\u0131@example.org", "i@example.org"),  # DOTLESS I uppercases to "I"
        ("\u212bx@example.org", "\u00e5x@example.org"),  # ANGSTROM SIGN lowers to U+00E5
        ("\ufb00@example.org", "ff@example.org"),  # LIGATURE FF casefolds to "ff"
    ],
)
def test_non_ascii_case_mappings_get_their_own_maildir(
    tmp_path: Path, other: str, ascii_twin: str
) -> None:
    assert maildir_name(other) != maildir_name(ascii_twin)
    target = MaildirTarget(tmp_path, hostname="h")
    for rcpt in (ascii_twin, other):
        delivery = target.start(envelope(rcpt))
        delivery.write(rcpt.encode())
        delivery.commit()
    for rcpt in (ascii_twin, other):
        (name,) = files(target.maildir(rcpt) / "new")
        assert (target.maildir(rcpt) / "new" / name).read_bytes() == rcpt.encode()


def test_kelvin_name_is_its_utf8_octets() -> None:
    assert maildir_name("\u212aate@example.org") == "%e2%84%aaate@example.org"
    assert maildir_name("KATE@Example.ORG") == "kate@example.org"


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
    delivery.write(MESSAGE)
    assert not (root / "bob@x").exists()  # a small message waits in memory for its commit
    delivery.commit()
    assert len(files(root / "bob@x" / "new")) == 1
    assert files(root / "bob@x" / "tmp") == []


@pytest.mark.parametrize("finish", ["commit", "abort", "spilled"])
def test_a_finished_delivery_is_freed_without_the_cyclic_collector(
    tmp_path: Path, finish: str
) -> None:
    """No reference cycle per message: the cyclic collector would have to find each one
    (a Spool holding its delivery's bound method did, and cost W1 a tenth of its CPU)."""
    target = MaildirTarget(tmp_path, hostname="h")
    gc.disable()
    try:
        delivery = target.start(envelope("bob@x", "carol@x"))
        delivery.write(MESSAGE * (1 + (SPILL // len(MESSAGE) if finish == "spilled" else 0)))
        delivery.abort() if finish == "abort" else delivery.commit()
        freed = weakref.ref(delivery)
        del delivery
        assert freed() is None
    finally:
        gc.enable()


def test_start_and_write_touch_no_disk_on_the_calling_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server calls start() and write() on the event loop: a message larger than the
    spool's memory goes to its file, which another thread creates, while it arrives."""
    root = tmp_path / "new-root" / "mail"
    caller = threading.current_thread()

    def elsewhere(real: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            assert threading.current_thread() is not caller, "mkdir or open on the caller"
            return real(*args, **kwargs)
        return call

    with monkeypatch.context() as patch:
        patch.setattr(os, "mkdir", elsewhere(os.mkdir))
        patch.setattr(os, "open", elsewhere(os.open))
        delivery = MaildirTarget(root, hostname="h").start(envelope("bob@x"))
        for _ in range(50):
            delivery.write(MESSAGE * 1_000)  # 1.4 MB in all: past what memory holds
            time.sleep(0.002)
        tmp = root / "bob@x" / "tmp" / delivery.unique_name
        assert tmp.stat().st_size > SPILL  # spilled: on disk before the commit
        delivery.commit()
    (name,) = files(root / "bob@x" / "new")
    assert (root / "bob@x" / "new" / name).read_bytes() == MESSAGE * 50_000


def test_abort_while_the_spill_file_is_being_created_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opening, release = threading.Event(), threading.Event()
    real_open = os.open

    def slow_open(*args: Any, **kwargs: Any) -> int:
        opening.set()
        release.wait(10)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(os, "open", slow_open)
    delivery = MaildirTarget(tmp_path, hostname="h").start(envelope("bob@x"))
    delivery.write(b"x" * (SPILL + 1))
    assert opening.wait(10)
    delivery.abort()  # the open is still running
    release.set()
    deadline = time.monotonic() + 10
    while all_files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all_files(tmp_path) == []


def test_the_envelope_log_holds_the_envelope_not_the_headers(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    delivery = MaildirTarget(root, hostname="h").start(envelope("bob@x", "carol@x"))
    delivery.write(MESSAGE)
    delivery.commit()
    for rcpt in ("bob@x", "carol@x"):
        (log,) = (root / rcpt / ENVELOPE_DIR).iterdir()
        assert log.name == "2023-11-14.jsonl"  # the UTC day of received_at
        (record,) = read_envelopes(root / rcpt)
        assert find_envelope(root / rcpt, f"{delivery.unique_name}:2,S") == record
        assert record["message"] == delivery.unique_name
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


# --- refused at RCPT -----------------------------------------------------------------------------

# RFC 5321 section 4.5.3.1: local part <= 64 octets, domain <= 255, path <= 256. Each "{"
# is encoded as "%7b", so 64 of them take 192 octets of the name.
LONG_LOCAL = "{" * 64
LONG_BUT_VALID = f"{LONG_LOCAL}@{'d' * 58}.test"  # a 256-octet name for a 128-octet address


def test_long_valid_address_is_refused_at_rcpt_with_553() -> None:
    assert len(LONG_LOCAL) == 64 and len(LONG_BUT_VALID) <= 254
    assert len(maildir_name(LONG_BUT_VALID)) == NAME_MAX + 1
    reply = MaildirTarget(Path("/nonexistent"), hostname="h").check_recipient(
        LONG_BUT_VALID, may_relay=False
    )
    assert reply is not None
    assert (reply.code, reply.enhanced) == (553, "5.1.3")
    assert "too long" in reply.text


@pytest.mark.parametrize(
    ("address", "accepted"),
    [
        (f"{LONG_LOCAL}@{'d' * 57}.test", True),  # exactly NAME_MAX octets
        (LONG_BUT_VALID, False),
        ("é" * 32 + "@" + "d" * 60 + ".test", False),  # 64-octet UTF-8 local part: 258
        ("bob@example.org", True),
        ("", False),
    ],
)
def test_check_recipient_matches_what_start_can_store(
    tmp_path: Path, address: str, accepted: bool
) -> None:
    """No I/O at RCPT, and exactly the addresses that start() refuses are refused."""
    target = MaildirTarget(tmp_path / "mail", hostname="h")
    refused = target.check_recipient(address, may_relay=False) is not None
    try:
        delivery = target.start(envelope(address))
        delivery.write(MESSAGE)
        delivery.commit()
        stored = True
    except DeliveryError:
        stored = False
    assert (not refused) == stored
    assert files(tmp_path) == ([] if not stored else ["mail"])


def test_one_unstorable_recipient_does_not_sink_the_others(tmp_path: Path) -> None:
    """The host asks check_recipient at each RCPT and puts only accepted ones in the envelope."""
    target = MaildirTarget(tmp_path, hostname="h")
    rcpts = ("bob@example.org", LONG_BUT_VALID, "carol@example.org")
    accepted = tuple(a for a in rcpts if target.check_recipient(a, may_relay=False) is None)
    delivery = target.start(envelope(*accepted))
    delivery.write(MESSAGE)
    delivery.commit()
    assert sorted(os.listdir(tmp_path)) == ["bob@example.org", "carol@example.org"]
    for rcpt in ("bob@example.org", "carol@example.org"):
        (name,) = files(tmp_path / rcpt / "new")
        assert (tmp_path / rcpt / "new" / name).read_bytes() == MESSAGE


# --- modes -------------------------------------------------------------------------------------


def test_everything_created_is_private_whatever_the_umask(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Names under mail/ are addresses: directories 0700 (missing parents of the root
    too), files 0600 (messages, hard links, copies, envelope logs)."""
    data = tmp_path / "data"
    old_umask = os.umask(0)
    try:
        target = MaildirTarget(data / "mail", hostname="h")
        delivery = target.start(envelope("a@x", "b@x"))
        delivery.write(MESSAGE)
        delivery.commit()
        monkeypatch.setattr(os, "link", _no_link)  # the copy path
        delivery = target.start(envelope("a@x", "c@x"))
        delivery.commit()
    finally:
        os.umask(old_umask)
    created = [data, *data.rglob("*")]
    assert len([p for p in created if p.is_file()]) == 7  # 4 messages, 3 envelope logs
    for path in created:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def _no_link(src: object, dst: object) -> None:
    raise OSError(errno.EXDEV, "Invalid cross-device link")


# --- abort and failures ------------------------------------------------------------------------


def spill(delivery: MaildirDelivery, folder: Path) -> None:
    """Write past the spool's memory and on until the tmp file is on disk under folder."""
    delivery.write(b"x" * (SPILL + 1))
    deadline = time.monotonic() + 10
    while not all_files(folder) and time.monotonic() < deadline:
        time.sleep(0.01)
        delivery.write(b"x")
    assert all_files(folder)


def test_abort_leaves_nothing(tmp_path: Path) -> None:
    delivery = MaildirTarget(tmp_path, hostname="h").start(envelope("bob@x", "carol@x"))
    spill(delivery, tmp_path)
    delivery.abort()
    assert all_files(tmp_path) == []
    delivery.abort()  # idempotent
    with pytest.raises(DeliveryError):
        delivery.commit()


def failing_flush(monkeypatch: pytest.MonkeyPatch, failing: int, error: OSError) -> list[
        list[str]]:
    """Make the ``failing``-th flush pass of the group commit fail; the directories each
    pass was asked to flush (the first: envelope folders; the second: the new/ dirs)."""
    real = Committer.flush
    passes: list[list[str]] = []

    def flush(self: Committer, fds: list[int], dirs: Iterable[str]) -> None:
        passes.append(list(dirs))
        if len(passes) == failing:
            raise error
        real(self, fds, passes[-1])

    monkeypatch.setattr(Committer, "flush", flush)
    return passes


def test_fsync_enospc_gives_disk_full_and_nothing_in_new(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failing_flush(monkeypatch, 1, OSError(errno.ENOSPC, "No space left on device"))
    delivery = MaildirTarget(tmp_path, hostname="h").start(envelope("bob@x", "carol@x"))
    delivery.write(MESSAGE)
    with pytest.raises(DeliveryError) as info:
        delivery.commit()
    assert info.value.disk_full is True
    assert info.value.temporary is True
    assert all_files(tmp_path) == []


def test_failure_on_last_directory_fsync_unlinks_renamed_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = failing_flush(monkeypatch, 2, OSError(errno.EIO, "Input/output error"))
    delivery = MaildirTarget(tmp_path, hostname="h").start(envelope("bob@x", "carol@x"))
    delivery.write(MESSAGE)
    with pytest.raises(DeliveryError) as info:
        delivery.commit()
    assert info.value.disk_full is False
    assert sorted(seen[1]) == [str(tmp_path / "bob@x" / "new"), str(tmp_path / "carol@x" / "new")]
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
        with pytest.raises(DeliveryError) as info:
            MaildirTarget(root, hostname="h").start(envelope("bob@x"))
        assert info.value.disk_full is False
    finally:
        root.chmod(0o700)
    assert all_files(root) == []


def test_unwritable_first_maildir_fails_at_commit_even_as_root(tmp_path: Path) -> None:
    root = tmp_path / "mail"
    root.mkdir()
    (root / "bob@x").write_bytes(b"in the way")
    delivery = MaildirTarget(root, hostname="h").start(envelope("bob@x"))
    delivery.write(MESSAGE)
    with pytest.raises(DeliveryError) as info:
        delivery.commit()
    assert info.value.temporary is True
    assert all_files(root) == [root / "bob@x"]


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

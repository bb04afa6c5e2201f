"""The queue on disk and the relay target: durable files, modes, splits, corrupt records,
leftovers, restart, disk full, and never an open relay."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest

from smtpgate.delivery.base import DeliveryError, Envelope
from smtpgate.delivery.envelopes import ENVELOPE_DIR
from smtpgate.delivery.maildir import MaildirTarget
from smtpgate.delivery.spool import SPILL
from smtpgate.relay.entry import CorruptEntry, QueueEntry, Recipient, parse
from smtpgate.relay.queue import Busy, QueueStore, new_queue_id, valid_id
from smtpgate.relay.target import RelayTarget
from tests.relay.conftest import RelayEnv, mode, wait_for


def envelope(*recipients: str, queue_id: str = "Q1") -> Envelope:
    return Envelope(session_id="S1", peer="192.0.2.1:2525", helo="dev", esmtp=True, tls=False,
                    authenticated_user="alice", mail_from="alice@local.test",
                    recipients=recipients, received_at=1_700_000_000.0, queue_id=queue_id)


@pytest.fixture
def target(tmp_path: Path) -> RelayTarget:
    return RelayTarget(QueueStore(tmp_path / "queue"), MaildirTarget(tmp_path / "mail"),
                       ("local.test",))


def test_check_recipient_never_an_open_relay(target: RelayTarget) -> None:
    assert target.check_recipient("bob@LOCAL.test", may_relay=False) is None
    denied = target.check_recipient("you@remote.test", may_relay=False)
    assert denied is not None
    assert (denied.code, denied.enhanced, denied.text) == (554, "5.7.1", "Relay access denied")
    assert target.check_recipient("you@remote.test", may_relay=True) is None
    assert target.check_recipient("postmaster", may_relay=False) is not None


def test_commit_makes_queue_files_durable_and_private(
    target: RelayTarget, tmp_path: Path
) -> None:
    notified: list[str] = []
    target.on_queued = notified.append
    delivery = target.start(envelope("you@remote.test", "bob@local.test", "you@remote.test"))
    delivery.write(b"Subject: x\r\n\r\nbody\r\n")
    queue = tmp_path / "queue"
    assert not (queue / "Q1.msg").exists()  # nothing queued before commit
    delivery.commit()
    assert notified == ["Q1"]
    assert os.listdir(queue / "tmp") == [] and not (queue / "Q1.json").exists()
    # One file: the message as accepted, its record, the trailer saying where that starts.
    record = b"Subject: x\r\n\r\nbody\r\n"
    data = (queue / "Q1.msg").read_bytes()
    assert data.startswith(record) and data.endswith(b"smtpgate-record %016d\n" % len(record))
    entry = parse(data[len(record):-33], "Q1")
    assert [r.address for r in entry.recipients] == ["you@remote.test"]  # local split off, dedup
    assert entry.size == 20 and entry.mail_from == "alice@local.test"
    assert target.store.load("Q1") == entry and target.store.read_message("Q1") == record
    assert mode(queue) == 0o700 and mode(queue / "Q1.msg") == 0o600
    assert len(os.listdir(tmp_path / "mail" / "bob@local.test" / "new")) == 1


def test_abort_leaves_nothing(target: RelayTarget, tmp_path: Path) -> None:
    delivery = target.start(envelope("you@remote.test"))
    delivery.write(b"x")
    delivery.abort()
    assert files_under(tmp_path / "queue") == []
    assert QueueStore(tmp_path / "queue").ids() == []


def files_under(path: Path) -> list[Path]:
    """The files under ``path`` but envelope logs (a failed message's line stays there)."""
    return [p for p in path.rglob("*") if not p.is_dir() and ENVELOPE_DIR not in p.parts]


def test_maildir_failure_undoes_the_queue_part(target: RelayTarget, tmp_path: Path) -> None:
    (tmp_path / "mail").mkdir()
    (tmp_path / "mail" / "bob@local.test").write_text("not a directory")
    with pytest.raises(DeliveryError):
        delivery = target.start(envelope("you@remote.test", "bob@local.test"))
        delivery.write(b"x")
        delivery.commit()
    assert QueueStore(tmp_path / "queue").ids() == []
    assert files_under(tmp_path / "queue") == []


def test_queue_open_failure_aborts_the_maildir_part(target: RelayTarget, tmp_path: Path) -> None:
    (tmp_path / "queue").write_text("not a directory")
    delivery = target.start(envelope("you@remote.test", "bob@local.test"))
    delivery.write(b"Subject: split\r\n\r\nhello\r\n")
    with pytest.raises(DeliveryError):
        delivery.commit()
    assert files_under(tmp_path / "mail") == []


def test_claim_is_exclusive_and_leftovers_are_cleaned(tmp_path: Path) -> None:
    store = QueueStore(tmp_path / "queue")
    writer = store.writer(QueueEntry(id="A1", mail_from="a@x", recipients=[Recipient("b@y")],
                                     received_at=1.0))
    writer.write(b"m")
    writer.commit()
    with store.claim("A1"), pytest.raises(Busy), store.claim("A1"):
        pass
    (store.root / "B2.msg").write_bytes(b"an older version's, never acknowledged\r\n")
    (store.tmp / "C3.msg").write_bytes(b"half written")
    (store.root / "D4.json").write_bytes(b"{}")  # a removal cut short after the message
    assert store.clean_leftovers() == 2
    assert sorted(os.listdir(store.root)) == ["A1.msg", "B2.msg", "corrupt", "tmp"]
    with pytest.raises(CorruptEntry):  # never deleted: the deliverer moves it aside
        store.load("B2")


def test_a_changed_record_supersedes_the_one_in_the_message_file(tmp_path: Path) -> None:
    store = QueueStore(tmp_path / "queue")
    entry = QueueEntry(id="A1", mail_from="a@x", recipients=[Recipient("b@y")], received_at=1.0)
    writer = store.writer(entry)
    writer.write(b"Subject: m\r\n\r\nm\r\n")
    writer.commit()
    with store.claim("A1") as changed:
        assert not changed  # the hand-over may be used
    before = (store.root / "A1.msg").read_bytes()
    entry.attempts, entry.held = 1, True
    store.save(entry)
    with store.claim("A1") as changed:
        assert changed  # read it back from the disk
    assert (store.root / "A1.msg").read_bytes() == before  # the message file never changes
    assert store.load("A1").held and store.load("A1").attempts == 1
    assert store.read_message("A1") == b"Subject: m\r\n\r\nm\r\n"
    assert store.read_message("A1", 9) == b"Subject: "
    store.remove("A1")
    assert sorted(os.listdir(store.root)) == ["corrupt", "tmp"]


def test_an_older_versions_entry_is_still_read(tmp_path: Path) -> None:
    """Two files, the message alone in .msg: a queue left by an earlier smtpgate."""
    store = QueueStore(tmp_path / "queue")
    store.ensure()
    entry = QueueEntry(id="A1", mail_from="a@x", recipients=[Recipient("b@y")], received_at=1.0)
    (store.root / "A1.msg").write_bytes(b"Subject: old\r\n\r\nold\r\n")
    (store.root / "A1.json").write_bytes(entry.to_json())
    assert store.clean_leftovers() == 0
    assert store.ids() == ["A1"] and store.load("A1") == entry
    assert store.read_message("A1") == b"Subject: old\r\n\r\nold\r\n"
    # BDAT lets a message end in anything, even in what looks like a trailer: it is not one
    # unless it points at this entry's record.
    tricky = b"Subject: old\r\n\r\n" + entry.to_json().replace(b"A1", b"B2")
    tricky += b"smtpgate-record %016d\n" % 16
    (store.root / "A1.msg").write_bytes(tricky)
    assert store.read_message("A1") == tricky


def test_a_message_file_without_a_good_record_is_corrupt(tmp_path: Path) -> None:
    store = QueueStore(tmp_path / "queue")
    store.ensure()
    (store.root / "A1.msg").write_bytes(b"m\r\n" + b"smtpgate-record %016d\n" % 99)
    (store.root / "B2.msg").write_bytes(b"m\r\n{not json}\n" + b"smtpgate-record %016d\n" % 3)
    for queue_id in ("A1", "B2"):
        with pytest.raises(CorruptEntry):
            store.load(queue_id)
    assert store.clean_leftovers() == 0  # not leftovers: the deliverer moves them aside
    assert sorted(os.listdir(store.root)) == ["A1.msg", "B2.msg", "corrupt", "tmp"]


def test_records_that_are_not_ours_are_refused() -> None:
    good = QueueEntry(id="A1", mail_from="", recipients=[Recipient("b@y")], received_at=1.0)
    assert parse(good.to_json(), "A1") == good
    for data, queue_id in [(b"{", "A1"), (b"[]", "A1"), (good.to_json(), "B2"),
                           (b'{"version": 1, "id": "A1"}', "A1"),
                           (good.to_json().replace(b'"pending"', b'"lost"'), "A1")]:
        with pytest.raises(CorruptEntry):
            parse(data, queue_id)


def test_queue_ids() -> None:
    ids = [new_queue_id() for _ in range(200)]
    assert len(set(ids)) == 200 and all(valid_id(i) for i in ids)
    stamps = [i[:11] for i in ids]
    assert stamps == sorted(stamps)  # names sort in arrival order
    assert not valid_id("../x") and not valid_id("")


async def test_corrupt_record_is_moved_aside_and_the_rest_delivered(env: RelayEnv) -> None:
    config = env.make()
    queue = config.data_dir / "queue"
    (queue / "tmp").mkdir(parents=True)
    (queue / "BAD1.json").write_text("{not json")
    (queue / "BAD1.msg").write_text("Subject: bad\r\n\r\n")
    await env.start(config)
    await env.submit(["you@remote.test"])
    await wait_for(lambda: env.smarthost.handler.accepted)
    await wait_for((queue / "corrupt" / "BAD1.json").exists)
    assert (queue / "corrupt" / "BAD1.msg").exists()
    await wait_for(lambda: not env.queued())


async def test_restart_delivers_what_was_queued(env: RelayEnv) -> None:
    port = env.smarthost.port
    env.smarthost.stop()
    await env.start(env.make(relay={"max_connections": 1}))
    for n in range(3):
        await env.submit([f"r{n}@remote.test"])
    await env.stop_smtpgate()
    assert len(env.queued()) == 3
    from tests.relay.upstream import Smarthost

    env.smarthost = Smarthost(env.tokens.state, port=port).start()
    await env.start()
    await wait_for(lambda: len(env.smarthost.handler.accepted) == 3, timeout=15)
    assert [a[1] for a in env.smarthost.handler.accepted] == [
        ["r0@remote.test"], ["r1@remote.test"], ["r2@remote.test"]]  # queue order
    await wait_for(lambda: not env.queued())


@pytest.fixture
def small_queue(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs as queue/ (we are root in CI); skipped where mounting is refused."""
    mount = tmp_path / "data" / "queue"
    mount.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_disk_full_answers_452_and_queues_nothing(
    small_queue: Path, env: RelayEnv
) -> None:
    env.smarthost.stop()
    await env.start(env.make(limits={"max_message_size": 10_000_000}))
    big = b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 600
    with pytest.raises(aiosmtplib.SMTPDataError) as info:
        await env.submit(["you@remote.test"], message=big)
    assert (info.value.code, info.value.message[:5]) == (452, "4.3.1")
    assert env.queued() == [] and os.listdir(small_queue / "tmp") == []
    await env.submit(["you@remote.test"])  # space is there again for a small one
    assert len(env.queued()) == 1
    entry = QueueStore(small_queue).load(env.queued()[0][:-4])
    assert entry.recipients[0].address == "you@remote.test"


def test_queue_failure_leaves_no_maildir_tmp(target: RelayTarget, tmp_path: Path) -> None:
    delivery = target.start(envelope("you@remote.test", "bob@local.test"))
    delivery.write(b"Subject: x\r\n\r\nbody\r\n")
    target.store.ensure()
    (tmp_path / "queue" / "Q1.msg").mkdir()  # the rename into queue/ fails
    with pytest.raises(DeliveryError):
        delivery.commit()
    assert files_under(tmp_path / "mail") == []
    assert os.listdir(tmp_path / "queue" / "tmp") == []
    assert list((tmp_path / "queue" / "Q1.msg").iterdir()) == []


async def test_two_deliverers_on_one_queue_send_each_message_once(env: RelayEnv) -> None:
    """Like two worker processes: both drain queue/, the per-entry flock decides."""
    from smtpgate.relay.service import Relay
    from tests.relay.upstream import Smarthost

    port = env.smarthost.port
    env.smarthost.stop()
    config = env.make(relay={"max_connections": 2})
    await env.start(config)
    for n in range(12):
        await env.submit([f"r{n}@remote.test"])
    other = Relay(config)
    await other.start()
    try:
        await wait_for(lambda: len(env.queued()) == 12)
        env.smarthost = Smarthost(env.tokens.state, port=port).start()
        await wait_for(lambda: not env.queued(), timeout=40)
        assert not list(env.queue.glob("*.msg"))
    finally:
        await other.stop()
    delivered = sorted(a[1][0] for a in env.smarthost.handler.accepted)
    assert delivered == sorted(f"r{n}@remote.test" for n in range(12))


def test_a_spilled_message_gets_its_record_after_it(tmp_path: Path) -> None:
    """Over the spool's memory the message goes to its file as it arrives; the record and
    trailer still follow its last octet."""
    store = QueueStore(tmp_path / "queue")
    entry = QueueEntry(id="A1", mail_from="a@x", recipients=[Recipient("b@y")], received_at=1.0)
    writer = store.writer(entry)
    line = b"z" * 998 + b"\r\n"
    for _ in range(SPILL // len(line) + 50):
        writer.write(line)
    writer.commit()
    assert store.read_message("A1") == line * (SPILL // len(line) + 50)
    assert store.load("A1").size == len(line) * (SPILL // len(line) + 50)

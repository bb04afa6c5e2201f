"""Data safety: durability before 250, full disks, failing fsync, no duplicates,
no partial files after a crash (RFC 5321 section 6.1 "the receiver MUST NOT lose
the message" once it sent 250; maildir(5): tmp/, fsync, rename into new/).
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smtpgate.delivery.spool import SPILL
from tests.attacks.raw import PLAIN_OK, Raw, authed, merge, messages
from tests.attacks.subproc import ServeProcess
from tests.delivery.test_maildir import failing_flush
from tests.e2e.conftest import ServerFactory


async def _send(c: Raw, body: bytes, rcpts: tuple[str, ...] = ("bob@x.test",)) -> Any:
    assert (await c.cmd("MAIL FROM:<alice@x.test>")).code == 250
    for rcpt in rcpts:
        assert (await c.cmd(f"RCPT TO:<{rcpt}>")).code == 250
    assert (await c.cmd("DATA")).code == 354
    await c.send(body + b"\r\n.\r\n")
    return await c.reply(30)


def _new(data: Path) -> list[Path]:
    return sorted((data / "mail").glob("*/new/*"))


def _tmp(data: Path) -> list[Path]:
    return sorted((data / "mail").glob("*/tmp/*"))


async def test_sigkill_right_after_250_keeps_the_message(tmp_path: Path) -> None:
    """RFC 5321 section 6.1: once 250 is sent the message survives the process dying."""
    serve = ServeProcess(tmp_path)
    serve.start()
    try:
        c = await Raw.open(serve.address)
        await c.ehlo()
        await c.login()
        resp = await _send(c, b"Subject: durable\r\n\r\nkeep me")
        serve.kill()  # at once, no graceful shutdown
        assert resp.code == 250
        (msg,) = _new(serve.data)
        assert msg.read_bytes().endswith(b"\r\n\r\nkeep me\r\n")
        # a second message killed mid-DATA never appears in new/
        serve.start()
        d = await Raw.open(serve.address)
        await d.ehlo()
        await d.login()
        assert (await d.cmd("MAIL FROM:<alice@x.test>")).code == 250
        assert (await d.cmd("RCPT TO:<bob@x.test>")).code == 250
        assert (await d.cmd("DATA")).code == 354
        # Past what a delivery holds in memory, so a partial file is on disk.
        await d.send(b"Subject: half\r\n\r\n" + b"x" * (SPILL + 100_000))
        deadline = time.monotonic() + 10
        while not _tmp(serve.data) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        serve.kill()
        assert _new(serve.data) == [msg]
        assert len(_tmp(serve.data)) == 1  # the partial message
        serve.start()  # the restart removes it, and works on the same Maildir
        assert _tmp(serve.data) == []
        assert serve.logged("maildir recovery: removed 1 partial files")
        e = await Raw.open(serve.address)
        await e.ehlo()
        await e.login()
        assert (await _send(e, b"Subject: after\r\n\r\nok")).code == 250
        assert len(_new(serve.data)) == 2
        assert serve.stop() == 0
    finally:
        serve.kill()


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (we are root in CI); skipped where mounting is not allowed."""
    mount = tmp_path / "data" / "mail"
    mount.mkdir(parents=True)
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                          capture_output=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_full_disk_answers_452_and_leaves_nothing(
    running: ServerFactory, small_tmpfs: Path
) -> None:
    """ENOSPC while writing: 452 4.3.1, nothing in new/ or tmp/; space comes back."""
    server = await running(**merge(PLAIN_OK, {"limits": {"max_message_size": 10_000_000}}))
    c = await authed(server)
    resp = await _send(c, b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 2000)  # 2 MB
    assert (resp.code, resp.enh) == (452, "4.3.1"), resp
    assert messages(server) == [] and _tmp(server.config.data_dir) == []
    # two recipients: the second copy fills the disk at commit (link works on tmpfs,
    # so fill it first), still all or nothing
    filler = small_tmpfs / "filler"
    with filler.open("wb") as fh:
        try:
            fh.write(b"f" * (1024 * 1024))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    resp = await _send(c, b"Subject: small\r\n\r\n" + b"s" * 50_000, ("a@x.test", "b@x.test"))
    assert (resp.code, resp.enh) == (452, "4.3.1"), resp
    assert messages(server) == []
    filler.unlink()
    resp = await _send(c, b"Subject: small\r\n\r\nfits now", ("a@x.test", "b@x.test"))
    assert resp.code == 250, resp
    assert len(messages(server)) == 2


async def test_failing_flush_answers_451_and_leaves_nothing(
    running: ServerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO from a flush (of the files before the renames, or of new/ after them): 451
    4.3.0 and the message is in no new/ at all; the client's retry stores it once."""
    server = await running(**PLAIN_OK)
    c = await authed(server)
    for failing in (1, 2):  # the group commit's first flush pass, then its second
        with monkeypatch.context() as patch:
            failing_flush(patch, failing, OSError(errno.EIO, "Input/output error"))
            resp = await _send(c, b"Subject: eio\r\n\r\nfile", ("a@x.test", "b@x.test"))
        assert (resp.code, resp.enh) == (451, "4.3.0"), resp
        assert messages(server) == [] and _tmp(server.config.data_dir) == []
    resp = await _send(c, b"Subject: eio\r\n\r\nretry", ("a@x.test", "b@x.test"))
    assert resp.code == 250
    assert len(messages(server)) == 2  # one per recipient, once


async def test_one_250_one_message(running: ServerFactory) -> None:
    """A duplicate end-of-data, pipelined junk after it, or the same mailbox twice in
    the envelope never produce a second stored copy."""
    server = await running(**merge(PLAIN_OK, {"limits": {"max_errors": 50}}))
    c = await authed(server)
    assert (await c.cmd("MAIL FROM:<alice@x.test>")).code == 250
    for rcpt in ("bob@x.test", "BOB@x.test", "@r.test:bob@x.test"):
        assert (await c.cmd(f"RCPT TO:<{rcpt}>")).code == 250
    assert (await c.cmd("DATA")).code == 354
    await c.send(b"Subject: once\r\n\r\nbody\r\n.\r\n.\r\n.\r\nDATA\r\nNOOP\r\n")
    replies = [await c.reply() for _ in range(5)]
    assert [r.code for r in replies] == [250, 500, 500, 503, 250], replies
    assert len(messages(server)) == 1
    for i in range(5):  # five pipelined transactions: five 250s, five messages
        await c.send(f"MAIL FROM:<alice@x.test>\r\nRCPT TO:<n{i}@x.test>\r\nDATA\r\n".encode())
        assert [(await c.reply()).code for _ in range(3)] == [250, 250, 354]
        await c.send(f"Subject: {i}\r\n\r\nn\r\n.\r\n".encode())
        assert (await c.reply()).code == 250
    assert len(messages(server)) == 6


async def test_a_starting_server_removes_dead_writers_files_never_a_live_ones(
    tmp_path: Path,
) -> None:
    """A 2-worker server is mid-DATA when another server starts on the same data_dir
    (a successor while the old one drains): the starting one removes a crashed
    delivery's tmp file, never the live worker's file; everything under
    mail/ is private (0700 directories, 0600 files)."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    running = ServeProcess(tmp_path / "a", workers=2)
    running.start()
    starting = ServeProcess(tmp_path / "b")
    starting.config.write_text(
        starting.config.read_text().replace(str(starting.data), str(running.data))
    )
    try:
        c = await Raw.open(running.address)
        await c.ehlo()
        await c.login()
        assert (await c.cmd("MAIL FROM:<alice@x.test>")).code == 250
        assert (await c.cmd("RCPT TO:<bob@x.test>")).code == 250
        assert (await c.cmd("DATA")).code == 354
        # Past what a delivery holds in memory: the message is in its tmp file meanwhile.
        await c.send(b"Subject: in flight\r\n\r\n" + b"x" * (SPILL + 100_000))
        deadline = time.monotonic() + 10
        while not _tmp(running.data) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        (live,) = _tmp(running.data)
        dead = _plant_crashed(live.parent.parent)
        starting.start()
        assert starting.logged("maildir recovery: removed 1 partial files")
        assert _tmp(running.data) == [live] and not dead.exists()
        assert (await c.cmd(b"\r\n.")).code == 250
        d = await Raw.open(starting.address)
        await d.ehlo()
        await d.login()
        resp = await _send(d, b"Subject: second\r\n\r\nok", ("bob@x.test", "c@x.test"))
        assert resp.code == 250, resp
        assert len(_new(running.data)) == 3
        _assert_private(running.data / "mail")
        assert starting.stop() == 0 and running.stop() == 0
    finally:
        starting.kill()
        running.kill()


def _plant_crashed(maildir: Path) -> Path:
    """A tmp file named as a delivery of an exited process on this host."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    name = f"1700000000.M1P{proc.stdout.strip()}Q1R0123abcd.mx.test"
    path = maildir / "tmp" / name
    path.write_bytes(b"Received: partial\r\n")
    return path


def _assert_private(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(os.lstat(path).st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))

"""Group commit (``smtpgate/delivery/groupcommit.py``): the committer on its own, then Maildir
delivery on a real ``smtpgate serve`` with its default two workers, under strace and SIGKILL.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

import aiosmtplib
import pytest

from smtpgate.delivery.base import DeliveryError
from smtpgate.delivery.envelopes import ENVELOPE_DIR
from smtpgate.delivery.groupcommit import Committer, Staged
from tests.attacks.subproc import SMTPGATE, ServeProcess, acknowledged_until_killed
from tests.e2e.conftest import PASSWORD, free_port
from tests.straced import (
    check_message,
    parse_trace,
    stop_traced,
    strace_command,
    wait_listening,
)
from tests.tools import require_tool

CLIENTS = 12
MESSAGES_EACH = 3
BODY = b"Subject: group commit\r\n\r\n" + b"x" * 2000 + b"\r\n"
_QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)")
_RECEIVED_ID = re.compile(rb"\bid ([0-9A-Za-z]+)")


# -- the committer on its own -------------------------------------------------------------------

class FileJob:
    """Writes one file in ``tmp`` and renames it into ``new``; records what happened."""

    def __init__(self, root: Path, name: str, *, fail_stage: bool = False,
                 gate: threading.Event | None = None) -> None:
        self.tmp, self.new = root / "tmp" / name, root / "new" / name
        self.fail_stage = fail_stage
        self.gate = gate
        self.fd = -1
        self.settled: OSError | str | None = "not settled"

    def stage(self) -> Staged:
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_stage:
            raise OSError(errno.EIO, "Input/output error")
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(self.fd, b"data")
        return [self.fd], []

    def publish(self) -> list[str]:
        os.rename(self.tmp, self.new)
        return [str(self.new.parent)]

    def settle(self, error: OSError | None) -> DeliveryError | None:
        self.settled = error
        if self.fd >= 0:
            os.close(self.fd)
        return None if error is None else DeliveryError(str(error))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for sub in ("tmp", "new"):
        (tmp_path / sub).mkdir()
    return tmp_path


def recording(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Record every flush pass as (descriptors, directories)."""
    passes: list[tuple[int, int]] = []
    real = Committer.flush

    def flush(self: Committer, fds: list[int], dirs: Iterable[str]) -> None:
        names = list(dirs)
        passes.append((len(fds), len(names)))
        real(self, fds, names)

    monkeypatch.setattr(Committer, "flush", flush)
    return passes


def test_jobs_arriving_while_a_batch_is_on_disk_share_the_next_flushes(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    passes = recording(monkeypatch)
    committer, gate = Committer(), threading.Event()
    results: list[DeliveryError | None] = []
    done = threading.Semaphore(0)

    def finished(error: DeliveryError | None) -> None:
        results.append(error)
        done.release()

    first = FileJob(root, "first", gate=gate)
    committer.submit(first, finished)
    time.sleep(0.2)  # the committer is now inside the first batch, held at the gate
    later = [FileJob(root, f"m{i}") for i in range(5)]
    for job in later:
        committer.submit(job, finished)
    gate.set()
    for _ in range(6):
        assert done.acquire(timeout=10)
    assert results == [None] * 6
    assert passes == [(1, 0), (0, 1), (5, 0), (0, 1)]  # two batches: 1, then the other 5
    assert sorted(p.name for p in (root / "new").iterdir()) == sorted(
        ["first", *(f"m{i}" for i in range(5))])


def test_a_job_failing_its_own_step_leaves_the_batch_to_the_others(root: Path) -> None:
    committer, gate = Committer(), threading.Event()
    blocker = FileJob(root, "blocker", gate=gate)
    committer.submit(blocker, lambda error: None)
    bad, good = FileJob(root, "bad", fail_stage=True), FileJob(root, "good")
    errors: dict[str, DeliveryError | None] = {}
    both = threading.Semaphore(0)

    def reporter(name: str) -> Callable[[DeliveryError | None], None]:
        def report(error: DeliveryError | None) -> None:
            errors[name] = error
            both.release()
        return report

    for name, job in (("bad", bad), ("good", good)):
        committer.submit(job, reporter(name))
    gate.set()
    assert both.acquire(timeout=10) and both.acquire(timeout=10)
    assert isinstance(errors["bad"], DeliveryError) and errors["good"] is None
    assert isinstance(bad.settled, OSError) and good.settled is None
    assert (root / "new" / "good").exists() and not (root / "new" / "bad").exists()


def test_a_failed_flush_fails_every_job_it_covered(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Committer, fds: list[int], dirs: Iterable[str]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Committer, "flush", broken)
    committer, gate = Committer(), threading.Event()
    committer.submit(FileJob(root, "first", gate=gate), lambda error: None)
    jobs = [FileJob(root, f"m{i}") for i in range(3)]
    errors: list[DeliveryError | None] = []
    done = threading.Semaphore(0)

    def finished(error: DeliveryError | None) -> None:
        errors.append(error)
        done.release()

    for job in jobs:  # queued behind the gated first batch: one batch of three
        committer.submit(job, finished)
    gate.set()
    for _ in jobs:
        assert done.acquire(timeout=10)
    assert all(isinstance(e, DeliveryError) for e in errors) and len(errors) == 3
    assert all(isinstance(job.settled, OSError) for job in jobs)
    assert not list((root / "new").iterdir())


def test_one_flush_is_syncfs_for_two_or_more_and_fsync_for_one(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    committer = Committer()
    if committer._syncfs is None:
        pytest.fail("no syncfs(2) on this Linux")
    syncfs_calls: list[int] = []
    fsync_calls: list[int] = []
    real_syncfs, real_fsync = committer._syncfs, os.fsync

    def syncfs(fd: int) -> None:
        syncfs_calls.append(fd)
        real_syncfs(fd)

    def fsync(fd: int) -> None:
        fsync_calls.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(committer, "_syncfs", syncfs)
    monkeypatch.setattr(os, "fsync", fsync)
    files = [os.open(root / "tmp" / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o600) for i in range(3)]
    try:
        committer.flush(files[:1], [])
        assert (len(fsync_calls), len(syncfs_calls)) == (1, 0)
        committer.flush(files, [str(root / "new")])
        assert (len(fsync_calls), len(syncfs_calls)) == (1, 1)  # one file system: one call
    finally:
        for fd in files:
            os.close(fd)
    with pytest.raises(OSError) as info:
        real_syncfs(-1)
    assert info.value.errno == errno.EBADF  # the C library's error reaches the caller


# -- Maildir delivery on a real server --------------------------------------------------------

def serve_config(root: Path, port: int) -> Path:
    """Maildir delivery (the default), the default workers, PLAIN without TLS (loopback)."""
    path = root / "smtpgate.toml"
    path.write_text(
        f'data_dir = "{root / "data"}"\nhostname = "mx.test"\n'
        f'[[listener]]\naddress = "127.0.0.1:{port}"\ntls = "none"\nrequire_auth = true\n'
        "[auth]\nplaintext_requires_tls = false\nfailure_delay = 0.0\n")
    done = subprocess.run([*SMTPGATE, "--config", str(path), "user", "add", "alice",
                           "--password-stdin"], input=PASSWORD + "\n", text=True,
                          capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return path


async def send_each_to_its_own_mailbox(port: int, clients: int, each: int
                                       ) -> dict[str, str]:
    """Recipient -> queue id of its acknowledged message (one message per recipient)."""
    acked: dict[str, str] = {}

    async def one_client(n: int) -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                                   timeout=60) as client:
            await client.login("alice", PASSWORD)
            for m in range(each):
                rcpt = f"r{n}.{m}@local.test"
                _, reply = await client.sendmail("alice@local.test", [rcpt], BODY)
                found = _QUEUED.search(reply)
                assert found, reply
                acked[rcpt] = found.group(1)

    await asyncio.gather(*(one_client(n) for n in range(clients)))
    return acked


async def test_every_maildir_250_follows_its_flushes_renames_and_a_shared_directory_flush(
    tmp_path: Path
) -> None:
    strace = require_tool("strace")
    port = free_port()
    config = serve_config(tmp_path, port)
    trace = tmp_path / "trace"
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen([*strace_command(strace, trace), *SMTPGATE, "--config",
                                 str(config), "serve"],
                                stdout=log, stderr=log, start_new_session=True)
    try:
        await wait_listening(port)
        acked = await send_each_to_its_own_mailbox(port, CLIENTS, MESSAGES_EACH)
    finally:
        stop_traced(proc)
    assert len(acked) == CLIENTS * MESSAGES_EACH
    calls = parse_trace(trace.read_text(errors="replace"))
    assert calls, (tmp_path / "serve.log").read_text(errors="replace")[-2000:]
    mail = tmp_path / "data" / "mail"
    covering = []
    for rcpt, queue_id in acked.items():
        maildir = mail / rcpt
        (stored,) = os.listdir(maildir / "new")
        envelopes = maildir / ENVELOPE_DIR
        (envelope_log,) = envelopes.iterdir()
        covering.append(check_message(
            calls, files=[maildir / "tmp" / stored, envelope_log],
            folders=[envelopes], renamed=[maildir / "tmp" / stored],
            marks={envelope_log: stored},
            into=[maildir / "new"], reply=f"queued as {queue_id}"))
    assert len(set(covering)) < len(acked), "every message had a directory flush of its own"


async def test_sigkill_under_load_keeps_every_acknowledged_message_exactly_once(
    tmp_path: Path
) -> None:
    serve = ServeProcess(tmp_path, workers=2)
    serve.start()
    acked = await acknowledged_until_killed(serve, 2.0, lambda n: f"k{n % 4}@local.test", BODY)
    assert len(acked) >= 50, f"only {len(acked)} messages acknowledged before the kill"
    stored: Counter[str] = Counter()
    for new in (serve.data / "mail").glob("*/new"):
        for path in new.iterdir():
            data = path.read_bytes()
            found = _RECEIVED_ID.search(data)
            assert found, path
            assert data.endswith(BODY), f"{path} is not the whole message"
            stored[found.group(1).decode()] += 1
    missing = acked - set(stored)
    assert not missing, f"{len(missing)} acknowledged messages lost"
    assert max(stored.values()) == 1, "a message stored twice"
    serve.start()  # the next start removes what the crash left in tmp/
    serve.stop()
    assert not [p for p in (serve.data / "mail").glob("*/tmp/*")]

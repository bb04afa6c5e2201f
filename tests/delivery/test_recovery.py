"""Crash recovery: partial files in a Maildir's tmp/ are removed at the next start, and
never a live writer's (maildir(5): tmp files unaccessed for 36 hours may go)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpgate.config.load import build_config
from smtpgate.delivery import recovery
from smtpgate.delivery.envelopes import ENVELOPE_DIR
from smtpgate.delivery.factory import make_target
from smtpgate.delivery.maildir import MaildirTarget
from tests.delivery.test_maildir import MESSAGE, envelope, files

HOST = "mx.test"
HOUR = 3600.0


def ours(pid: int, host: str = HOST) -> str:
    return f"1700000000.M123456P{pid}Q1R0123abcd.{host}"


def plant(maildir: Path, name: str, *, age: float = 0.0) -> Path:
    """A tmp file as a crashed delivery leaves it, ``age`` seconds old."""
    for sub in ("tmp", "new", "cur", ENVELOPE_DIR):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    path = maildir / "tmp" / name
    path.write_bytes(b"Received: partial\r\n")
    when = time.time() - age
    os.utime(path, (when, when))
    return path


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A process that is running now (started before any file the test plants)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    time.sleep(0.1)
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_dead_writers_files_go_and_the_envelope_log_stays(tmp_path: Path, dead_pid: int) -> None:
    maildir = tmp_path / "bob@x"
    plant(maildir, ours(dead_pid))
    (maildir / "new" / "delivered").write_bytes(MESSAGE)
    (maildir / ENVELOPE_DIR / "2026-11-30.jsonl").write_text('{"message":"delivered"}\n')
    assert MaildirTarget(tmp_path, hostname=HOST).recover() == 1
    assert files(maildir / "tmp") == [] and files(maildir / ENVELOPE_DIR) == ["2026-11-30.jsonl"]
    assert files(maildir / "new") == ["delivered"]


def test_live_writers_file_stays(tmp_path: Path, live_pid: int) -> None:
    """Another worker (or a server still draining) is writing it right now."""
    path = plant(tmp_path / "bob@x", ours(live_pid))
    assert MaildirTarget(tmp_path, hostname=HOST).recover() == 0
    assert path.exists()
    os.kill(live_pid, signal.SIGKILL)
    os.waitpid(live_pid, 0)
    assert MaildirTarget(tmp_path, hostname=HOST).recover() == 1
    assert not path.exists()


def test_a_zombie_writer_is_dead(tmp_path: Path) -> None:
    """A writer that was killed but not reaped (a container's pid 1 may never reap it) is
    a zombie: its files are a crash's remains."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = plant(tmp_path / "a@x", ours(proc.pid), age=1)
        proc.kill()
        deadline = time.monotonic() + 10
        while recovery.process_start(proc.pid)[0] != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)  # not reaped yet: Popen.wait is below
        assert MaildirTarget(tmp_path, hostname=HOST).recover() == 1
        assert not path.exists()
    finally:
        proc.kill()
        proc.wait()


def test_a_reused_pid_is_not_the_writer(tmp_path: Path, live_pid: int) -> None:
    """A live process that started after the file was last written did not write it
    (a container's server is pid 1 again after every restart)."""
    mine = plant(tmp_path / "a@x", ours(os.getpid()), age=HOUR * 30)
    other = plant(tmp_path / "b@x", ours(live_pid), age=60)
    assert recovery.process_start(os.getpid())[1] is not None
    assert MaildirTarget(tmp_path, hostname=HOST).recover() == 2
    assert not mine.exists() and not other.exists()


def test_a_file_this_process_is_writing_stays(tmp_path: Path) -> None:
    target = MaildirTarget(tmp_path, hostname=HOST)
    delivery = target.start(envelope("bob@x"))
    delivery.write(MESSAGE)
    assert MaildirTarget(tmp_path, hostname=HOST).recover() == 0
    delivery.commit()
    assert len(files(tmp_path / "bob@x" / "new")) == 1


def test_foreign_names_wait_36_hours(tmp_path: Path, dead_pid: int) -> None:
    """Not our name, or our name from another host: only maildir(5)'s 36 hours count."""
    young = [
        plant(tmp_path / "a@x", "1700000000.12345.other-mda", age=35 * HOUR),
        plant(tmp_path / "a@x", ours(dead_pid, host="other-host"), age=HOUR),
        plant(tmp_path / "a@x", f"{ours(dead_pid)}:2,S", age=HOUR),
    ]
    old = [
        plant(tmp_path / "b@x", "1600000000.999.other-mda", age=37 * HOUR),
        plant(tmp_path / "b@x", ours(os.getpid(), host="other-host"), age=37 * HOUR),
    ]
    assert MaildirTarget(tmp_path, hostname=HOST).recover() == 2
    assert all(p.exists() for p in young)
    assert not any(p.exists() for p in old)


def test_only_regular_files_in_tmp_go(tmp_path: Path, dead_pid: int) -> None:
    maildir = tmp_path / "bob@x"
    plant(maildir, "x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (maildir / "tmp" / ours(dead_pid)).mkdir()
    (maildir / "tmp" / ours(dead_pid + 1)).symlink_to(outside)
    (tmp_path / "stray-file").write_bytes(b"not a maildir")
    assert MaildirTarget(tmp_path, hostname=HOST).recover() == 0
    assert sorted(files(maildir / "tmp")) == sorted(["x", ours(dead_pid), ours(dead_pid + 1)])
    assert outside.is_dir()


def test_missing_root_recovers_nothing(tmp_path: Path) -> None:
    assert MaildirTarget(tmp_path / "none", hostname=HOST).recover() == 0
    assert not (tmp_path / "none").exists()


def test_a_killed_delivery_is_cleaned_at_the_next_start(tmp_path: Path) -> None:
    """A real writer killed mid-message, then the factory's start-up recovery."""
    root = tmp_path / "data" / "mail"
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from smtpgate.delivery.maildir import MaildirTarget\n"
        "from tests.delivery.test_maildir import envelope\n"
        f"target = MaildirTarget(Path({str(root)!r}), hostname={HOST!r})\n"
        "delivery = target.start(envelope('bob@x', 'carol@x'))\n"
        "from tests.delivery.test_maildir import spill\n"
        "spill(delivery, target.root)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2],
                          check=False, timeout=60)
    assert done.returncode == -signal.SIGKILL
    (left,) = files(root / "bob@x" / "tmp")
    assert left.endswith(f".{HOST}")
    config = build_config({"hostname": HOST, "data_dir": str(tmp_path / "data")},
                          file="t", base_dir=tmp_path)
    make_target(config)
    assert files(root / "bob@x" / "tmp") == []
    assert files(root / "bob@x" / "new") == []


def test_start_up_logs_one_line_with_the_count(
    tmp_path: Path, dead_pid: int, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    plant(data / "mail" / "bob@x", ours(dead_pid))
    plant(data / "mail" / "carol@x", ours(dead_pid))
    config = build_config({"hostname": HOST, "data_dir": str(data)}, file="t", base_dir=tmp_path)
    with caplog.at_level(logging.INFO, logger="smtpgate.delivery"):
        make_target(config)
    (line,) = [r.getMessage() for r in caplog.records if "recovery" in r.getMessage()]
    assert line.startswith("maildir recovery: removed 2 partial files under ")
    assert list(data.rglob("tmp/*")) == []

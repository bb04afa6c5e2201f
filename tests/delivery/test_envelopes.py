"""The envelope logs kept open between lines (``delivery/envelopes.py`` ``OpenLogs``)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from smtpgate.delivery.envelopes import ENVELOPE_DIR, OpenLogs, log_name, log_path, open_logs

DAY = "2026-11-30.jsonl"


def open_log_files(maildir: Path) -> set[str]:
    """The envelope logs under ``maildir`` this process holds open (from /proc/self/fd)."""
    held = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(maildir / ENVELOPE_DIR)):
            held.add(os.path.basename(target))
    return held


def append(logs: OpenLogs, maildir: Path, line: bytes, name: str = DAY) -> None:
    logs.append(str(maildir), name, line)
    logs.release(log_path(str(maildir), name))


def test_lines_go_to_one_log_kept_open(tmp_path: Path) -> None:
    logs = OpenLogs()
    made = []
    for n in range(3):
        made.append(logs.append(str(tmp_path), DAY, b'{"n": %d}\n' % n)[1])
        logs.release(log_path(str(tmp_path), DAY))
    assert made == [True, False, False]  # the first line's folder must be flushed too
    log = tmp_path / ENVELOPE_DIR / DAY
    assert log.read_bytes() == b'{"n": 0}\n{"n": 1}\n{"n": 2}\n'
    assert oct(log.stat().st_mode & 0o777) == oct(0o600)
    assert open_log_files(tmp_path) == {DAY}
    logs.close_all_unlocked()
    assert open_log_files(tmp_path) == set()


def test_a_log_deleted_while_open_is_made_anew(tmp_path: Path) -> None:
    logs = OpenLogs()
    append(logs, tmp_path, b"first\n")
    log = tmp_path / ENVELOPE_DIR / DAY
    log.unlink()  # expired by an administrator while smtpgate runs
    append(logs, tmp_path, b"second\n")
    assert log.read_bytes() == b"second\n"


def test_a_log_renamed_while_open_is_made_anew(tmp_path: Path) -> None:
    logs = OpenLogs()
    append(logs, tmp_path, b"first\n")
    log = tmp_path / ENVELOPE_DIR / DAY
    log.rename(log.with_suffix(".1"))  # rotated with mv
    append(logs, tmp_path, b"second\n")
    assert log.read_bytes() == b"second\n"
    assert log.with_suffix(".1").read_bytes() == b"first\n"


def test_beyond_keep_only_unpinned_logs_are_closed(tmp_path: Path) -> None:
    logs = OpenLogs(keep=2)
    names = [f"2026-11-{day:02d}.jsonl" for day in range(1, 6)]
    fds = [logs.append(str(tmp_path), name, b"x\n")[0] for name in names]  # all pinned
    assert open_log_files(tmp_path) == set(names)  # a pinned log is never closed
    for fd in fds:
        os.fstat(fd)  # still valid, as the group commit's flush needs them
    for name in names:
        logs.release(log_path(str(tmp_path), name))
    assert open_log_files(tmp_path) == set(names[-2:])  # the newest stay open
    append(logs, tmp_path, b"y\n", names[0])  # a closed one opens again
    assert (tmp_path / ENVELOPE_DIR / names[0]).read_bytes() == b"x\ny\n"
    assert len(open_log_files(tmp_path)) == 2


def test_a_forked_child_has_its_own(tmp_path: Path) -> None:
    parent = open_logs()
    append(parent, tmp_path, b"parent\n")
    pid = os.fork()
    if pid == 0:  # the child: its own OpenLogs, none of the parent's descriptors
        code = 0 if open_logs() is not parent and open_log_files(tmp_path) == set() else 1
        append(open_logs(), tmp_path, b"child\n")
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    append(parent, tmp_path, b"parent again\n")
    assert (tmp_path / ENVELOPE_DIR / DAY).read_bytes() == b"parent\nchild\nparent again\n"


@given(st.lists(st.floats(min_value=-2e9, max_value=4e9), min_size=1, max_size=5))
def test_log_name_is_the_utc_day(times: list[float]) -> None:
    """The one-day cache never names another day (times alternate between days here)."""
    for received_at in times:
        day = datetime.fromtimestamp(received_at, tz=UTC).strftime("%Y-%m-%d.jsonl")
        assert log_name(received_at) == day


def test_log_name_at_the_edges_of_a_day() -> None:
    """datetime rounds to microseconds: a time just before midnight may be the next day."""
    for edge in (-1e-05, -4e-07, 86_399.9999996, 86_400.0, 1e-07, 0.0, -86_400.0):
        for received_at in (edge - 3_600, edge, edge + 3_600, edge):  # cached, then not
            day = datetime.fromtimestamp(received_at, tz=UTC).strftime("%Y-%m-%d.jsonl")
            assert log_name(received_at) == day, received_at

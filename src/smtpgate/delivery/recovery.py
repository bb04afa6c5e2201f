"""Crash recovery for Maildirs: remove the partial files a dead writer left in ``tmp/``.

maildir(5): a file in ``tmp/`` that has not been accessed for 36 hours may
be removed. smtpgate removes its own sooner, since it knows their names:
``<sec>.M<usec>P<pid>Q<seq>R<random>.<host>`` says which process on which
host wrote the file, and a file of ours (this host) whose writer no longer
exists can only be the remains of a crash. A live writer's file (another
worker process, or a server still draining while its successor starts)
stays. PIDs are reused -- in a container the server is often pid 1 after
every restart -- so a live process counts as the writer only if it started
before the file was last written.

The envelope log (``envelopes``) is left as it is: a line whose message is
not in ``new/`` or ``cur/`` describes a message that was never delivered.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

STALE_AFTER = 36 * 3600  # maildir(5): seconds without access before anyone's tmp file may go
_CLOCK_SLACK = 2.0  # /proc start times are exact to the second only (btime)
_UNIQUE = re.compile(r"\d+\.M\d+P(?P<pid>[1-9]\d{0,9})Q\d+R[0-9a-f]{8}\.(?P<host>.+)")


def recover(root: Path, host: str, *, now: float | None = None) -> int:
    """Remove stale tmp files in every Maildir under ``root``; the count.

    ``host`` is the host part of our unique names (``_maildir_host``).
    """
    now = time.time() if now is None else now
    removed = 0
    for maildir in _subdirs(root):
        for entry in _tmp_files(maildir / "tmp"):
            if _stale(entry, host, now):
                removed += _remove(maildir, entry.name)
    return removed


def _subdirs(root: Path) -> list[Path]:
    try:
        with os.scandir(root) as entries:
            return [Path(e.path) for e in entries if e.is_dir()]
    except OSError:  # missing or unreadable: nothing to recover there
        return []


def _tmp_files(tmp: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(tmp) as entries:
            return [e for e in entries if e.is_file(follow_symlinks=False)]
    except OSError:  # missing or unreadable: nothing to recover there
        return []


def _stale(entry: os.DirEntry[str], host: str, now: float) -> bool:
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError:  # gone already: another worker's recovery, or a rename into new/
        return False
    if now - max(st.st_atime, st.st_mtime) > STALE_AFTER:
        return True
    match = _UNIQUE.fullmatch(entry.name)
    if match is None or match["host"] != host:
        return False  # not ours, or another host's pid
    return not writer_alive(int(match["pid"]), written=st.st_mtime)


def writer_alive(pid: int, *, written: float) -> bool:
    """Whether process ``pid`` may be the one that last wrote a file at time ``written``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    except OverflowError:
        return False  # no such pid can exist
    state, started = process_start(pid)
    if state in ("Z", "X"):  # a zombie has ended (in a container nobody may reap it)
        return False
    return started is None or started <= written + _CLOCK_SLACK


def process_start(pid: int) -> tuple[str, float | None]:
    """The state of ``pid`` ("R", "S", "Z", ...; "" where unknown) and when it started, in
    seconds since the epoch (Linux /proc; None where unknown)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        boot = _boot_time()
        ticks = int(fields[19])  # field 22, starttime (proc(5)); fields[0] is field 3
    except (OSError, ValueError, IndexError):
        return "", None
    return fields[0], boot + ticks / os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")


def _remove(maildir: Path, name: str) -> int:
    """Unlink ``tmp/<name>``; how many files went (0 or 1)."""
    try:
        (maildir / "tmp" / name).unlink()
    except OSError:  # gone, or not ours to remove: the next start tries again
        return 0
    return 1

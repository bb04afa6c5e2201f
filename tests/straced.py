"""Reading an ``strace -f -y`` trace of ``smtpgate serve`` to prove the group commit's order.

For every acknowledged message: each of its files written, then flushed (an
``fsync`` of the file, or a ``syncfs`` that began after its last write), each
folder whose new entries must last (an envelope log's) flushed too, and all of that
done before its first rename; its renames; then a flush of each directory
renamed into (``fsync`` of it, or a ``syncfs``) that began after the last
rename; and only then the ``250 ... queued as ID``. ``check_message`` asserts
that and returns where the covering directory flush began, so a test can
count how many messages shared one.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

TRACED = "trace=fsync,fdatasync,syncfs,rename,renameat,renameat2,write,sendto,sendmsg"
_START = re.compile(r"^(\d+) +(\w+)\((.*)$")
_RESUMED = re.compile(r"^(\d+) +<\.\.\. (\w+) resumed>(.*)$")
_FLUSHES = ("fsync", "fdatasync")


@dataclass
class Call:
    name: str
    args: str  # the text after "(", up to the end of the first line
    start: int  # line number where the call began
    end: int  # line number where it returned
    tid: int = 0  # the thread that made it


def strace_command(strace: str, trace: Path, more: str = "") -> list[str]:
    """``more``: other calls to trace, e.g. ``",unlink,close"``."""
    return [strace, "-f", "-y", "-s", "100", "-o", str(trace), "-e", TRACED + more]


def parse_trace(text: str) -> list[Call]:
    """Calls in order of their start; ``<unfinished ...>`` joined to ``<... resumed>``."""
    calls: list[Call] = []
    open_calls: dict[str, Call] = {}
    for number, line in enumerate(text.splitlines()):
        resumed = _RESUMED.match(line)
        if resumed:
            call = open_calls.pop(resumed.group(1), None)
            if call is not None:
                call.end = number
            continue
        start = _START.match(line)
        if not start:
            continue
        call = Call(start.group(2), start.group(3), number, number, int(start.group(1)))
        calls.append(call)
        if line.endswith("<unfinished ...>"):
            open_calls[start.group(1)] = call
    return calls


def on(call: Call, path: Path) -> bool:
    """Whether the call's first argument is a descriptor of exactly ``path``."""
    return call.args.split(">", 1)[0].endswith(f"<{path}")


def flush_of(calls: list[Call], path: Path, after: int) -> Call:
    """The first flush covering ``path`` that began after line ``after``."""
    return next(c for c in calls if c.start > after and (
        c.name == "syncfs" or (c.name in _FLUSHES and on(c, path))))


def check_removal(calls: list[Call], queue: Path, queue_id: str) -> None:
    """A delivered entry: its message unlinked, then its changed record (if any: the
    unlink is tried), then a flush of ``queue`` that began after both, and only then its
    claim let go (the deliverer's descriptor on the message, deleted by then, closed).
    Needs ``unlink``/``unlinkat`` and ``close``."""
    record, message = queue / f"{queue_id}.json", queue / f"{queue_id}.msg"
    unlinks = [c for c in calls if c.name.startswith("unlink")
               and any(f'"{path}"' in c.args for path in (record, message))]
    assert [f'"{message}"' in c.args for c in unlinks][:1] == [True], queue_id
    assert all(f'"{record}"' in c.args for c in unlinks[1:]), queue_id
    flush = flush_of(calls, queue, unlinks[-1].end)
    released = [c for c in calls if c.name == "close" and f"<{message}>(deleted)" in c.args]
    assert released, f"{queue_id}: no claim released after the unlink"
    assert flush.end < released[-1].start, f"{queue_id}: claim let go before the flush"
    # That last close frees the inode (and may wait for the disk): never on the event loop.
    assert released[-1].tid == unlinks[0].tid, f"{queue_id}: closed by another thread"


def check_message(calls: list[Call], *, files: list[Path], folders: list[Path],
                  renamed: list[Path], into: list[Path], reply: str,
                  marks: dict[Path, str] | None = None) -> int:
    """Assert the order for one message (module docstring); the line where the directory
    flush covering it began. ``files``: what it wrote; ``folders``: directories whose new
    entries must be flushed before the renames; ``renamed``: the sources of its renames,
    in order; ``into``: the directories renamed into; ``reply``: text of its 250;
    ``marks``: for a file other messages write too (a log), the text that marks this
    message's write."""
    renames = [c for c in calls if c.name.startswith("rename")
               and any(f'"{source}"' in c.args for source in renamed)]
    assert [next(s for s in renamed if f'"{s}"' in c.args) for c in renames] == renamed, reply
    sent = next(c for c in calls if c.name in ("sendto", "sendmsg", "write") and reply in c.args)
    for path in files:
        mark = (marks or {}).get(path, "")
        writes = [c for c in calls if c.name == "write" and on(c, path) and mark in c.args]
        assert writes, f"{reply}: nothing written to {path}"
        flush = flush_of(calls, path, max(w.end for w in writes))
        assert flush.end < renames[0].start, f"{reply}: {path} renamed before its flush"
    for folder in folders:
        created = min(c.start for c in calls if c.name == "write" and str(folder) in c.args)
        flush = flush_of(calls, folder, created)
        assert flush.end < renames[0].start, f"{reply}: {folder} not flushed before renames"
    covers = [flush_of(calls, folder, renames[-1].end) for folder in into]
    for cover in covers:
        assert cover.end < sent.start, f"{reply}: 250 before the directory flush"
    return min(cover.start for cover in covers)


def stop_traced(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to smtpgate only: strace then writes out the rest of its trace and exits."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    pids = [int(p) for p in children.read_text().split()] if children.exists() else []
    for pid in pids:
        os.kill(pid, signal.SIGTERM)
    if not pids:  # no /proc children list: both get it; strace still writes out its trace
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


async def wait_listening(port: int) -> None:
    """Until a traced server accepts on ``port`` (strace slows its start)."""
    for _ in range(300):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("smtpgate serve did not start")

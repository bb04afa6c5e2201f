"""Group commit, proved on a real ``smtpgate serve`` under strace.

Many clients send at once; strace records every file write, flush, rename and
socket send of the server (``-y`` names each descriptor's file). For every
message the order must be: its file written, then fsynced; its record fsynced;
both renamed into ``queue/``; then an fsync of ``queue/`` that began after those
renames; and only then the ``250 ... queued as ID``. Several messages must share
one directory fsync (the batch), or this is not group commit.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiosmtplib

from tests.e2e.conftest import PASSWORD, create_user
from tests.relay.conftest import MESSAGE, RelayEnv
from tests.relay.test_cli import write_toml
from tests.tools import require_tool

CLIENTS = 12
MESSAGES_EACH = 3
_START = re.compile(r"^(\d+) (\w+)\((.*)$")
_RESUMED = re.compile(r"^(\d+) <\.\.\. (\w+) resumed>(.*)$")
_QUEUED = re.compile(r"queued as ([0-9A-Z]+)")


@dataclass
class Call:
    name: str
    args: str  # the text after "(", up to the end of the first line
    start: int  # line number where the call began
    end: int  # line number where it returned


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
        call = Call(start.group(2), start.group(3), number, number)
        calls.append(call)
        if line.endswith("<unfinished ...>"):
            open_calls[start.group(1)] = call
    return calls


def on(call: Call, path: Path) -> bool:
    """Whether the call's first argument is a descriptor of exactly ``path``."""
    return call.args.split(">", 1)[0].endswith(f"<{path}")


async def send_many(port: int) -> list[str]:
    async def one_client(n: int) -> list[str]:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False,
                                   timeout=60) as client:
            await client.login("alice", PASSWORD)
            replies = []
            for m in range(MESSAGES_EACH):
                _, reply = await client.sendmail("alice@local.test", [f"r{n}.{m}@remote.test"],
                                                 MESSAGE)
                replies.append(reply)
            return replies

    results = await asyncio.gather(*(one_client(n) for n in range(CLIENTS)))
    return [reply for replies in results for reply in replies]


async def wait_listening(port: int) -> None:
    for _ in range(300):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise AssertionError("smtpgate serve did not start")


async def test_every_250_follows_its_flushes_renames_and_a_shared_directory_fsync(
    env: RelayEnv, tmp_path: Path
) -> None:
    strace = require_tool("strace")
    config = env.make()
    await create_user(config)
    listen = config.listeners[0].port
    path = write_toml(tmp_path / "smtpgate.toml", env)
    with path.open("a") as fh:
        fh.write(f'[[listener]]\naddress = "127.0.0.1:{listen}"\ntls = "none"\n'
                 'require_auth = false\n[auth]\nplaintext_requires_tls = false\n')
    trace = tmp_path / "trace"
    smtpgate = Path(sys.executable).with_name("smtpgate")
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [strace, "-f", "-y", "-s", "100", "-o", str(trace),
         "-e", "trace=fsync,fdatasync,rename,renameat,renameat2,write,sendto,sendmsg",
         str(smtpgate), "--config", str(path), "serve"],
        stdout=log, stderr=log, start_new_session=True)
    try:
        await wait_listening(listen)
        replies = await send_many(listen)
    finally:
        stop_traced(proc)
        log.close()
    ids = [m.group(1) for m in map(_QUEUED.search, replies) if m]
    assert len(ids) == CLIENTS * MESSAGES_EACH
    calls = parse_trace(trace.read_text(errors="replace"))
    assert calls, (tmp_path / "serve.log").read_text(errors="replace")[-2000:]
    queue, tmp = env.queue, env.queue / "tmp"
    dir_fsyncs = [c for c in calls if c.name in ("fsync", "fdatasync") and on(c, queue)]
    covering = [check_message(calls, dir_fsyncs, queue, tmp, queue_id) for queue_id in ids]
    assert len(set(covering)) < len(ids), "every message had a directory fsync of its own"


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


def check_message(calls: list[Call], dir_fsyncs: list[Call], queue: Path, tmp: Path,
                  queue_id: str) -> int:
    """Assert the order for one message; the start of the directory fsync that covered it."""
    msg, record = tmp / f"{queue_id}.msg", tmp / f"{queue_id}.json"
    writes = [c for c in calls if c.name == "write" and on(c, msg)]
    flush = next(c for c in calls if c.name in ("fsync", "fdatasync") and on(c, msg))
    record_flush = next(c for c in calls if c.name in ("fsync", "fdatasync") and on(c, record))
    renames = [c for c in calls if c.name.startswith("rename")
               and (f'"{msg}"' in c.args or f'"{record}"' in c.args)]
    sent = next(c for c in calls if c.name in ("sendto", "sendmsg", "write")
                and f"queued as {queue_id}" in c.args)
    assert writes and all(w.end < flush.start for w in writes), queue_id
    assert len(renames) == 2 and f'"{msg}"' in renames[0].args, queue_id  # message first
    assert flush.end < renames[0].start and record_flush.end < renames[1].start, queue_id
    cover = next(d for d in dir_fsyncs if d.start > renames[1].end)
    assert cover.end < sent.start, f"{queue_id}: 250 before the directory fsync"
    return cover.start

"""Group commit of the relay queue, proved on a real ``smtpgate serve`` under strace.

Many clients send at once; strace records every file write, flush, rename and
socket send of the server (``-y`` names each descriptor's file). For every
message the order must be (``tests/straced.py``): its file and its record
written and flushed; both renamed into ``queue/`` (the message first); then a
flush of ``queue/`` that began after those renames; and only then the
``250 ... queued as ID``. Several messages must share one directory flush
(the batch), or this is not group commit. Once the smarthost has every
message, each entry's removal must be durable (a flush of ``queue/`` after
its unlinks) before the deliverer lets go of its claim.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

import aiosmtplib

from tests.e2e.conftest import PASSWORD, create_user
from tests.relay.conftest import MESSAGE, RelayEnv, wait_for
from tests.relay.test_cli import write_toml
from tests.straced import (
    check_message,
    check_removal,
    parse_trace,
    stop_traced,
    strace_command,
    wait_listening,
)
from tests.tools import require_tool

CLIENTS = 12
MESSAGES_EACH = 3
_QUEUED = re.compile(r"queued as ([0-9A-Z]+)")


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


async def test_every_250_follows_its_flushes_renames_and_a_shared_directory_flush(
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
        [*strace_command(strace, trace, ",unlink,unlinkat,close"), str(smtpgate),
         "--config", str(path), "serve"],
        stdout=log, stderr=log, start_new_session=True)
    try:
        await wait_listening(listen)
        replies = await send_many(listen)
        await wait_for(lambda: not env.queued(), timeout=60)  # all relayed and removed
    finally:
        stop_traced(proc)
        log.close()
    ids = [m.group(1) for m in map(_QUEUED.search, replies) if m]
    assert len(ids) == CLIENTS * MESSAGES_EACH
    calls = parse_trace(trace.read_text(errors="replace"))
    assert calls, (tmp_path / "serve.log").read_text(errors="replace")[-2000:]
    queue, tmp = env.queue, env.queue / "tmp"
    covering = []
    for queue_id in ids:
        written = [tmp / f"{queue_id}.msg"]  # the message, then its record, in one file
        covering.append(check_message(calls, files=written, folders=[], renamed=written,
                                      into=[queue], reply=f"queued as {queue_id}"))
    assert len(set(covering)) < len(ids), "every message had a directory flush of its own"
    assert len(env.smarthost.handler.accepted) == len(ids)
    for queue_id in ids:
        check_removal(calls, queue, queue_id)

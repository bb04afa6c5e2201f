"""SIGKILL of a real smtpgate process: during the upstream transaction (the message is sent
again after the restart: at least once), during the client's DATA (nothing queued), and
under load (every acknowledged message queued whole)."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiosmtplib

from smtpgate.relay.queue import QueueStore
from tests.attacks.subproc import ServeProcess, acknowledged_until_killed
from tests.e2e.conftest import PASSWORD, create_user, free_port
from tests.relay.conftest import MESSAGE, RelayEnv, wait_for
from tests.relay.test_cli import write_toml


class Process:
    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.relay.serve_relay", str(self.config)],
                stdout=subprocess.PIPE, stderr=err, cwd=Path(__file__).parents[2],
            )
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), 20)
        assert line == b"ready\n", self.log.read_text()

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)


async def _world(env: RelayEnv, tmp_path: Path) -> tuple[Process, int]:
    config = env.make()
    await create_user(config)
    port = config.listeners[0].port
    path = write_toml(tmp_path / "smtpgate.toml", env)
    with path.open("a") as fh:
        fh.write(f'[[listener]]\naddress = "127.0.0.1:{port}"\ntls = "none"\n'
                 "require_auth = false\n[auth]\nplaintext_requires_tls = false\n")
    return Process(path, tmp_path / "serve.log"), port


async def test_sigkill_during_upstream_delivery_sends_again(
    env: RelayEnv, tmp_path: Path
) -> None:
    process, port = await _world(env, tmp_path)
    handler = env.smarthost.handler
    handler.data_delay = 30.0  # the upstream has the message, smtpgate has no 250 yet
    await process.start()
    try:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) as c:
            await c.login("alice", PASSWORD)
            await c.sendmail("alice@local.test", ["you@remote.test"], MESSAGE)
        await wait_for(lambda: handler.accepted)
        process.kill()
        assert len(env.queued()) == 1  # still queued: it was never recorded as sent
        handler.data_delay = 0.0
        await process.start()
        await wait_for(lambda: len(handler.accepted) == 2, timeout=20)
        await wait_for(lambda: not env.queued())
        assert handler.accepted[0][2] == handler.accepted[1][2]
    finally:
        process.terminate()


async def test_sigkill_during_data_queues_nothing(env: RelayEnv, tmp_path: Path) -> None:
    process, port = await _world(env, tmp_path)
    await process.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reader.readline()).startswith(b"220")
        auth = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
        for line in ["EHLO dev", f"AUTH PLAIN {auth}", "MAIL FROM:<alice@local.test>",
                     "RCPT TO:<you@remote.test>", "DATA"]:
            writer.write(line.encode() + b"\r\n")
            await writer.drain()
            while True:
                reply = await reader.readline()
                if reply[3:4] != b"-":
                    break
        assert reply.startswith(b"354")
        writer.write(b"Subject: half\r\n\r\n" + b"x" * 100_000)
        await writer.drain()
        await asyncio.sleep(0.3)
        process.kill()
        writer.close()
        await process.start()
        await asyncio.sleep(1.0)
        assert env.queued() == []
        assert os.listdir(env.queue / "tmp") == []  # the half-written file was cleaned up
        assert env.smarthost.handler.accepted == []
    finally:
        process.terminate()


async def test_sigkill_under_load_keeps_every_acknowledged_message_queued_whole(
    tmp_path: Path
) -> None:
    """A real ``smtpgate serve`` (two workers) whose smarthost refuses connections, so the
    queue only grows; SIGKILL under load: each acknowledged id is queued, whole, once."""
    closed = free_port()  # nothing listens there: every delivery attempt is deferred
    serve = ServeProcess(tmp_path, workers=2, extra_toml=(
        '[delivery]\nmode = "relay"\nlocal_domains = ["local.test"]\n'
        f'[relay]\nhost = "127.0.0.1"\nport = {closed}\ntls = "none"\nretry = "1h"\n'))
    serve.start()
    acked = await acknowledged_until_killed(serve, 2.0, lambda n: f"k{n}@remote.test",
                                            GROUP_BODY)
    assert len(acked) >= 50, f"only {len(acked)} messages acknowledged before the kill"
    queue = serve.data / "queue"
    store = QueueStore(queue)
    records = set(store.ids())
    assert acked <= records, f"{len(acked - records)} acknowledged messages lost"
    for queue_id in records:  # whole, with its record, or not in queue/ at all
        assert store.read_message(queue_id).endswith(GROUP_BODY), queue_id
        assert store.load(queue_id).id == queue_id


GROUP_BODY = b"Subject: group commit\r\n\r\n" + b"y" * 2000 + b"\r\n"

"""``smtpgate serve`` in relay mode with two worker processes: both drain the queue and each
message reaches the smarthost once (needs Server to own the Relay; see docs/relay.md)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiosmtplib

from tests.e2e.conftest import PASSWORD, create_user
from tests.relay.conftest import MESSAGE, RelayEnv, wait_for
from tests.relay.test_cli import write_toml
from tests.relay.upstream import Smarthost


async def test_serve_with_two_workers_delivers_each_message_once(
    env: RelayEnv, tmp_path: Path
) -> None:
    port = env.smarthost.port
    env.smarthost.stop()
    config = env.make()
    await create_user(config)
    listen = config.listeners[0].port
    path = write_toml(tmp_path / "smtpgate.toml", env)
    with path.open("a") as fh:
        fh.write(f'[server]\nworkers = 2\n[[listener]]\naddress = "127.0.0.1:{listen}"\n'
                 'tls = "none"\nrequire_auth = false\n[auth]\nplaintext_requires_tls = false\n')
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from smtpgate.cli.main import main; "
         "sys.exit(main(sys.argv[1:]))", "--config", str(path), "serve"],
        stdout=log, stderr=log, start_new_session=True)
    try:
        for _ in range(200):
            try:
                await asyncio.open_connection("127.0.0.1", listen)
                break
            except OSError:
                await asyncio.sleep(0.1)
        for n in range(10):
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=listen, start_tls=False) as c:
                await c.login("alice", PASSWORD)
                await c.sendmail("alice@local.test", [f"r{n}@remote.test"], MESSAGE)
        assert len(env.queued()) == 10
        env.smarthost = Smarthost(env.tokens.state, port=port).start()
        await wait_for(lambda: not env.queued(), timeout=30)
        await asyncio.sleep(1.0)
        delivered = sorted(a[1][0] for a in env.smarthost.handler.accepted)
        assert delivered == sorted(f"r{n}@remote.test" for n in range(10))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        log.close()

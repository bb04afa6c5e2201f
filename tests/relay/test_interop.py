"""Real devices and a real second upstream: swaks and msmtp submit to smtpgate in relay mode
(AUTH LOGIN / PLAIN, as old devices do), and another smtpgate serves as the smarthost."""

from __future__ import annotations

import asyncio
from pathlib import Path

from smtpgate.server.app import Server
from tests.e2e.conftest import PASSWORD, create_user, free_port, make_config
from tests.relay.conftest import RelayEnv, wait_for
from tests.tools import require_tool


async def run(*argv: str, stdin: bytes = b"") -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 30)
    return proc.returncode or 0, out.decode(errors="replace")


async def test_swaks_auth_login_device(env: RelayEnv) -> None:
    swaks = require_tool("swaks")
    server = await env.start()
    host, port = server.addresses[0]
    code, out = await run(swaks, "--server", host, "--port", str(port), "--auth", "LOGIN",
                          "--auth-user", "alice", "--auth-password", PASSWORD,
                          "--from", "alice@local.test", "--to", "you@remote.test",
                          "--header", "Subject: from swaks")
    assert code == 0, out
    await wait_for(lambda: env.smarthost.handler.accepted)
    assert b"Subject: from swaks" in env.smarthost.handler.accepted[0][2]


async def test_msmtp_device(env: RelayEnv, tmp_path: Path) -> None:
    msmtp = require_tool("msmtp")
    server = await env.start()
    host, port = server.addresses[0]
    message = b"From: alice@local.test\r\nTo: you@remote.test\r\nSubject: from msmtp\r\n\r\nhi\r\n"
    code, out = await run(msmtp, f"--host={host}", f"--port={port}", "--tls=off", "--auth=plain",
                          "--user=alice", "--passwordeval=cat " + str(_pw(tmp_path)),
                          "--from=alice@local.test", "you@remote.test", stdin=message)
    assert code == 0, out
    await wait_for(lambda: env.smarthost.handler.accepted)
    assert b"Subject: from msmtp" in env.smarthost.handler.accepted[0][2]


def _pw(tmp_path: Path) -> Path:
    path = tmp_path / "device.pw"
    path.write_text(PASSWORD + "\n")
    return path


async def test_another_smtpgate_as_the_smarthost(env: RelayEnv, tmp_path: Path) -> None:
    upstream_config = make_config(
        tmp_path / "upstream",
        listener=[{"address": f"127.0.0.1:{free_port()}", "tls": "none", "require_auth": True}],
        auth={"plaintext_requires_tls": False, "failure_delay": 0.0},
    )
    await create_user(upstream_config, "relayuser")
    upstream = Server(upstream_config)
    await upstream.start()
    try:
        config = env.make(relay={"port": upstream.addresses[0][1], "account": [
            {"auth": "login", "username": "relayuser", "password_file": "up.pw"}]})
        (config.data_dir / "up.pw").write_text(PASSWORD + "\n")
        await env.start(config)
        await env.submit(["you@remote.test"])
        new = upstream_config.data_dir / "mail" / "you@remote.test" / "new"
        await wait_for(lambda: new.exists() and any(new.iterdir()))
        (stored,) = [p.read_bytes() for p in new.iterdir()]
        assert b"Subject: relay" in stored and stored.count(b"Received:") == 2
        await wait_for(lambda: not env.queued())
    finally:
        await upstream.stop(grace=1.0)

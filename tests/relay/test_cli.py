"""The CLI against a live queue: queue commands while the server runs, relay test, oauth
authorize (device code) against the test's token endpoint."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from smtpgate.cli.main import main
from tests.relay.conftest import RelayEnv, wait_for
from tests.relay.upstream import CLIENT_ID, Smarthost, make_cert, server_tls


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def write_toml(path: Path, env: RelayEnv, **relay: Any) -> Path:
    assert env.config is not None
    account = {"senders": ["*"], "auth": "xoauth2", "username": "device@remote.test",
               "token_url": env.tokens.url, "client_id": CLIENT_ID,
               "refresh_token_file": "rt", "device_url": env.tokens.device_url}
    table = {"host": "127.0.0.1", "port": env.smarthost.port, "tls": "none", "retry": "1s",
             **relay}
    lines = [f"data_dir = {toml_value(str(env.config.data_dir))}", "hostname = \"mx.test\"",
             "[delivery]", "mode = \"relay\"", "local_domains = [\"local.test\"]", "[relay]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in table.items()]
    lines += ["[[relay.account]]"] + [f"{k} = {toml_value(v)}" for k, v in account.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def all_tried(env: RelayEnv) -> bool:
    records = [env.record(name) for name in env.queued()]
    return all(r["attempts"] >= 1 for r in records)


async def cli(config: Path, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = await asyncio.to_thread(main, ["--config", str(config), *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


async def test_queue_commands_while_the_server_runs(
    env: RelayEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = env.smarthost.port
    env.smarthost.stop()
    await env.start(env.make(relay={"retry": "1h"}))
    config = write_toml(tmp_path / "smtpgate.toml", env)
    await env.submit(["a@remote.test"])
    await env.submit(["b@remote.test"])
    await wait_for(lambda: len(env.queued()) == 2 and all_tried(env))
    first, second = (name.removesuffix(".msg") for name in env.queued())
    code, out = await cli(config, "queue", "list", capsys=capsys)
    assert code == 0 and out.count("<alice@local.test>") == 2 and "2 message(s) queued" in out
    code, out = await cli(config, "queue", "list", "--per-page", "1", "--page", "2", capsys=capsys)
    assert second in out and first not in out and "page 2 of 2" in out
    code, out = await cli(config, "queue", "show", first, capsys=capsys)
    assert code == 0 and "to: <a@remote.test> pending" in out
    code, out = await cli(config, "queue", "show", "NOSUCHID", capsys=capsys)
    assert code == 1 and out.strip() == "smtpgate: no queued message 'NOSUCHID'"
    assert (await cli(config, "queue", "hold", first, capsys=capsys))[0] == 0
    env.smarthost = Smarthost(env.tokens.state, port=port).start()
    code, out = await cli(config, "queue", "retry", "--all", capsys=capsys)
    assert code == 0 and "will be tried now" in out
    await wait_for(lambda: env.smarthost.handler.accepted)
    await asyncio.sleep(1.5)
    assert [a[1] for a in env.smarthost.handler.accepted] == [["b@remote.test"]]  # first held
    assert (await cli(config, "queue", "bounce", first, capsys=capsys))[0] == 0
    await wait_for(lambda: env.mailbox("alice@local.test"))
    assert b"returned to the sender by the administrator" in env.mailbox("alice@local.test")[0]
    await wait_for(lambda: not env.queued())
    code, out = await cli(config, "queue", "delete", first, capsys=capsys)
    assert code == 1 and "no queued message" in out


async def test_release_and_delete(
    env: RelayEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = env.smarthost.port
    env.smarthost.stop()
    await env.start(env.make(relay={"retry": "1h"}))
    config = write_toml(tmp_path / "smtpgate.toml", env)
    await env.submit(["a@remote.test"])
    await env.submit(["b@remote.test"])
    await wait_for(lambda: len(env.queued()) == 2 and all_tried(env))
    first, second = (name.removesuffix(".msg") for name in env.queued())
    assert (await cli(config, "queue", "delete", second, capsys=capsys))[0] == 0
    assert len(env.queued()) == 1
    env.smarthost = Smarthost(env.tokens.state, port=port).start()
    assert (await cli(config, "queue", "hold", first, capsys=capsys))[0] == 0
    assert (await cli(config, "queue", "release", first, capsys=capsys))[0] == 0
    await wait_for(lambda: env.smarthost.handler.accepted)
    assert [a[1] for a in env.smarthost.handler.accepted] == [["a@remote.test"]]


async def test_relay_test_passes_every_step(
    env: RelayEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env.make()
    config = write_toml(tmp_path / "smtpgate.toml", env)
    code, out = await cli(config, "relay", "test", capsys=capsys)
    steps = [line.split()[0:2] for line in out.splitlines()]
    assert steps == [["connect", "ok:"], ["tls", "skipped:"], ["token", "ok:"], ["auth", "ok:"],
                     ["mail", "ok:"], ["quit", "ok:"]], out
    assert code == 0
    assert env.smarthost.handler.accepted == []  # nothing was sent


async def test_relay_test_names_the_failing_step(
    env: RelayEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env.make()
    (env.tmp_path / "data" / "rt").write_text("revoked\n")
    config = write_toml(tmp_path / "smtpgate.toml", env)
    code, out = await cli(config, "relay", "test", "device@remote.test", capsys=capsys)
    assert code == 1
    last = out.splitlines()[-1]
    assert last.startswith("token    FAILED: token endpoint answered HTTP 400: invalid_grant")
    assert "smtpgate oauth authorize" in last
    code, out = await cli(config, "relay", "test", "nobody@x", capsys=capsys)
    assert code == 1 and "no [[relay.account]] with username" in out


async def test_relay_test_untrusted_certificate(
    env: RelayEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env.smarthost.stop()
    cert, key = make_cert(tmp_path, "upstream")
    env.smarthost = Smarthost(env.tokens.state, tls=server_tls(cert, key)).start()
    env.make()
    config = write_toml(tmp_path / "smtpgate.toml", env, tls="starttls")
    code, out = await cli(config, "relay", "test", capsys=capsys)
    assert code == 1
    assert out.splitlines()[-1].startswith("tls      FAILED: tls: certificate not trusted")


async def test_oauth_authorize_device_code(
    env: RelayEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env.make()
    config = write_toml(tmp_path / "smtpgate.toml", env)
    code, out = await cli(config, "oauth", "authorize", "device@remote.test", capsys=capsys)
    assert code == 0, out
    assert "enter ABCD-EFGH" in out and "saved the refresh token" in out
    rt = env.tmp_path / "data" / "rt"
    assert rt.read_text() == "rt-1\n" and (rt.stat().st_mode & 0o777) == 0o600
    assert env.tokens.state.device_polls == 2  # one authorization_pending, then the token


async def test_relay_test_missing_ca_file(
    env: RelayEnv, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env.make()
    config = write_toml(tmp_path / "smtpgate.toml", env, tls="starttls", ca_file="missing.pem")
    code, out = await cli(config, "relay", "test", capsys=capsys)
    assert code == 1
    assert out.strip().startswith("tls      FAILED: tls: cannot load ca_file")
    assert "No such file or directory" in out

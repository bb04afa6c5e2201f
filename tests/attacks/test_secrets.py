"""Secrets never leak (SPEC section 4: "password hashes, SCRAM secrets and AUTH
payloads never reach a log"; RFC 4954 section 9; aiosmtpd's hidden reprs).

A distinctive password goes through every mechanism, right and wrong, and as a
command line from a confused client; then every captured byte of logs, stdout,
stderr and the reprs of live objects is searched for it and its encodings.
"""

from __future__ import annotations

import base64
import gc
import logging
import sqlite3
from pathlib import Path

import pytest

from smtpgate.server.connection import Connection
from tests.attacks.raw import Raw, addr, b64, plain
from tests.attacks.subproc import ServeProcess
from tests.e2e.conftest import ServerFactory, create_user, make_config
from tests.sasl.clients import ScramClient, cram_md5_response

SECRET = "Zq9-Quokka!Marmalade#4471"
ALPHA = "Quokkamarmaladezebra"  # a letters-only password looks like a command verb
MECHS = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "LOGIN", "CRAM-MD5"]
CONFIG = {"auth": {"failure_delay": 0.0, "plaintext_requires_tls": False,
                   "max_failures_per_connection": 1000, "mechanisms": MECHS},
          "limits": {"max_errors": 1000}}


def _fields(obj: object) -> dict[str, object]:
    """What ``vars`` shows, also for a class compiled by mypyc (no ``__dict__``)."""
    names = [n for n in dir(obj) if not n.startswith("__")]
    return {n: v for n in names if not callable(v := getattr(obj, n, None))}


def _needles(stored: list[str], proofs: list[str]) -> list[str]:
    b64pw = base64.b64encode(SECRET.encode()).decode()
    out = [ALPHA, ALPHA.upper(), SECRET, SECRET.lower(), b64pw, b64pw[:16], plain(password=SECRET),
           base64.b64encode(f"\0alice\0{SECRET}".encode()).decode()[4:24]]
    out += [s for s in stored if s and len(s) > 12]
    for value in stored:  # the base64 parts of "$..."-style and RFC 5803 secrets
        out += [part for part in value.replace("$", ":").replace(",", ":").split(":")
                if len(part) >= 16]
    return out + proofs


async def _attack(c: Raw) -> list[str]:
    """Every way a client can send the password; returns the SCRAM proofs seen."""
    proofs: list[str] = []
    await c.ehlo()
    # a confused client sends credentials as command lines
    for line in (ALPHA, f"{ALPHA} {ALPHA}", SECRET, f"PASS {SECRET}", b64(SECRET),
                 plain(password=SECRET), f"alice {SECRET}", f"AUTH PLAIN {SECRET}",
                 f"AUTH {plain(password=SECRET)}"):
        assert (await c.cmd(line)).code >= 500
    assert (await c.cmd("AUTH PLAIN " + plain(password=SECRET + "x"))).code == 535
    assert (await c.cmd("AUTH PLAIN " + plain(user="nobody", password=SECRET))).code == 535
    assert (await c.cmd("AUTH LOGIN " + b64("alice"))).code == 334
    assert (await c.cmd(b64(SECRET + "y"))).code == 535
    assert (await c.cmd("AUTH LOGIN " + b64(SECRET))).code == 334  # password as user name
    assert (await c.cmd(b64(SECRET))).code == 535
    resp = await c.cmd("AUTH CRAM-MD5")
    reply = cram_md5_response("alice", SECRET + "z", base64.b64decode(resp.lines[0]))
    assert (await c.cmd(b64(reply))).code == 535
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        client = ScramClient(mech, "alice", SECRET)
        resp = await c.cmd(f"AUTH {mech} {b64(client.client_first())}")
        final = client.client_final(base64.b64decode(resp.lines[0]))
        proofs += [b64(final), final.decode().rsplit("p=", 1)[1]]
        resp = await c.cmd(b64(final))
        assert resp.code == 334  # v=...
        proofs.append(resp.lines[0])
        assert (await c.cmd("")).code == 235
        await c.close()
        c = await Raw.open(c.writer.get_extra_info("peername")[:2])
        await c.ehlo()
    assert (await c.cmd("AUTH PLAIN " + plain(password=SECRET))).code == 235
    await c.close()
    return proofs


def _stored(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT password_hash, scram_sha1, scram_sha256, cram_md5 FROM users "
                           "WHERE name = 'alice'").fetchone()
    return [value for value in row if value]


async def test_no_secret_in_logs_output_or_reprs(
    running: ServerFactory, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    config = make_config(tmp_path, **CONFIG)
    await create_user(config, password=SECRET)
    server = await running(user=False, **CONFIG)
    c = await Raw.open(addr(server))
    # a live connection mid-exchange: its objects' reprs must hide what they hold
    live = await Raw.open(addr(server))
    await live.ehlo()
    assert (await live.cmd("AUTH LOGIN " + b64("alice"))).code == 334
    conns = [o for o in gc.get_objects() if isinstance(o, Connection)]
    reprs = []
    for conn in conns:
        reprs += [repr(conn), repr(conn.session), repr(conn.conversation), repr(_fields(conn))]
        if conn.conversation is not None:
            reprs += [repr(_fields(conn.conversation)), repr(conn.conversation._mech)]
    proofs = await _attack(c)
    await live.close()
    text = "\n".join([caplog.text, *(r.getMessage() for r in caplog.records),
                      *(str(r.args) for r in caplog.records), *capsys.readouterr(), *reprs])
    assert "auth failed" in text  # the log is there, and it is searched
    for needle in _needles(_stored(server.config.data_dir / "users.db"), proofs):
        assert needle not in text, f"secret material leaked: {needle[:6]}..."


async def test_no_secret_in_serve_process_output(tmp_path: Path) -> None:
    """The same through the real ``smtpgate serve`` process at DEBUG log level,
    including the CLI that created the user."""
    serve = ServeProcess(tmp_path, password=SECRET, extra_toml=(
        'mechanisms = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "LOGIN", "CRAM-MD5"]\n'
        "max_failures_per_connection = 1000\n[limits]\nmax_errors = 1000\n"))
    serve.start()
    try:
        proofs = await _attack(await Raw.open(serve.address))
        assert serve.stop() == 0
    finally:
        serve.kill()
    text = serve.output()
    assert "auth failed" in text and "auth ok" in text
    for needle in _needles(_stored(serve.data / "users.db"), proofs):
        assert needle not in text, f"secret material leaked: {needle[:6]}..."

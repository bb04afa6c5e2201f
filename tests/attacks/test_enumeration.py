"""User enumeration over real sockets (SPEC section 4: "an unknown user and a wrong
password get the same reply after about the same time"; RFC 4954 section 9;
RFC 5802 section 9 on faking server-first for unknown users).
"""

from __future__ import annotations

import base64
import contextlib
import smtplib
import sqlite3
import stat
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from tests.attacks.raw import Raw, addr, b64, plain
from tests.attacks.subproc import ServeProcess
from tests.e2e.conftest import ServerFactory
from tests.sasl.clients import ScramClient

MECHS = ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "LOGIN", "CRAM-MD5"]
CONFIG = {"auth": {"failure_delay": 0.0, "plaintext_requires_tls": False,
                   "max_failures_per_connection": 1000, "ip_failure_limit": 100_000,
                   "user_failure_limit": 100_000, "mechanisms": MECHS}}
TRIES = 50


async def _exchange(c: Raw, lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        resp = await c.cmd(line)
        out.append(str(resp))
    return out


async def test_identical_replies_in_every_mechanism(running: ServerFactory) -> None:
    server = await running(**CONFIG)
    c = await Raw.open(addr(server))
    await c.ehlo()
    transcripts = {}
    for user in ("alice", "mallory"):
        transcripts[user] = [
            *await _exchange(c, ["AUTH PLAIN " + plain(user=user, password="wrong")]),
            *await _exchange(c, ["AUTH PLAIN", plain(user=user, password="wrong")]),
            # LOGIN's user step: the Password: prompt comes for anyone
            *await _exchange(c, ["AUTH LOGIN " + b64(user), b64("wrong")]),
            *await _exchange(c, ["AUTH LOGIN", b64(user), b64("wrong")]),
            # authzid mismatch looks like a wrong password too
            *await _exchange(c, ["AUTH PLAIN " + plain(user=user, password="x", authzid="root")]),
        ]
        cram = await c.cmd("AUTH CRAM-MD5")
        assert cram.code == 334
        transcripts[user].append(str(await c.cmd(b64(f"{user} " + "0" * 32))))
    assert transcripts["alice"] == transcripts["mallory"]
    assert all("535 5.7.8" in line for line in transcripts["alice"] if line.startswith("535"))


async def _server_first(c: Raw, mech: str, user: str) -> dict[str, str]:
    client = ScramClient(mech, user, "wrong")
    resp = await c.cmd(f"AUTH {mech} {b64(client.client_first())}")
    assert resp.code == 334, resp
    first = base64.b64decode(resp.lines[0])
    attrs = dict(item.split("=", 1) for item in first.decode().split(","))
    final = await c.cmd(b64(client.client_final(first)))
    assert (final.code, final.enh) == (535, "5.7.8"), final
    attrs["final"] = str(final)
    return attrs


async def test_scram_server_first_is_faked_stably_for_unknown_users(
    running: ServerFactory,
) -> None:
    """RFC 5802 section 9: unknown users get a salt and iteration count that look real
    and stay the same for the same name across connections."""
    server = await running(**CONFIG)
    c = await Raw.open(addr(server))
    await c.ehlo()
    d = await Raw.open(addr(server))
    await d.ehlo()
    for mech in ("SCRAM-SHA-256", "SCRAM-SHA-1"):
        real = await _server_first(c, mech, "alice")
        fake1 = await _server_first(c, mech, "mallory")
        fake2 = await _server_first(d, mech, "mallory")
        other = await _server_first(d, mech, "trudy")
        assert fake1["s"] == fake2["s"]  # stable per name
        assert fake1["s"] != other["s"]  # but not one salt for every unknown name
        assert fake1["i"] == real["i"] == other["i"]
        assert len(base64.b64decode(fake1["s"])) == len(base64.b64decode(real["s"]))
        assert len(fake1["r"]) == len(real["r"])
        assert fake1["final"] == real["final"]
        real_again = await _server_first(d, mech, "alice")
        assert real_again["s"] == real["s"]


def _offered(address: tuple[str, int], user: str) -> tuple[str, str]:
    """One connection, one SCRAM-SHA-256 exchange: the (salt, iterations) offered to ``user``."""
    client = ScramClient("SCRAM-SHA-256", user, "wrong")
    with smtplib.SMTP(*address, timeout=10) as smtp:
        smtp.ehlo("enum.test")
        code, text = smtp.docmd("AUTH", "SCRAM-SHA-256 " + b64(client.client_first()))
        assert code == 334, (code, text)
        first = base64.b64decode(text)
        code, _ = smtp.docmd(b64(client.client_final(first)))
        assert code == 535
    attrs = dict(item.split("=", 1) for item in first.decode().split(","))
    return attrs["s"], attrs["i"]


def _pids(log: str) -> set[str]:
    """Process ids of the workers that answered an AUTH (the log's third column)."""
    return {line.split()[2] for line in log.splitlines() if "auth failed" in line}


def test_fake_salt_is_shared_by_workers_and_survives_a_restart(tmp_path: Path) -> None:
    """The key behind fake SCRAM secrets lives in the store: both worker processes offer
    an unknown name the same salt and iteration count, and so does the next start."""
    serve = ServeProcess(
        tmp_path, workers=2, extra_toml="ip_failure_limit = 1000\nuser_failure_limit = 1000\n"
    )
    seen: set[tuple[str, str]] = set()
    try:
        for _run in range(2):  # start, then restart on the same data directory
            serve.start()
            seen.update(_offered(serve.address, "mallory") for _ in range(12))
            assert _offered(serve.address, "alice") not in seen
            assert serve.stop() == 0
    finally:
        serve.kill()
    assert len(_pids(serve.output())) >= 3, "both workers, then a new process, must answer"
    assert len(seen) == 1, seen
    assert next(iter(seen))[1] == "4096"
    with contextlib.closing(sqlite3.connect(serve.data / "users.db")) as conn:
        (key,) = conn.execute("SELECT key FROM server_keys").fetchone()
    for form in (key.hex(), base64.b64encode(key).decode(), repr(key)):
        assert form not in serve.output()  # never logged
    assert stat.S_IMODE((serve.data / "users.db").stat().st_mode) == 0o600
    assert stat.S_IMODE(serve.data.stat().st_mode) == 0o700  # made by the store (user add)


async def _time_plain(c: Raw, user: str) -> float:
    start = time.perf_counter()
    resp = await c.cmd("AUTH PLAIN " + plain(user=user, password="wrong password"))
    elapsed = time.perf_counter() - start
    assert resp.code == 535
    return elapsed


async def _time_login(c: Raw, user: str) -> float:
    assert (await c.cmd("AUTH LOGIN " + b64(user))).code == 334
    start = time.perf_counter()
    resp = await c.cmd(b64("wrong password"))
    elapsed = time.perf_counter() - start
    assert resp.code == 535
    return elapsed


async def test_unknown_user_and_wrong_password_take_the_same_time(
    running: ServerFactory,
) -> None:
    """Median time over 50 interleaved tries each differs by less than 10% (failure_delay
    = 0, so the Argon2id verify, real or dummy, dominates). A busy machine can skew one
    series, so a mechanism gets up to three series; a real difference (an unknown user
    skipping the verify is 90% faster) fails all three."""
    server = await running(**CONFIG)
    c = await Raw.open(addr(server))
    await c.ehlo()
    report = []
    for name, timer in (("PLAIN", _time_plain), ("LOGIN", _time_login)):
        await timer(c, "alice")  # warm up (the dummy hash is made once)
        await timer(c, "mallory")
        tries = TRIES if name == "PLAIN" else 20
        for _series in range(3):
            diff, line = await _median_difference(c, timer, name, tries)
            report.append(line)
            if diff < 0.10:
                break
        assert diff < 0.10, "\n".join(report)
    print("\n" + "\n".join(report))


async def _median_difference(
    c: Raw, timer: Callable[[Raw, str], Awaitable[float]], name: str, tries: int
) -> tuple[float, str]:
    """Relative difference of the median times of a known and an unknown name."""
    known: list[float] = []
    unknown: list[float] = []
    for i in range(tries):
        order = [("alice", known), ("mallory", unknown)]
        for user, bucket in order if i % 2 else reversed(order):
            bucket.append(await timer(c, user))
    m_known, m_unknown = statistics.median(known), statistics.median(unknown)
    diff = abs(m_known - m_unknown) / max(m_known, m_unknown)
    return diff, (f"{name}: wrong password median {m_known * 1000:.1f} ms, unknown user "
                  f"median {m_unknown * 1000:.1f} ms, difference {diff:.1%} ({tries} each)")

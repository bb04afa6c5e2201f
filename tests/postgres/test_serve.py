"""Real ``smtpgate serve`` processes on a PostgreSQL store, with a real client (smtplib).

Two instances share one database: a password changed through one works on
the other at once, and the old one stops working at once (each AUTH reads
the account's row; the verified-credentials cache only honours an entry
while that row's hash is unchanged). Then PostgreSQL is stopped under a
steady stream of logins: 454 4.7.0 while it is away, not counted as failed
logins, normal service after it is back, and no restart of smtpgate.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import smtplib
import ssl
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from smtpgate.cli import main as cli
from smtpgate.credentials.base import Account
from smtpgate.credentials.users import add_user
from tests.e2e.cluster import Cluster
from tests.e2e.conftest import PASSWORD, config_data, in_thread
from tests.postgres.cluster import PgCluster

TEMPORARY = "Temporary authentication failure"


def auth_plain(address: tuple[str, int], name: str, password: str, *, tls: bool) -> str:
    """One connection, one AUTH PLAIN: "code text" of the reply."""
    with smtplib.SMTP(*address, timeout=30) as smtp:
        smtp.ehlo("client.test")
        if tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            smtp.starttls(context=context)
            smtp.ehlo("client.test")
        token = base64.b64encode(f"\0{name}\0{password}".encode()).decode()
        code, text = smtp.docmd("AUTH", "PLAIN " + token)
        return f"{code} {text.decode()}"


async def new_alice(server: Cluster) -> None:
    await add_user(server.store, "alice", PASSWORD, allow_mechanisms=None, may_act_as=[],
                   cram_md5=False)


@pytest.fixture
async def instances(tmp_path: Path, pg_url: str) -> AsyncIterator[Callable[..., Cluster]]:
    """``start(name, **sections)``: a ``smtpgate serve`` on the test's database."""
    started: list[Cluster] = []

    async def start(name: str, **sections: object) -> Cluster:
        root = tmp_path / name
        root.mkdir()
        data = config_data(root, store={"url": pg_url}, **sections)
        server = Cluster(root, data, workers=1)
        await in_thread(server.start)
        started.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in started:
        await server.stop(grace=1.0)


async def test_two_instances_share_accounts_and_see_changes_at_once(
    instances: Callable[..., object], tmp_path: Path,
) -> None:
    one = await instances("one")  # type: ignore[misc]
    two = await instances("two")  # type: ignore[misc]
    assert isinstance(one, Cluster) and isinstance(two, Cluster)
    await new_alice(one)
    at_one, at_two = one.addresses[0], two.addresses[0]  # the STARTTLS listeners
    for address in (at_one, at_two, at_one, at_two):  # the second round: from the caches
        reply = await in_thread(functools.partial(auth_plain, address, "alice", PASSWORD, tls=True))
        assert reply.startswith("235 2.7.0")

    # Through instance one's configuration, as an administrator would.
    stdin = tmp_path / "password"
    stdin.write_text("a new password\n")

    def passwd() -> int:
        import sys

        with stdin.open() as stream:
            saved, sys.stdin = sys.stdin, stream
            try:
                return cli.main(["--config", str(one.path), "user", "passwd", "alice",
                                 "--password-stdin"])
            finally:
                sys.stdin = saved

    assert await in_thread(passwd) == 0
    # No waiting: the very next AUTH on the other instance sees the change.
    new = await in_thread(lambda: auth_plain(at_two, "alice", "a new password", tls=True))
    old = await in_thread(lambda: auth_plain(at_two, "alice", PASSWORD, tls=True))
    assert new.startswith("235 2.7.0") and old.startswith("535 5.7.8")
    old_at_one = await in_thread(lambda: auth_plain(at_one, "alice", PASSWORD, tls=True))
    assert old_at_one.startswith("535 5.7.8")

    await one.store.delete("alice")
    gone = await in_thread(lambda: auth_plain(at_two, "alice", "a new password", tls=True))
    assert gone.startswith("535 5.7.8")

    # The password transition (a conditional update) writes through to the shared store.
    await one.store.add(Account(name="dave", password_hash="{PLAIN}legacy password"))
    legacy = await in_thread(lambda: auth_plain(at_two, "dave", "legacy password", tls=True))
    assert legacy.startswith("235 2.7.0")
    dave = await one.store.get("dave")
    assert dave is not None and dave.scram_sha256 is not None
    assert dave.password_hash is not None and dave.password_hash.startswith("{ARGON2ID}")


class Load:
    """Threads that log in over and over and count the replies, until stopped."""

    def __init__(self, address: tuple[str, int], threads: int = 3) -> None:
        self.address = address
        self.replies: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(n for reply, n in self.replies.items() if reply.startswith(prefix))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reply = auth_plain(self.address, "alice", PASSWORD, tls=False)
            except (OSError, smtplib.SMTPException) as exc:
                reply = f"error {type(exc).__name__}"
            with self._lock:
                self.replies[reply] += 1
                if not reply.startswith(("235 2.7.0", f"454 4.7.0 {TEMPORARY}")):
                    self.unexpected.append(reply)
            time.sleep(0.02)


async def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_postgresql_restarted_under_load(
    instances: Callable[..., object], pg_cluster: PgCluster,
) -> None:
    # A tight failure window: were 454s counted as failures, the address would be blocked.
    server = await instances(  # type: ignore[misc]
        "one", auth={"failure_delay": 0.0, "plaintext_requires_tls": False,
                     "ip_failure_limit": 3, "user_failure_limit": 3},
    )
    assert isinstance(server, Cluster)
    await new_alice(server)
    await server.store.close()
    plain = server.addresses[2]  # the listener without TLS
    with Load(plain) as load:
        await wait_for(lambda: load.count("235") >= 5, 30, "no logins before the outage")
        await in_thread(pg_cluster.stop)
        try:
            await wait_for(lambda: load.count("454") >= 6, 60, "no 454 while PostgreSQL is down")
        finally:
            await in_thread(pg_cluster.start)
        before = load.count("235")
        await wait_for(lambda: load.count("235") >= before + 10, 30, "logins did not resume")
    assert load.unexpected == []
    assert server.proc is not None and server.proc.poll() is None  # never restarted

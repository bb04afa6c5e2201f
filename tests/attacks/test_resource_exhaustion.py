"""Resource exhaustion over real sockets (SPEC section 3 [limits]; RFC 5321 section
4.5.3.1 size limits and 4.5.3.2 timeouts; RFC 2920 PIPELINING).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Callable
from typing import Any

from smtpgate.protocol.states import AUTH_LINE_LIMIT
from smtpgate.server.app import Server
from smtpgate.server.connection import Connection
from tests.attacks.raw import PLAIN_OK, Raw, Resp, addr, authed, merge, messages
from tests.e2e.conftest import ServerFactory

FRAMER_PARTIAL = 8192  # smtpgate.protocol.framing._MAX_PARTIAL


def _conn(server: Server) -> Connection:
    (conn,) = server.connections
    return conn


class Sampler:
    """Samples a value of the running server every millisecond, keeps the maximum."""

    def __init__(self, probe: Callable[[], int]) -> None:
        self.probe = probe
        self.peak = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(ValueError):  # not exactly one connection (yet)
                self.peak = max(self.peak, self.probe())
            await asyncio.sleep(0.001)

    def __enter__(self) -> Sampler:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._task is not None
        if self._task.done():  # a probe that broke must fail the test, not read as 0
            self._task.result()
        self._task.cancel()


def _buffered(server: Server) -> int:
    conn = _conn(server)
    session = conn.session
    framer = getattr(session._reader, "framer", None) if session is not None else None
    partial = len(framer._partial) if framer is not None else 0
    return (session.buffered if session is not None else 0) + partial


async def test_slowloris_closed_at_command_timeout(running: ServerFactory) -> None:
    """SPEC section 3: a whole command must arrive within command_timeout; one byte a
    second keeps no connection alive (421 4.4.2, then close)."""
    server = await running(limits={"command_timeout": 2})
    c = await Raw.open(addr(server))
    start = time.monotonic()

    async def drip() -> None:
        for byte in b"EHLO slowloris.test":  # bounded: at most 19 bytes
            await asyncio.sleep(0.5)  # faster than one a second: still cut off
            with contextlib.suppress(OSError):
                await c.send(bytes([byte]))

    dripper = asyncio.get_running_loop().create_task(drip())
    got = await c.closed(6)
    elapsed = time.monotonic() - start
    dripper.cancel()
    assert got.startswith(b"421 4.4.2"), got
    assert 1.8 < elapsed < 3.5, elapsed
    # the timer also runs in DATA-less AUTH prompts: an unanswered 334 is closed too
    d = await Raw.open(addr(server))
    await d.ehlo()
    assert (await d.cmd("AUTH SCRAM-SHA-256")).code == 334
    got = await d.closed(6)
    assert got.startswith(b"421 4.4.2"), got


async def test_unterminated_10mb_line_costs_only_the_line_limit(running: ServerFactory) -> None:
    """RFC 5321 section 4.5.3.1.4 (512-octet command lines) / SPEC (12288 for AUTH):
    10 MB without a line end is dropped as it arrives, answered 500 5.5.2 once the line
    ends, and the session goes on."""
    server = await running()
    c = await Raw.open(addr(server))
    await c.ehlo()
    with Sampler(lambda: _buffered(server)) as sampler:
        chunk = b"X" * 65536
        for _ in range(160):  # 10 MiB
            await c.send(chunk)
        await c.send(b"\r\n")
        resp = await c.reply()
    assert (resp.code, resp.enh) == (500, "5.5.2"), resp
    assert sampler.peak <= AUTH_LINE_LIMIT, sampler.peak
    assert (await c.cmd("NOOP")).code == 250
    await c.close()


async def test_oversized_data_without_size_is_discarded_in_constant_memory(
    running: ServerFactory,
) -> None:
    """RFC 1870 / SPEC section 3: DATA beyond max_message_size (no SIZE given) is read
    to its end and dropped (552 5.3.4); memory and disk stay bounded; nothing is stored.
    The same for one 10 MB line inside DATA, and for BDAT."""
    limit = 65536
    server = await running(**merge(PLAIN_OK, {"limits": {"max_message_size": limit}}))
    c = await authed(server)
    tmp_peak = 0

    def tmp_size() -> int:
        nonlocal tmp_peak
        files = list((server.config.data_dir / "mail").glob("*/tmp/*"))
        tmp_peak = max([tmp_peak, *(f.stat().st_size for f in files)])
        return _buffered(server)

    for body in (b"0123456789abcdefghijklmnopqrstuvwxyz" * 30 + b"\r\n", b"Y" * 65536):
        assert (await c.cmd("MAIL FROM:<alice@x.test>")).code == 250
        assert (await c.cmd("RCPT TO:<bob@x.test>")).code == 250
        assert (await c.cmd("DATA")).code == 354
        with Sampler(tmp_size) as sampler:
            sent = 0
            while sent < 8 * 1024 * 1024:  # 8 MiB, 128 times the limit
                await c.send(body * 16)
                sent += len(body) * 16
            await c.send(b"\r\n.\r\n")
            resp = await c.reply()
        assert (resp.code, resp.enh) == (552, "5.3.4"), resp
        assert sampler.peak <= 2 * 65536 + FRAMER_PARTIAL, sampler.peak
        assert tmp_peak <= limit + 4096, tmp_peak  # the Received header is extra
    assert (await c.cmd("MAIL FROM:<alice@x.test>")).code == 250
    assert (await c.cmd("RCPT TO:<bob@x.test>")).code == 250
    big = 4 * 1024 * 1024
    with Sampler(lambda: _buffered(server)) as sampler:
        await c.send(f"BDAT {big} LAST\r\n".encode())
        for _ in range(big // 65536):
            await c.send(b"B" * 65536)
        resp = await c.reply()
    assert (resp.code, resp.enh) == (552, "5.3.4"), resp
    assert sampler.peak <= 2 * 65536 * 4, sampler.peak
    assert messages(server) == []
    assert list((server.config.data_dir / "mail").glob("*/tmp/*")) == []
    assert (await c.cmd("NOOP")).code == 250


def _raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(target, soft), max(hard, target)))


async def test_1000_idle_connections_do_not_starve_a_new_client(running: ServerFactory) -> None:
    """1,000 idle clients hold sockets; a new client is still greeted and served within
    a second (the event loop never blocks on one client)."""
    _raise_fd_limit(4096)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft >= 2200, f"cannot raise RLIMIT_NOFILE (soft {soft})"
    server = await running(limits={"max_connections": 2000, "max_connections_per_ip": 2000,
                                   "command_timeout": 60})
    idle: list[Raw] = []
    try:
        for batch in range(10):
            idle += await asyncio.gather(*(
                Raw.open(addr(server), local=f"127.0.1.{batch + 1}") for _ in range(100)
            ))
        assert len(server.connections) == 1000
        start = time.monotonic()
        fresh = await Raw.open(addr(server), local="127.0.2.1")
        await fresh.ehlo()
        assert (await fresh.cmd("NOOP")).code == 250
        elapsed = time.monotonic() - start
        assert elapsed < 1.0, elapsed
        await fresh.close()
    finally:
        for client in idle:
            client.writer.close()


async def test_max_connections_and_per_ip_caps(running: ServerFactory) -> None:
    """SPEC section 3: over max_connections_per_ip or max_connections, 421 4.7.0 at
    connect and close; on the implicit-TLS port, a plain close. Slots are released."""
    server = await running(limits={"max_connections": 4, "max_connections_per_ip": 2})
    a1 = await Raw.open(addr(server), local="127.0.0.1")
    a2 = await Raw.open(addr(server), local="127.0.0.1")
    a3 = await Raw.open(addr(server), local="127.0.0.1", greet=False)
    resp = await a3.reply()
    assert (resp.code, resp.enh) == (421, "4.7.0"), resp
    assert await a3.closed(3) == b""
    b1 = await Raw.open(addr(server), local="127.0.0.2")
    b2 = await Raw.open(addr(server), local="127.0.0.3")
    c1 = await Raw.open(addr(server), local="127.0.0.4", greet=False)
    resp = await c1.reply()
    assert (resp.code, resp.enh) == (421, "4.7.0"), resp
    t1 = await Raw.open(addr(server, "implicit"), local="127.0.0.5", greet=False)
    assert await t1.closed(3) == b""  # no plaintext on a TLS port
    assert len(server.connections) == 4
    await a1.cmd("QUIT")
    await a1.closed(3)
    await asyncio.sleep(0.1)
    again = await Raw.open(addr(server), local="127.0.0.1")
    assert (await again.cmd("NOOP")).code == 250
    for client in (a2, b1, b2, again):
        await client.close()


async def test_too_many_errors_421(running: ServerFactory) -> None:
    """SPEC section 3 max_errors: the last protocol error is answered 421 4.7.0 and the
    connection closes; pipelined junk after it is never answered."""
    server = await running(limits={"max_errors": 3})
    c = await Raw.open(addr(server))
    await c.send("FOO\r\nMAIL FROM:<a@x.test>\r\n" + "BAR\r\n" * 50)
    assert (await c.reply()).code == 500
    assert (await c.reply()).code == 503  # MAIL before EHLO
    resp = await c.reply()
    assert (resp.code, resp.enh) == (421, "4.7.0"), resp
    assert await c.closed(3) == b""
    d = await Raw.open(addr(server))
    await d.ehlo()
    for _ in range(5):  # 530 is policy, not a protocol error: not counted
        assert (await d.cmd("MAIL FROM:<a@x.test>")).code == 530
    for _ in range(2):
        assert (await d.cmd("FROB")).code == 500
    resp = await d.cmd("FROB")
    assert resp.code == 421, resp
    await d.closed(3)


async def test_pipelining_flood_is_bounded(running: ServerFactory) -> None:
    """RFC 2920 section 3.1: a client that pipelines commands and never reads the
    replies must not make the server buffer replies without bound: the server stops
    reading when its send buffer is full (TCP back-pressure)."""
    server = await running(limits={"command_timeout": 2})
    c = await Raw.open(addr(server))
    await c.ehlo()
    flood = b"NOOP\r\n" * 10_000  # 60 KB of commands -> 160 KB of replies
    blocked = False
    transport = _conn(server).transport
    assert transport is not None
    with Sampler(transport.get_write_buffer_size) as sampler:
        for _ in range(400):  # at most 24 MB sent, bounded in time by the drain timeout
            c.writer.write(flood)
            try:
                await asyncio.wait_for(c.writer.drain(), 1.0)
            except TimeoutError:
                blocked = True  # the server stopped reading: back-pressure works
                break
    assert sampler.peak < 4 * 1024 * 1024, f"server send buffer reached {sampler.peak} bytes"
    assert blocked, "the server read 24 MB of commands without the client reading a reply"
    # a client that never reads is cut off at command_timeout and its socket is
    # released, even though replies are still queued for it
    for _ in range(80):
        if not server.connections:
            break
        await asyncio.sleep(0.1)
    assert not server.connections, "a non-reading client kept its connection slot"
    c.writer.transport.abort()


async def _drip(c: Raw, data: bytes, every: float) -> None:
    """Send ``data`` in small pieces, each well within data_timeout of the last."""
    for start in range(0, len(data), 4):
        with contextlib.suppress(OSError):
            await c.send(data[start : start + 4])
        await asyncio.sleep(every)


async def _bdat(c: Raw, chunk: bytes) -> Resp:
    await c.send(b"BDAT %d\r\n%s" % (len(chunk), chunk))
    return await c.reply()


async def test_max_data_time_ends_a_dripping_data_transfer(running: ServerFactory) -> None:
    """SPEC [limits] max_data_time: reads keep resetting data_timeout, but the whole
    DATA transfer must end within max_data_time: 421 4.4.2, close, nothing stored."""
    server = await running(**merge(PLAIN_OK, {"limits": {"data_timeout": 5,
                                                         "max_data_time": 1.0}}))
    c = await authed(server)
    assert (await c.cmd("MAIL FROM:<alice@x.test>")).code == 250
    assert (await c.cmd("RCPT TO:<bob@x.test>")).code == 250
    assert (await c.cmd("DATA")).code == 354
    start = time.monotonic()
    dripper = asyncio.get_running_loop().create_task(_drip(c, b"Subject: x\r\n\r\n" * 20, 0.1))
    got = await c.closed(6)
    elapsed = time.monotonic() - start
    dripper.cancel()
    assert got.startswith(b"421 4.4.2"), got
    assert 0.9 < elapsed < 4.0, elapsed
    assert messages(server) == []
    assert list((server.config.data_dir / "mail").glob("*/tmp/*")) == []


async def test_max_data_time_spans_every_bdat_chunk(running: ServerFactory) -> None:
    """RFC 3030: a BDAT transfer is all its chunks; quick chunks sent slowly, with
    commands in between, still end at max_data_time. A new transaction starts afresh."""
    server = await running(**merge(PLAIN_OK, {"limits": {"max_data_time": 1.0}}))
    c = await authed(server)
    assert (await c.cmd("MAIL FROM:<alice@x.test>")).code == 250
    assert (await c.cmd("RCPT TO:<bob@x.test>")).code == 250
    assert (await _bdat(c, b"ab\r\n")).code == 250  # a quick, complete message ...
    assert (await c.cmd("BDAT 0 LAST")).code == 250
    await asyncio.sleep(0.7)  # ... then a second one, whose clock starts at its first chunk
    assert (await c.cmd("MAIL FROM:<alice@x.test>")).code == 250
    assert (await c.cmd("RCPT TO:<bob@x.test>")).code == 250
    start = time.monotonic()
    with contextlib.suppress(ConnectionError):
        for _ in range(30):
            resp = await _bdat(c, b"abcd")
            if resp.code != 250:
                break
            assert (await c.cmd("NOOP")).code == 250
            await asyncio.sleep(0.2)
    elapsed = time.monotonic() - start
    assert (resp.code, resp.enh) == (421, "4.4.2"), resp
    assert 0.9 < elapsed < 4.0, elapsed
    assert await c.closed(3) == b""
    assert len(messages(server)) == 1  # the first message only


async def test_rset_between_bdat_chunks_stops_the_transfer_clock(running: ServerFactory) -> None:
    """After RSET the message is gone: max_data_time no longer applies to the session."""
    server = await running(**merge(PLAIN_OK, {"limits": {"max_data_time": 0.5}}))
    c = await authed(server)
    assert (await c.cmd("MAIL FROM:<alice@x.test>")).code == 250
    assert (await c.cmd("RCPT TO:<bob@x.test>")).code == 250
    assert (await _bdat(c, b"abcd")).code == 250
    assert (await c.cmd("RSET")).code == 250
    await asyncio.sleep(1.0)
    assert (await c.cmd("NOOP")).code == 250
    assert messages(server) == []
    assert list((server.config.data_dir / "mail").glob("*/tmp/*")) == []

"""The host's side of the delivery contract (``server/transaction.py``) over real sockets.

Queue ids (reply, Received header, log), recipients refused at their own RCPT,
and where each call of a blocking target runs: ``start``, the first write and
``commit`` in a worker thread, body writes on the event loop.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from smtpgate.delivery.base import Envelope
from smtpgate.delivery.discard import DiscardDelivery, DiscardTarget
from smtpgate.delivery.maildir import MaildirTarget
from smtpgate.protocol import replies as r
from smtpgate.protocol.replies import Reply
from smtpgate.server.app import Server
from tests.attacks.raw import PLAIN_OK, Raw, authed
from tests.e2e.conftest import create_user, make_config

QUEUED = re.compile(r"Ok: queued as ([A-Za-z0-9]+)$")


class RecordingDelivery(DiscardDelivery):
    def __init__(self, calls: list[tuple[str, bool]]) -> None:
        super().__init__()
        self.calls = calls

    def write(self, data: bytes) -> None:
        self.calls.append(("header" if data.startswith(b"Received:") else "body", _on_loop()))
        super().write(data)

    def commit(self) -> None:
        self.calls.append(("commit", _on_loop()))
        super().commit()


class RecordingTarget(DiscardTarget):
    """Records on which thread each call runs; refuses recipients at nowhere.test."""

    def __init__(self, blocking: bool) -> None:
        self.blocking = blocking
        self.calls: list[tuple[str, bool]] = []

    def check_recipient(self, address: str, *, may_relay: bool) -> Reply | None:
        self.calls.append(("rcpt", _on_loop()))
        return r.MAILBOX_NOT_ALLOWED if address.endswith("@nowhere.test") else None

    def start(self, envelope: Envelope) -> DiscardDelivery:
        self.calls.append(("start", _on_loop()))
        return RecordingDelivery(self.calls)


def _on_loop() -> bool:
    return threading.current_thread() is threading.main_thread()


async def _serve(tmp_path: Path, target: object) -> Server:
    config = make_config(tmp_path, **PLAIN_OK)
    await create_user(config)
    server = Server(config, delivery=target)  # type: ignore[arg-type]
    await server.start()
    return server


@pytest.fixture
async def stopping() -> AsyncIterator[list[Server]]:
    servers: list[Server] = []
    yield servers
    for server in servers:
        await server.stop(grace=1.0)


async def send(client: Raw, *recipients: str) -> list[str]:
    """MAIL, each RCPT, DATA with a two-line body; every reply as "code enh text"."""
    replies = [await client.cmd("MAIL FROM:<alice@example.org>")]
    replies += [await client.cmd(f"RCPT TO:<{rcpt}>") for rcpt in recipients]
    replies.append(await client.cmd("DATA"))
    replies.append(await client.cmd("Subject: hi\r\n\r\nbody\r\n."))
    return [f"{resp.code} {resp.enh} {resp.lines[-1].split(' ', 1)[1]}" for resp in replies]


async def test_queue_id_in_reply_received_header_and_every_log_line(
    tmp_path: Path, stopping: list[Server], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    config = make_config(tmp_path, **PLAIN_OK)
    await create_user(config)
    server = Server(config)  # Maildir
    await server.start()
    stopping.append(server)
    client = await authed(server)
    ids = []
    for _ in range(2):
        last = (await send(client, "bob@example.org"))[-1]
        assert last.startswith("250 2.0.0 Ok: queued as "), last
        match = QUEUED.search(last)
        assert match is not None
        ids.append(match.group(1))
    await client.close()
    assert len(set(ids)) == 2
    stored = sorted((config.data_dir / "mail" / "bob@example.org" / "new").iterdir())
    header_ids = [re.findall(rb" id ([A-Za-z0-9]+)", path.read_bytes()) for path in stored]
    assert sorted(ids) == sorted(found[0].decode() for found in header_ids)
    for queue_id in ids:
        lines = [rec.getMessage() for rec in caplog.records if queue_id in rec.getMessage()]
        assert any("message accepted" in line for line in lines), lines


@pytest.mark.parametrize("blocking", [True, False])
async def test_where_each_delivery_call_runs(tmp_path: Path, stopping: list[Server],
                                             blocking: bool) -> None:
    target = RecordingTarget(blocking)
    server = await _serve(tmp_path, target)
    stopping.append(server)
    client = await authed(server)
    assert (await send(client, "bob@example.org"))[-1].startswith("250 2.0.0")
    await client.close()
    off_loop = not blocking
    assert target.calls == [("rcpt", True), ("start", off_loop), ("header", off_loop),
                            ("body", True), ("commit", off_loop)]


async def test_an_undeliverable_recipient_is_refused_at_its_rcpt(
    tmp_path: Path, stopping: list[Server]
) -> None:
    server = await _serve(tmp_path, RecordingTarget(blocking=True))
    stopping.append(server)
    client = await authed(server)
    replies = await send(client, "bob@example.org", "ghost@nowhere.test", "carol@example.org")
    # MAIL, RCPT bob, RCPT ghost (refused at once), RCPT carol, DATA, end of data
    assert [reply.split()[0] for reply in replies] == ["250", "250", "553", "250", "354", "250"]
    assert replies[2].startswith("553 5.1.3")
    await client.close()


async def test_maildir_target_still_delivers(tmp_path: Path, stopping: list[Server]) -> None:
    """The blocking path end to end on the real Maildir target."""
    config = make_config(tmp_path, **PLAIN_OK)
    await create_user(config)
    server = Server(config, delivery=MaildirTarget(config.data_dir / "mail"))
    await server.start()
    stopping.append(server)
    client = await authed(server)
    assert (await send(client, "bob@example.org", "carol@example.org"))[-1].startswith("250")
    await client.close()
    for rcpt in ("bob@example.org", "carol@example.org"):
        assert len(list((config.data_dir / "mail" / rcpt / "new").iterdir())) == 1

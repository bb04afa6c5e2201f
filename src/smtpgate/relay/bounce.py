"""Sending a DSN (``relay.dsn``) to a queued message's sender, durably.

The report goes into the sender's Maildir when the sender's domain is in
``local_domains`` (through the Maildir target, fsynced like any local
message), else into the queue as a new entry with the null sender (RFC
5321 section 4.5.5), to leave through the relay like any other message.
Either way it is durable before the caller removes the original entry, so a
crash in between can at worst send the sender two reports, never none.
The caller never asks for a report about a message whose sender is null.
"""

from __future__ import annotations

from smtpgate.delivery.base import Envelope
from smtpgate.relay.dsn import build_dsn
from smtpgate.relay.entry import QueueEntry, Recipient
from smtpgate.relay.queue import QueueStore, new_queue_id
from smtpgate.relay.target import RelayTarget


def send_dsn(
    store: QueueStore, target: RelayTarget, entry: QueueEntry, recipients: list[Recipient],
    action: str, *, hostname: str, now: float,
) -> tuple[str, bool]:
    """Store the report; (its id, True when it was queued for the relay)."""
    original = store.read_message(entry.id)
    report = build_dsn(entry, recipients, action, reporting_mta=hostname, original=original,
                       now=now)
    dsn_id = new_queue_id()
    sender = entry.mail_from
    if target.is_local(sender):
        envelope = Envelope(
            session_id="relay", peer="", helo=hostname, esmtp=True, tls=False,
            authenticated_user=None, mail_from="", recipients=(sender,), received_at=now,
            queue_id=dsn_id,
        )
        delivery = target.maildir.start(envelope)
        delivery.write(report)
        delivery.commit()
        return dsn_id, False
    dsn = QueueEntry(id=dsn_id, mail_from="", recipients=[Recipient(sender)], received_at=now,
                     next_attempt=now)
    writer = store.writer(dsn)
    writer.write(report)
    writer.commit()
    return dsn_id, True

"""The relay delivery target: local domains to Maildir, everything else into the queue.

Theory of operation
-------------------
``check_recipient`` (at each RCPT, no I/O): a recipient in ``[delivery]
local_domains`` is accepted when the Maildir target accepts it; any other
only when the session may relay (authenticated), else ``554 5.7.1 Relay
access denied``, so smtpgate is never an open relay.

``start`` splits the envelope per recipient: local ones into a
``MaildirDelivery`` (the existing Maildir target), the others into a
``QueueWriter`` under ``<data_dir>/queue/`` named by the server's queue id.
Every ``write`` goes to both. ``commit`` commits the queue part first and
then the Maildir part; if the Maildir part fails, the just-published queue
entry is removed again, so the client's retry does not relay twice. After a
commit the deliverer is told (``on_queued``), so a new message leaves at
once instead of at the next scan.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from smtpgate.delivery.base import Delivery, DeliveryError, Envelope
from smtpgate.delivery.maildir import MaildirTarget
from smtpgate.protocol.replies import Reply
from smtpgate.relay.entry import QueueEntry, Recipient
from smtpgate.relay.queue import QueueStore, QueueWriter, new_queue_id, valid_id

RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


class RelayTarget:
    """A ``DeliveryTarget`` for ``[delivery] mode = "relay"``."""

    blocking = True  # fsync in start/commit

    def __init__(
        self, store: QueueStore, maildir: MaildirTarget, local_domains: tuple[str, ...]
    ) -> None:
        self.store = store
        self.maildir = maildir
        self.local_domains = frozenset(local_domains)
        self.on_queued: Callable[[str], None] | None = None  # set by the deliverer

    def is_local(self, address: str) -> bool:
        return "@" in address and domain_of(address) in self.local_domains

    def check_recipient(self, address: str, *, may_relay: bool) -> Reply | None:
        if self.is_local(address):
            return self.maildir.check_recipient(address, may_relay=may_relay)
        return None if may_relay else RELAY_DENIED

    def start(self, envelope: Envelope) -> RelayDelivery:
        local = tuple(r for r in envelope.recipients if self.is_local(r))
        remote = [r for r in envelope.recipients if not self.is_local(r)]
        mailbox = self.maildir.start(replace(envelope, recipients=local)) if local else None
        try:
            queued = self._writer(envelope, remote) if remote else None
        except DeliveryError:
            if mailbox is not None:
                mailbox.abort()
            raise
        return RelayDelivery(mailbox, queued, self._queued)

    def _writer(self, envelope: Envelope, remote: list[str]) -> QueueWriter:
        queue_id = envelope.queue_id if valid_id(envelope.queue_id) else new_queue_id()
        now = time.time()
        notify = dict(zip(envelope.recipients, envelope.notify, strict=False))
        orcpt = dict(zip(envelope.recipients, envelope.orcpt, strict=False))
        entry = QueueEntry(
            id=queue_id,
            mail_from=envelope.mail_from,
            recipients=[Recipient(r, notify=notify.get(r) or "", orcpt=orcpt.get(r) or "")
                        for r in dict.fromkeys(remote)],
            received_at=envelope.received_at or now,
            authenticated_user=envelope.authenticated_user,
            peer=envelope.peer,
            next_attempt=now,
            extra=dict(envelope.extra),
            ret=envelope.ret or "",
            envid=envelope.envid or "",
        )
        writer = self.store.writer(entry)
        writer.open()
        return writer

    def _queued(self, queue_id: str) -> None:
        if self.on_queued is not None:
            self.on_queued(queue_id)


class RelayDelivery:
    """One message going to a Maildir part, a queue part, or both."""

    def __init__(
        self, mailbox: Delivery | None, queued: QueueWriter | None, notify: Callable[[str], None]
    ) -> None:
        self._mailbox = mailbox
        self._queued = queued
        self._notify = notify

    def write(self, data: bytes) -> None:
        if self._queued is not None:
            self._queued.write(data)
        if self._mailbox is not None:
            self._mailbox.write(data)

    def commit(self) -> None:
        if self._queued is not None:
            try:
                self._queued.commit()
            except DeliveryError:
                if self._mailbox is not None:
                    self._mailbox.abort()  # its tmp file must not stay behind
                raise
        if self._mailbox is not None:
            try:
                self._mailbox.commit()
            except DeliveryError:
                if self._queued is not None:
                    self._queued.abort()  # all or nothing: no relay without the local part
                raise
        if self._queued is not None:
            self._notify(self._queued.entry.id)

    def abort(self) -> None:
        if self._queued is not None:
            self._queued.abort()
        if self._mailbox is not None:
            self._mailbox.abort()

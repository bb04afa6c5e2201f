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
Every ``write`` goes to both. The commit is one group commit job
(``delivery.groupcommit``) made of both parts' steps, the queue part's
first: both are flushed, renamed and flushed again together, and if either
fails both are removed (a published queue entry too), so the client's retry
does not relay twice. After a commit the deliverer is told (``on_queued``),
so a new message leaves at once instead of at the next scan; when it takes
hand-overs (``on_handover``, ``relay.queue.Handover``) it is given the
entry and the message bytes too, so it need not read them back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

from smtpgate.delivery.base import DeliveryError, Envelope, InFlow
from smtpgate.delivery.groupcommit import Staged, committer
from smtpgate.delivery.maildir import MaildirDelivery, MaildirTarget
from smtpgate.protocol.replies import Reply
from smtpgate.relay.entry import QueueEntry, Recipient
from smtpgate.relay.queue import Handover, QueueStore, QueueWriter, new_queue_id, valid_id

RELAY_DENIED = Reply(554, "5.7.1", "Relay access denied")


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


class RelayTarget:
    """A ``DeliveryTarget`` for ``[delivery] mode = "relay"``."""

    blocking = False  # start() and write() touch no disk (``delivery.spool``)
    group_commit = True  # commit_soon (``delivery.groupcommit``)

    def __init__(
        self, store: QueueStore, maildir: MaildirTarget, local_domains: tuple[str, ...]
    ) -> None:
        self.store = store
        self.maildir = maildir
        self.local_domains = frozenset(local_domains)
        self.on_queued: Callable[[str], None] | None = None  # set by the deliverer
        self.on_handover: Callable[[Handover], None] | None = None  # or this, preferred
        self.in_flow: InFlow | None = None  # the deliverer, while it runs (in_flow_delay)

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
        return self.store.writer(entry)

    def _queued(self, writer: QueueWriter) -> None:
        """A commit has settled (in the committer thread): tell the deliverer."""
        handover = writer.handover()  # taken even if unused: the writer lets go of the bytes
        if handover is not None and self.on_handover is not None:
            self.on_handover(handover)
        elif self.on_queued is not None:
            self.on_queued(writer.entry.id)


class RelayDelivery:
    """One message going to a Maildir part, a queue part, or both: one group commit job
    whose steps are its parts' (the queue part first), so both or neither are stored."""

    def __init__(
        self, mailbox: MaildirDelivery | None, queued: QueueWriter | None,
        notify: Callable[[QueueWriter], None],
    ) -> None:
        self._parts: list[MaildirDelivery | QueueWriter] = [
            part for part in (queued, mailbox) if part is not None
        ]
        self._queued = queued
        self._notify = notify

    def write(self, data: bytes) -> None:
        for part in self._parts:
            part.write(data)

    def commit(self) -> None:
        committer().commit(self)

    def commit_soon(self, done: Callable[[DeliveryError | None], None]) -> None:
        committer().submit(self, done)

    def stage(self) -> Staged:
        fds: list[int] = []
        folders: list[str] = []
        for part in self._parts:
            more_fds, more_folders = part.stage()
            fds += more_fds
            folders += more_folders
        return fds, folders

    def publish(self) -> list[str]:
        return [folder for part in self._parts for folder in part.publish()]

    def settle(self, error: OSError | None) -> DeliveryError | None:
        """Both parts settle alike: on ``error`` both are removed, the queued one too."""
        failures = [part.settle(error) for part in self._parts]
        failure = next((f for f in failures if f is not None), None)
        if failure is None and self._queued is not None:
            self._notify(self._queued)
        return failure

    def abort(self) -> None:
        for part in self._parts:
            part.abort()

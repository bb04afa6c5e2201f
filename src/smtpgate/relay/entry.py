"""One queued message's envelope and delivery state, and its JSON form.

A queue entry lives in ``<data_dir>/queue/``: ``<ID>.msg`` holds the
message exactly as accepted (Received header first) followed by this record
as it was at acceptance; once the record changes it is kept in ``<ID>.json``
beside it, which supersedes the first (``relay.queue``).

Each recipient carries its own status: ``pending`` (still to try),
``delivered`` (the upstream accepted it) or ``failed`` (a 5xx, or the queue
lifetime ran out); ``reply`` keeps the last upstream reply for it, which
becomes the DSN's Diagnostic-Code. ``parse`` refuses anything that is not a
record this version wrote (``CorruptEntry``), so the deliverer can move such
a file aside instead of guessing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any, Literal

VERSION = 1
Status = Literal["pending", "delivered", "failed"]
STATUSES = ("pending", "delivered", "failed")


class CorruptEntry(ValueError):
    """A queue file this version cannot read; the reason is one line."""


@dataclass(slots=True)
class Recipient:
    address: str
    status: Status = "pending"
    reply: str = ""  # the last upstream reply for this recipient, "550 5.1.1 ..."
    remote_mta: str = ""  # the host that gave it
    notify: str = ""  # RFC 3461 NOTIFY: "" (not given), "NEVER" or e.g. "FAILURE,DELAY"
    orcpt: str = ""  # RFC 3461 ORCPT, "rfc822;addr" decoded from xtext; "" if not given


@dataclass(slots=True)
class QueueEntry:
    id: str
    mail_from: str  # "" for a bounce (null reverse-path): never bounced itself
    recipients: list[Recipient]
    received_at: float
    size: int = 0
    authenticated_user: str | None = None
    peer: str = ""
    attempts: int = 0
    next_attempt: float = 0.0
    last_error: str = ""
    held: bool = False
    delay_warned: bool = False
    ret: str = ""  # RFC 3461 RET: "FULL", "HDRS" or "" (not given: headers only)
    envid: str = ""  # RFC 3461 ENVID, decoded from xtext
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.status == "pending"]

    @property
    def failed(self) -> list[Recipient]:
        return [r for r in self.recipients if r.status == "failed"]

    def due(self, now: float) -> bool:
        """Whether the deliverer sends it now (held, done or scheduled later: not)."""
        return not self.held and bool(self.pending) and self.next_attempt <= now + 1.0

    @property
    def state(self) -> str:
        """``held``, ``deferred`` (tried before), ``queued`` (never tried) or ``done``."""
        if not self.pending:
            return "done"
        if self.held:
            return "held"
        return "deferred" if self.attempts else "queued"

    def to_json(self) -> bytes:
        # Shallow copies by hand: dataclasses.asdict deep-copies every value, which cost
        # more than the rest of queueing a small message. Values are str/int/float/bool.
        record: dict[str, Any] = {"version": VERSION}
        record.update((name, getattr(self, name)) for name in _ENTRY_FIELDS)
        record["recipients"] = [
            {name: getattr(r, name) for name in _RECIPIENT_FIELDS} for r in self.recipients
        ]
        record["extra"] = dict(self.extra)
        # One line: json's C encoder (an indent would select its pure-Python one).
        text = json.dumps(record, ensure_ascii=True)
        return text.encode("ascii") + b"\n"


_ENTRY_FIELDS = tuple(f.name for f in fields(QueueEntry))
_RECIPIENT_FIELDS = tuple(f.name for f in fields(Recipient))


def parse(data: bytes, expected_id: str) -> QueueEntry:
    """The entry in ``data``; ``CorruptEntry`` unless it is a well-formed record for the id."""
    try:
        record = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptEntry(f"not JSON: {exc}") from None
    if not isinstance(record, dict) or record.pop("version", None) != VERSION:
        raise CorruptEntry("not a version 1 queue record")
    try:
        recipients = [_recipient(r) for r in record.pop("recipients")]
        entry = QueueEntry(recipients=recipients, **record)
    except (KeyError, TypeError) as exc:
        raise CorruptEntry(f"missing or unknown field: {exc}") from None
    _check_types(entry, expected_id)
    return entry


def _recipient(value: Any) -> Recipient:
    if not isinstance(value, dict):
        raise TypeError("recipient is not an object")
    recipient = Recipient(**value)
    texts = (recipient.address, recipient.notify, recipient.orcpt)
    if recipient.status not in STATUSES or not all(isinstance(t, str) for t in texts):
        raise TypeError(f"bad recipient {recipient.address!r}")
    return recipient


def _check_types(entry: QueueEntry, expected_id: str) -> None:
    checks = [
        (entry.id == expected_id, "id does not match the file name"),
        (isinstance(entry.mail_from, str), "mail_from"),
        (bool(entry.recipients), "no recipients"),
        (isinstance(entry.received_at, int | float), "received_at"),
        (isinstance(entry.next_attempt, int | float), "next_attempt"),
        (isinstance(entry.attempts, int), "attempts"),
        (isinstance(entry.held, bool), "held"),
        (isinstance(entry.extra, dict), "extra"),
        (entry.ret in ("", "FULL", "HDRS") and isinstance(entry.envid, str), "ret/envid"),
    ]
    for ok, what in checks:
        if not ok:
            raise CorruptEntry(f"bad field: {what}")

"""The envelope log beside each Maildir: who sent each message, how, and to whom there.

Theory of operation
-------------------
A message's headers do not say who authenticated, what MAIL FROM and AUTH=
were, or which recipients of the envelope this Maildir stands for; the
envelope log does, one JSON object per line (ASCII, ``\\n``-terminated),
in ``<maildir>/smtpgate-envelope/<YYYY-MM-DD>.jsonl`` named by the UTC day
the message was received. Its ``message`` field is the message's file name
in ``new/`` (and later ``cur/``, where a reader appends ``:2,`` flags).

It is a log rather than a file per message because creating a file is the
most expensive step of a small delivery: a line costs an append to a file
that exists already. Every worker appends with ``O_APPEND`` and one
``write`` per line, which the kernel does atomically for a local file, so
lines of several processes never mix. The line is written before the
message is renamed into ``new/`` and is flushed with the message file, so an
acknowledged message always has its line. A line whose message is in
neither ``new/`` nor ``cur/`` belongs to a message that was never
acknowledged (a crash or a failed commit) or that the user has deleted.
smtpgate never rewrites or deletes these files; expire them with the mail.

Privacy: a line lists only the recipients stored in that Maildir, never the
others (Bcc recipients stay private), and no header ever carries the AUTH=
value, the client's claim kept only so that a relay can pass it on (RFC 4954
section 5).
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from smtpgate.delivery.base import Envelope

ENVELOPE_DIR = "smtpgate-envelope"
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


def envelope_line(envelope: Envelope, recipients: list[str], unique: str) -> bytes:
    """The envelope of one message for one Maildir, as one line of JSON."""
    received = datetime.fromtimestamp(envelope.received_at, tz=UTC)
    record = {
        "version": 1,
        "message": unique,
        "queue_id": envelope.queue_id,
        "session_id": envelope.session_id,
        "peer": envelope.peer,
        "helo": envelope.helo,
        "esmtp": envelope.esmtp,
        "tls": envelope.tls,
        "authenticated_user": envelope.authenticated_user,
        "trusted_network": envelope.trusted_network,
        "mail_from": envelope.mail_from,
        "auth_param": envelope.auth_param,
        "body": envelope.body,
        "smtputf8": envelope.smtputf8,
        "recipients": recipients,
        "received_at": envelope.received_at,
        "received_at_utc": received.isoformat(),
        "extra": dict(envelope.extra),
    }
    # One line: json's C encoder (an indent would select its pure-Python one).
    # Key order as above: the message's name first, where a reader's eye (or grep) starts.
    text = json.dumps(record, ensure_ascii=True)
    return text.encode("ascii") + b"\n"


def log_name(received_at: float) -> str:
    """``<YYYY-MM-DD>.jsonl``, the UTC day of ``received_at``."""
    return datetime.fromtimestamp(received_at, tz=UTC).strftime("%Y-%m-%d.jsonl")


def append_line(maildir: str, name: str, line: bytes) -> int:
    """Append ``line`` to ``<maildir>/smtpgate-envelope/<name>`` (made 0600 on demand, its
    folder 0700); the open descriptor, for the caller to flush and close."""
    path = f"{maildir}/{ENVELOPE_DIR}/{name}"
    try:
        fd = os.open(path, _APPEND, 0o600)
    except FileNotFoundError:
        with contextlib.suppress(FileExistsError):
            os.mkdir(f"{maildir}/{ENVELOPE_DIR}", 0o700)
        fd = os.open(path, _APPEND, 0o600)
    try:
        if os.write(fd, line) != len(line):  # one write: appenders never interleave
            raise OSError(f"short write to {path}")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_envelopes(maildir: Path) -> list[dict[str, Any]]:
    """Every envelope logged for ``maildir``, oldest day first."""
    records: list[dict[str, Any]] = []
    for path in sorted((maildir / ENVELOPE_DIR).glob("*.jsonl")):
        records += [json.loads(line) for line in path.read_bytes().splitlines() if line]
    return records


def find_envelope(maildir: Path, message: str) -> dict[str, Any] | None:
    """The envelope of the message stored as ``message`` (``:2,`` flags ignored)."""
    unique = message.split(":", 1)[0]
    return next((r for r in read_envelopes(maildir) if r.get("message") == unique), None)

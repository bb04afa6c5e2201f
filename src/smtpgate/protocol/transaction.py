"""One mail transaction (RFC 5321 section 3.3): MAIL, RCPT..., then DATA or BDAT.

The session keeps the transaction in one object and a reset (RSET, EHLO,
the end of a message, a refused first BDAT chunk) replaces it: nothing of a
finished transaction can leak into the next. The host reads ``sender``,
``recipients`` and ``params``; the session's ``state`` is derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smtpgate.protocol.replies import Reply


@dataclass(slots=True)
class Transaction:
    sender: str | None = None  # the reverse-path once MAIL is accepted; "" is the null sender
    params: dict[str, str | None] = field(default_factory=dict)  # MAIL's, AUTH= decoded
    recipients: list[str] = field(default_factory=list)  # accepted RCPTs, in order
    rcpt_params: list[dict[str, str | None]] = field(default_factory=list)  # each RCPT's
    chunked: bool = False  # a BDAT chunk was accepted: DATA is refused (RFC 3030 section 3)
    size: int = 0  # message octets received so far (unstuffed)
    rejection: Reply | None = None  # the message will be refused with this at its end

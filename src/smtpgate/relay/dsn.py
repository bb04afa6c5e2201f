"""Delivery status notifications: RFC 3464 reports for the envelope sender.

``build_dsn`` returns a complete message (bytes, CRLF line ends)::

    multipart/report; report-type=delivery-status
      1. text/plain           what happened, for people
      2. message/delivery-status
           per message:   Reporting-MTA, Original-Envelope-Id (ENVID), Arrival-Date
                          (RFC 3464 section 2.2)
           per recipient: Original-Recipient (ORCPT), Final-Recipient, Action
                          (failed | delayed), Status, Remote-MTA and
                          Diagnostic-Code when the upstream replied,
                          Last-Attempt-Date (section 2.3)
      3. text/rfc822-headers  the original header (RET=HDRS or no RET), or
         message/rfc822       the whole original (RET=FULL, RFC 3461 section 4.3)

A report that names a non-ASCII address (RFC 6531) is a global one (RFC 6533
section 6): ``report-type=global-delivery-status``, its status part
``message/global-delivery-status``, such a recipient's Final-Recipient of
address type ``utf-8``, the text part in UTF-8.

RFC 3461 NOTIFY (``wants_report``): NEVER asks for no report; a list asks
only for the events it names; none at all means failure and delay reports.
When the smarthost offers DSN, the parameters go upstream with the message
(``upstream_options``), so the final MTA can honour them too.

It is sent with the null reverse-path (``MAIL FROM:<>``, RFC 5321 section
4.5.5), and the deliverer never bounces a message whose sender is already
null, so two servers can never bounce to each other for ever.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate, make_msgid

from smtpgate.protocol.commands import encode_xtext
from smtpgate.relay.entry import QueueEntry, Recipient

_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}")
_REPLY = re.compile(r"[2-5]\d\d")
MAX_HEADER = 64 * 1024


def status_code(recipient: Recipient, action: str) -> str:
    """The RFC 3463 status: the reply's enhanced code, else from its class; no reply: 4.4.7
    (delivery time expired) or, for a delay notice, 4.4.1 (no answer from host)."""
    code, _, text = recipient.reply.partition(" ")
    found = _STATUS.match(text)
    if found:
        return found.group(0)
    if _REPLY.fullmatch(code):
        return f"{code[0]}.0.0"
    return "4.4.1" if action == "delayed" else "4.4.7"


def diagnostic(recipient: Recipient) -> str | None:
    """The Diagnostic-Code (an upstream SMTP reply), if there was one."""
    code = recipient.reply[:3]
    return _one_line(recipient.reply) if _REPLY.fullmatch(code) else None


_NOTIFY_WORD = {"failed": "FAILURE", "delayed": "DELAY"}


def wants_report(recipient: Recipient, action: str) -> bool:
    """Whether the recipient's NOTIFY (RFC 3461 section 4.1) asks for this report."""
    if not recipient.notify:
        return True  # no NOTIFY: failure and delay reports, as RFC 3461 allows
    return _NOTIFY_WORD[action] in recipient.notify.split(",")


def upstream_options(entry: QueueEntry) -> tuple[list[str], dict[str, list[str]]]:
    """MAIL FROM and per-recipient RCPT TO parameters that pass the DSN request on."""
    mail = [f"RET={entry.ret}"] if entry.ret else []
    if entry.envid:
        mail.append(f"ENVID={encode_xtext(entry.envid)}")
    rcpt: dict[str, list[str]] = {}
    for recipient in entry.recipients:
        options = [f"NOTIFY={recipient.notify}"] if recipient.notify else []
        if recipient.orcpt:
            addr_type, _, address = recipient.orcpt.partition(";")
            options.append(f"ORCPT={addr_type};{encode_xtext(address)}")
        rcpt[recipient.address] = options
    return mail, rcpt


def build_dsn(
    entry: QueueEntry, recipients: list[Recipient], action: str, *,
    reporting_mta: str, original: bytes, now: float,
) -> bytes:
    boundary = f"=_smtpgate_{secrets.token_hex(12)}"
    utf8 = not (entry.mail_from.isascii() and all(r.address.isascii() for r in recipients))
    report = "global-delivery-status" if utf8 else "delivery-status"
    headers = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{entry.mail_from}>",
        f"Subject: {_subject(action)}",
        f"Date: {formatdate(now, localtime=False)}",
        f"Message-ID: {make_msgid(domain=reporting_mta)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type={report}; boundary="{boundary}"',
    ]
    parts = [
        (f"text/plain; charset={'utf-8' if utf8 else 'us-ascii'}",
         _human(entry, recipients, action, reporting_mta)),
        (f"message/{report}", _status(entry, recipients, action, reporting_mta, now)),
    ]
    lines = [*headers, "", "This is a MIME-encapsulated delivery status report.", ""]
    for content_type, body in parts:
        lines += [f"--{boundary}", f"Content-Type: {content_type}", "", body]
    if entry.ret == "FULL":
        returned = _crlf(original)  # bytes as accepted: 8-bit text stays as it was
        lines += [f"--{boundary}", "Content-Type: message/rfc822", "", ""]
    else:
        returned = b""
        lines += [f"--{boundary}", "Content-Type: text/rfc822-headers", "",
                  _original_header(original)]
    head = "\r\n".join(lines).encode("utf-8", "replace")
    return head + returned + f"\r\n--{boundary}--\r\n".encode()


def _subject(action: str) -> str:
    if action == "delayed":
        return "Delivery delayed: still trying"
    return "Undelivered Mail Returned to Sender"


def _human(entry: QueueEntry, recipients: list[Recipient], action: str, mta: str) -> str:
    if action == "delayed":
        intro = (f"This is the mail system at {mta}. Your message (queue id {entry.id}) has not "
                 "been delivered yet to the recipients below; it will be tried again.")
    else:
        intro = (f"This is the mail system at {mta}. Your message (queue id {entry.id}) could "
                 "not be delivered to the recipients below.")
    lines = [intro, ""]
    if "expired" in entry.extra:
        lines += [f"The delivery time expired: {entry.extra['expired']} of retries.", ""]
    for recipient in recipients:
        lines.append(f"<{recipient.address}>: {recipient.reply or entry.last_error or '-'}")
    return "\r\n".join(lines) + "\r\n"


def _status(
    entry: QueueEntry, recipients: list[Recipient], action: str, mta: str, now: float
) -> str:
    arrival = format_datetime(datetime.fromtimestamp(entry.received_at, tz=UTC))
    envid = f"Original-Envelope-Id: {entry.envid}\r\n" if entry.envid else ""
    blocks = [f"Reporting-MTA: dns; {mta}\r\n{envid}X-Smtpgate-Queue-ID: {entry.id}\r\n"
              f"Arrival-Date: {arrival}\r\n"]
    last = format_datetime(datetime.fromtimestamp(now, tz=UTC))
    for recipient in recipients:
        fields = []
        if recipient.orcpt:
            addr_type, _, address = recipient.orcpt.partition(";")
            fields.append(f"Original-Recipient: {addr_type}; {address}")
        fields += [
            f"Final-Recipient: {_address_type(recipient.address)}; {recipient.address}",
            f"Action: {action}",
            f"Status: {status_code(recipient, action)}",
        ]
        if recipient.remote_mta:
            fields.append(f"Remote-MTA: dns; {recipient.remote_mta}")
        code = diagnostic(recipient)
        if code:
            fields.append(f"Diagnostic-Code: smtp; {code}")
        fields.append(f"Last-Attempt-Date: {last}")
        blocks.append("\r\n".join(fields) + "\r\n")
    return "\r\n".join(blocks)


def _address_type(address: str) -> str:
    """RFC 3464's ``rfc822``, or RFC 6533's ``utf-8`` for an address that is not ASCII."""
    return "rfc822" if address.isascii() else "utf-8"


def _original_header(original: bytes) -> str:
    head = original[:MAX_HEADER].replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    text = head.decode("utf-8", "replace")
    return "\r\n".join(text.split("\n")) + "\r\n"


def _crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]

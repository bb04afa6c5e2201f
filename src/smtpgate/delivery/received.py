"""The Received trace header (RFC 5321 section 4.4, with-clauses of RFC 3848).

Theory of operation
-------------------
One header, folded Postfix-style with one clause per line (tab-indented), each
line well under the 998-octet limit of RFC 5322 section 2.1.1:

    Received: from client.example ([192.0.2.7])
    \t(authenticated as alice)                      <- only with show_user
    \tby mail.example.org (smtpgate) with ESMTPSA id 3f2a9c
    \tfor <bob@example.org>; Tue, 25 Nov 2025 10:00:00 +0100

* ``from``: the EHLO/HELO argument when it is a valid domain or address
  literal, followed by the client's IP as an address literal (we do no reverse
  DNS, so TCP-info is just ``[ip]``). Any other HELO argument is never written
  as the From-domain: the header reads ``from [ip] (helo=<cleaned>)``.
* ``with`` (RFC 3848): ESMTP, plus ``S`` for TLS, plus ``A`` for AUTH:
  ESMTP, ESMTPS, ESMTPA, ESMTPSA; a HELO session is ``SMTP``. A client
  from a listener's ``trusted_networks`` sends without AUTH: no ``A``, and
  the comment ``(trusted network)`` after the from clause says why.
* ``id``: ``message_id`` when given (one per transaction), else the session id.
* ``for``: only when the message has exactly one recipient (RFC 5321 says
  to avoid listing several: it discloses Bcc recipients).
* the date is ``envelope.received_at`` in RFC 5322 form, local time zone.

Everything from the client is cleaned: no CR, LF, NUL or other control
characters, no unbalanced parentheses in comments, nothing non-ASCII unless
the transaction is SMTPUTF8 (RFC 6532), and bounded in length.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from datetime import datetime

from smtpgate.delivery.base import Envelope

_MAX_TEXT = 255  # longest client-supplied token we copy into the header
_MAX_RCPT = 900  # keeps the "for" line < 998 octets; longer: no for clause
_LITERAL = re.compile(r"\[(?:[0-9.]+|IPv6:[0-9A-Fa-f:.]+)\]")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_HOST_CHARS = re.compile(r"[^A-Za-z0-9._\[\]:-]")
_PLAIN_RCPT = re.compile(r"[!-;=?-~]*")  # printable ASCII but space, "<" and ">"


def with_protocol(envelope: Envelope) -> str:
    """RFC 3848: SMTP, ESMTP, ESMTPS, ESMTPA or ESMTPSA."""
    if not envelope.esmtp:
        return "SMTP"
    tls = "S" if envelope.tls else ""
    auth = "A" if envelope.authenticated_user is not None else ""
    return f"ESMTP{tls}{auth}"


def received_header(
    envelope: Envelope, *, hostname: str, show_user: bool, message_id: str | None = None
) -> bytes:
    """The complete ``Received:`` header, CRLF-terminated, folded one clause per line."""
    lines = [f"Received: from {_from_clause(envelope.peer, envelope.helo)}"]
    if envelope.trusted_network:
        lines.append("(trusted network)")
    if show_user and envelope.authenticated_user is not None:
        user = _comment_text(envelope.authenticated_user, utf8=envelope.smtputf8)
        lines.append(f"(authenticated as {user})")
    host = _HOST_CHARS.sub("", hostname)[:253] or "localhost"
    by = f"by {host} (smtpgate) with {with_protocol(envelope)}"
    ident = _id_text(message_id if message_id is not None else envelope.session_id)
    lines.append(f"{by} id {ident}" if ident else by)
    date = _date_text(int(envelope.received_at))
    recipient = _single_recipient(envelope)
    if recipient is not None:
        lines.append(f"for <{recipient}>; {date}")
    else:
        lines[-1] += f"; {date}"
    text = "\r\n\t".join(lines) + "\r\n"
    return text.encode("utf-8")


def message_date(seconds: float) -> str:
    """An RFC 5322 date-time for ``seconds`` since the epoch, in local time."""
    return _date_text(int(seconds))


@functools.lru_cache(maxsize=4)
def _date_text(seconds: int) -> str:
    """RFC 5322 date in local time (cached: many messages share a second)."""
    from email.utils import format_datetime  # the email package: on the first message

    return format_datetime(datetime.fromtimestamp(seconds).astimezone())


@functools.lru_cache(maxsize=1024)
def _from_clause(peer: str, helo: str) -> str:
    """Cached: one client's connection repeats the same peer and HELO per message."""
    literal = address_literal(peer)
    if _is_domain(helo) or _LITERAL.fullmatch(helo):
        return f"{helo} ({literal})" if literal else helo
    cleaned = _comment_text(helo, utf8=False) if helo else ""
    return f"{literal or 'unknown'} (helo={cleaned})"


def address_literal(peer: str) -> str | None:
    """The peer's IP as an address literal, None if ``peer`` holds no IP.

    ``"192.0.2.7:4567"`` -> ``"[192.0.2.7]"``; ``"[2001:db8::1]:25"`` -> ``"[IPv6:2001:db8::1]"``.
    """
    host = peer
    if peer.startswith("[") and "]" in peer:
        host = peer[1 : peer.index("]")]
    elif peer.count(":") == 1:
        host = peer.partition(":")[0]
    elif peer.count(":") > 1:
        try:
            ipaddress.IPv6Address(peer)
        except ValueError:
            host = peer.rpartition(":")[0]  # "2001:db8::1:4567"
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return f"[{ip}]" if ip.version == 4 else f"[IPv6:{ip.compressed}]"


def _is_domain(text: str) -> bool:
    name = text[:-1] if text.endswith(".") else text
    if not name or len(name) > 253:
        return False
    return all(_LABEL.fullmatch(label) for label in name.split("."))


def _comment_text(text: str, *, utf8: bool) -> str:
    """Client text made safe inside ``( )``: printable, quoted-pairs, bounded."""
    if len(text) > _MAX_TEXT:
        text = text[:_MAX_TEXT] + "..."
    out: list[str] = []
    for char in text:
        if char in "()\\":
            out.append("\\" + char)
        elif " " <= char <= "~" or (utf8 and char.isprintable() and ord(char) > 0x7F):
            out.append(char)
        else:
            out.append("?")
    return "".join(out)


def _id_text(text: str) -> str:
    return _ID_CHARS.sub("", text)[:64]


def _single_recipient(envelope: Envelope) -> str | None:
    if len(envelope.recipients) != 1:
        return None
    recipient = envelope.recipients[0]
    if len(recipient.encode("utf-8", "replace")) > _MAX_RCPT:
        return None
    if _PLAIN_RCPT.fullmatch(recipient):  # the usual address: nothing to clean
        return recipient
    cleaned = "".join(
        c
        if (" " < c <= "~" and c not in "<>") or (envelope.smtputf8 and c.isprintable() and c > "~")
        else "?"
        for c in recipient
    )
    return cleaned

"""What the host decides for one session, and what EHLO advertises from it.

The host (server/connection.py) builds ``SessionParams`` from the
configuration and the connection; the defaults live in config/schema.py only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SessionParams:
    hostname: str
    tls_active: bool
    starttls_offered: bool  # the listener offers STARTTLS and TLS is not active
    require_auth: bool
    auth_mechanisms: tuple[str, ...]  # usable on this connection now, in EHLO order
    max_message_size: int
    max_recipients: int
    max_errors: int
    # The listener switches of profile "device" (docs/devices.md); all off by default.
    advertise_auth_equals: bool = False  # EHLO also sends "AUTH=..." for old clients
    auth_after_helo: bool = False  # AUTH accepted after HELO, not only after EHLO
    normalize_bare_lf: bool = False  # bare LF in DATA is stored as CRLF, not refused
    accept_eight_bit: bool = False  # 8-bit DATA without BODY=8BITMIME is stored as sent


def ehlo_keywords(params: SessionParams) -> list[str]:
    """The EHLO keywords (RFC 5321 section 4.1.1.1), in the order we send them.

    PIPELINING (RFC 2920), SIZE (RFC 1870), 8BITMIME (RFC 6152), SMTPUTF8
    (RFC 6531), ENHANCEDSTATUSCODES (RFC 2034), CHUNKING (RFC 3030), STARTTLS
    (RFC 3207) until TLS is on, AUTH (RFC 4954) with the mechanisms usable now.
    """
    words = ["PIPELINING", f"SIZE {params.max_message_size}", "8BITMIME", "SMTPUTF8",
             "ENHANCEDSTATUSCODES", "CHUNKING"]
    words.append("DSN")  # RFC 3461: NOTIFY, ORCPT on RCPT; RET, ENVID on MAIL
    if params.starttls_offered and not params.tls_active:
        words.append("STARTTLS")
    if params.auth_mechanisms:
        words.append("AUTH " + " ".join(params.auth_mechanisms))
        if params.advertise_auth_equals:
            # The pre-RFC 2554 draft's form, the only one some old clients read.
            words.append("AUTH=" + " ".join(params.auth_mechanisms))
    return words

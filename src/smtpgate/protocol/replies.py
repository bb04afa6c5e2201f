"""The catalogue of SMTP replies, named by meaning.

Every reply the server sends is one of these (or built from one with
``with_text``). Codes: RFC 5321 section 4.2; enhanced codes: RFC 3463 and the
IANA registry of RFC 5248; AUTH codes: RFC 4954 sections 4 and 6. The greeting
and the EHLO/HELO reply carry no enhanced code (RFC 2034 section 3).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str | None
    text: str
    # The line on the wire, made once: most replies are constants sent again and again.
    _wire: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        prefix = f"{self.code} {self.enhanced} " if self.enhanced else f"{self.code} "
        object.__setattr__(self, "_wire", (prefix + self.text + "\r\n").encode("utf-8"))

    def with_text(self, text: str) -> Reply:
        return Reply(self.code, self.enhanced, text)

    def to_bytes(self) -> bytes:
        return self._wire


def multiline(code: int, lines: list[str]) -> bytes:
    """A multi-line reply (RFC 5321 section 4.2.1): ``250-a``, ..., ``250 z``."""
    out = [f"{code}-{line}\r\n" for line in lines[:-1]]
    out.append(f"{code} {lines[-1]}\r\n")
    return "".join(out).encode("utf-8")


# --- session -------------------------------------------------------------
CLOSING = Reply(221, "2.0.0", "Bye")
OK = Reply(250, "2.0.0", "OK")
SENDER_OK = Reply(250, "2.1.0", "Sender OK")
RECIPIENT_OK = Reply(250, "2.1.5", "Recipient OK")
MESSAGE_ACCEPTED = Reply(250, "2.0.0", "Message accepted")
CHUNK_ACCEPTED = Reply(250, "2.0.0", "Chunk received")
RESET_OK = Reply(250, "2.0.0", "Reset OK")
HELP = Reply(214, "2.0.0", "See RFC 5321 and RFC 4954; https://www.rfc-editor.org/")
CANNOT_VRFY = Reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")
START_MAIL_INPUT = Reply(354, None, "End data with <CR><LF>.<CR><LF>")
READY_FOR_TLS = Reply(220, "2.0.0", "Ready to start TLS")

# --- 4xx -----------------------------------------------------------------
SERVICE_UNAVAILABLE = Reply(421, "4.3.2", "Service shutting down, closing connection")
TOO_MANY_CONNECTIONS = Reply(421, "4.7.0", "Too many connections, try again later")
TIMEOUT = Reply(421, "4.4.2", "Timeout exceeded, closing connection")
TRANSFER_TOO_SLOW = Reply(421, "4.4.2", "Message transfer took too long, closing connection")
INTERNAL_ERROR = Reply(421, "4.3.0", "Internal error, closing connection")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "Too many errors, closing connection")
TOO_MANY_AUTH_FAILURES = Reply(421, "4.7.0", "Too many failed authentications, closing connection")
LOCAL_ERROR = Reply(451, "4.3.0", "Local error in processing, try again later")
INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage, try again later")
# RFC 3463 4.7.1, temporary: a device over its messages per UTC day tries again later.
OVER_DAILY_QUOTA = Reply(451, "4.7.1", "Daily message limit reached for this account")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Too many recipients")

# --- 5xx protocol ----------------------------------------------------------
UNKNOWN_COMMAND = Reply(500, "5.5.1", "Command unrecognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Line too long")
BAD_SYNTAX = Reply(501, "5.5.2", "Syntax error")
MISSING_ARGUMENT = Reply(501, "5.5.4", "Argument required")
BAD_ARGUMENT = Reply(501, "5.5.4", "Invalid command argument")
UNEXPECTED_ARGUMENT = Reply(501, "5.5.4", "No argument expected")
BAD_SENDER_SYNTAX = Reply(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT_SYNTAX = Reply(501, "5.1.3", "Bad recipient address syntax")
NOT_IMPLEMENTED = Reply(502, "5.5.1", "Command not implemented")
NEED_EHLO = Reply(503, "5.5.1", "Send EHLO first")
NESTED_MAIL = Reply(503, "5.5.1", "Sender already specified")
NEED_MAIL = Reply(503, "5.5.1", "Need MAIL first")
NEED_RCPT = Reply(503, "5.5.1", "Need RCPT first")
# RFC 3030 section 3: a message is sent with DATA or with BDAT, never both, and its
# recipients are complete before the first chunk.
DATA_AFTER_BDAT = Reply(503, "5.5.1", "DATA not allowed after BDAT in the same transaction")
RCPT_AFTER_BDAT = Reply(503, "5.5.1", "RCPT not allowed after BDAT in the same transaction")
TLS_ALREADY_ACTIVE = Reply(503, "5.5.1", "TLS already active")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "Message size exceeds fixed maximum message size")
MAILBOX_NOT_ALLOWED = Reply(553, "5.1.3", "Mailbox name not allowed")
# RFC 5321 section 4.1.1.11: 555 for a parameter not recognised or not implemented,
# 501 for one we know, written wrong (a bad value, or given twice).
UNKNOWN_PARAMETER = Reply(555, "5.5.4", "Parameter not recognized")
BAD_PARAMETER = Reply(501, "5.5.4", "Parameter value invalid")
BARE_LINE_ENDING = Reply(
    550, "5.5.2", "Message contains bare CR or LF, rejected (RFC 5321 section 2.3.8)"
)
# RFC 6152 section 3: 8-bit octets only in a body declared BODY=8BITMIME (or
# SMTPUTF8, RFC 6531 section 3.1, which implies it).
EIGHT_BIT_UNDECLARED = Reply(
    554, "5.6.0", "Message contains 8-bit data but was not sent with BODY=8BITMIME"
)
EIGHT_BIT_WITHOUT_SMTPUTF8 = Reply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
TRANSACTION_FAILED = Reply(554, "5.3.0", "Transaction failed")

# --- AUTH (RFC 4954 sections 4 and 6; RFC 5248) ---------------------------
AUTH_SUCCEEDED = Reply(235, "2.7.0", "Authentication successful")
TRANSITION_NEEDED = Reply(
    432, "4.7.12", "A password transition is needed: log in once with PLAIN or LOGIN over TLS"
)
TEMPORARY_AUTH_FAILURE = Reply(454, "4.7.0", "Temporary authentication failure")
AUTH_BLOCKED = Reply(454, "4.7.0", "Too many failed authentications, try again later")
AUTH_LINE_TOO_LONG = Reply(500, "5.5.6", "Authentication exchange line is too long")
AUTH_BAD_BASE64 = Reply(501, "5.5.2", "Cannot decode response")
AUTH_MALFORMED = Reply(501, "5.5.2", "Malformed authentication data")
AUTH_CANCELLED = Reply(501, "5.7.0", "Authentication cancelled")
AUTH_UNEXPECTED_INITIAL = Reply(501, "5.7.0", "Initial response not allowed for this mechanism")
AUTH_MISSING_MECHANISM = Reply(501, "5.5.4", "Mechanism required")
AUTH_ALREADY_DONE = Reply(503, "5.5.1", "Already authenticated")
AUTH_NEEDS_EHLO = Reply(503, "5.5.1", "AUTH needs EHLO, not HELO")
AUTH_IN_TRANSACTION = Reply(503, "5.5.1", "AUTH not permitted during a mail transaction")
AUTH_UNKNOWN_MECHANISM = Reply(504, "5.5.4", "Unrecognized authentication type")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
AUTH_TOO_WEAK = Reply(534, "5.7.9", "Authentication mechanism is too weak for this account")
AUTH_INVALID = Reply(535, "5.7.8", "Authentication credentials invalid")
ENCRYPTION_REQUIRED = Reply(
    538, "5.7.11", "Encryption required for requested authentication mechanism"
)

# RFC 5321 553 (mailbox name not allowed), RFC 3463 5.7.1 (not authorized): MAIL FROM
# outside the account's senders.
SENDER_NOT_ALLOWED = Reply(553, "5.7.1", "Sender address not allowed for this account")

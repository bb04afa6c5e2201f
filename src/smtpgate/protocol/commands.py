"""Parsing of command lines, paths, ESMTP parameters, xtext and AUTH base64.

Pure functions; each returns a value or raises ``SyntaxProblem`` carrying the
reply to send. Grammar: RFC 5321 section 4.1.2 (paths, Mailbox, Local-part,
Domain, address-literal), RFC 6531 (UTF-8 in addresses with SMTPUTF8),
RFC 3461 section 4 (xtext, used by MAIL FROM AUTH=, RFC 4954 section 5, and
by the DSN parameters RET, ENVID, NOTIFY and ORCPT),
RFC 4648 section 4 (base64 in AUTH, RFC 4954 section 4).

Keywords, numbers and mechanism names are ASCII: text is matched against
ASCII-only patterns *before* any case mapping, since ``str.isdigit`` accepts
"\u00b2" and ``str.upper`` maps "\u017f" (long s) to "S" and "\u0131" (dotless i) to "I".
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from smtpgate.protocol import replies as r
from smtpgate.protocol.events import AuthAbort
from smtpgate.protocol.replies import Reply


def helo_name(arg: str) -> str:
    """The EHLO/HELO name with only printable characters (it lands in Received headers)."""
    return "".join(c for c in arg if c.isprintable())[:255]


class SyntaxProblem(Exception):
    """A command the session refuses as written; ``reply`` says why (5xx)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.text)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class CommandLine:
    verb: str  # upper-case
    arg: str  # the rest after one space, original case


def split_command(line: bytes) -> CommandLine:
    """Split ``VERB [arg]``; the line has no line ending. Non-UTF-8 is a 500."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SyntaxProblem(r.UNKNOWN_COMMAND) from exc
    verb, _, arg = text.partition(" ")
    if not verb.isascii() or not verb.isalpha():
        raise SyntaxProblem(r.UNKNOWN_COMMAND)
    return CommandLine(verb.upper(), arg.strip(" "))


# RFC 5321 section 4.1.2 and 4.1.3 (UTF-8 letters allowed: RFC 6531 section 3.3).
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]"
_DOT_STRING = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED_STRING = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]|\\[\x20-\x7e])*"'
_LETDIG = r"[A-Za-z0-9\u0080-\U0010ffff]"
_LABEL = rf"{_LETDIG}(?:[A-Za-z0-9\-\u0080-\U0010ffff]*{_LETDIG})?"
_DOMAIN = rf"{_LABEL}(?:\.{_LABEL})*"
_ADDRESS_LITERAL = r"\[(?:[0-9.]+|IPv6:[0-9A-Fa-f:.]+)\]"
_MAILBOX = re.compile(
    rf"(?:{_DOT_STRING}|{_QUOTED_STRING})@(?:{_DOMAIN}|{_ADDRESS_LITERAL})", re.ASCII
)
_SOURCE_ROUTE = re.compile(rf"@{_DOMAIN}(?:,@{_DOMAIN})*:", re.ASCII)
_ESMTP_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]*", re.ASCII)
_ESMTP_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e\u0080-\U0010ffff]+")
MAX_PATH = 256  # RFC 5321 section 4.5.3.1.3


@dataclass(frozen=True, slots=True)
class PathArgument:
    address: str  # the mailbox, "" for the null reverse-path
    params: dict[str, str | None]


def parse_path_argument(
    arg: str, prefix: str, *, allow_null: bool, bad: Reply, recognised: frozenset[str]
) -> PathArgument:
    """Parse ``FROM:<path> params`` or ``TO:<path> params``; see ``parse_params``."""
    head = arg[: len(prefix)]
    if not head.isascii() or head.upper() != prefix:
        raise SyntaxProblem(bad)
    rest = arg[len(prefix) :].lstrip(" ")  # some clients send "FROM: <a@b>"
    if not rest.startswith("<"):
        raise SyntaxProblem(bad)
    close = rest.find(">")
    if close < 0:
        raise SyntaxProblem(bad)
    address = _parse_path(rest[1:close], allow_null=allow_null, bad=bad)
    return PathArgument(address, parse_params(rest[close + 1 :], recognised))


def _parse_path(inner: str, *, allow_null: bool, bad: Reply) -> str:
    if inner == "":
        if allow_null:
            return ""
        raise SyntaxProblem(bad)
    if len(inner) > MAX_PATH:
        raise SyntaxProblem(bad)
    route = _SOURCE_ROUTE.match(inner)
    if route:  # RFC 5321 section 4.1.2: accepted, then ignored (never a relay)
        inner = inner[route.end() :]
    if _MAILBOX.fullmatch(inner):
        return inner
    if inner.isascii() and inner.lower() == "postmaster":  # RFC 5321 section 4.5.1
        return inner
    raise SyntaxProblem(bad)


def parse_params(text: str, recognised: frozenset[str]) -> dict[str, str | None]:
    """ESMTP parameters ``KEY[=VALUE]`` separated by spaces (RFC 5321 section 4.1.2).

    RFC 5321 section 4.1.1.11: a keyword not in ``recognised`` is 555; a
    recognised one given twice or with a value outside the grammar is 501.
    """
    params: dict[str, str | None] = {}
    for item in text.split():
        key, eq, value = item.partition("=")
        if not _ESMTP_KEYWORD.fullmatch(key) or key.upper() not in recognised:
            raise SyntaxProblem(r.UNKNOWN_PARAMETER)
        key = key.upper()
        if key in params or (eq and not _ESMTP_VALUE.fullmatch(value)):
            raise SyntaxProblem(r.BAD_PARAMETER)
        params[key] = value if eq else None
    return params


def decode_xtext(text: str) -> str:
    """RFC 3461 section 4: ``+XX`` hex escapes; other chars printable ASCII but '+' and '='."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "+":
            hexpair = text[i + 1 : i + 3]
            if len(hexpair) != 2 or not all(c in "0123456789ABCDEF" for c in hexpair):
                raise SyntaxProblem(r.BAD_PARAMETER)
            out.append(chr(int(hexpair, 16)))
            i += 3
            continue
        if not ("!" <= ch <= "~") or ch == "=":
            raise SyntaxProblem(r.BAD_PARAMETER)
        out.append(ch)
        i += 1
    return "".join(out)


def parse_auth_param(value: str | None) -> str:
    """MAIL FROM AUTH= (RFC 4954 section 5): ``<>`` or an xtext-encoded identity."""
    if value is None:
        raise SyntaxProblem(r.BAD_PARAMETER)
    if value == "<>":
        return ""
    decoded = decode_xtext(value)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in decoded):  # never CR/LF/NUL in metadata
        raise SyntaxProblem(r.BAD_PARAMETER)
    return decoded


def encode_xtext(text: str) -> str:
    """RFC 3461 section 4: '+', '=' and anything outside '!'..'~' as ``+XX``."""
    return "".join(c if "!" <= c <= "~" and c not in "+=" else f"+{ord(c):02X}"
                   for c in text)


def _printable_xtext(value: str | None, limit: int) -> str:
    """An xtext value decoded; 501 unless it is printable ASCII of at most ``limit``."""
    if value is None:
        raise SyntaxProblem(r.BAD_PARAMETER)
    decoded = decode_xtext(value)
    if not decoded or len(decoded) > limit or not all(" " <= c <= "~" for c in decoded):
        raise SyntaxProblem(r.BAD_PARAMETER)  # never CR/LF/NUL: it lands in DSN fields
    return decoded


_BODY_VALUES = frozenset({"7BIT", "8BITMIME"})
_RET_VALUES = frozenset({"FULL", "HDRS"})
_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_ADDR_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-]{0,19}", re.ASCII)  # "rfc822", "utf-8"
MAX_ENVID = 100  # RFC 3461 section 4.4
MAX_ORCPT = 500  # RFC 3461 section 4.2
MAIL_PARAMETERS = frozenset({"SIZE", "BODY", "SMTPUTF8", "AUTH", "RET", "ENVID"})
RCPT_PARAMETERS = frozenset({"NOTIFY", "ORCPT"})


def check_mail_params(params: dict[str, str | None], *, max_size: int) -> dict[str, str | None]:
    """The values of the MAIL FROM parameters we advertise; AUTH= comes back decoded.

    SIZE (RFC 1870: 552 5.3.4 when over the limit), BODY (RFC 6152), SMTPUTF8
    (RFC 6531), AUTH (RFC 4954 section 5); a bad value is 501 5.5.4.
    """
    checked = dict(params)
    for key, value in params.items():
        if key == "SIZE":
            if parse_size(value) > max_size:
                raise SyntaxProblem(r.MESSAGE_TOO_BIG)
        elif key == "BODY":
            if value is None or not value.isascii() or value.upper() not in _BODY_VALUES:
                raise SyntaxProblem(r.BAD_PARAMETER)
        elif key == "SMTPUTF8":
            if value is not None:
                raise SyntaxProblem(r.BAD_PARAMETER)
        elif key == "AUTH":
            checked["AUTH"] = parse_auth_param(value)
        elif key == "RET":  # RFC 3461 section 4.3
            if value is None or not value.isascii() or value.upper() not in _RET_VALUES:
                raise SyntaxProblem(r.BAD_PARAMETER)
            checked["RET"] = value.upper()
        elif key == "ENVID":  # RFC 3461 section 4.4
            checked["ENVID"] = _printable_xtext(value, MAX_ENVID)
        else:
            raise SyntaxProblem(r.UNKNOWN_PARAMETER)
    return checked


def check_rcpt_params(params: dict[str, str | None]) -> dict[str, str | None]:
    """RCPT TO's DSN parameters (RFC 3461 sections 4.1, 4.2); a bad value is 501 5.5.4.

    NOTIFY comes back upper-case ("NEVER" or a comma list of SUCCESS, FAILURE,
    DELAY); ORCPT as ``addr-type;address`` with the address decoded from xtext.
    """
    checked = dict(params)
    for key, value in params.items():
        if key == "NOTIFY":
            checked["NOTIFY"] = parse_notify(value)
        elif key == "ORCPT":
            addr_type, semi, address = (value or "").partition(";")
            if not semi or not _ADDR_TYPE.fullmatch(addr_type) or len(value or "") > MAX_ORCPT:
                raise SyntaxProblem(r.BAD_PARAMETER)
            checked["ORCPT"] = f"{addr_type};{_printable_xtext(address, MAX_ORCPT)}"
        else:
            raise SyntaxProblem(r.UNKNOWN_PARAMETER)
    return checked


def parse_notify(value: str | None) -> str:
    """``NEVER`` alone, or SUCCESS / FAILURE / DELAY, each at most once (RFC 3461 4.1)."""
    words = (value or "").split(",")
    if not (value or "").isascii():
        raise SyntaxProblem(r.BAD_PARAMETER)
    upper = [w.upper() for w in words]
    if upper == ["NEVER"]:
        return "NEVER"
    if len(set(upper)) != len(upper) or not set(upper) <= _NOTIFY_VALUES:
        raise SyntaxProblem(r.BAD_PARAMETER)
    return ",".join(upper)


_NUMBER = re.compile(r"[0-9]{1,20}")  # ASCII digits only; 20 digits hold any 64-bit size


def parse_number(text: str | None) -> int | None:
    """A decimal number of ASCII digits, or None (``int`` would take "²" or "٣")."""
    if text is None or not _NUMBER.fullmatch(text):
        return None
    return int(text)


def parse_size(value: str | None) -> int:
    number = parse_number(value)
    if number is None:
        raise SyntaxProblem(r.BAD_PARAMETER)
    return number


def parse_bdat_argument(arg: str) -> tuple[int, bool]:
    """``BDAT chunk-size [LAST]`` (RFC 3030 section 3); 501 5.5.4 when malformed."""
    parts = arg.split()
    size = parse_number(parts[0]) if parts else None
    if size is None or len(parts) > 2:
        raise SyntaxProblem(r.BAD_ARGUMENT)
    if len(parts) == 2 and not (parts[1].isascii() and parts[1].upper() == "LAST"):
        raise SyntaxProblem(r.BAD_ARGUMENT)
    return size, len(parts) == 2


_MECHANISM = re.compile(r"[A-Za-z0-9\-_]{1,20}")  # RFC 4422 section 3.1, any case


def parse_auth_command(arg: str) -> tuple[str, str | None]:
    """``AUTH mechanism [initial-response]`` (RFC 4954 section 4)."""
    parts = [p for p in arg.split(" ") if p]
    if not parts:
        raise SyntaxProblem(r.AUTH_MISSING_MECHANISM)
    if len(parts) > 2 or not _MECHANISM.fullmatch(parts[0]):
        raise SyntaxProblem(r.BAD_SYNTAX)
    return parts[0].upper(), parts[1] if len(parts) == 2 else None


def parse_initial_response(text: str | None) -> tuple[bytes | None, AuthAbort | None]:
    """RFC 4954 section 4: none, "*" (cancel), "=" (empty), or canonical base64."""
    if text is None:
        return None, None
    if text == "*":
        return None, AuthAbort.CANCELLED
    if text == "=":
        return b"", None
    data = decode_base64(text.encode("ascii", "replace"))
    return (data, None) if data is not None else (None, AuthAbort.BAD_BASE64)


def decode_base64(data: bytes) -> bytes | None:
    """Canonical base64 (RFC 4648 section 4) or None: AUTH data (RFC 4954 section 4).

    ``strict_mode`` refuses characters outside the alphabet, missing, leading
    or excess padding and data after padding; re-encoding also refuses what it
    lets through: pad bits that are not zero ("QR==", RFC 4648 section 3.5).
    "=" for an empty initial response is the caller's business.
    """
    try:
        decoded = binascii.a2b_base64(data, strict_mode=True)
    except binascii.Error:
        return None
    if binascii.b2a_base64(decoded, newline=False) != data:
        return None
    return decoded

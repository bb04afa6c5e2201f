"""The sans-I/O SMTP server session: bytes in, events out; answers in, bytes out.

Theory of operation
-------------------
The host (``smtpgate.server``) feeds received bytes with ``receive_data`` and
pulls events with ``next_event`` until it returns None. Most commands (EHLO,
NOOP, RSET, syntax and sequence errors...) are answered by the session itself;
the rest become events that *await a reply* (see ``events``). While an event
awaits its reply the session reads no further input, so pipelined commands
(RFC 2920) are answered strictly in order; all replies queue in one output
buffer that the host drains with ``data_to_send`` — one write per batch.

The session never touches sockets, TLS, clocks or files. STARTTLS ends it
(state CLOSED, event StartTls): the host starts a *new* Session on the TLS
channel, so anything pipelined after STARTTLS dies with this object (RFC 3207
section 4.2, CVE-2011-0411).

Input is read in an explicit ``Mode`` with its own limit: command lines (512
octets, AUTH lines 12288), AUTH responses (12288), DATA (``DataFramer``), BDAT
(counted octets), and DISCARD_LINE for the rest of an overlong line.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections import deque
from dataclasses import dataclass

from smtpgate.protocol import events as ev
from smtpgate.protocol import replies as r
from smtpgate.protocol.commands import (
    SyntaxProblem,
    check_mail_params,
    parse_auth_command,
    parse_bdat_argument,
    parse_path_argument,
    split_command,
)
from smtpgate.protocol.framing import DataFramer
from smtpgate.protocol.replies import Reply, multiline
from smtpgate.protocol.states import (
    ALLOWED,
    AUTH_LINE_LIMIT,
    COMMAND_LINE_LIMIT,
    KNOWN_COMMANDS,
    NEEDS_AUTH,
    Mode,
    State,
    sequence_error,
)

# Replies that count towards max_errors: protocol errors (SPEC section 3).
# Not 530: policy, not syntax, and no more a flood than NOOP is.
_COUNTED_ERRORS = frozenset({500, 501, 502, 503, 504, 555})


@dataclass(frozen=True, slots=True)
class SessionParams:
    hostname: str = "localhost"
    tls_active: bool = False
    starttls_offered: bool = False  # the listener offers STARTTLS and TLS is not active
    require_auth: bool = True
    auth_mechanisms: tuple[str, ...] = ()  # usable on this connection now, in EHLO order
    max_message_size: int = 26214400
    max_recipients: int = 100
    max_errors: int = 10


class Session:
    # The mail transaction, reset by _reset_transaction.
    mail_from: str | None
    mail_params: dict[str, str | None]
    recipients: list[str]
    _pending_mail: tuple[str, dict[str, str | None]]
    _pending_rcpt: str
    _framer: DataFramer | None
    _data_size: int
    _rejection: Reply | None
    _bdat_pending: tuple[int, bool] | None
    _bdat_remaining: int
    _bdat_last: bool
    _bdat_rejected: bool

    def __init__(self, params: SessionParams) -> None:
        self.params = params
        self.state = State.CONNECTED
        self.mode = Mode.COMMAND
        self.helo = ""
        self.esmtp = False
        self.user: str | None = None
        self.errors = 0
        self.verb = ""  # the command being answered, for the host's log
        self.refusals: list[tuple[str, int]] = []  # (verb, code) of 4xx/5xx replies, for logs
        self._buf = bytearray()
        self._data_in: bytes | None = None  # DATA input not yet framed (instead of _buf)
        self._out: list[bytes] = []
        self._events: deque[ev.Event] = deque()
        self._awaiting: type | None = None  # the event class whose reply the host owes
        self._discarding = _Line.COMMAND  # DISCARD_LINE: what the overlong line was
        self._reset_transaction()

    # -- host API: input and output --------------------------------------
    def greet(self) -> None:
        self._send(Reply(220, None, f"{self.params.hostname} ESMTP smtpgate"))

    def receive_data(self, data: bytes) -> None:
        if self.state is State.CLOSED:
            return
        if self.mode is Mode.DATA and not self._buf and self._data_in is None:
            self._data_in = data  # the body's fast path: framed as it is, never copied
            return
        if self._data_in is not None:
            self._buf += self._data_in
            self._data_in = None
        self._buf += data

    def next_event(self) -> ev.Event | None:
        """The next event, or None when more input or a host reply is needed."""
        while True:
            if self._events:
                return self._events.popleft()
            if self._awaiting is not None or self.state is State.CLOSED:
                return None
            if not self._advance():
                return None

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    @property
    def awaiting_reply(self) -> bool:
        return self._awaiting is not None

    @property
    def in_data(self) -> bool:
        return self.mode in (Mode.DATA, Mode.BDAT)

    @property
    def buffered(self) -> int:
        return len(self._buf) + (len(self._data_in) if self._data_in is not None else 0)

    # -- host API: answers to events --------------------------------------
    def accept(self) -> None:
        """Accept the pending MailFrom, RcptTo or DataStart."""
        pending = self._take_pending((ev.MailFrom, ev.RcptTo, ev.DataStart))
        if pending is ev.MailFrom:
            self.mail_from = self._pending_mail[0]
            self.mail_params = self._pending_mail[1]
            self.state = State.MAIL
            self._send(r.SENDER_OK)
        elif pending is ev.RcptTo:
            self.recipients.append(self._pending_rcpt)
            self.state = State.RCPT
            self._send(r.RECIPIENT_OK)
        elif self._bdat_pending is not None:
            self.state = State.BDAT
            self._begin_bdat_chunk(*self._bdat_pending, rejected=False)
        else:
            self._send(r.START_MAIL_INPUT)
            self.mode = Mode.DATA
            self._framer = DataFramer()

    def reject(self, reply: Reply) -> None:
        """Refuse the pending MailFrom, RcptTo or DataStart with ``reply``."""
        pending = self._take_pending((ev.MailFrom, ev.RcptTo, ev.DataStart))
        self._send(reply)
        if pending is ev.DataStart and self._bdat_pending is not None:
            # Reset before reading the chunk: the reset zeroes the octet count,
            # and the chunk's octets must be read and dropped, never parsed as
            # commands (smuggling).
            size, last = self._bdat_pending
            self._reset_transaction()
            self._begin_bdat_chunk(size, last, rejected=True)
        self._close_if_421(reply)

    def reply(self, reply: Reply) -> None:
        """Answer the pending DataEnd (250 once the message is durable)."""
        self._take_pending((ev.DataEnd,))
        self._send(reply)
        self._reset_transaction()
        self.state = State.READY
        self._close_if_421(reply)

    def auth_challenge(self, data: bytes) -> None:
        """Send ``334 base64(data)`` and read the client's answer."""
        self._take_pending((ev.AuthStart, ev.AuthResponse))
        self._out.append(b"334 " + base64.b64encode(data) + b"\r\n")
        self.mode = Mode.AUTH_RESPONSE

    def auth_finish(self, reply: Reply, user: str | None) -> None:
        """End the AUTH exchange with ``reply``; ``user`` is set on success."""
        self._take_pending((ev.AuthStart, ev.AuthResponse, ev.AuthAborted))
        self.mode = Mode.COMMAND
        if user is not None:
            self.user = user
        self._send(reply)
        self._close_if_421(reply)

    def timeout(self) -> None:
        self.close_with(r.TIMEOUT)

    def shutdown(self) -> None:
        self.close_with(r.SERVICE_UNAVAILABLE)

    def close_with(self, reply: Reply) -> None:
        """Send ``reply`` (a 421 or 221) and end the session."""
        if self.state is State.CLOSED:
            return
        self._send(reply)
        self._close(notify=True)

    # -- input modes -------------------------------------------------------
    def _advance(self) -> bool:
        """Consume some input in the current mode; False when nothing could be done."""
        mode = self.mode
        if mode is Mode.COMMAND:
            return self._read_command()
        if mode is Mode.DATA:
            return self._read_data()
        if mode is Mode.BDAT:
            return self._read_bdat()
        if mode is Mode.AUTH_RESPONSE:
            return self._read_auth_response()
        return self._discard_line()

    def _take_line(self) -> bytes | None:
        """One line without its line ending, or None; overlong lines switch to DISCARD_LINE."""
        buf = self._buf
        idx = buf.find(b"\n", 0, AUTH_LINE_LIMIT + 1)
        if idx < 0:
            if len(buf) > AUTH_LINE_LIMIT:  # drop the rest of it in DISCARD_LINE
                self._discarding = self._line_kind(buf)
                self.mode = Mode.DISCARD_LINE
            return None
        line = bytes(buf[:idx])
        del buf[: idx + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        kind = self._line_kind(line)
        if len(line) + 2 > (COMMAND_LINE_LIMIT if kind is _Line.COMMAND else AUTH_LINE_LIMIT):
            self._line_too_long(kind)
            return None
        return line

    def _line_kind(self, line: bytes | bytearray) -> _Line:
        if self.mode is Mode.AUTH_RESPONSE:
            return _Line.AUTH_RESPONSE
        return _Line.AUTH_COMMAND if line[:5].upper() == b"AUTH " else _Line.COMMAND

    def _read_command(self) -> bool:
        before = len(self._buf)
        line = self._take_line()
        if line is None:
            return len(self._buf) != before or self.mode is not Mode.COMMAND
        self._handle_command(line)
        return True

    def _discard_line(self) -> bool:
        idx = self._buf.find(b"\n")
        if idx < 0:
            self._buf.clear()
            return False
        del self._buf[: idx + 1]
        self._line_too_long(self._discarding)
        return True

    def _line_too_long(self, kind: _Line) -> None:
        """500 5.5.2 for commands; 500 5.5.6 for AUTH (RFC 4954 section 4)."""
        self.mode = Mode.COMMAND
        if kind is _Line.AUTH_RESPONSE:
            self._emit_awaiting(ev.AuthAborted(ev.AuthAbort.TOO_LONG))
        else:
            self._error(r.AUTH_LINE_TOO_LONG if kind is _Line.AUTH_COMMAND else r.LINE_TOO_LONG)

    def _read_auth_response(self) -> bool:
        before = len(self._buf)
        line = self._take_line()
        if line is None:
            return len(self._buf) != before or self.mode is not Mode.AUTH_RESPONSE
        self.mode = Mode.COMMAND
        if line == b"*":
            self._emit_awaiting(ev.AuthAborted(ev.AuthAbort.CANCELLED))
            return True
        data = _decode_base64(line)
        if data is None:
            self._emit_awaiting(ev.AuthAborted(ev.AuthAbort.BAD_BASE64))
        else:
            self._emit_awaiting(ev.AuthResponse(data))
        return True

    def _read_data(self) -> bool:
        if self._framer is None:
            return False
        if self._data_in is not None:
            data, self._data_in = self._data_in, None
        elif self._buf:
            data = bytes(self._buf)
            self._buf.clear()
        else:
            return False
        result = self._framer.feed(data)
        if self._framer.bare_line_ending and self._rejection is None:
            self._rejection = r.BARE_LINE_ENDING
        for piece in result.pieces:
            self._take_body(piece)
        if result.done:
            self._buf += result.rest
            self.mode = Mode.COMMAND
            self._framer = None
            self._emit_awaiting(ev.DataEnd(self._rejection))
        return True

    def _read_bdat(self) -> bool:
        if not self._buf and self._bdat_remaining:
            return False
        take = min(self._bdat_remaining, len(self._buf))
        chunk = bytes(self._buf[:take])
        del self._buf[:take]
        self._bdat_remaining -= take
        if not self._bdat_rejected:
            self._take_body(chunk)
        if self._bdat_remaining == 0:
            self._end_bdat_chunk()
        return True

    def _take_body(self, body: bytes) -> None:
        if not body or self._rejection is not None:
            return
        self._data_size += len(body)
        if self._data_size > self.params.max_message_size:
            self._rejection = r.MESSAGE_TOO_BIG  # read on to the end, keep nothing
            return
        self._events.append(ev.DataChunk(body))

    # -- commands ----------------------------------------------------------
    def _handle_command(self, line: bytes) -> None:
        self.verb = "?"
        try:
            cmd = split_command(line)
        except SyntaxProblem as problem:
            self._error(problem.reply)
            return
        verb = self.verb = cmd.verb if cmd.verb in KNOWN_COMMANDS else "?"
        if verb not in KNOWN_COMMANDS:
            self._error(r.UNKNOWN_COMMAND)
            return
        allowed = verb in ALLOWED[self.state]
        refusal: Reply | None = None
        if not allowed and self.state is State.CONNECTED:
            refusal = sequence_error(self.state, verb)
        elif self.params.require_auth and self.user is None and verb in NEEDS_AUTH:
            refusal = r.AUTH_REQUIRED
        elif not allowed:
            refusal = sequence_error(self.state, verb)
        if refusal is not None:
            if verb == "BDAT":
                self._skip_bdat_chunk(cmd.arg)
            self._error(refusal)
            return
        try:
            _HANDLERS[verb](self, cmd.arg)
        except SyntaxProblem as problem:
            self._error(problem.reply)

    def _ehlo(self, arg: str, *, esmtp: bool) -> None:
        if not arg:
            raise SyntaxProblem(r.MISSING_ARGUMENT)
        self._reset_transaction()
        self.state = State.READY
        self.helo = _printable(arg)
        self.esmtp = esmtp
        if not esmtp:
            self._send(Reply(250, None, self.params.hostname))
            return
        self._out.append(multiline(250, [self.params.hostname, *self._ehlo_keywords()]))

    def _ehlo_keywords(self) -> list[str]:
        p = self.params
        words = ["PIPELINING", f"SIZE {p.max_message_size}", "8BITMIME", "SMTPUTF8",
                 "ENHANCEDSTATUSCODES", "CHUNKING"]
        if p.starttls_offered and not p.tls_active:
            words.append("STARTTLS")
        if p.auth_mechanisms:
            words.append("AUTH " + " ".join(p.auth_mechanisms))
        return words

    def _mail(self, arg: str) -> None:
        path = parse_path_argument(arg, "FROM:", allow_null=True, bad=r.BAD_SENDER_SYNTAX)
        if path.params and not self.esmtp:
            raise SyntaxProblem(r.UNKNOWN_PARAMETER)
        params = check_mail_params(path.params, max_size=self.params.max_message_size)
        if not path.address.isascii() and "SMTPUTF8" not in params:
            raise SyntaxProblem(r.EIGHT_BIT_WITHOUT_SMTPUTF8)
        self._pending_mail = (path.address, params)
        self._emit_awaiting(ev.MailFrom(path.address, params))

    def _rcpt(self, arg: str) -> None:
        path = parse_path_argument(arg, "TO:", allow_null=False, bad=r.BAD_RECIPIENT_SYNTAX)
        if path.params:
            raise SyntaxProblem(r.UNKNOWN_PARAMETER)
        if not path.address.isascii() and "SMTPUTF8" not in self.mail_params:
            self._send(r.EIGHT_BIT_WITHOUT_SMTPUTF8)
            return
        if len(self.recipients) >= self.params.max_recipients:
            self._send(r.TOO_MANY_RECIPIENTS)  # RFC 5321 section 4.5.3.1.10
            return
        self._pending_rcpt = path.address
        self._emit_awaiting(ev.RcptTo(path.address, path.params))

    def _data(self, arg: str) -> None:
        if arg:
            raise SyntaxProblem(r.UNEXPECTED_ARGUMENT)
        self._bdat_pending = None
        self._emit_awaiting(ev.DataStart(bdat=False))

    def _bdat(self, arg: str) -> None:
        size, last = parse_bdat_argument(arg)
        if self.state is State.RCPT:  # the first chunk opens the message
            self._bdat_pending = (size, last)
            self._emit_awaiting(ev.DataStart(bdat=True))
            return
        self._begin_bdat_chunk(size, last, rejected=False)

    def _rset(self, arg: str) -> None:
        if arg:
            raise SyntaxProblem(r.UNEXPECTED_ARGUMENT)
        self._reset_transaction()
        if self.state is not State.CONNECTED:
            self.state = State.READY
        self._send(r.RESET_OK)

    def _noop(self, arg: str) -> None:
        self._send(r.OK)

    def _quit(self, arg: str) -> None:
        self.close_with(r.CLOSING)

    def _vrfy(self, arg: str) -> None:
        if not arg:
            raise SyntaxProblem(r.MISSING_ARGUMENT)
        self._send(r.CANNOT_VRFY)

    def _expn(self, arg: str) -> None:
        self._error(r.NOT_IMPLEMENTED)

    def _help(self, arg: str) -> None:
        self._send(r.HELP)

    def _starttls(self, arg: str) -> None:
        if arg:
            raise SyntaxProblem(r.UNEXPECTED_ARGUMENT)
        if self.params.tls_active:
            self._error(r.TLS_ALREADY_ACTIVE)
            return
        if not self.params.starttls_offered:
            self._error(r.NOT_IMPLEMENTED)
            return
        self._send(r.READY_FOR_TLS)
        self.state = State.CLOSED
        self._buf.clear()
        self._data_in = None  # RFC 3207 section 4.2: nothing sent before TLS survives
        self._events.append(ev.StartTls())

    def _auth(self, arg: str) -> None:
        if not self.esmtp:
            self._error(r.BAD_SEQUENCE)  # AUTH is an ESMTP extension: EHLO first
            return
        if self.user is not None:
            self._error(r.AUTH_ALREADY_DONE)
            return
        mechanism, initial_text = parse_auth_command(arg)
        initial: bytes | None = None
        problem: ev.AuthAbort | None = None
        if initial_text == "*":
            problem = ev.AuthAbort.CANCELLED
        elif initial_text is not None:
            initial = _decode_base64(initial_text.encode("ascii", "replace"))
            if initial is None:
                problem = ev.AuthAbort.BAD_BASE64
        self._emit_awaiting(ev.AuthStart(mechanism, initial, problem))

    # -- BDAT chunks -------------------------------------------------------
    def _begin_bdat_chunk(self, size: int, last: bool, *, rejected: bool) -> None:
        self._bdat_pending = None
        self._bdat_remaining = size
        self._bdat_last = last
        self._bdat_rejected = rejected
        self.mode = Mode.BDAT
        if size == 0:
            self._end_bdat_chunk()

    def _skip_bdat_chunk(self, arg: str) -> None:
        """A refused BDAT still carries its octets: read and drop them (no smuggling)."""
        try:
            size, _ = parse_bdat_argument(arg)
        except SyntaxProblem:
            return
        self._bdat_remaining, self._bdat_last, self._bdat_rejected = size, False, True
        self.mode = Mode.BDAT if size else Mode.COMMAND

    def _end_bdat_chunk(self) -> None:
        self.mode = Mode.COMMAND
        if self._bdat_rejected:
            return  # already answered
        if self._bdat_last:
            self._emit_awaiting(ev.DataEnd(self._rejection))
        elif self._rejection is not None:
            self._send(self._rejection)
            self._reset_transaction()
            self.state = State.READY
        else:
            self._send(r.CHUNK_ACCEPTED)

    # -- helpers -----------------------------------------------------------
    def _reset_transaction(self) -> None:
        self.mail_from = None
        self.mail_params = {}
        self.recipients = []
        self._pending_mail = ("", {})
        self._pending_rcpt = ""
        self._framer = None
        self._data_size = 0
        self._rejection = None
        self._bdat_pending = None
        self._bdat_remaining = 0
        self._bdat_last = False
        self._bdat_rejected = False
        if self.state in (State.MAIL, State.RCPT, State.BDAT):
            self.state = State.READY

    def _emit_awaiting(self, event: ev.Event) -> None:
        self._events.append(event)
        self._awaiting = type(event)

    def _take_pending(self, expected: tuple[type, ...]) -> type:
        pending = self._awaiting
        if pending is None or pending not in expected:
            raise RuntimeError(f"no {', '.join(t.__name__ for t in expected)} awaits a reply")
        self._awaiting = None
        return pending

    def _send(self, reply: Reply) -> None:
        if reply.code >= 400 and len(self.refusals) < 100:  # bounded; the host drains it
            self.refusals.append((self.verb, reply.code))
        self._out.append(reply.to_bytes())

    def _error(self, reply: Reply) -> None:
        """Send a protocol error; the max_errors-th is answered 421 and closes."""
        if reply.code in _COUNTED_ERRORS:
            self.errors += 1
            if self.errors >= self.params.max_errors:
                self.close_with(r.TOO_MANY_ERRORS)
                return
        self._send(reply)

    def _close_if_421(self, reply: Reply) -> None:
        if reply.code == 421:
            self._close(notify=True)

    def _close(self, *, notify: bool) -> None:
        self.state = State.CLOSED
        self._buf.clear()
        self._data_in = None
        self._awaiting = None
        if notify:
            self._events.append(ev.Closed())


def _decode_base64(data: bytes) -> bytes | None:
    """Strict base64 (RFC 4954 section 4): "=" is an empty response; None if invalid."""
    if data == b"=":
        return b""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


class _Line(enum.Enum):
    COMMAND = "command"
    AUTH_COMMAND = "auth-command"
    AUTH_RESPONSE = "auth-response"


def _printable(text: str) -> str:
    """Keep only printable characters (the EHLO name lands in Received headers)."""
    return "".join(c for c in text if c.isprintable())[:255]


_HANDLERS = {
    "HELO": lambda s, a: s._ehlo(a, esmtp=False),
    "EHLO": lambda s, a: s._ehlo(a, esmtp=True),
    "MAIL": Session._mail,
    "RCPT": Session._rcpt,
    "DATA": Session._data,
    "BDAT": Session._bdat,
    "RSET": Session._rset,
    "NOOP": Session._noop,
    "QUIT": Session._quit,
    "VRFY": Session._vrfy,
    "EXPN": Session._expn,
    "HELP": Session._help,
    "STARTTLS": Session._starttls,
    "AUTH": Session._auth,
}

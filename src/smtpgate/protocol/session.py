"""The sans-I/O SMTP server session: bytes in, events out; answers in, bytes out.

Theory of operation
-------------------
The host (``smtpgate.server``) feeds received bytes with ``receive_data`` and
pulls events with ``next_event`` until it returns None. Most commands (EHLO,
NOOP, RSET, syntax and sequence errors...) are answered by the session itself;
the rest become events that *await a reply* (see ``events``). While an event
awaits its reply the session reads no further input, so pipelined commands
(RFC 2920) are answered strictly in order; all replies queue in one output
buffer that the host drains with ``data_to_send``: one write per batch.

The session only dispatches. The reader of the current mode (``readers``)
turns input into items: a command line goes through the state table
(``states.refusal``) to its command handler; an AUTH response line becomes an
event; body pieces count towards the size limit and become ``DataChunk``
events. The mail transaction is one ``Transaction``, replaced on reset, and
``state`` is derived from it. Every reply leaves through ``_send``, which is
also where protocol errors are counted for ``max_errors`` and where a 421
ends the session.

The session never touches sockets, TLS, clocks or files. STARTTLS ends it
(state CLOSED, event StartTls): the host starts a *new* Session on the TLS
channel, so anything pipelined after STARTTLS dies with this object (RFC 3207
section 4.2, CVE-2011-0411).
"""

from __future__ import annotations

import base64
import functools
from collections import deque
from collections.abc import Callable

from smtpgate.protocol import commands as c
from smtpgate.protocol import events as ev
from smtpgate.protocol import replies as r
from smtpgate.protocol.params import SessionParams, ehlo_keywords
from smtpgate.protocol.readers import (
    AUTH_RESPONSE_LINES,
    COMMAND_LINES,
    Body,
    ChunkReader,
    DataReader,
    DiscardReader,
    Input,
    LineKind,
    Overlong,
    Reader,
)
from smtpgate.protocol.replies import Reply, multiline
from smtpgate.protocol.states import KNOWN_COMMANDS, Mode, State, refusal
from smtpgate.protocol.transaction import Transaction

__all__ = ["Session", "SessionParams"]

# Replies that count towards max_errors: protocol errors (RFC 5321 section 4.2.4:
# 500-504; 555 of RFC 5321 section 4.1.1.11). Not 530: policy, not syntax.
_COUNTED_ERRORS = frozenset({500, 501, 502, 503, 504, 555})
_MAX_REFUSALS = 100  # bounded: the host drains ``refusals`` after each batch
_NO_PARAMETERS: frozenset[str] = frozenset()


@functools.lru_cache(maxsize=16)
def _greeting(hostname: str) -> Reply:
    return Reply(220, None, f"{hostname} ESMTP smtpgate")


@functools.lru_cache(maxsize=64)
def _ehlo_reply(params: SessionParams) -> bytes:
    """The EHLO reply's bytes: the same for every session with the same parameters."""
    return multiline(250, [params.hostname, *ehlo_keywords(params)])


class Session:
    """One SMTP session, from the greeting to QUIT, a 421 or STARTTLS."""

    def __init__(self, params: SessionParams) -> None:
        self.params = params
        self.transaction = Transaction()
        self.helo = ""
        self.esmtp = False
        self.user: str | None = None
        self.errors = 0
        self.verb = ""  # the command being answered, for the host's log
        self.refusals: list[tuple[str, int]] = []  # (verb, code) of 4xx/5xx replies, for logs
        self._greeted = False
        self._closed = False
        self._input = Input()
        self._reader: Reader = COMMAND_LINES
        self._out: list[bytes] = []
        self._events: deque[ev.Event] = deque()
        self._awaiting: ev.Event | None = None  # the event whose answer the host owes
        self._first_chunk: ChunkReader | None = None  # the chunk a BDAT DataStart opens

    # -- host API: input and output --------------------------------------
    def greet(self) -> None:
        self._send(_greeting(self.params.hostname))

    def receive_data(self, data: bytes) -> None:
        if not self._closed:
            self._input.feed(data, keep_whole=self._reader.reads_body)

    def next_event(self) -> ev.Event | None:
        """The next event, or None when more input or a host reply is needed."""
        while True:
            if self._events:
                return self._events.popleft()
            if self._awaiting is not None or self._closed or not self._advance():
                return None

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        return out

    @property
    def state(self) -> State:
        if self._closed:
            return State.CLOSED
        if not self._greeted:
            return State.CONNECTED
        t = self.transaction
        if t.sender is None:
            return State.READY
        if t.chunked:
            return State.BDAT
        return State.RCPT if t.recipients else State.MAIL

    @property
    def mode(self) -> Mode:
        return self._reader.mode

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def awaiting_reply(self) -> bool:
        return self._awaiting is not None

    @property
    def in_data(self) -> bool:
        return self._reader.reads_body

    @property
    def buffered(self) -> int:
        return len(self._input)

    # -- host API: answers to events --------------------------------------
    def accept(self) -> None:
        """Accept the pending MailFrom, RcptTo or DataStart."""
        event = self._take_pending(ev.MailFrom, ev.RcptTo, ev.DataStart)
        t = self.transaction
        if isinstance(event, ev.MailFrom):
            t.sender, t.params = event.address, event.params
            self._send(r.SENDER_OK)
        elif isinstance(event, ev.RcptTo):
            t.recipients.append(event.address)
            t.rcpt_params.append(event.params)
            self._send(r.RECIPIENT_OK)
        elif self._first_chunk is not None:
            t.chunked = True
            self._reader, self._first_chunk = self._first_chunk, None
        else:
            self._send(r.START_MAIL_INPUT)
            self._reader = DataReader()

    def reject(self, reply: Reply) -> None:
        """Refuse the pending MailFrom, RcptTo or DataStart with ``reply``."""
        self._take_pending(ev.MailFrom, ev.RcptTo, ev.DataStart)
        self._send(reply)
        chunk, self._first_chunk = self._first_chunk, None
        if chunk is not None and not self._closed:
            # The refused chunk's octets are still read and dropped, never parsed
            # as commands (smuggling); the transaction ends here.
            self.transaction = Transaction()
            chunk.discard = True
            self._reader = chunk

    def reply(self, reply: Reply) -> None:
        """Answer the pending DataEnd (250 once the message is durable)."""
        self._take_pending(ev.DataEnd)
        self._send(reply)
        self.transaction = Transaction()

    def auth_challenge(self, data: bytes) -> None:
        """Send ``334 base64(data)`` and read the client's answer."""
        self._take_pending(ev.AuthStart, ev.AuthResponse)
        self._reader = AUTH_RESPONSE_LINES
        self._send(Reply(334, None, base64.b64encode(data).decode("ascii")))

    def auth_finish(self, reply: Reply, user: str | None) -> None:
        """End the AUTH exchange with ``reply``; ``user`` is set on success."""
        self._take_pending(ev.AuthStart, ev.AuthResponse, ev.AuthAborted)
        self._reader = COMMAND_LINES
        if user is not None:
            self.user = user
        self._send(reply)

    def timeout(self) -> None:
        self.close_with(r.TIMEOUT)

    def shutdown(self) -> None:
        self.close_with(r.SERVICE_UNAVAILABLE)

    def close_with(self, reply: Reply) -> None:
        """Send ``reply`` (a 421 or 221) and end the session."""
        if self._closed:
            return
        self._send(reply)
        if not self._closed:
            self._close()

    # -- dispatch of what the readers return -------------------------------
    def _advance(self) -> bool:
        """Read one item in the current mode and handle it; False when input ran out."""
        item = self._reader.read(self._input)
        if item is None:
            return False
        if isinstance(item, Body):
            self._on_body(item)
        elif isinstance(item, Overlong):
            self._on_overlong(item)
        elif self._reader is COMMAND_LINES:
            self._on_command(item)
        else:
            self._on_auth_response(item)
        return True

    def _on_command(self, line: bytes) -> None:
        self.verb = "?"
        try:
            cmd = c.split_command(line)
        except c.SyntaxProblem as problem:
            self._send(problem.reply)
            return
        if cmd.verb not in KNOWN_COMMANDS:
            self._send(r.UNKNOWN_COMMAND)
            return
        self.verb = verb = cmd.verb
        refused = refusal(
            self.state, verb, esmtp=self.esmtp, authenticated=self.user is not None,
            auth_required=self.params.require_auth, auth_after_helo=self.params.auth_after_helo,
        )
        if refused is not None:
            self._send(refused)
            if verb == "BDAT" and not self._closed:
                self._skip_chunk(cmd.arg)
            return
        try:
            _HANDLERS[verb](self, cmd.arg)
        except c.SyntaxProblem as problem:
            self._send(problem.reply)

    def _on_auth_response(self, line: bytes) -> None:
        """RFC 4954 section 4: "*" cancels; anything else is base64 ("=" is not)."""
        self._reader = COMMAND_LINES
        if line == b"*":
            self._await(ev.AuthAborted(ev.AuthAbort.CANCELLED))
            return
        data = c.decode_base64(line)
        if data is None:
            self._await(ev.AuthAborted(ev.AuthAbort.BAD_BASE64))
        else:
            self._await(ev.AuthResponse(data))

    def _on_overlong(self, item: Overlong) -> None:
        """500 5.5.2 for commands; 500 5.5.6 for AUTH lines (RFC 4954 section 4)."""
        if not item.complete:
            self._reader = DiscardReader(item.kind)
            return
        self._reader = COMMAND_LINES
        if item.kind is LineKind.AUTH_RESPONSE:
            self._await(ev.AuthAborted(ev.AuthAbort.TOO_LONG))
        elif item.kind is LineKind.AUTH_COMMAND:
            self._send(r.AUTH_LINE_TOO_LONG)
        else:
            self._send(r.LINE_TOO_LONG)

    def _on_body(self, body: Body) -> None:
        t = self.transaction
        pieces = body.pieces
        if body.bare_line_ending and t.rejection is None:
            if self.params.normalize_bare_lf:
                pieces = tuple(map(normalize_bare_lf, pieces))
                if any(map(has_bare_cr, pieces)):
                    t.rejection = r.BARE_LINE_ENDING
            else:
                t.rejection = r.BARE_LINE_ENDING
        # DATA only: a BDAT chunk is counted octets, stored verbatim (RFC 3030).
        check_eight_bit = (
            isinstance(self._reader, DataReader)
            and not self.params.accept_eight_bit
            and not _declares_eight_bit(t.params)
        )
        for piece in pieces:
            if t.rejection is not None:
                break
            if check_eight_bit and not piece.isascii():
                t.rejection = r.EIGHT_BIT_UNDECLARED
                break
            t.size += len(piece)
            if t.size > self.params.max_message_size:
                t.rejection = r.MESSAGE_TOO_BIG  # read on to the end, keep nothing
            else:
                self._events.append(ev.DataChunk(piece))
        if body.end:
            reader, self._reader = self._reader, COMMAND_LINES
            if isinstance(reader, ChunkReader):
                self._end_chunk(reader)
            else:
                self._await(ev.DataEnd(t.rejection))

    def _end_chunk(self, chunk: ChunkReader) -> None:
        if chunk.discard:
            return  # already answered
        t = self.transaction
        if chunk.last:
            self._await(ev.DataEnd(t.rejection))
        elif t.rejection is not None:
            self._send(t.rejection)
            self.transaction = Transaction()
        else:
            self._send(r.CHUNK_ACCEPTED)

    def _skip_chunk(self, arg: str) -> None:
        """A refused BDAT still carries its octets: read and drop them (no smuggling)."""
        try:
            size, _ = c.parse_bdat_argument(arg)
        except c.SyntaxProblem:
            return
        self._reader = ChunkReader(size, last=False, discard=True)

    # -- commands (run once the state table allowed them) -------------------
    def _ehlo(self, arg: str, *, esmtp: bool) -> None:
        if not arg:
            raise c.SyntaxProblem(r.MISSING_ARGUMENT)
        self.transaction = Transaction()
        self._greeted = True
        self.helo = c.helo_name(arg)
        self.esmtp = esmtp
        hostname = self.params.hostname
        if esmtp:
            self._send(Reply(250, None, hostname), _ehlo_reply(self.params))
        else:
            self._send(Reply(250, None, hostname))

    def _mail(self, arg: str) -> None:
        path = c.parse_path_argument(
            arg, "FROM:", allow_null=True, bad=r.BAD_SENDER_SYNTAX,
            recognised=c.MAIL_PARAMETERS if self.esmtp else _NO_PARAMETERS,
        )
        params = c.check_mail_params(path.params, max_size=self.params.max_message_size)
        if not path.address.isascii() and "SMTPUTF8" not in params:
            raise c.SyntaxProblem(r.EIGHT_BIT_WITHOUT_SMTPUTF8)
        self._await(ev.MailFrom(path.address, params))

    def _rcpt(self, arg: str) -> None:
        path = c.parse_path_argument(
            arg, "TO:", allow_null=False, bad=r.BAD_RECIPIENT_SYNTAX,
            recognised=c.RCPT_PARAMETERS if self.esmtp else _NO_PARAMETERS,
        )
        params = c.check_rcpt_params(path.params)
        if not path.address.isascii() and "SMTPUTF8" not in self.transaction.params:
            self._send(r.EIGHT_BIT_WITHOUT_SMTPUTF8)
        elif len(self.transaction.recipients) >= self.params.max_recipients:
            self._send(r.TOO_MANY_RECIPIENTS)  # RFC 5321 section 4.5.3.1.10
        else:
            self._await(ev.RcptTo(path.address, params))

    def _data(self, arg: str) -> None:
        if arg:
            raise c.SyntaxProblem(r.UNEXPECTED_ARGUMENT)
        self._await(ev.DataStart(bdat=False))

    def _bdat(self, arg: str) -> None:
        size, last = c.parse_bdat_argument(arg)
        chunk = ChunkReader(size, last=last, discard=False)
        if self.transaction.chunked:
            self._reader = chunk
        else:  # the first chunk opens the message: the host decides
            self._first_chunk = chunk
            self._await(ev.DataStart(bdat=True))

    def _rset(self, arg: str) -> None:
        if arg:
            raise c.SyntaxProblem(r.UNEXPECTED_ARGUMENT)
        self.transaction = Transaction()
        self._send(r.RESET_OK)

    def _quit(self, arg: str) -> None:
        self.close_with(r.CLOSING)

    def _vrfy(self, arg: str) -> None:
        if not arg:
            raise c.SyntaxProblem(r.MISSING_ARGUMENT)
        self._send(r.CANNOT_VRFY)

    def _starttls(self, arg: str) -> None:
        if arg:
            raise c.SyntaxProblem(r.UNEXPECTED_ARGUMENT)
        if self.params.tls_active:
            self._send(r.TLS_ALREADY_ACTIVE)
            return
        if not self.params.starttls_offered:
            self._send(r.NOT_IMPLEMENTED)
            return
        self._send(r.READY_FOR_TLS)
        self._closed = True
        self._input.clear()  # RFC 3207 section 4.2: nothing sent before TLS survives
        self._events.append(ev.StartTls())

    def _auth(self, arg: str) -> None:
        mechanism, initial_text = c.parse_auth_command(arg)
        initial, problem = c.parse_initial_response(initial_text)
        self._await(ev.AuthStart(mechanism, initial, problem))

    # -- the one way out, and the bookkeeping of pending answers -------------
    def _send(self, reply: Reply, wire: bytes | None = None) -> None:
        """Queue ``reply`` (``wire`` when it is not one line): every reply goes here.

        The max_errors-th protocol error is replaced by 421 4.7.0; a 421 ends
        the session (RFC 5321 section 3.8).
        """
        code = reply.code
        if code >= 400:
            if code in _COUNTED_ERRORS:
                self.errors += 1
                if self.errors >= self.params.max_errors:
                    reply, wire, code = r.TOO_MANY_ERRORS, None, r.TOO_MANY_ERRORS.code
            if len(self.refusals) < _MAX_REFUSALS:
                self.refusals.append((self.verb, code))
        self._out.append(reply.to_bytes() if wire is None else wire)
        if code == 421:
            self._close()

    def _await(self, event: ev.Event) -> None:
        self._events.append(event)
        self._awaiting = event

    def _take_pending(self, *expected: type[ev.Event]) -> ev.Event:
        pending = self._awaiting
        if pending is None or not isinstance(pending, expected):
            raise RuntimeError(f"no {', '.join(t.__name__ for t in expected)} awaits a reply")
        self._awaiting = None
        return pending

    def _close(self) -> None:
        self._closed = True
        self._input.clear()
        self._awaiting = None
        self._events.append(ev.Closed())


def normalize_bare_lf(piece: bytes) -> bytes:
    """Every LF not preceded by CR becomes CRLF (a listener with bare_lf = "normalize").

    The framer never ends a piece between a CR and its LF, so pieces are
    normalized one at a time. Ending DATA is not affected: only a real
    <CRLF>.<CRLF> ends it, so a bare LF can never smuggle commands.
    """
    if b"\n" not in piece:
        return piece
    return piece.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def has_bare_cr(piece: bytes) -> bool:
    """A CR not followed by LF (after normalize_bare_lf, LFs are all in CRLFs)."""
    return piece.count(b"\r") != piece.count(b"\r\n")


def _declares_eight_bit(params: dict[str, str | None]) -> bool:
    return (params.get("BODY") or "").upper() == "8BITMIME" or "SMTPUTF8" in params


_HANDLERS: dict[str, Callable[[Session, str], None]] = {
    "HELO": lambda s, a: s._ehlo(a, esmtp=False),
    "EHLO": lambda s, a: s._ehlo(a, esmtp=True),
    "MAIL": Session._mail,
    "RCPT": Session._rcpt,
    "DATA": Session._data,
    "BDAT": Session._bdat,
    "RSET": Session._rset,
    "NOOP": lambda s, a: s._send(r.OK),
    "QUIT": Session._quit,
    "VRFY": Session._vrfy,
    "EXPN": lambda s, a: s._send(r.NOT_IMPLEMENTED),  # RFC 5321 section 3.5.3: may be off
    "HELP": lambda s, a: s._send(r.HELP),
    "STARTTLS": Session._starttls,
    "AUTH": Session._auth,
}

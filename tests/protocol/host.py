"""An in-memory host for transcript tests: accepts everything, records messages.

AUTH is answered by a tiny fixed table so the session's AUTH framing can be
tested without the real auth service: PLAIN with user "u" / password "p".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TypeVar

from smtpgate.config.schema import LimitsConfig
from smtpgate.protocol import events as ev
from smtpgate.protocol import replies as r
from smtpgate.protocol.replies import Reply
from smtpgate.protocol.session import Session, SessionParams
from smtpgate.protocol.states import State

E = TypeVar("E")


@dataclass
class MemoryHost:
    session: Session
    messages: list[bytes] = field(default_factory=list)
    events: list[ev.Event] = field(default_factory=list)
    reject_rcpt: set[str] = field(default_factory=set)
    reject_mail: Reply | None = None  # answer every MailFrom with this reply
    reject_data: Reply | None = None  # answer every DataStart (DATA or first BDAT) with this
    starttls: bool = False
    _body: list[bytes] = field(default_factory=list)

    def feed(self, data: bytes) -> bytes:
        self.session.receive_data(data)
        self.pump()
        return self.session.data_to_send()

    def pump(self) -> None:
        s = self.session
        while (event := s.next_event()) is not None:
            self.events.append(event)
            self.handle(event)

    def handle(self, event: ev.Event) -> None:
        s = self.session
        if isinstance(event, ev.MailFrom):
            if self.reject_mail is not None:
                s.reject(self.reject_mail)
            else:
                s.accept()
        elif isinstance(event, ev.RcptTo):
            if event.address in self.reject_rcpt:
                s.reject(Reply(550, "5.1.1", "No such user"))
            else:
                s.accept()
        elif isinstance(event, ev.DataStart):
            self._body = []
            if self.reject_data is not None:
                s.reject(self.reject_data)
            else:
                s.accept()
        elif isinstance(event, ev.DataChunk):
            self._body.append(event.data)
        elif isinstance(event, ev.DataEnd):
            if event.rejection is not None:
                assert isinstance(event.rejection, Reply)
                s.reply(event.rejection)
            else:
                self.messages.append(b"".join(self._body))
                s.reply(r.MESSAGE_ACCEPTED)
        elif isinstance(event, ev.AuthStart):
            self._auth_start(event)
        elif isinstance(event, ev.AuthResponse):
            self._check_plain(event.data)
        elif isinstance(event, ev.AuthAborted):
            s.auth_finish(
                {
                    ev.AuthAbort.CANCELLED: r.AUTH_CANCELLED,
                    ev.AuthAbort.BAD_BASE64: r.AUTH_BAD_BASE64,
                    ev.AuthAbort.TOO_LONG: r.AUTH_LINE_TOO_LONG,
                }[event.reason],
                None,
            )
        elif isinstance(event, ev.StartTls):
            self.starttls = True

    def _auth_start(self, event: ev.AuthStart) -> None:
        s = self.session
        if event.problem is not None:
            s.auth_finish(
                r.AUTH_CANCELLED if event.problem is ev.AuthAbort.CANCELLED else r.AUTH_BAD_BASE64,
                None,
            )
        elif event.mechanism != "PLAIN":
            s.auth_finish(r.AUTH_UNKNOWN_MECHANISM, None)
        elif event.initial is None:
            s.auth_challenge(b"")
        else:
            self._check_plain(event.initial)

    def _check_plain(self, data: bytes) -> None:
        if data == b"\0u\0p":
            self.session.auth_finish(r.AUTH_SUCCEEDED, "u")
        else:
            self.session.auth_finish(r.AUTH_INVALID, None)


def session_params(**overrides: object) -> SessionParams:
    """SessionParams for tests: a require_auth listener without TLS, the default limits."""
    limits = LimitsConfig()
    values: dict[str, object] = {
        "hostname": "mx.test", "tls_active": False, "starttls_offered": False,
        "require_auth": True, "auth_mechanisms": (),
        "max_message_size": limits.max_message_size, "max_recipients": limits.max_recipients,
        "max_errors": limits.max_errors,
    }
    unknown = set(overrides) - {f.name for f in dataclasses.fields(SessionParams)}
    assert not unknown, f"not a SessionParams field: {unknown}"
    values.update(overrides)
    return SessionParams(**values)  # type: ignore[arg-type]


def make_host(**params: object) -> MemoryHost:
    session = Session(session_params(**params))
    session.greet()
    host = MemoryHost(session)
    session.data_to_send()
    return host


def open_host(**params: object) -> MemoryHost:
    """A host on a listener without require_auth (the default is require_auth on)."""
    params.setdefault("require_auth", False)
    return make_host(**params)


# Commands that bring a fresh open_host() session into each live state.
SETUPS = {
    State.CONNECTED: b"",
    State.READY: b"EHLO c\r\n",
    State.MAIL: b"EHLO c\r\nMAIL FROM:<a@b.example>\r\n",
    State.RCPT: b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n",
    State.BDAT: b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nBDAT 1\r\nx",
}


def codes(output: bytes) -> list[str]:
    """The reply codes (with enhanced codes) of every final reply line."""
    out = []
    for line in output.decode().split("\r\n"):
        if len(line) >= 4 and line[3] == " ":
            parts = line.split(" ")
            has_enhanced = len(parts) > 1 and parts[1][:1].isdigit() and "." in parts[1]
            enhanced = parts[1] if has_enhanced else ""
            out.append(f"{line[:3]} {enhanced}".strip())
    return out


def mode_or_state(host: MemoryHost, which: str) -> object:
    """``session.state`` or ``session.mode``, unnarrowed (for repeated checks under mypy)."""
    return getattr(host.session, which)


def of_type(host: MemoryHost, kind: type[E]) -> list[E]:
    """The events of one class the host has seen, in order."""
    return [e for e in host.events if isinstance(e, kind)]


def transcript(host: MemoryHost, script: str) -> None:
    """Run ``C:``/``S:`` lines; each ``S:`` line is a reply code prefix to expect in order."""
    pending: list[str] = []
    for raw in script.strip().splitlines():
        line = raw.strip()
        if line.startswith("C:"):
            pending.extend(codes(host.feed(line[2:].strip().encode() + b"\r\n")))
        elif line.startswith("S:"):
            want = line[2:].strip()
            assert pending, f"expected {want!r}, server sent nothing more"
            got = pending.pop(0)
            assert got == want, f"expected {want!r}, got {got!r}"
    assert not pending, f"unexpected replies: {pending}"

"""An in-memory host for transcript tests: accepts everything, records messages.

AUTH is answered by a tiny fixed table so the session's AUTH framing can be
tested without the real auth service: PLAIN with user "u" / password "p".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smtpgate.protocol import events as ev
from smtpgate.protocol import replies as r
from smtpgate.protocol.replies import Reply
from smtpgate.protocol.session import Session, SessionParams


@dataclass
class MemoryHost:
    session: Session
    messages: list[bytes] = field(default_factory=list)
    events: list[ev.Event] = field(default_factory=list)
    reject_rcpt: set[str] = field(default_factory=set)
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
            s.accept()
        elif isinstance(event, ev.RcptTo):
            if event.address in self.reject_rcpt:
                s.reject(Reply(550, "5.1.1", "No such user"))
            else:
                s.accept()
        elif isinstance(event, ev.DataStart):
            self._body = []
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


def make_host(**params: object) -> MemoryHost:
    session = Session(SessionParams(hostname="mx.test", **params))  # type: ignore[arg-type]
    session.greet()
    host = MemoryHost(session)
    session.data_to_send()
    return host


def codes(output: bytes) -> list[str]:
    """The reply codes (with enhanced codes) of every final reply line."""
    out = []
    for line in output.decode().split("\r\n"):
        if len(line) >= 4 and line[3] == " ":
            parts = line.split(" ")
            enhanced = parts[1] if len(parts) > 1 and parts[1][:1].isdigit() and "." in parts[1] else ""
            out.append(f"{line[:3]} {enhanced}".strip())
    return out


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

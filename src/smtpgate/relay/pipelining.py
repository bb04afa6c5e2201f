"""PIPELINING (RFC 2920) on an aiosmtplib connection: MAIL, every RCPT and DATA in one write.

Theory of operation
-------------------
aiosmtplib 5.1.3 sends one command and waits for its reply. Its
``SMTPProtocol`` keeps one parsed reply at a time: a second reply that
arrives in the same read stays unparsed in its buffer until more data
comes, and one that arrives before the first was picked up is dropped. So
pipelined commands cannot go through its ``execute_command``.

``PipeliningProtocol`` is that protocol plus one method, ``exchange``: it
writes a group of commands at once and collects exactly one reply per
command, in order, from everything read while the group is out (with the
same limits on a reply's size and the same parser as aiosmtplib). Outside
an ``exchange`` it is aiosmtplib's protocol, unchanged: connect, EHLO,
STARTTLS and AUTH run as before.

``SMTP`` creates its protocol itself (there is no factory to pass), so
``pipelining`` switches the class of an open connection's protocol to the
subclass, which adds no state of its own (its one attribute has a class
default), and gives the protocol to its transport again
(``set_protocol``): uvloop's transports keep the bound ``data_received``
they were given, and would go on calling aiosmtplib's. It does so only
when the upstream's last EHLO offered PIPELINING and the protocol is
exactly the aiosmtplib class this was written against with the internals
it uses; otherwise the relay sends one command at a time as before. Its
users follow RFC 2920 section 3.1: DATA ends the group, every reply is
checked, and a DATA accepted after every RCPT was refused gets a lone "."
(``relay.upstream``).
"""

from __future__ import annotations

import asyncio
import re

import aiosmtplib
from aiosmtplib.protocol import MAX_RESPONSE_LENGTH, SMTPProtocol
from aiosmtplib.response import SMTPResponse

__all__ = ["PipeliningProtocol", "command", "pipelining"]

_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")  # as aiosmtplib: no CR/LF smuggled into a command


def command(*words: bytes) -> bytes:
    """One command line of a group; ``ValueError`` on a control character (as aiosmtplib)."""
    for word in words:
        if _CONTROL.search(word):
            raise ValueError("Command arg contains a prohibited control character")
    return b" ".join(words) + b"\r\n"


class _Group:
    __slots__ = ("count", "done", "replies")

    def __init__(self, count: int, done: asyncio.Future[list[SMTPResponse]]) -> None:
        self.count = count
        self.done = done
        self.replies: list[SMTPResponse] = []


class PipeliningProtocol(SMTPProtocol):
    """aiosmtplib's protocol plus ``exchange`` (see the module docstring)."""

    _group: _Group | None = None  # the commands out now; None outside ``exchange``

    async def exchange(self, commands: bytes, count: int, timeout: float
                       ) -> list[SMTPResponse]:
        """Write ``commands`` (``count`` of them) at once; their replies, in order. Fewer
        only when the connection closed after a 421 (the upstream is closing)."""
        lock = self._command_lock
        if lock is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        async with lock:
            group = _Group(count, self._loop.create_future())
            self._group = group
            try:
                self.write(commands)
                async with asyncio.timeout(timeout):
                    return await group.done
            except TimeoutError as exc:
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response") from exc
            finally:
                self._group = None

    def data_received(self, data: bytes) -> None:
        group = self._group
        if group is None or group.done.done():
            super().data_received(data)  # aiosmtplib's own path (drops unsolicited data)
            return
        self._buffer.extend(data)
        try:
            while len(group.replies) < group.count:
                reply = self._read_response_from_buffer()
                if reply is None:
                    break
                group.replies.append(reply)
            if len(self._buffer) > MAX_RESPONSE_LENGTH:
                raise aiosmtplib.SMTPResponseException(500, "Response too long")
        except Exception as exc:
            del self._buffer[:]
            _set_exception(group.done, exc)
            return
        if len(group.replies) == group.count:
            del self._buffer[:]  # more replies than commands: never pair them with later ones
            group.done.set_result(group.replies)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected("Connection lost"), exc)
        super().connection_lost(exc)

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("Unexpected EOF received"), None)
        return super().eof_received()

    def _fail(self, error: Exception, cause: Exception | None) -> None:
        group = self._group
        if group is None or group.done.done():
            return
        if any(reply.code == 421 for reply in group.replies):
            group.done.set_result(group.replies)  # fewer than asked: the 421 says why
            return
        error.__cause__ = cause
        _set_exception(group.done, error)


def _set_exception(done: asyncio.Future[list[SMTPResponse]], exc: BaseException) -> None:
    done.set_exception(exc)
    done.exception()  # marked retrieved: after a timeout nobody awaits it (as aiosmtplib)


def pipelining(smtp: aiosmtplib.SMTP) -> PipeliningProtocol | None:
    """The connection's protocol, able to pipeline; None when the upstream does not offer
    PIPELINING (after its last EHLO) or the protocol is not the one this knows."""
    protocol = smtp.protocol
    if protocol is None or smtp.is_ehlo_or_helo_needed:
        return None
    if not smtp.supports_extension("pipelining"):
        return None
    if type(protocol) is SMTPProtocol and _known(protocol) and smtp.transport is not None:
        protocol.__class__ = PipeliningProtocol  # adds behaviour only: see the docstring
        # uvloop's transports keep the bound data_received they were given: hand it over
        # again so that the subclass's is the one called.
        smtp.transport.set_protocol(protocol)
    return protocol if isinstance(protocol, PipeliningProtocol) else None


def _known(protocol: SMTPProtocol) -> bool:
    """The internals ``PipeliningProtocol`` relies on are there (aiosmtplib 5.1)."""
    return (isinstance(getattr(protocol, "_buffer", None), bytearray)
            and callable(getattr(protocol, "_read_response_from_buffer", None))
            and hasattr(protocol, "_command_lock"))

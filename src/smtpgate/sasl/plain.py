"""PLAIN (RFC 4616): one client message, ``[authzid] NUL authcid NUL passwd``.

Theory of operation
-------------------
With an initial response the whole exchange is ``start(message)``; without
one the server sends an empty challenge (RFC 4422 section 5, RFC 4954
section 4) and the message arrives in ``step``. The mechanism only parses:
it ends in ``VerifyPassword`` and the host checks the password.

Outcomes:

* empty message (``AUTH PLAIN =``): a failed login, ``Failure(INVALID)``
  (the reply contract: 535 5.7.8);
* broken syntax (not two NULs, not UTF-8, empty authcid) or a name or
  password SASLprep rejects: ``Failure(MALFORMED)``;
* empty password: ``Failure(INVALID)`` (RFC 4616 section 2: verification
  fails when preparation results in an empty string);
* otherwise ``VerifyPassword(authcid, authzid, passwd)`` with authcid and
  passwd prepared by SASLprep as query strings (RFC 4616 section 2,
  RFC 4013). The authzid is passed on as sent; its form belongs to the
  application protocol.
"""

from __future__ import annotations

import enum
from typing import ClassVar

from smtpgate.sasl._common import OUT_OF_SEQUENCE, decode_utf8, invalid, malformed
from smtpgate.sasl.base import (
    Challenge,
    MechanismContext,
    Secret,
    SecretScheme,
    Step,
    VerifyPassword,
)
from smtpgate.sasl.saslprep import SaslPrepError, saslprep

__all__ = ["Plain", "parse_plain"]


class _State(enum.Enum):
    START = enum.auto()
    AWAIT_MESSAGE = enum.auto()
    DONE = enum.auto()


def parse_plain(message: bytes) -> Step:
    """Turn one PLAIN message into VerifyPassword or Failure (RFC 4616 section 2)."""
    if message == b"":
        return invalid("empty PLAIN message")
    parts = message.split(b"\x00")
    if len(parts) != 3:  # message = [authzid] UTF8NUL authcid UTF8NUL passwd
        return malformed("PLAIN message needs exactly two NULs")
    fields = [decode_utf8(part) for part in parts]
    authzid, authcid, passwd = fields
    if authzid is None or authcid is None or passwd is None:
        return malformed("PLAIN message is not UTF-8")
    if authcid == "":  # authcid = 1*SAFE
        return malformed("PLAIN authcid is empty")
    try:
        authcid = saslprep(authcid, allow_unassigned=True)
        passwd = saslprep(passwd, allow_unassigned=True)
    except SaslPrepError:
        return malformed("PLAIN authcid or password rejected by SASLprep")
    if authcid == "":
        return malformed("PLAIN authcid is empty after SASLprep")
    if passwd == "":
        return invalid("PLAIN password is empty")
    return VerifyPassword(authcid=authcid, authzid=authzid, password=passwd)


class Plain:
    """Server side of PLAIN."""

    name: ClassVar[str] = "PLAIN"
    secret_scheme: ClassVar[SecretScheme | None] = None
    channel_binding: ClassVar[bool] = False
    server_first: ClassVar[bool] = False

    def __init__(self, context: MechanismContext) -> None:
        self._context = context
        self._state = _State.START

    def start(self, initial: bytes | None) -> Step:
        if self._state is not _State.START:
            return self._fail_sequence()
        if initial is None:
            self._state = _State.AWAIT_MESSAGE
            return Challenge(b"")  # RFC 4954 section 4: "334 " then the message
        self._state = _State.DONE
        return parse_plain(initial)

    def step(self, response: bytes) -> Step:
        if self._state is not _State.AWAIT_MESSAGE:
            return self._fail_sequence()
        self._state = _State.DONE
        return parse_plain(response)

    def resume(self, secret: Secret) -> Step:
        return self._fail_sequence()  # PLAIN never asks for a secret

    def _fail_sequence(self) -> Step:
        self._state = _State.DONE
        return OUT_OF_SEQUENCE

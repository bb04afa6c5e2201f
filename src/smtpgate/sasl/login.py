"""LOGIN (draft-murchison-sasl-login-00): prompt for a user name, then a password.

Theory of operation
-------------------
The server asks ``Username:`` and ``Password:`` (draft section 2; the README
reply contract fixes these exact prompts because some printers quit on anything
else). An initial response carries the user name, as copiers send
``AUTH LOGIN <b64-user>``, so only the password is asked for; an empty
initial response (``=``) is an empty user name.

The mechanism ends in ``VerifyPassword(user, "", password)``; LOGIN has no
authorization identity. An empty user name or password is *not* refused
here: the host fails it like any other wrong credential, so the client
learns nothing from where the exchange stopped. Both strings are prepared
with SASLprep as query strings (the draft has no rule; this follows the
gsasl manual's advice, appendix A.2). Invalid UTF-8, NUL, or a SASLprep
rejection is ``Failure(MALFORMED)``.
"""

from __future__ import annotations

import enum
from typing import ClassVar

from smtpgate.sasl._common import OUT_OF_SEQUENCE, decode_utf8, malformed
from smtpgate.sasl.base import (
    Challenge,
    MechanismContext,
    Secret,
    SecretScheme,
    Step,
    VerifyPassword,
)
from smtpgate.sasl.saslprep import SaslPrepError, saslprep

__all__ = ["PASSWORD_PROMPT", "USERNAME_PROMPT", "Login"]

USERNAME_PROMPT = b"Username:"  # 334 VXNlcm5hbWU6
PASSWORD_PROMPT = b"Password:"  # 334 UGFzc3dvcmQ6


class _State(enum.Enum):
    START = enum.auto()
    AWAIT_USERNAME = enum.auto()
    AWAIT_PASSWORD = enum.auto()
    DONE = enum.auto()


def _prepare(data: bytes) -> str | None:
    """UTF-8 decode and SASLprep one LOGIN answer; None if it is unusable."""
    text = decode_utf8(data)
    if text is None:
        return None
    try:  # SASLprep also refuses NUL and other controls (RFC 4013 section 2.3)
        return saslprep(text, allow_unassigned=True)
    except SaslPrepError:
        return None


class Login:
    """Server side of LOGIN."""

    name: ClassVar[str] = "LOGIN"
    secret_scheme: ClassVar[SecretScheme | None] = None
    channel_binding: ClassVar[bool] = False
    server_first: ClassVar[bool] = False

    def __init__(self, context: MechanismContext) -> None:
        self._context = context
        self._state = _State.START
        self._username = ""

    def start(self, initial: bytes | None) -> Step:
        if self._state is not _State.START:
            return self._fail_sequence()
        if initial is None:
            self._state = _State.AWAIT_USERNAME
            return Challenge(USERNAME_PROMPT)
        return self._take_username(initial)

    def step(self, response: bytes) -> Step:
        if self._state is _State.AWAIT_USERNAME:
            return self._take_username(response)
        if self._state is _State.AWAIT_PASSWORD:
            return self._take_password(response)
        return self._fail_sequence()

    def resume(self, secret: Secret) -> Step:
        return self._fail_sequence()  # LOGIN never asks for a secret

    def _take_username(self, data: bytes) -> Step:
        username = _prepare(data)
        if username is None:
            self._state = _State.DONE
            return malformed("LOGIN user name unusable")
        self._username = username
        self._state = _State.AWAIT_PASSWORD
        return Challenge(PASSWORD_PROMPT)

    def _take_password(self, data: bytes) -> Step:
        self._state = _State.DONE
        password = _prepare(data)
        if password is None:
            return malformed("LOGIN password unusable")
        return VerifyPassword(authcid=self._username, authzid="", password=password)

    def _fail_sequence(self) -> Step:
        self._state = _State.DONE
        return OUT_OF_SEQUENCE

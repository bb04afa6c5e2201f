"""One connection to the smarthost, with aiosmtplib as the SMTP client.

Theory of operation
-------------------
The steps are separate methods so that the deliverer and ``relay test``
share them and every failure names its step:

    connect       TCP (and the TLS handshake when ``tls = "implicit"``), greeting, EHLO
    secure        STARTTLS when ``tls = "starttls"`` (refused if not offered: never
                  silently in clear), certificate checked unless ``verify = false``
    authenticate  the account's AUTH: PLAIN / LOGIN with the password file, or
                  XOAUTH2 / OAUTHBEARER (RFC 7628) with a token; a 535 on a token
                  refreshes the token once and tries again
    send          MAIL FROM, one RCPT per recipient, DATA: one reply per recipient

Each of the first three raises ``UpstreamError`` (always temporary: a
certificate, a password or a token is a set-up problem the operator fixes
while the mail waits). ``send`` returns the upstream reply for each
recipient; a lost connection or a timeout raises ``UpstreamError`` and
leaves every recipient of that message to be retried.

Certificates: the system store, plus ``ca_file`` when set; ``verify =
false`` turns checking off (the relay logs a warning at start).
Secrets (password, token) are never logged; replies are.
"""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from smtpgate.config.schema import RelayAccount, RelayConfig

TIMEOUT = 60.0


class TokenSource(Protocol):
    async def token(self, *, force: bool = False) -> str: ...


class UpstreamError(Exception):
    """A failure at ``step``; ``reply`` is the upstream's reply when there was one."""

    def __init__(self, step: str, reason: str, reply: str = "") -> None:
        self.step = step
        self.reason = reason
        self.reply = reply
        super().__init__(f"{step}: {reason}" + (f" (upstream said: {reply})" if reply else ""))


@dataclass(frozen=True, slots=True)
class Result:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


def tls_context(relay: RelayConfig) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if relay.ca_file:
        try:
            context.load_verify_locations(cafile=relay.ca_file)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise UpstreamError("tls", f"cannot load ca_file {relay.ca_file}: {reason}") from None
    if not relay.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def read_secret(path: str) -> str:
    """The first line of a secret file, without its line end."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return lines[0].strip() if lines else ""


class Upstream:
    """One session with the smarthost for one account."""

    def __init__(
        self, relay: RelayConfig, account: RelayAccount, hostname: str,
        tokens: TokenSource | None = None,
    ) -> None:
        self.relay = relay
        self.account = account
        self.tokens = tokens
        self.smtp = aiosmtplib.SMTP(
            hostname=relay.host,
            port=relay.port,
            local_hostname=hostname,
            use_tls=relay.tls == "implicit",
            start_tls=False,
            tls_context=tls_context(relay),
            timeout=TIMEOUT,
        )

    @property
    def alive(self) -> bool:
        return self.smtp.is_connected

    async def open(self) -> None:
        await self.connect()
        await self.secure()
        await self.authenticate()

    async def connect(self) -> str:
        try:
            response = await self.smtp.connect()
            await self.smtp.ehlo()
        except ssl.SSLError as exc:
            raise UpstreamError("connect", f"TLS handshake failed: {_ssl_reason(exc)}") from None
        except aiosmtplib.SMTPResponseException as exc:
            raise UpstreamError("connect", "refused", f"{exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise UpstreamError("connect", _reason(exc)) from None
        return f"{response.code} {response.message}"

    async def secure(self) -> None:
        if self.relay.tls != "starttls":
            return
        if not self.smtp.supports_extension("starttls"):
            raise UpstreamError("tls", "the upstream does not offer STARTTLS")
        try:
            await self.smtp.starttls()
        except ssl.SSLError as exc:
            raise UpstreamError("tls", _ssl_reason(exc)) from None
        except aiosmtplib.SMTPResponseException as exc:
            raise UpstreamError("tls", "STARTTLS refused", f"{exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, ssl.SSLError):
                raise UpstreamError("tls", _ssl_reason(cause)) from None
            raise UpstreamError("tls", _reason(exc)) from None

    async def authenticate(self) -> None:
        auth = self.account.auth
        if auth == "none":
            return
        try:
            if auth in ("plain", "login"):
                await self._password_auth()
            else:
                await self._token_auth()
        except aiosmtplib.SMTPResponseException as exc:
            raise UpstreamError("auth", f"AUTH {auth.upper()} refused",
                                f"{exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise UpstreamError("auth", _reason(exc)) from None

    async def _password_auth(self) -> None:
        try:
            password = read_secret(self.account.password_file)
        except OSError as exc:
            raise UpstreamError("auth", f"cannot read password_file: {exc.strerror}") from None
        if self.account.auth == "plain":
            await self.smtp.auth_plain(self.account.username, password)
        else:
            await self.smtp.auth_login(self.account.username, password)

    async def _token_auth(self) -> None:
        if self.tokens is None:
            raise UpstreamError("auth", "no token source for an OAuth2 account")
        try:
            await self._send_token(await self.tokens.token())
        except aiosmtplib.SMTPAuthenticationError as exc:
            if exc.code != 535:
                raise
            await self._send_token(await self.tokens.token(force=True))  # refreshed, once

    async def _send_token(self, token: str) -> None:
        user = self.account.username
        if self.account.auth == "xoauth2":
            await self.smtp.auth_xoauth2(user, token)
            return
        host, port = self.relay.host, self.relay.port
        text = f"n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
        response = await self.smtp.execute_command(
            b"AUTH", b"OAUTHBEARER", base64.b64encode(text.encode())
        )
        if response.code == 334:  # an error challenge: RFC 7628 section 3.2.3, answer %x01
            response = await self.smtp.execute_command(base64.b64encode(b"\x01"))
        if response.code != 235:
            raise aiosmtplib.SMTPAuthenticationError(response.code, response.message)

    async def mail_from(self, sender: str) -> Result:
        """MAIL FROM alone (``relay test``); the reply, success or not."""
        try:
            response = await self.smtp.mail(sender)
        except aiosmtplib.SMTPResponseException as exc:
            return Result(exc.code, exc.message)
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise UpstreamError("mail", _reason(exc)) from None
        return Result(response.code, response.message)

    async def send(
        self, sender: str, recipients: list[str], message: bytes,
        dsn: tuple[list[str], dict[str, list[str]]] = ([], {}),
    ) -> dict[str, Result]:
        """One transaction; the upstream reply per recipient. ``dsn`` holds the RFC 3461
        MAIL and per-recipient RCPT parameters, sent only when the upstream offers DSN."""
        if not self.smtp.supports_extension("dsn"):
            dsn = ([], {})
        try:
            return await self._transaction(sender, recipients, message, dsn)
        except aiosmtplib.SMTPResponseException as exc:
            reason = "upstream closing" if exc.code == 421 else "unexpected reply"
            raise UpstreamError("send", reason, f"{exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise UpstreamError("send", _reason(exc)) from None

    async def _transaction(
        self, sender: str, recipients: list[str], message: bytes,
        dsn: tuple[list[str], dict[str, list[str]]],
    ) -> dict[str, Result]:
        options = list(dsn[0])
        if self.smtp.supports_extension("8bitmime") and not message.isascii():
            options.append("BODY=8BITMIME")
        try:
            await self.smtp.mail(sender, options=options)
        except aiosmtplib.SMTPSenderRefused as exc:
            if exc.code == 421:
                raise
            await self._reset()
            return dict.fromkeys(recipients, Result(exc.code, exc.message))
        results: dict[str, Result] = {}
        accepted: list[str] = []
        for recipient in recipients:
            try:
                await self.smtp.rcpt(recipient, options=dsn[1].get(recipient, []))
                accepted.append(recipient)
            except aiosmtplib.SMTPRecipientRefused as exc:
                if exc.code == 421:
                    raise
                results[recipient] = Result(exc.code, exc.message)
        if not accepted:
            await self._reset()
            return results
        try:
            response = await self.smtp.data(message)
            outcome = Result(response.code, response.message)
        except aiosmtplib.SMTPDataError as exc:
            if exc.code == 421:
                raise
            outcome = Result(exc.code, exc.message)
        results.update(dict.fromkeys(accepted, outcome))
        return results

    async def _reset(self) -> None:
        try:
            await self.smtp.rset()
        except (aiosmtplib.SMTPException, OSError):
            self.smtp.close()

    async def close(self) -> None:
        if self.smtp.is_connected:
            try:
                await self.smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                self.smtp.close()


def _ssl_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {exc.verify_message}"
    return exc.reason or str(exc)


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, ssl.SSLError):
        return _ssl_reason(cause)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__

"""One connection to the smarthost, with aiosmtplib as the SMTP client.

Theory of operation
-------------------
The steps are separate methods so that the deliverer and ``relay test``
share them and every failure names its step:

    connect       TCP (and the TLS handshake when ``tls = "implicit"``), greeting, EHLO
    secure        STARTTLS when ``tls = "starttls"`` (refused if not offered: never
                  silently in clear), certificate checked unless ``verify = false``,
                  then EHLO again
    authenticate  the account's AUTH: PLAIN / LOGIN with the password file, or
                  XOAUTH2 / OAUTHBEARER (RFC 7628) with a token; a 535 on a token
                  refreshes the token once and tries again
    send          MAIL FROM, one RCPT per recipient, DATA: one reply per recipient

Each of the first three raises ``UpstreamError`` (always temporary: a
certificate, a password or a token is a set-up problem the operator fixes
while the mail waits). ``send`` returns the upstream reply for each
recipient; a lost connection or a timeout raises ``UpstreamError`` and
leaves every recipient of that message to be retried.

The commands of ``send`` skip two per-message costs of aiosmtplib's ``mail``,
``rcpt`` and ``data`` where that is safe: an address made only of dot-atom
characters (RFC 5321 section 4.1.2) is put in ``<>`` as it is, without
``email.utils.parseaddr``; and a message whose every line already ends in
CRLF (what the queue holds from DATA: ``protocol/framing.py``) is
dot-stuffed (RFC 5321 section 4.5.2) with one ``bytes.replace`` instead of
two regular expressions over the whole message. Anything else (a quoted
local part, a bare LF from BDAT) goes through aiosmtplib as before.

When the upstream offers PIPELINING (RFC 2920), ``send`` writes MAIL, every
RCPT and DATA as one group and the message as a second one
(``relay.pipelining``: aiosmtplib itself waits for each reply): two round
trips per message instead of three plus one per recipient. Every reply is
checked (section 3.1): a refused MAIL or RCPT counts as it would one at a
time; a DATA refused ends the transaction with RSET; a DATA accepted when
every RCPT was refused gets a lone "." and nothing is sent.

Certificates: the system store, plus ``ca_file`` when set; ``verify =
false`` turns checking off (the relay logs a warning at start). Both are
loaded once per process (``tls_context``), ``ca_file`` again when it changes.
Secrets (password, token) are never logged; replies are.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from smtpgate.config.schema import RelayAccount, RelayConfig
from smtpgate.protocol.framing import scan_lines
from smtpgate.relay.pipelining import PipeliningProtocol, command, pipelining

TIMEOUT = 60.0
# Addresses sent as they are (RFC 5321 dot-atom local part, plain domain); others are
# parsed and checked by aiosmtplib.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


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


# A non-ASCII address, and the upstream does not offer SMTPUTF8 (RFC 6531 section 3.2):
# the message cannot go there as it is, now or later. X.6.7, "non-ASCII addresses not
# permitted for that sender/recipient", is RFC 6531's code in RFC 5248's registry.
NO_SMTPUTF8 = Result(553, "5.6.7 non-ASCII address, and the upstream does not offer SMTPUTF8")


def tls_context(relay: RelayConfig) -> ssl.SSLContext | None:
    """The context for TLS to the smarthost (None with ``tls = "none"``). One is made per
    setting and kept, since loading the system's CA store took milliseconds of CPU for
    every upstream session; a ``ca_file`` changed on disk makes a new one."""
    if relay.tls == "none":
        return None
    changed = 0
    if relay.ca_file:
        with contextlib.suppress(OSError):  # a missing file is reported when it is loaded
            changed = os.stat(relay.ca_file).st_mtime_ns
    return _tls_context(relay.ca_file, changed, relay.verify)


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: str, changed: int, verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise UpstreamError("tls", f"cannot load ca_file {ca_file}: {reason}") from None
    if not verify:
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
        try:  # RFC 3207 section 4.2: what was offered in clear no longer holds; ask now,
            await self.smtp.ehlo()  # so that the first message may already pipeline
        except aiosmtplib.SMTPResponseException as exc:
            raise UpstreamError("tls", "EHLO after STARTTLS refused",
                                f"{exc.code} {exc.message}") from None
        except (aiosmtplib.SMTPException, OSError) as exc:
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
        refused: dict[str, Result] = {}
        if not self.smtp.supports_extension("smtputf8"):  # RFC 6531 section 3.2
            if not sender.isascii():
                return dict.fromkeys(recipients, NO_SMTPUTF8)
            refused = {r: NO_SMTPUTF8 for r in recipients if not r.isascii()}
            recipients = [r for r in recipients if r.isascii()]
            if not recipients:
                return refused
        try:
            return {**refused, **await self._transaction(sender, recipients, message, dsn)}
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
        utf8 = not (sender.isascii() and all(r.isascii() for r in recipients))
        if utf8:
            options.append("SMTPUTF8")  # RFC 6531: the addresses go as UTF-8 (send checks)
        protocol = pipelining(self.smtp)
        if protocol is not None:
            group = _group(sender, recipients, options, dsn[1])
            payload = _data_payload(message)
            if group is not None and payload is not None:
                return await self._pipelined(protocol, group, recipients, payload)
        try:
            await self._mail(sender, options, utf8=utf8)
        except aiosmtplib.SMTPSenderRefused as exc:
            if exc.code == 421:
                raise
            await self._reset()
            return dict.fromkeys(recipients, Result(exc.code, exc.message))
        results: dict[str, Result] = {}
        accepted: list[str] = []
        for recipient in recipients:
            try:
                await self._rcpt(recipient, dsn[1].get(recipient, []), utf8=utf8)
                accepted.append(recipient)
            except aiosmtplib.SMTPRecipientRefused as exc:
                if exc.code == 421:
                    raise
                results[recipient] = Result(exc.code, exc.message)
        if not accepted:
            await self._reset()
            return results
        try:
            response = await self._data(message)
            outcome = Result(response.code, response.message)
        except aiosmtplib.SMTPDataError as exc:
            if exc.code == 421:
                raise
            outcome = Result(exc.code, exc.message)
            # A DATA refused before its 354 leaves the transaction open: without RSET
            # the next MAIL of this session would be a "nested MAIL" (503). After the
            # message's own refusal it is over, and RSET costs one harmless round trip.
            await self._reset()
        results.update(dict.fromkeys(accepted, outcome))
        return results

    async def _pipelined(self, protocol: PipeliningProtocol, group: bytes,
                         recipients: list[str], payload: bytes) -> dict[str, Result]:
        """MAIL, RCPT... and DATA as one group (``_group``), then the message if DATA said
        354 and a recipient was accepted (RFC 2920 section 3.1)."""
        replies = await self._exchange(protocol, group, len(recipients) + 2)
        self._closing(replies)  # (also when the connection closed after it)
        results, accepted = _rcpt_results(replies[0], recipients, replies[1:-1])
        data = replies[-1]
        if data.code != 354:
            results.update(dict.fromkeys(accepted, Result(data.code, data.message)))
            await self._reset()  # the MAIL and RCPTs accepted may still stand
            return results
        # DATA accepted with no recipient: a lone "." ends it, nothing is sent (3.1)
        end = (await self._exchange(protocol, payload if accepted else b".\r\n", 1))[0]
        self._closing([end])
        results.update(dict.fromkeys(accepted, Result(end.code, end.message)))
        return results

    async def _exchange(self, protocol: PipeliningProtocol, commands: bytes, count: int
                        ) -> list[aiosmtplib.SMTPResponse]:
        try:
            return await protocol.exchange(commands, count, TIMEOUT)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.smtp.close()  # as aiosmtplib: a reply may still come, never pair it
            raise

    def _closing(self, replies: list[aiosmtplib.SMTPResponse]) -> None:
        """A 421 anywhere: the upstream is closing; the message waits (as one at a time)."""
        for reply in replies:
            if reply.code == 421:
                self.smtp.close()
                raise aiosmtplib.SMTPResponseException(reply.code, reply.message)

    async def _mail(self, sender: str, options: list[str], *, utf8: bool = False
                    ) -> aiosmtplib.SMTPResponse:
        """``SMTP.mail``, without parsing a plain address again."""
        path = _path(sender)
        if path is None or self.smtp.is_ehlo_or_helo_needed:
            return await self.smtp.mail(sender, options=options,
                                        encoding="utf-8" if utf8 else "ascii")
        response = await self.smtp.execute_command(
            b"MAIL", b"FROM:" + path, *(o.encode("ascii") for o in options))
        if response.code != 250:
            raise aiosmtplib.SMTPSenderRefused(response.code, response.message, sender)
        return response

    async def _rcpt(self, recipient: str, options: list[str], *, utf8: bool = False
                    ) -> aiosmtplib.SMTPResponse:
        """``SMTP.rcpt``, without parsing a plain address again."""
        path = _path(recipient) if recipient else None  # "<>" is no recipient
        if path is None or self.smtp.is_ehlo_or_helo_needed:
            return await self.smtp.rcpt(recipient, options=options,
                                        encoding="utf-8" if utf8 else "ascii")
        response = await self.smtp.execute_command(
            b"RCPT", b"TO:" + path, *(o.encode("ascii") for o in options))
        if response.code not in (250, 251):
            raise aiosmtplib.SMTPRecipientRefused(response.code, response.message, recipient)
        return response

    async def _data(self, message: bytes) -> aiosmtplib.SMTPResponse:
        """``SMTP.data``, with the message dot-stuffed by ``_data_payload`` when it can."""
        payload = _data_payload(message)
        if payload is None or self.smtp.is_ehlo_or_helo_needed:
            return await self.smtp.data(message)
        start = await self.smtp.execute_command(b"DATA")
        if start.code != 354:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        protocol = self.smtp.protocol
        if protocol is None:
            raise aiosmtplib.SMTPServerDisconnected("Connection lost")
        try:  # one task per Upstream: nothing else writes between these two calls
            protocol.write(payload)
            response = await protocol.read_response(timeout=TIMEOUT)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.smtp.close()  # as SMTP.data: a reply may still come, never pair it
            raise
        if response.code != 250:
            raise aiosmtplib.SMTPDataError(response.code, response.message)
        return response

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


def _path(address: str) -> bytes | None:
    """``<address>`` for the null path or a plain address; None for aiosmtplib to parse."""
    if not address:
        return b"<>"
    if _PLAIN_ADDRESS.fullmatch(address):
        return b"<" + address.encode("ascii") + b">"
    return None


def _group(sender: str, recipients: list[str], options: list[str],
           rcpt_options: dict[str, list[str]]) -> bytes | None:
    """MAIL, one RCPT per recipient and DATA as one write; None if an address needs
    aiosmtplib's parser (``_path``)."""
    mail = _path(sender)
    paths = [_path(r) if r else None for r in recipients]
    if mail is None or not recipients or None in paths:
        return None
    lines = [command(b"MAIL", b"FROM:" + mail, *_words(options))]
    lines += [command(b"RCPT", b"TO:" + path, *_words(rcpt_options.get(r, [])))
              for r, path in zip(recipients, paths, strict=True) if path is not None]
    lines.append(b"DATA\r\n")
    return b"".join(lines)


def _words(options: list[str]) -> list[bytes]:
    return [option.encode("ascii") for option in options]


def _rcpt_results(mail: aiosmtplib.SMTPResponse, recipients: list[str],
                  replies: list[aiosmtplib.SMTPResponse]) -> tuple[dict[str, Result], list[str]]:
    """The result of each refused recipient (all of them if MAIL was refused), and the
    accepted ones."""
    if mail.code != 250:
        return dict.fromkeys(recipients, Result(mail.code, mail.message)), []
    results: dict[str, Result] = {}
    accepted: list[str] = []
    for recipient, reply in zip(recipients, replies, strict=True):
        if reply.code in (250, 251):
            accepted.append(recipient)
        else:
            results[recipient] = Result(reply.code, reply.message)
    return results, accepted


def _data_payload(message: bytes) -> bytes | None:
    """What follows the 354: the message dot-stuffed (RFC 5321 section 4.5.2) and the
    end ``.CRLF``. None unless every line of it ends in CRLF: aiosmtplib then fixes
    the line ends first. Equal to aiosmtplib's ``execute_data_command`` on such input."""
    if not message.endswith(b"\r\n"):
        return None
    # One pass of the DATA framer's scanner (C when built): a line "." ends its scan early.
    end, stuffed, bare = scan_lines(message, True, 0, len(message))
    if end >= 0:
        crlf = message.count(b"\r\n")
        stuffed = True
        bare = message.count(b"\n") != crlf or message.count(b"\r") != crlf
    if bare:
        return None
    if not stuffed:
        return message + b".\r\n"
    if message.startswith(b"."):
        message = b"." + message
    return message.replace(b"\r\n.", b"\r\n..") + b".\r\n"


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

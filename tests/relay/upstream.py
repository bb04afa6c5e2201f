"""Real parts for relay tests: an OAuth2 token endpoint, an aiosmtpd smarthost, certificates.

Token endpoint (``TokenServer``): a small HTTP server on loopback. It issues
access tokens ``at-N`` valid for ``lifetime`` seconds, accepts a refresh
token only once when ``rotate`` is on (each answer carries a new one, as
Microsoft does), supports ``client_credentials`` with ``client_secret``, and
the device-code grant. ``stop()`` makes it unreachable (connection refused).

Smarthost (``Smarthost``): aiosmtpd on loopback (its own thread and loop),
offering AUTH XOAUTH2 and OAUTHBEARER that accept only live tokens of the
token server, and PLAIN/LOGIN for one user. ``rcpt_replies`` maps a
recipient to its RCPT reply (``"421 ..."`` also closes the connection);
``data_start_refusals`` refuses the next DATA commands themselves (no 354);
``accepted`` collects (envelope sender, recipients, data, auth user).
With ``handler.dsn`` on it also offers DSN (RFC 3461) and keeps the MAIL and
RCPT parameters of each accepted message in ``options``; with it off, such
parameters get aiosmtpd's 555, as from any smarthost without DSN. With
``handler.pipelining`` on it offers PIPELINING (RFC 2920; aiosmtpd reads
commands in order from its stream and answers each in turn) and keeps every
read from the connection in ``reads``, so a test sees which commands came in
one write.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CLIENT_ID = "smtpgate-test"
CLIENT_SECRET = "s3cret-client"
UPSTREAM_USER = "device@remote.test"
UPSTREAM_PASSWORD = "upstream-pass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the token endpoint ---------------------------------------------------------------------


@dataclass
class TokenState:
    lifetime: int = 3600
    rotate: bool = True
    refresh_tokens: set[str] = field(default_factory=lambda: {"rt-0"})
    access: dict[str, float] = field(default_factory=dict)  # token -> expiry
    counter: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    device_polls: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self) -> dict[str, Any]:
        self.counter += 1
        token = f"at-{self.counter}"
        self.access[token] = time.time() + self.lifetime
        answer: dict[str, Any] = {"access_token": token, "token_type": "Bearer",
                                  "expires_in": self.lifetime}
        if self.rotate:
            new = f"rt-{self.counter}"
            self.refresh_tokens.add(new)
            answer["refresh_token"] = new
        return answer

    def valid(self, token: str) -> bool:
        with self.lock:
            return self.access.get(token, 0) > time.time()

    def revoke_all(self) -> None:
        with self.lock:
            self.access.clear()

    def grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.requests.append(form)
            if form.get("client_id") != CLIENT_ID:
                return 400, {"error": "invalid_client"}
            grant = form.get("grant_type")
            if grant == "refresh_token":
                token = form.get("refresh_token", "")
                if token not in self.refresh_tokens:
                    return 400, {"error": "invalid_grant", "error_description": "bad token"}
                if self.rotate:
                    self.refresh_tokens.discard(token)
                return 200, self.issue()
            if grant == "client_credentials":
                if form.get("client_secret") != CLIENT_SECRET:
                    return 401, {"error": "invalid_client"}
                self.rotate, rotate = False, self.rotate
                answer = self.issue()
                self.rotate = rotate
                return 200, answer
            if grant == "urn:ietf:params:oauth:grant-type:device_code":
                self.device_polls += 1
                if self.device_polls < 2:
                    return 400, {"error": "authorization_pending"}
                return 200, self.issue()
            return 400, {"error": "unsupported_grant_type"}


class TokenServer:
    def __init__(self, state: TokenState | None = None, port: int = 0) -> None:
        self.state = shared = state or TokenState()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length).decode()
                form = {k: v[0] for k, v in parse_qs(raw).items()}
                if self.path == "/devicecode":
                    status, body = 200, {
                        "device_code": "dc-1", "user_code": "ABCD-EFGH", "interval": 0,
                        "verification_uri": "https://login.example/device", "expires_in": 60,
                        "message": "To sign in, open https://login.example/device and enter "
                                   "ABCD-EFGH",
                    }
                else:
                    status, body = shared.grant(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/token"
        self.device_url = f"http://127.0.0.1:{self.port}/devicecode"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# -- the smarthost --------------------------------------------------------------------------


def _bearer(blob: bytes, oauthbearer: bool) -> tuple[str, str]:
    text = blob.decode("utf-8", "replace")
    parts = text.split("\x01")
    user = ""
    token = ""
    for part in parts:
        if part.startswith("user="):
            user = part[5:]
        if part.startswith("auth=Bearer "):
            token = part[12:]
    if oauthbearer and parts and parts[0].startswith("n,a="):
        user = parts[0][4:].rstrip(",")
    return user, token


class Handler:
    def __init__(self, tokens: TokenState | None) -> None:
        self.tokens = tokens
        self.rcpt_replies: dict[str, str] = {}
        self.data_reply: str | None = None
        self.data_start_refusals: list[str] = []  # replies to DATA itself, one per DATA
        self.data_delay = 0.0  # seconds between receiving the message and the 250
        self.accepted: list[tuple[str, list[str], bytes, str | None]] = []
        self.token_checks: list[tuple[str, bool]] = []
        self.connections = 0
        self.dsn = False  # offer DSN and accept its parameters
        self.pipelining = False  # offer PIPELINING and keep each read in reads
        self.smtputf8 = False  # offer SMTPUTF8 (RFC 6531), from the next connection on
        self.reads: list[bytes] = []
        self.options: list[tuple[list[str], list[str]]] = []  # (MAIL, RCPT) params, per message

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,
                          hostname: str, responses: list[str]) -> list[str]:
        self.connections += 1
        session.host_name = hostname
        if self.dsn:
            responses.insert(-1, "250-DSN")
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        reply = self.rcpt_replies.get(address)
        if reply is None:
            envelope.rcpt_tos.append(address)
            envelope.rcpt_options.extend(options)
            return "250 2.1.5 OK"
        if reply.startswith("421"):
            transport = server.transport
            assert transport is not None
            server.loop.call_soon(transport.close)
        return reply

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        user = session.auth_data if isinstance(session.auth_data, str) else None
        if isinstance(session.auth_data, LoginPassword):
            user = session.auth_data.login.decode()
        self.accepted.append((envelope.mail_from or "", list(envelope.rcpt_tos),
                              bytes(envelope.original_content or b""), user))
        self.options.append((list(envelope.mail_options), list(envelope.rcpt_options)))
        await asyncio.sleep(self.data_delay)
        return "250 2.0.0 Ok: queued upstream"

    async def _token_auth(self, server: SMTP, args: list[str], oauthbearer: bool) -> AuthResult:
        blob = base64.b64decode(args[1]) if len(args) > 1 else b""
        user, token = _bearer(blob, oauthbearer)
        ok = self.tokens is not None and self.tokens.valid(token)
        self.token_checks.append((token, ok))
        if ok:
            return AuthResult(success=True, auth_data=user)
        error = json.dumps({"status": "401", "schemes": "bearer"})
        await server.challenge_auth(error)
        return AuthResult(success=False, handled=False,
                          message="535 5.7.3 Authentication unsuccessful")

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._token_auth(server, args, oauthbearer=False)

    async def auth_OAUTHBEARER(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._token_auth(server, args, oauthbearer=True)


def _password_check(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                    data: Any) -> AuthResult:
    ok = (isinstance(data, LoginPassword) and data.login.decode() == UPSTREAM_USER
          and data.password.decode() == UPSTREAM_PASSWORD)
    return AuthResult(success=ok, handled=False, auth_data=data if ok else None)


_DSN_PARAMETERS = frozenset({"RET", "ENVID", "NOTIFY", "ORCPT"})


class _DsnSMTP(SMTP):
    """aiosmtpd's server, taking the RFC 3461 parameters when its handler offers DSN."""

    def data_received(self, data: bytes) -> None:
        if getattr(self.event_handler, "pipelining", False):
            self.event_handler.reads.append(data)
        super().data_received(data)

    async def smtp_DATA(self, arg: str) -> None:
        """DATA refused before its 354 while ``data_start_refusals`` lasts (the transaction
        stays open, as RFC 5321 has it: only RSET or a new session clears it)."""
        refusals = getattr(self.event_handler, "data_start_refusals", [])
        if refusals and self.envelope is not None and self.envelope.rcpt_tos:
            await self.push(refusals.pop(0))
            return
        await super().smtp_DATA(arg)

    def _getparams(self, params: Any) -> Any:
        found = super()._getparams(params)
        if found is None or not getattr(self.event_handler, "dsn", False):
            return found
        return {k: v for k, v in found.items() if k not in _DSN_PARAMETERS}


class _Controller(Controller):
    def factory(self) -> SMTP:
        smtputf8 = getattr(self.handler, "smtputf8", False)
        return _DsnSMTP(self.handler, **{**self.SMTP_kwargs, "enable_SMTPUTF8": smtputf8})


class Smarthost:
    def __init__(self, tokens: TokenState | None = None, *, port: int = 0,
                 tls: ssl.SSLContext | None = None, implicit: ssl.SSLContext | None = None
                 ) -> None:
        self.handler = Handler(tokens)
        self.port = port or free_port()
        self.controller = _Controller(
            self.handler, hostname="127.0.0.1", port=self.port,
            authenticator=_password_check, auth_require_tls=False,
            tls_context=tls, require_starttls=tls is not None, ssl_context=implicit,
            ready_timeout=10,
        )

    def start(self) -> Smarthost:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()


# -- certificates ---------------------------------------------------------------------------


def make_cert(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context

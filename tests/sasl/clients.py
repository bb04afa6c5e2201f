"""Test-only SASL clients, independent of the server code (hashlib/hmac only).

Usable by the mechanism tests here and later by transcript and end-to-end
tests: each helper produces the raw client messages (not base64).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from smtpgate.sasl.base import (
    Challenge,
    Failure,
    Mechanism,
    NeedSecret,
    Secret,
    Step,
    Success,
    VerifyPassword,
)

_HASHLIB = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}


def plain_message(authcid: str, password: str, authzid: str = "") -> bytes:
    """RFC 4616 section 2 message."""
    return f"{authzid}\x00{authcid}\x00{password}".encode()


def cram_md5_response(username: str, password: str, challenge: bytes) -> bytes:
    """RFC 2195 section 2: ``user SP lower-hex(HMAC-MD5(password, challenge))``."""
    digest = hmac.new(password.encode(), challenge, "md5").hexdigest()
    return f"{username} {digest}".encode()


def _escape(name: str) -> str:
    """RFC 5802 section 5.1: ',' -> '=2C', '=' -> '=3D'."""
    return name.replace("=", "=3D").replace(",", "=2C")


@dataclass
class ScramClient:
    """A SCRAM client (RFC 5802). ``cb_type``/``cb_data`` select channel binding.

    ``gs2_flag`` may force "n", "y" or "p" (for negative tests); by default it
    is "p" when ``cb_type`` is given, else "n". Passwords are used as given
    (tests pass ASCII or already-prepared strings).
    """

    mechanism: str
    username: str
    password: str = field(repr=False)
    authzid: str = ""
    cnonce: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    cb_type: str | None = None
    cb_data: bytes = field(default=b"", repr=False)
    gs2_flag: str | None = None
    final_extensions: str = ""  # e.g. "x=y", signed as part of AuthMessage
    final_nonce: str | None = None  # sign a different r= (negative tests)
    client_first_bare: str = ""
    gs2_header: str = ""
    server_signature: bytes = field(default=b"", repr=False)

    @property
    def hash_name(self) -> str:
        return _HASHLIB[self.mechanism.removesuffix("-PLUS")]

    def client_first(self) -> bytes:
        flag = self.gs2_flag or ("p" if self.cb_type else "n")
        cbind_flag = f"p={self.cb_type}" if flag == "p" else flag
        authz = f"a={_escape(self.authzid)}" if self.authzid else ""
        self.gs2_header = f"{cbind_flag},{authz},"
        self.client_first_bare = f"n={_escape(self.username)},r={self.cnonce}"
        return (self.gs2_header + self.client_first_bare).encode()

    def client_final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = dict(item.split("=", 1) for item in text.split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self.cnonce):
            raise ValueError("server nonce does not extend ours")
        cbind = self.gs2_header.encode()
        if self.gs2_header.startswith("p="):
            cbind += self.cb_data
        if self.final_nonce is not None:
            nonce = self.final_nonce
        without_proof = f"c={base64.b64encode(cbind).decode()},r={nonce}"
        if self.final_extensions:
            without_proof += "," + self.final_extensions
        auth_message = f"{self.client_first_bare},{text},{without_proof}".encode()
        name = self.hash_name
        salted = hashlib.pbkdf2_hmac(name, self.password.encode(), salt, iterations)
        client_key = hmac.new(salted, b"Client Key", name).digest()
        stored_key = hashlib.new(name, client_key).digest()
        signature = hmac.new(stored_key, auth_message, name).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", name).digest()
        self.server_signature = hmac.new(server_key, auth_message, name).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify_server_final(self, server_final: bytes) -> bool:
        expected = b"v=" + base64.b64encode(self.server_signature)
        return hmac.compare_digest(server_final, expected)


def run_scram(
    mech: Mechanism, client: ScramClient, secret: Secret, *, initial: bool = True
) -> tuple[Step, bytes | None]:
    """Drive a SCRAM exchange to its end; returns (final step, server-first or None)."""
    step = mech.start(client.client_first() if initial else None)
    if not initial:
        assert step == Challenge(b"")
        step = mech.step(client.client_first())
    if not isinstance(step, NeedSecret):
        return step, None
    step = mech.resume(secret)
    if not isinstance(step, Challenge):
        return step, None
    server_first = step.data
    step = mech.step(client.client_final(server_first))
    return step, server_first


def is_final(step: Step) -> bool:
    return isinstance(step, Success | Failure | VerifyPassword)

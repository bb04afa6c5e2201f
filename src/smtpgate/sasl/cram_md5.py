"""CRAM-MD5 (RFC 2195) verified against Dovecot's stored ``{CRAM-MD5}`` secret.

Theory of operation
-------------------
The server speaks first (RFC 2195 section 2) with a challenge shaped like a
msg-id, ``<random.timestamp@hostname>``. The client answers
``user SP digest``, digest = lower-case hex of HMAC-MD5(password, challenge)
(RFC 2104). The mechanism then asks the host for the user's CRAM-MD5 secret
(``NeedSecret``) and checks the digest itself.

The stored secret is not the password but Dovecot's "CRAM-MD5 context"
(src/lib/hmac-cram-md5.c, ``hmac_md5_get_cram_context``): HMAC-MD5 first
compresses one 64-byte block, key XOR opad for the outer hash and key XOR
ipad for the inner one (RFC 2104 section 2). Dovecot stores the two MD5
chaining states after that block, each as four little-endian uint32 words,
*outer state first, then inner*: 32 bytes, 64 hex digits in a passwd file.
RFC 2104 section 4 describes the same precomputation.

hashlib cannot resume from a chaining state, so this module carries the MD5
compression function (RFC 1321 section 3.4) in pure Python. Finishing an
HMAC from the two states costs a few blocks: the challenge plus padding for
the inner hash, one block for the outer hash. Challenges are ours and short.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import struct
from typing import ClassVar

from smtpgate.sasl._common import OUT_OF_SEQUENCE, decode_utf8, invalid, make_nonce, malformed
from smtpgate.sasl.base import (
    Challenge,
    CramMd5Secret,
    MechanismContext,
    NeedSecret,
    Secret,
    SecretScheme,
    Step,
    Success,
)
from smtpgate.sasl.saslprep import SaslPrepError, saslprep

__all__ = [
    "CramMd5",
    "cram_md5_digest",
    "cram_md5_secret",
    "fake_cram_md5_secret",
    "format_cram_md5",
    "parse_cram_md5",
]

_BLOCK = 64  # MD5 block size, RFC 1321 section 3.1
_CONTEXT_LEN = 32  # Dovecot CRAM_MD5_CONTEXTLEN
_DIGEST_HEX_LEN = 32  # RFC 2195 section 2: 16 octets as hex
_MAX_USERNAME = 1024  # octets; far above any real account name
_MASK = 0xFFFFFFFF

# RFC 1321 section 3.4: per-round shift amounts and T[i] = floor(abs(sin(i+1)) * 2**32).
_SHIFTS = (7, 12, 17, 22) * 4 + (5, 9, 14, 20) * 4 + (4, 11, 16, 23) * 4 + (6, 10, 15, 21) * 4
_T = tuple(int(abs(math.sin(i + 1)) * 2**32) & _MASK for i in range(64))
_MD5_INIT = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)  # RFC 1321 section 3.3

_Md5State = tuple[int, int, int, int]


def _rotl(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & _MASK


def _md5_compress(state: _Md5State, block: bytes) -> _Md5State:
    """One MD5 compression of a 64-byte block (RFC 1321 section 3.4)."""
    words = struct.unpack("<16I", block)
    a, b, c, d = state
    for i in range(64):
        if i < 16:
            f, g = (b & c) | (~b & d), i
        elif i < 32:
            f, g = (d & b) | (~d & c), (5 * i + 1) % 16
        elif i < 48:
            f, g = b ^ c ^ d, (3 * i + 5) % 16
        else:
            f, g = c ^ (b | (~d & _MASK)), (7 * i) % 16
        f = (f + a + _T[i] + words[g]) & _MASK
        a, d, c = d, c, b
        b = (b + _rotl(f, _SHIFTS[i])) & _MASK
    return (
        (state[0] + a) & _MASK,
        (state[1] + b) & _MASK,
        (state[2] + c) & _MASK,
        (state[3] + d) & _MASK,
    )


def _md5_finish(state: _Md5State, data: bytes, already: int) -> bytes:
    """Finish an MD5 that has absorbed ``already`` bytes (a block multiple) into ``state``."""
    total = already + len(data)
    padded = data + b"\x80" + b"\x00" * ((55 - total) % 64)  # RFC 1321 sections 3.1, 3.2
    padded += struct.pack("<Q", (total * 8) & 0xFFFFFFFFFFFFFFFF)
    for offset in range(0, len(padded), _BLOCK):
        state = _md5_compress(state, padded[offset : offset + _BLOCK])
    return struct.pack("<4I", *state)


def _pad_key(password: bytes) -> bytes:
    """RFC 2104 section 2: keys longer than a block are hashed first, then zero-padded."""
    if len(password) > _BLOCK:
        password = hashlib.md5(password, usedforsecurity=False).digest()
    return password.ljust(_BLOCK, b"\x00")


def cram_md5_secret(password: str) -> CramMd5Secret:
    """Dovecot's CRAM-MD5 secret for ``password`` (UTF-8 bytes, as Dovecot uses them)."""
    key = _pad_key(password.encode("utf-8"))
    outer = _md5_compress(_MD5_INIT, bytes(k ^ 0x5C for k in key))
    inner = _md5_compress(_MD5_INIT, bytes(k ^ 0x36 for k in key))
    return CramMd5Secret(contexts=struct.pack("<8I", *outer, *inner))


def fake_cram_md5_secret(username: str, key: bytes) -> CramMd5Secret:
    """A stable per-name secret for unknown users: the secret of a password nobody knows."""
    message = f"smtpgate fake CRAM-MD5\x00{username}".encode("utf-8", "surrogatepass")
    return cram_md5_secret(hmac.new(key, message, "sha256").hexdigest())


def cram_md5_digest(secret: CramMd5Secret, challenge: bytes) -> bytes:
    """HMAC-MD5(password, challenge), computed from the stored contexts."""
    words = struct.unpack("<8I", secret.contexts)
    outer: _Md5State = (words[0], words[1], words[2], words[3])
    inner: _Md5State = (words[4], words[5], words[6], words[7])
    inner_digest = _md5_finish(inner, challenge, _BLOCK)
    return _md5_finish(outer, inner_digest, _BLOCK)


def format_cram_md5(secret: CramMd5Secret) -> str:
    """The 64 hex digits Dovecot writes after ``{CRAM-MD5}``."""
    return secret.contexts.hex()


def parse_cram_md5(text: str) -> CramMd5Secret:
    """Parse 64 hex digits (optionally prefixed ``{CRAM-MD5}``); ValueError otherwise."""
    if text[:10].upper() == "{CRAM-MD5}":
        text = text[10:]
    if len(text) != 2 * _CONTEXT_LEN or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise ValueError("CRAM-MD5 secret must be 64 hex digits")
    return CramMd5Secret(contexts=bytes.fromhex(text))


class _State(enum.Enum):
    START = enum.auto()
    AWAIT_RESPONSE = enum.auto()
    AWAIT_SECRET = enum.auto()
    DONE = enum.auto()


def _parse_response(response: bytes) -> tuple[str, bytes] | None:
    """RFC 2195 section 2: ``user SP digest``; None when malformed."""
    user_bytes, space, digest_hex = response.rpartition(b" ")
    if not space or len(digest_hex) != _DIGEST_HEX_LEN or len(user_bytes) > _MAX_USERNAME:
        return None
    if not all(c in b"0123456789abcdefABCDEF" for c in digest_hex):
        return None
    user = decode_utf8(user_bytes)
    if user is None or user == "":
        return None
    try:  # SASLprep also refuses NUL and other controls (RFC 4013 section 2.3)
        user = saslprep(user, allow_unassigned=True)
    except SaslPrepError:
        return None
    if user == "":
        return None
    return user, bytes.fromhex(digest_hex.decode("ascii"))


class CramMd5:
    """Server side of CRAM-MD5."""

    name: ClassVar[str] = "CRAM-MD5"
    secret_scheme: ClassVar[SecretScheme | None] = SecretScheme.CRAM_MD5
    channel_binding: ClassVar[bool] = False
    server_first: ClassVar[bool] = True

    def __init__(self, context: MechanismContext) -> None:
        self._context = context
        self._state = _State.START
        self._challenge = b""
        self._username = ""
        self._digest = b""

    def start(self, initial: bytes | None) -> Step:
        if self._state is not _State.START:
            return self._finish(OUT_OF_SEQUENCE)
        if initial is not None:
            # RFC 2195 section 2: the server speaks first (the reply contract: 501 5.7.0).
            return self._finish(malformed("CRAM-MD5 takes no initial response"))
        self._challenge = self._make_challenge()
        self._state = _State.AWAIT_RESPONSE
        return Challenge(self._challenge)

    def step(self, response: bytes) -> Step:
        if self._state is not _State.AWAIT_RESPONSE:
            return self._finish(OUT_OF_SEQUENCE)
        parsed = _parse_response(response)
        if parsed is None:
            return self._finish(malformed("CRAM-MD5 response is not 'user SP hex-digest'"))
        self._username, self._digest = parsed
        self._state = _State.AWAIT_SECRET
        return NeedSecret(authcid=self._username, authzid="", scheme=SecretScheme.CRAM_MD5)

    def resume(self, secret: Secret) -> Step:
        if self._state is not _State.AWAIT_SECRET:
            return self._finish(OUT_OF_SEQUENCE)
        if not isinstance(secret, CramMd5Secret) or len(secret.contexts) != _CONTEXT_LEN:
            return self._finish(invalid("CRAM-MD5 needs a CRAM-MD5 secret"))
        expected = cram_md5_digest(secret, self._challenge)
        if not hmac.compare_digest(expected, self._digest):
            return self._finish(invalid("CRAM-MD5 digest mismatch"))
        return self._finish(Success(authcid=self._username, authzid=""))

    def _make_challenge(self) -> bytes:
        """RFC 2195 section 2: a unique msg-id-like string."""
        # The host passes its clock; without one the random part alone keeps it unique.
        stamp = self._context.timestamp() if self._context.timestamp else 0
        text = f"<{make_nonce(self._context)}.{stamp}@{self._context.hostname}>"
        return text.encode("utf-8")

    def _finish(self, step: Step) -> Step:
        self._state = _State.DONE
        return step

"""Strict parsers for the two SCRAM client messages (RFC 5802 section 7 grammar).

Theory of operation
-------------------
Each parser takes the raw bytes, decodes strict UTF-8 and returns either a
small frozen record or ``Failure(MALFORMED)``. They keep the exact text the
proof is computed over (client-first-message-bare, the gs2 header and
client-final-message-without-proof), so nothing is re-serialised. Every
field has a length bound, well inside the host's 12288-octet line limit.
Failure reasons never quote the client's data.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field

from smtpgate.sasl._common import decode_utf8, malformed
from smtpgate.sasl.base import Failure
from smtpgate.sasl.saslprep import SaslPrepError, saslprep

__all__ = ["ClientFinal", "ClientFirst", "is_printable", "parse_client_final", "parse_client_first"]

MAX_MESSAGE = 12288  # octets; the reply contract caps AUTH lines at this (500 5.5.6)
MAX_NAME = 1024  # octets of a saslname (username, authzid) as sent
MAX_NONCE = 1024  # octets of a nonce
MAX_CB_NAME = 64  # octets of a channel binding type name

# RFC 5802 section 7.
_PRINTABLE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # printable = %x21-2B / %x2D-7E
_SASLNAME = re.compile(r"(?:[^\x00=,]|=2C|=3D)+")  # 1*(value-safe-char / "=2C" / "=3D")
_CB_NAME = re.compile(r"[A-Za-z0-9.-]+")  # cb-name = 1*(ALPHA / DIGIT / "." / "-")
_ATTR_VAL = re.compile(r"[A-Za-z]=[^\x00,]+")  # attr-val = ALPHA "=" value
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_ESCAPE = re.compile(r"=2C|=3D")


@dataclass(frozen=True, slots=True)
class ClientFirst:
    gs2_header: str  # exactly as sent, e.g. "p=tls-exporter,,"
    cbind_flag: str  # "n", "y" or "p"
    cb_name: str  # "" unless cbind_flag == "p"
    authzid: str  # decoded; "" when absent
    username: str = field(repr=False)  # decoded and SASLprepped
    nonce: str = field(repr=False)  # c-nonce
    bare: str = field(repr=False)  # client-first-message-bare, for AuthMessage


@dataclass(frozen=True, slots=True)
class ClientFinal:
    channel_binding: str = field(repr=False)  # the c= value, still base64
    nonce: str = field(repr=False)
    proof: bytes = field(repr=False)
    without_proof: str = field(repr=False)  # client-final-message-without-proof


def is_printable(text: str) -> bool:
    return len(text) <= MAX_NONCE and _PRINTABLE.fullmatch(text) is not None


def _saslname(value: str) -> str | None:
    """Decode ``=2C`` and ``=3D`` (RFC 5802 section 5.1, attribute n)."""
    if len(value.encode("utf-8")) > MAX_NAME or not _SASLNAME.fullmatch(value):
        return None
    return _ESCAPE.sub(lambda m: "," if m.group(0) == "=2C" else "=", value)


def _parse_gs2(flag: str, authz: str) -> tuple[str, str, str] | Failure:
    """gs2-header = gs2-cbind-flag "," [ authzid ] "," -> (flag, cb-name, authzid)."""
    if flag in ("n", "y"):
        cb_name = ""
    elif flag.startswith("p=") and len(flag) <= 2 + MAX_CB_NAME and _CB_NAME.fullmatch(flag[2:]):
        cb_name = flag[2:]
    else:
        return malformed("SCRAM gs2-cbind-flag invalid")
    authzid = ""
    if authz:
        decoded = _saslname(authz[2:]) if authz.startswith("a=") else None
        if decoded is None:
            return malformed("SCRAM gs2 authzid invalid")
        authzid = decoded
    return flag[0], cb_name, authzid


def _parse_bare(bare: str) -> tuple[str, str] | Failure:
    """client-first-message-bare -> (username, c-nonce)."""
    attrs = bare.split(",")
    # RFC 5802 section 5.1: a leading "m=" (mandatory extension) is never one we
    # support, and it fails here because the first attribute must be "n=".
    if len(attrs) < 2 or not attrs[0].startswith("n=") or not attrs[1].startswith("r="):
        return malformed("SCRAM client-first needs n= and r=")
    if not all(_ATTR_VAL.fullmatch(ext) for ext in attrs[2:]):
        return malformed("SCRAM client-first extension invalid")
    name = _saslname(attrs[0][2:])
    nonce = attrs[1][2:]
    if name is None or not is_printable(nonce):
        return malformed("SCRAM username or nonce invalid")
    try:  # RFC 5802 section 5.1: SASLprep as a query string
        username = saslprep(name, allow_unassigned=True)
    except SaslPrepError:
        return malformed("SCRAM username rejected by SASLprep")
    if not username:
        return malformed("SCRAM username empty")
    return username, nonce


def parse_client_first(data: bytes) -> ClientFirst | Failure:
    """client-first-message = gs2-header client-first-message-bare."""
    text = decode_utf8(data) if len(data) <= MAX_MESSAGE else None
    if text is None:
        return malformed("SCRAM client-first not UTF-8 or too long")
    parts = text.split(",", 2)
    if len(parts) != 3:
        return malformed("SCRAM gs2 header incomplete")
    flag, authz, bare = parts
    gs2 = _parse_gs2(flag, authz)
    if isinstance(gs2, Failure):
        return gs2
    user = _parse_bare(bare)
    if isinstance(user, Failure):
        return user
    return ClientFirst(
        gs2_header=f"{flag},{authz},",
        cbind_flag=gs2[0],
        cb_name=gs2[1],
        authzid=gs2[2],
        username=user[0],
        nonce=user[1],
        bare=bare,
    )


def parse_client_final(data: bytes, digest_size: int) -> ClientFinal | Failure:
    """client-final-message = channel-binding "," nonce ["," extensions] "," proof."""
    text = decode_utf8(data) if len(data) <= MAX_MESSAGE else None
    if text is None:
        return malformed("SCRAM client-final not UTF-8 or too long")
    attrs = text.split(",")
    if len(attrs) < 3 or not attrs[0].startswith("c=") or not attrs[1].startswith("r="):
        return malformed("SCRAM client-final needs c=, r= and p=")
    if not attrs[-1].startswith("p="):
        return malformed("SCRAM client-final must end in p=")
    if not all(_ATTR_VAL.fullmatch(ext) for ext in attrs[2:-1]):
        return malformed("SCRAM client-final extension invalid")
    cbind, nonce, proof_b64 = attrs[0][2:], attrs[1][2:], attrs[-1][2:]
    if not cbind or not _BASE64.fullmatch(cbind) or not is_printable(nonce):
        return malformed("SCRAM channel binding or nonce invalid")
    if not _BASE64.fullmatch(proof_b64):
        return malformed("SCRAM proof is not base64")
    try:
        proof = base64.b64decode(proof_b64, validate=True)
    except binascii.Error:
        return malformed("SCRAM proof is not base64")
    if len(proof) != digest_size:
        return malformed("SCRAM proof has the wrong length")
    return ClientFinal(
        channel_binding=cbind,
        nonce=nonce,
        proof=proof,
        without_proof=text[: len(text) - len(attrs[-1]) - 1],
    )

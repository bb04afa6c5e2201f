"""Hypothesis properties for the parsers an attacker reaches (complementing
tests/sasl/test_fuzz.py, which checks mechanisms only yield Steps and never succeed
on random bytes). The same oracles drive the atheris targets in tests/fuzz/.
"""

from __future__ import annotations

import base64

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpgate.protocol import replies as r
from smtpgate.protocol.commands import decode_xtext, parse_path_argument
from smtpgate.sasl import _scram_syntax as scram_syntax
from smtpgate.sasl.base import VerifyPassword
from smtpgate.sasl.plain import parse_plain
from tests.fuzz import checks

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- the atheris oracles, driven by hypothesis ---------------------------------------------

fragments = st.sampled_from([b"\r\n", b"\n", b"\r", b".", b"\r\n.\r\n", b"..", b"MAIL FROM:<a@b>",
                             b"DATA", b"BDAT 3 LAST", b"AUTH PLAIN", b"*", b"\x00", b"=", b"+0D",
                             b"EHLO x", b"RCPT TO:<c@d>", b"x" * 700, b"STARTTLS", b"\xff",
                             # digits str.isdigit() accepts and SMTP does not
                             "\u00b2".encode(), "\uff11".encode(), "\u0663".encode(),
                             b"BDAT ", b" SIZE=", b"QR=="])
streams = st.one_of(st.binary(max_size=400),
                    st.lists(fragments, max_size=30).map(b"".join),
                    st.tuples(st.integers(0, 255), st.lists(fragments, max_size=30).map(b"".join))
                    .map(lambda t: bytes([t[0]]) + t[1]))


@FAST
@given(streams)
def test_oracle_commands(data: bytes) -> None:
    checks.check_commands(data)


@FAST
@given(streams)
def test_oracle_framer_split_invariance(data: bytes) -> None:
    checks.check_framer(data)


@FAST
@given(streams)
def test_oracle_session(data: bytes) -> None:
    checks.check_session(data)


@FAST
@given(streams)
def test_oracle_xtext(data: bytes) -> None:
    checks.check_xtext(data)


@FAST
@given(streams)
def test_oracle_sasl_parsers(data: bytes) -> None:
    for name in ("plain", "login", "cram_md5", "scram", "saslprep"):
        checks.CHECKS[name](data)


# -- round trips with generated valid input --------------------------------------------------

def _stuff(body: bytes) -> bytes:
    """RFC 5321 section 4.5.2 dot-stuffing, the client side."""
    lines = body.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


clean_lines = st.lists(st.binary(max_size=60).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"")), max_size=20)


@FAST
@given(clean_lines, st.lists(st.integers(0, 2000), max_size=6))
def test_stuffed_body_comes_back_exactly(lines: list[bytes], cuts: list[int]) -> None:
    """Any CRLF body, dot-stuffed and terminated, frames to itself however split."""
    body = b"".join(line + b"\r\n" for line in lines)
    stream = _stuff(body[:-2]) + b"\r\n.\r\n" if body else b".\r\n"
    got = checks._frame(stream + b"NEXT", [c % (len(stream) + 1) for c in cuts])
    assert got == (body, True, b"NEXT", False)


@FAST
@given(st.text(max_size=60))
def test_xtext_round_trip(text: str) -> None:
    latin = "".join(c for c in text if ord(c) < 256)
    assert decode_xtext(checks.encode_xtext(latin)) == latin


atom = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~", min_size=1,
               max_size=12)
label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)


@FAST
@given(st.lists(atom, min_size=1, max_size=3), st.lists(label, min_size=1, max_size=3),
       st.lists(st.lists(label, min_size=1, max_size=2), max_size=3))
def test_valid_paths_parse_and_routes_are_dropped(
    local: list[str], domain: list[str], route: list[list[str]]
) -> None:
    """RFC 5321 section 4.1.2: a valid Mailbox parses to itself; a source route in front
    of it is accepted and dropped (never a relay hop)."""
    mailbox = ".".join(local) + "@" + ".".join(domain)
    prefix = ",".join("@" + ".".join(hop) for hop in route) + ":" if route else ""
    path = parse_path_argument(f"TO:<{prefix}{mailbox}>", "TO:", allow_null=False,
                               bad=r.BAD_SYNTAX, recognised=frozenset())
    assert path.address == mailbox


names = st.text(min_size=1, max_size=20).filter(lambda s: "\0" not in s)


@FAST
@given(st.text(max_size=10).filter(lambda s: "\0" not in s),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789._-", min_size=1,
               max_size=20),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyz!@#$%^&*() 0123456789", min_size=1,
               max_size=30).filter(lambda s: s.strip()))
def test_plain_round_trip(authzid: str, authcid: str, password: str) -> None:
    step = parse_plain(f"{authzid}\0{authcid}\0{password}".encode())
    if any(c in authzid for c in "\r\n"):
        return
    assert isinstance(step, VerifyPassword), step
    assert (step.authzid, step.authcid, step.password) == (authzid, authcid, password)


@FAST
@given(names.filter(lambda s: s.isprintable()), st.sampled_from(["n", "y", "p=tls-exporter"]),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789+/", min_size=1, max_size=40))
def test_scram_client_first_escaping_round_trip(user: str, flag: str, nonce: str) -> None:
    """RFC 5802 section 5.1: ',' and '=' travel as =2C and =3D and come back."""
    escaped = user.replace("=", "=3D").replace(",", "=2C")
    first = scram_syntax.parse_client_first(f"{flag},,n={escaped},r={nonce}".encode())
    if isinstance(first, scram_syntax.ClientFirst):
        from smtpgate.sasl.saslprep import saslprep

        assert first.username == saslprep(user, allow_unassigned=True)
        assert first.nonce == nonce and first.cbind_flag == flag[0]


@FAST
@given(st.binary(min_size=32, max_size=32), st.text(alphabet="abcdefghij", min_size=1,
                                                     max_size=20))
def test_scram_client_final_round_trip(proof: bytes, nonce: str) -> None:
    text = f"c=biws,r={nonce},p={base64.b64encode(proof).decode()}"
    final = scram_syntax.parse_client_final(text.encode(), 32)
    assert isinstance(final, scram_syntax.ClientFinal)
    assert final.proof == proof and final.nonce == nonce
    assert final.without_proof == f"c=biws,r={nonce}"

"""Oracles shared by the atheris targets and the hypothesis properties.

Each ``check_*`` takes arbitrary bytes and asserts what must hold for *any*
input: no exception but the parser's own refusal, and the security
invariants (no CR/LF/NUL in what a parser lets through, framing independent
of how input is split, a SASL mechanism never succeeding without a proof).
An AssertionError or any other exception is a finding.
"""

from __future__ import annotations

import base64

from smtpgate.protocol import events as ev
from smtpgate.protocol import replies as r
from smtpgate.protocol.commands import (
    MAIL_PARAMETERS,
    MAX_PATH,
    SyntaxProblem,
    check_mail_params,
    decode_base64,
    decode_xtext,
    parse_auth_command,
    parse_auth_param,
    parse_bdat_argument,
    parse_path_argument,
    split_command,
)
from smtpgate.protocol.framing import DataFramer
from smtpgate.protocol.session import Session
from smtpgate.sasl import _scram_syntax as scram_syntax
from smtpgate.sasl.base import (
    Challenge,
    ChannelBindings,
    Failure,
    MechanismContext,
    NeedSecret,
    VerifyPassword,
)
from smtpgate.sasl.cram_md5 import CramMd5, cram_md5_secret
from smtpgate.sasl.login import Login
from smtpgate.sasl.plain import parse_plain
from smtpgate.sasl.saslprep import SaslPrepError, saslprep
from smtpgate.sasl.scram import ScramSha256, ScramSha256Plus, fake_scram_secret
from tests.protocol.host import session_params

_CONTROL = frozenset(chr(c) for c in range(0x20)) | {"\x7f"}


def _split(data: bytes) -> tuple[int, bytes]:
    """First byte chooses a split point; the rest is the payload."""
    if not data:
        return 0, b""
    return data[0], data[1:]


# -- protocol ---------------------------------------------------------------------------------

def check_commands(data: bytes) -> None:
    """Command line, path, parameter, AUTH, base64 and BDAT parsers.

    Their one documented error is ``SyntaxProblem``: anything else (the
    ValueError of ``int("\u00b2")``, say) is a crash.
    """
    line = data.replace(b"\n", b"")[:600]
    try:
        cmd = split_command(line)
    except SyntaxProblem:
        return
    assert cmd.verb.isascii() and cmd.verb.isalpha() and cmd.verb == cmd.verb.upper()
    for prefix, allow_null in (("FROM:", True), ("TO:", False)):
        try:
            path = parse_path_argument(cmd.arg, prefix, allow_null=allow_null,
                                       bad=r.BAD_SYNTAX, recognised=MAIL_PARAMETERS)
        except SyntaxProblem:
            continue
        assert len(path.address) <= MAX_PATH
        # "<" may stand in a quoted local part (RFC 5321 qtextSMTP); ">" never
        assert not set(path.address) & (_CONTROL | {">"}), path.address
        assert path.address or allow_null
        for key, value in path.params.items():
            assert key == key.upper() and key.isascii()
            assert value is None or not set(value) & _CONTROL
        _check_mail_params(path.params)
    try:
        mech, initial = parse_auth_command(cmd.arg)
        assert mech and mech == mech.upper() and len(mech) <= 20 and mech.isascii()
        assert initial is None or " " not in initial
    except SyntaxProblem:
        pass
    try:
        size, _ = parse_bdat_argument(cmd.arg)
        assert size >= 0
        assert cmd.arg.split()[0].isascii(), "a chunk size read from non-ASCII digits"
    except SyntaxProblem:
        pass
    _check_base64(cmd.arg.encode())


def _check_mail_params(params: dict[str, str | None]) -> None:
    try:
        checked = check_mail_params(params, max_size=10**30)
    except SyntaxProblem:
        return
    size = checked.get("SIZE")
    assert size is None or (size.isascii() and size.isdigit()), size
    auth = checked.get("AUTH")
    assert auth is None or not set(auth) & _CONTROL, auth


def _check_base64(data: bytes) -> None:
    """Only the canonical encoding of some bytes decodes (RFC 4648 section 3.5)."""
    decoded = decode_base64(data)
    if decoded is not None:
        assert base64.b64encode(decoded) == data, data


def encode_xtext(text: str) -> str:
    """RFC 3461 section 4 encoder (test side)."""
    return "".join(c if "!" <= c <= "~" and c not in "+=" else f"+{ord(c):02X}" for c in text)


def check_xtext(data: bytes) -> None:
    text = data.decode("latin-1")
    try:
        decoded = decode_xtext(text)
    except SyntaxProblem:
        decoded = None
    if decoded is not None:
        assert all(ord(c) < 256 for c in decoded)
        assert decode_xtext(encode_xtext(decoded)) == decoded
    try:
        value = parse_auth_param(text)
    except SyntaxProblem:
        return
    assert not set(value) & _CONTROL, value


def reference_frame(stream: bytes) -> tuple[bytes, bool, bytes, bool]:
    """A slow, obviously right DATA framer: (body, done, rest, bare CR/LF seen)."""
    probe = b"\r\n" + stream
    end = probe.find(b"\r\n.\r\n")
    done = end >= 0
    raw = probe[2 : end + 2] if done else probe[2:]
    rest = probe[end + 5 :] if done else b""
    body = raw[1:] if raw.startswith(b".") else raw
    body = body.replace(b"\r\n.", b"\r\n")
    bare = raw.count(b"\n") != raw.count(b"\r\n") or raw.count(b"\r") != raw.count(b"\r\n")
    return body, done, rest, bare


def _frame(stream: bytes, cuts: list[int]) -> tuple[bytes, bool, bytes, bool]:
    framer = DataFramer()
    body, rest, done = bytearray(), b"", False
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        piece = stream[start:cut]
        start = max(start, cut)
        if done:
            rest += piece
            continue
        result = framer.feed(piece)
        body += b"".join(result.pieces)
        if result.done:
            done, rest = True, result.rest
    return bytes(body), done, rest, framer.bare_line_ending


def check_framer(data: bytes) -> None:
    """DATA framing equals the reference model however the stream is split."""
    seed, stream = _split(data)
    stream = stream * (1 + seed // 64)  # sometimes long lines, past the partial limit
    cuts = [(seed * (i + 7) * 131) % (len(stream) + 1) for i in range(seed % 9)]
    got = _frame(stream, cuts)
    want = reference_frame(stream)
    assert got[1] == want[1], (got, want)
    if want[1]:
        assert got[0] == want[0] and got[2] == want[2]
        assert got[3] == want[3]
    else:  # unfinished: the body so far is a prefix of the reference body
        assert want[0].startswith(got[0]), (got, want)


class _Host:
    """A minimal host: accepts everything, fails every AUTH, counts messages."""

    def __init__(self) -> None:
        self.session = Session(session_params(
            starttls_offered=True, require_auth=False, auth_mechanisms=("PLAIN",),
            max_message_size=4096, max_recipients=5, max_errors=50))
        self.data_starts = 0
        self.data_ends = 0

    def pump(self) -> None:
        s = self.session
        for _ in range(10_000):
            event = s.next_event()
            if event is None:
                return
            if isinstance(event, ev.MailFrom | ev.RcptTo):
                assert "\r" not in event.address and "\n" not in event.address
                s.accept()
            elif isinstance(event, ev.DataStart):
                self.data_starts += 1
                s.accept()
            elif isinstance(event, ev.DataEnd):
                self.data_ends += 1
                assert self.data_ends <= self.data_starts
                s.reply(r.MESSAGE_ACCEPTED if event.rejection is None else event.rejection)
            elif isinstance(event, ev.AuthStart | ev.AuthResponse):
                if isinstance(event, ev.AuthStart) and event.problem is None:
                    s.auth_challenge(b"")
                else:
                    s.auth_finish(r.AUTH_INVALID, None)
            elif isinstance(event, ev.AuthAborted):
                s.auth_finish(r.AUTH_CANCELLED, None)
            elif isinstance(event, ev.StartTls | ev.Closed):
                assert s.closed
                assert s.next_event() is None
                return
        raise AssertionError("the session produced 10,000 events from one feed")


def check_session(data: bytes) -> None:
    """A whole sans-I/O session: replies well-formed, one DataEnd per DataStart."""
    seed, stream = _split(data)
    host = _Host()
    host.session.greet()
    step = 1 + seed % 17
    for i in range(0, len(stream), step):
        host.session.receive_data(stream[i : i + step])
        host.pump()
        assert host.session.buffered <= 12288 + step
    out = host.session.data_to_send()
    for line in out.split(b"\r\n")[:-1]:
        assert len(line) >= 3 and line[:3].isdigit() and line[3:4] in (b" ", b"-", b""), line
    assert out.endswith(b"\r\n")


# -- SASL -------------------------------------------------------------------------------------

def check_plain(data: bytes) -> None:
    step = parse_plain(data)
    assert isinstance(step, VerifyPassword | Failure)
    if isinstance(step, VerifyPassword):
        assert step.authcid and step.password
        assert data.count(b"\0") == 2
        assert "\0" not in step.authcid + step.password + step.authzid


def check_login(data: bytes) -> None:
    user, _, password = data.partition(b"\0\0")
    mech = Login(MechanismContext())
    first = mech.start(user if data[:1] == b"u" else None)
    if first == Challenge(b"Username:"):
        first = mech.step(user)
    if isinstance(first, Failure):
        return
    assert first == Challenge(b"Password:")
    final = mech.step(password)
    assert isinstance(final, VerifyPassword | Failure)
    if isinstance(final, VerifyPassword):
        assert "\0" not in final.authcid + final.password
        assert final.authzid == ""
    assert isinstance(mech.step(b"again"), Failure)


def check_cram_md5(data: bytes) -> None:
    mech = CramMd5(MechanismContext(nonce=lambda: "n", timestamp=lambda: 1))
    assert isinstance(mech.start(None), Challenge)
    step = mech.step(data)
    if isinstance(step, Failure):
        return
    assert isinstance(step, NeedSecret) and step.authcid and "\0" not in step.authcid
    final = mech.resume(cram_md5_secret("the real password"))
    assert isinstance(final, Failure), "CRAM-MD5 accepted a digest the fuzzer made up"


_BINDINGS = ChannelBindings(tls_server_end_point=b"e" * 32)
_SECRET = fake_scram_secret("SCRAM-SHA-256", "ghost", b"k" * 32, iterations=2)


def check_scram(data: bytes) -> None:
    """Client-first and client-final parsers, and the mechanism around them."""
    first_bytes, _, final_bytes = data.partition(b"\n")
    first = scram_syntax.parse_client_first(first_bytes)
    if not isinstance(first, Failure):
        text = first_bytes.decode("utf-8")
        assert text == first.gs2_header + first.bare
        assert first.cbind_flag in ("n", "y", "p")
        assert "\0" not in first.username and first.username
        assert scram_syntax.is_printable(first.nonce)
    final = scram_syntax.parse_client_final(final_bytes, 32)
    if not isinstance(final, Failure):
        text = final_bytes.decode("utf-8")
        assert text.startswith(final.without_proof + ",p=")
        assert len(final.proof) == 32
        base64.b64decode(final.channel_binding, validate=True)
    for cls, plus in ((ScramSha256, True), (ScramSha256Plus, True), (ScramSha256, False)):
        mech = cls(MechanismContext(bindings=_BINDINGS, plus_advertised=plus,
                                    nonce=lambda: "srv"))
        step = mech.start(first_bytes)
        if isinstance(step, NeedSecret):
            step = mech.resume(_SECRET)
            assert isinstance(step, Challenge)
            step = mech.step(final_bytes)
        assert isinstance(step, Failure), "SCRAM succeeded against a secret with no password"


def check_saslprep(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    for allow in (False, True):
        try:
            out = saslprep(text, allow_unassigned=allow)
        except SaslPrepError:
            continue
        assert "\0" not in out and "\r" not in out and "\n" not in out
        if not allow:
            assert saslprep(out) == out, "SASLprep is not idempotent"


CHECKS = {
    "commands": check_commands,
    "xtext": check_xtext,
    "framer": check_framer,
    "session": check_session,
    "plain": check_plain,
    "login": check_login,
    "cram_md5": check_cram_md5,
    "scram": check_scram,
    "saslprep": check_saslprep,
}

SEEDS: dict[str, list[bytes]] = {
    "commands": [b"MAIL FROM:<a@b.example> SIZE=10 BODY=8BITMIME AUTH=<>",
                 b"RCPT TO:<@a,@b:u@c.example>", b"AUTH PLAIN AGFsaWNlAHB3",
                 b"BDAT 100 LAST", b'RCPT TO:<"q x"@[127.0.0.1]>',
                 # numbers that are not ASCII digits (str.isdigit() says they are)
                 "BDAT \u00b2".encode(), "BDAT \uff11\uff12 LAST".encode(),
                 "MAIL FROM:<a@b.example> SIZE=\u0663".encode(), b"AUTH PLAIN QR=="],
    "xtext": [b"alice+2Bbob", b"+0D+0A", b"<>", b"a=b"],
    "framer": [b"\x05Subject: x\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n", b"\x40a\n.\nb\r\n.\r\n",
               b"\x00.\r\n", b"\x81\r.\r\r\n.\r\n"],
    "session": [b"\x03EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\nhi\r\n.\r\n"
                b"BDAT 5 LAST\r\nhello\r\nAUTH PLAIN\r\n*\r\nSTARTTLS\r\nNOOP\r\n",
                "\x05BDAT \u00b2\r\nEHLO x\r\nMAIL FROM:<a@b.c> SIZE=\u2460\r\n".encode()],
    "plain": [b"\0alice\0pw", b"bob\0alice\0pw", b"\0\0"],
    "login": [b"ualice\0\0secret", b"x\0\0y"],
    "cram_md5": [b"alice 0123456789abcdef0123456789abcdef"],
    "scram": [b"n,,n=alice,r=abc\nc=biws,r=abcsrv,p=" + base64.b64encode(b"p" * 32),
              b"p=tls-server-end-point,a=bob,n=alice,r=x\nc=cD10bHMtc2VydmVyLWVuZC1wb2ludCwsZQ==,"
              b"r=xsrv,p=AAAA"],
    "saslprep": ["I\u00adX".encode(), "\u2168".encode(), b"user", "\u0627\u0031".encode()],
}

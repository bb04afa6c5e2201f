"""SASL framing attacks over real sockets (RFC 4954 section 4, RFC 4616, RFC 4013,
RFC 5802, RFC 5929; the AUTH reply table of README.md).

Every malformed exchange must end in the documented reply, never 235, never a
crash, and leave the connection usable.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sqlite3
import ssl
import time
from collections.abc import Callable

import pytest

from smtpgate.server.app import Server
from tests.attacks.raw import PLAIN_OK, Raw, Resp, addr, authed, b64, merge, plain
from tests.e2e.conftest import PASSWORD, ServerFactory
from tests.sasl.clients import ScramClient

# Many malformed exchanges on one connection: each 501 counts towards max_errors too.
MANY_ERRORS = merge(PLAIN_OK, {"limits": {"max_errors": 1000}})
WITH_CRAM = {"auth": {"mechanisms": ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS",
                                     "SCRAM-SHA-1", "PLAIN", "LOGIN", "CRAM-MD5"]}}


async def _client(server: Server) -> Raw:
    c = await Raw.open(addr(server))
    await c.ehlo()
    return c


async def _still_usable(c: Raw) -> None:
    resp = await c.cmd("NOOP")
    assert (resp.code, resp.enh) == (250, "2.0.0"), resp


# -- base64 framing (RFC 4954 section 4: 501 5.5.2 for undecodable responses) ------------

BAD_BASE64 = {
    "inner-space": "AGFs aWNl",
    "tab": "AGFsaWNl\tAA==",
    "missing-padding": "AGFsaWNlAGE",
    "extra-padding": "AGFsaWNl====",
    "padding-in-middle": "AG==FsaWNl",
    "non-alphabet": "AGFs*WNl",
    "url-safe-alphabet": "AGF-aWN_",
    "non-ascii": "AGFsaWNl\u00e9",
    "single-char": "A",
}


async def test_bad_base64_response_is_501(running: ServerFactory) -> None:
    server = await running(**MANY_ERRORS)
    c = await _client(server)
    for case, response in BAD_BASE64.items():
        assert (await c.cmd("AUTH PLAIN")).code == 334
        resp = await c.cmd(response)
        assert (resp.code, resp.enh) == (501, "5.5.2"), (case, resp)
        await _still_usable(c)
        # the same text as an initial response
        resp = await c.cmd(f"AUTH LOGIN {response}")
        assert (resp.code, resp.enh) == (501, "5.5.2"), (case, resp)
        await _still_usable(c)
    await c.close()


async def test_initial_response_with_whitespace_is_a_syntax_error(
    running: ServerFactory,
) -> None:
    """RFC 4954 section 4: AUTH mechanism [SP initial-response]; a third word is 501."""
    server = await running(**PLAIN_OK)
    c = await _client(server)
    resp = await c.cmd("AUTH PLAIN " + plain()[:8] + " " + plain()[8:])
    assert (resp.code, resp.enh) == (501, "5.5.2"), resp
    await _still_usable(c)


async def test_empty_and_oversized_responses(running: ServerFactory) -> None:
    """``AUTH PLAIN =`` is 535; an empty line answering 334 is an empty
    response (535); a response over 12288 octets is 500 5.5.6, and the rest of the
    line is discarded, not read as commands."""
    server = await running(**PLAIN_OK)
    c = await _client(server)
    resp = await c.cmd("AUTH PLAIN =")
    assert (resp.code, resp.enh) == (535, "5.7.8"), resp
    assert (await c.cmd("AUTH PLAIN")).code == 334
    resp = await c.cmd("")
    assert (resp.code, resp.enh) == (535, "5.7.8"), resp
    assert (await c.cmd("AUTH PLAIN")).code == 334
    huge = "QUFB" * 3100 + "\r\nNOOP\r\n" * 0  # 12400 octets of valid base64
    resp = await c.cmd(huge)
    assert (resp.code, resp.enh) == (500, "5.5.6"), resp
    # an oversized line that *contains* a command after 20000 octets: one reply only
    assert (await c.cmd("AUTH PLAIN")).code == 334
    await c.send("A" * 20000 + "QUIT\r\n")
    resp = await c.reply()
    assert (resp.code, resp.enh) == (500, "5.5.6"), resp
    await _still_usable(c)
    # an AUTH command line itself of 13000 octets
    resp = await c.cmd("AUTH PLAIN " + "A" * 13000)
    assert (resp.code, resp.enh) == (500, "5.5.6"), resp
    await _still_usable(c)
    await c.close()


async def test_cancel_is_501_5_7_0(running: ServerFactory) -> None:
    """RFC 4954 section 4: "*" cancels, 501 5.7.0; as an initial response too."""
    server = await running(**PLAIN_OK)
    c = await _client(server)
    for mech in ("PLAIN", "LOGIN", "SCRAM-SHA-256"):
        assert (await c.cmd(f"AUTH {mech}")).code == 334
        resp = await c.cmd("*")
        assert (resp.code, resp.enh) == (501, "5.7.0"), (mech, resp)
    resp = await c.cmd("AUTH PLAIN *")
    assert (resp.code, resp.enh) == (501, "5.7.0"), resp
    await _still_usable(c)


async def test_auth_protocol_errors_count_towards_max_errors(running: ServerFactory) -> None:
    """max_errors counts every 500-504 reply, also those the auth service chooses (an
    unknown mechanism's 504, a cancel's 501): the max_errors-th is 421 4.7.0 and close."""
    server = await running(**merge(PLAIN_OK, {"limits": {"max_errors": 3}}))
    c = await _client(server)
    resp = await c.cmd("AUTH XOAUTH2")
    assert (resp.code, resp.enh) == (504, "5.5.4"), resp
    resp = await c.cmd("AUTH PLAIN *")
    assert (resp.code, resp.enh) == (501, "5.7.0"), resp
    resp = await c.cmd("AUTH XOAUTH2")
    assert (resp.code, resp.enh) == (421, "4.7.0"), resp
    await c.closed()


# -- PLAIN (RFC 4616 section 2) ------------------------------------------------------------

PLAIN_CASES = {
    "three-nuls": (b"\0alice\0" + PASSWORD.encode() + b"\0extra", 501),
    "one-nul": (b"alice\0" + PASSWORD.encode(), 501),
    "no-nul": (b"alice" + PASSWORD.encode(), 501),
    "empty-authcid": (b"\0\0" + PASSWORD.encode(), 501),
    "empty-password": (b"\0alice\0", 535),
    "nul-in-password-field": (b"\0alice\0pass\0word", 501),
    "non-utf8-user": (b"\0\xff\xfealice\0" + PASSWORD.encode(), 501),
    "non-utf8-password": (b"\0alice\0\xc3\x28", 501),
    "overlong-utf8-nul": (b"\0alice\xc0\x80\0" + PASSWORD.encode(), 501),
    "saslprep-prohibited-user": (("\0ali\u0007ce\0" + PASSWORD).encode(), 501),
    "saslprep-bidi-user": (("\0\u05d0a\u05d1\0" + PASSWORD).encode(), 501),
    "saslprep-private-use-user": (("\0\ue000alice\0" + PASSWORD).encode(), 501),
    "authzid-mismatch": (b"bob\0alice\0" + PASSWORD.encode(), 535),
    "authzid-with-nul-trick": (b"\0alice\0" + PASSWORD.encode()[:-1], 535),
    "right-password-wrong-case-user": (b"\0ALICE\0" + PASSWORD.encode(), 535),
}


async def test_plain_malformed_and_mismatched(running: ServerFactory) -> None:
    server = await running(**MANY_ERRORS)
    c = await _client(server)
    for case, (message, code) in PLAIN_CASES.items():
        resp = await c.cmd("AUTH PLAIN " + b64(message))
        expected = {501: "5.5.2", 535: "5.7.8"}[code]
        assert (resp.code, resp.enh) == (code, expected), (case, resp)
        # the same message as a 334 answer behaves the same
        assert (await c.cmd("AUTH PLAIN")).code == 334
        resp = await c.cmd(b64(message))
        assert (resp.code, resp.enh) == (code, expected), (case, resp)
        await _still_usable(c)
    await c.login()  # and the real credentials still work afterwards


async def test_nul_and_cr_in_command_line(running: ServerFactory) -> None:
    """RFC 5321 section 2.3.8 / 4.1.1: NUL or bare CR inside an AUTH line is refused."""
    server = await running(**PLAIN_OK)
    c = await _client(server)
    resp = await c.cmd(b"AUTH PLAIN\x00 " + plain().encode())
    assert resp.code in (500, 501), resp
    resp = await c.cmd(b"AUTH PLAIN " + plain().encode() + b"\rNOOP")
    assert resp.code == 501, resp
    await _still_usable(c)


# -- a client that answers 334 with a new command (RFC 4954 section 4) --------------------

@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "SCRAM-SHA-256", "CRAM-MD5"])
async def test_command_sent_as_auth_response_is_not_executed(
    running: ServerFactory, mechanism: str
) -> None:
    server = await running(**merge(PLAIN_OK, WITH_CRAM))
    c = await _client(server)
    for command in ("QUIT", "NOOP", "RSET", "MAIL FROM:<a@x.test>", "EHLO x", "STARTTLS"):
        assert (await c.cmd(f"AUTH {mechanism}")).code == 334
        resp = await c.cmd(command)
        # "QUIT", "NOOP", "RSET" are valid base64: a SASL failure, never the command
        assert resp.code in (501, 535), (command, resp)
        await _still_usable(c)
        resp = await c.cmd("MAIL FROM:<a@x.test>")
        assert resp.code == 530, resp  # nothing was authenticated along the way


# -- LOGIN (draft-murchison-sasl-login) -----------------------------------------------------

async def test_login_bad_user_and_password_steps(running: ServerFactory) -> None:
    server = await running(**PLAIN_OK)
    c = await _client(server)
    resp = await c.cmd("AUTH LOGIN " + b64(b"\xff\xfe"))
    assert (resp.code, resp.enh) == (501, "5.5.2"), resp
    resp = await c.cmd("AUTH LOGIN " + b64("al\0ice"))
    assert (resp.code, resp.enh) == (501, "5.5.2"), resp
    resp = await c.cmd("AUTH LOGIN " + b64("alice"))
    assert resp.lines == ["UGFzc3dvcmQ6"]
    resp = await c.cmd(b64(b"pass\0word"))
    assert (resp.code, resp.enh) == (501, "5.5.2"), resp
    resp = await c.cmd("AUTH LOGIN =")  # empty user name: a wrong credential, not a hint
    assert resp.lines == ["UGFzc3dvcmQ6"]
    resp = await c.cmd(b64(PASSWORD))
    assert (resp.code, resp.enh) == (535, "5.7.8"), resp
    await _still_usable(c)


# -- CRAM-MD5 (RFC 2195) --------------------------------------------------------------------

async def test_cram_md5_initial_response_and_garbage(running: ServerFactory) -> None:
    server = await running(**merge(PLAIN_OK, WITH_CRAM))
    c = await _client(server)
    resp = await c.cmd("AUTH CRAM-MD5 " + b64("alice 0123"))
    assert (resp.code, resp.enh) == (501, "5.7.0"), resp  # server speaks first
    for garbage in (b"alice", b"alice " + b"0" * 31, b"alice " + b"g" * 32, b"\xff " + b"0" * 32,
                    b" " + b"0" * 32, b"alice  " + b"0" * 32):
        assert (await c.cmd("AUTH CRAM-MD5")).code == 334
        resp = await c.cmd(b64(garbage))
        assert resp.code in (501, 535), (garbage, resp)
    await _still_usable(c)


# -- SCRAM (RFC 5802) -----------------------------------------------------------------------

async def _scram_first(c: Raw, client: ScramClient) -> bytes:
    resp = await c.cmd(f"AUTH {client.mechanism} {b64(client.client_first())}")
    assert resp.code == 334, resp
    return base64.b64decode(resp.lines[0])


async def _scram_run(c: Raw, client: ScramClient) -> tuple[bytes, bytes, Resp]:
    """Whole exchange; returns (server-first, client-final, final Resp)."""
    server_first = await _scram_first(c, client)
    final = client.client_final(server_first)
    resp = await c.cmd(b64(final))
    if resp.code == 334:
        assert client.verify_server_final(base64.b64decode(resp.lines[0]))
        resp = await c.cmd("")
    return server_first, final, resp


async def test_scram_good_then_wrong_nonce(running: ServerFactory) -> None:
    server = await running(**PLAIN_OK)
    c = await _client(server)
    _, _, resp = await _scram_run(c, ScramClient("SCRAM-SHA-256", "alice", PASSWORD))
    assert (resp.code, resp.enh) == (235, "2.7.0"), resp  # the machinery works...
    d = await _client(server)
    bad = ScramClient("SCRAM-SHA-256", "alice", PASSWORD, final_nonce="forged-nonce")
    _, _, resp = await _scram_run(d, bad)
    assert (resp.code, resp.enh) == (535, "5.7.8"), resp  # ...so this failure is the nonce
    # a nonce that only *starts* with the server's (appended characters)
    client = ScramClient("SCRAM-SHA-256", "alice", PASSWORD)
    server_first = await _scram_first(d, client)
    nonce = server_first.decode().split(",")[0][2:]
    client.final_nonce = nonce + "x"
    resp = await d.cmd(b64(client.client_final(server_first)))
    assert (resp.code, resp.enh) == (535, "5.7.8"), resp


async def test_scram_replayed_client_final(running: ServerFactory) -> None:
    """RFC 5802 section 9: the server nonce makes a captured client-final useless."""
    server = await running(**PLAIN_OK)
    c = await _client(server)
    cnonce = "fixedClientNonce"
    _, captured, resp = await _scram_run(
        c, ScramClient("SCRAM-SHA-256", "alice", PASSWORD, cnonce=cnonce)
    )
    assert resp.code == 235
    for _ in range(2):
        d = await _client(server)
        replay = ScramClient("SCRAM-SHA-256", "alice", "unknown-to-attacker", cnonce=cnonce)
        await _scram_first(d, replay)
        resp = await d.cmd(b64(captured))
        assert (resp.code, resp.enh) == (535, "5.7.8"), resp
        await _still_usable(d)


async def test_scram_malformed_messages(running: ServerFactory) -> None:
    server = await running(**MANY_ERRORS)
    c = await _client(server)
    firsts = [b"n,,", b"x,,n=alice,r=abc", b"n,,r=abc,n=alice", b"n,,m=ext,n=alice,r=abc",
              b"n,,n=al=2Xice,r=abc", b"n,,n=alice,r=a,b", b"n,a=,n=alice,r=abc",
              b"n,,n=alice,r=ab\x00c", b"n,,n=\xff,r=abc", b"n,,n=,r=abc"]
    for first in firsts:
        resp = await c.cmd(f"AUTH SCRAM-SHA-256 {b64(first)}")
        assert (resp.code, resp.enh) == (501, "5.5.2"), (first, resp)
    finals: list[Callable[[str, str], str]] = [
        lambda n, good: f"c=biws,{n}",  # no proof
        lambda n, good: f"c=biws,{n},p=AAAA",  # proof of the wrong length
        lambda n, good: "p=AAAA",
        lambda n, good: f"{n},c=biws,p=x",  # attributes out of order
        lambda n, good: good.rsplit("p=", 1)[0] + "p=!!",  # proof not base64
        lambda n, good: good.replace("c=biws", "c=bi ws"),
    ]
    for make in finals:
        client = ScramClient("SCRAM-SHA-256", "alice", PASSWORD)
        server_first = await _scram_first(c, client)
        good = client.client_final(server_first).decode()
        nonce = server_first.decode().split(",")[0]
        final = make(nonce, good)
        resp = await c.cmd(b64(final))
        assert (resp.code, resp.enh) == (501, "5.5.2"), (final, resp)
    await _still_usable(c)


async def test_scram_success_followed_by_nonempty_answer(running: ServerFactory) -> None:
    """RFC 4954 section 4: after server-final (334 v=...) only an empty line succeeds."""
    server = await running(**PLAIN_OK)
    c = await _client(server)
    client = ScramClient("SCRAM-SHA-256", "alice", PASSWORD)
    server_first = await _scram_first(c, client)
    resp = await c.cmd(b64(client.client_final(server_first)))
    assert resp.code == 334
    resp = await c.cmd(b64("anything"))
    assert (resp.code, resp.enh) == (501, "5.5.2"), resp
    assert (await c.cmd("MAIL FROM:<a@x.test>")).code == 530


def _end_point(c: Raw) -> bytes:
    """tls-server-end-point (RFC 5929 section 4): hash of the server certificate."""
    ssl_object = c.writer.get_extra_info("ssl_object")
    cert = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(cert).digest()


async def test_scram_channel_binding_attacks(
    running: ServerFactory, client_tls: ssl.SSLContext
) -> None:
    """RFC 5802 section 6: gs2 'y' while -PLUS was advertised is a downgrade (535);
    'p' with a binding type we do not offer fails (535); wrong binding data fails;
    'p' on a non-PLUS mechanism and 'n' on -PLUS fail (535). The right binding succeeds."""
    server = await running(**PLAIN_OK)
    c = await Raw.open(addr(server, "implicit"), tls=client_tls)
    resp = await c.ehlo()
    assert "SCRAM-SHA-256-PLUS" in resp.text
    good = ScramClient("SCRAM-SHA-256-PLUS", "alice", PASSWORD,
                       cb_type="tls-server-end-point", cb_data=_end_point(c))
    _, _, resp = await _scram_run(c, good)
    assert (resp.code, resp.enh) == (235, "2.7.0"), resp

    cases = [
        (ScramClient("SCRAM-SHA-256", "alice", PASSWORD, gs2_flag="y"), 535),
        (ScramClient("SCRAM-SHA-256-PLUS", "alice", PASSWORD, cb_type="tls-made-up",
                     cb_data=b"x"), 535),
        (ScramClient("SCRAM-SHA-256-PLUS", "alice", PASSWORD, cb_type="tls-unique",
                     cb_data=b"x" * 12), 535),  # TLS 1.3: tls-unique does not exist
        (ScramClient("SCRAM-SHA-256-PLUS", "alice", PASSWORD, cb_type="tls-server-end-point",
                     cb_data=b"\0" * 32), 535),  # a MITM's certificate hash
        (ScramClient("SCRAM-SHA-256", "alice", PASSWORD, cb_type="tls-server-end-point",
                     cb_data=_end_point(c)), 535),
        (ScramClient("SCRAM-SHA-256-PLUS", "alice", PASSWORD), 535),  # 'n' on -PLUS
    ]
    for client, code in cases:
        d = await Raw.open(addr(server, "implicit"), tls=client_tls)
        await d.ehlo()
        resp = await d.cmd(f"AUTH {client.mechanism} {b64(client.client_first())}")
        if resp.code == 334:
            resp = await d.cmd(b64(client.client_final(base64.b64decode(resp.lines[0]))))
        assert resp.code == code, (client.gs2_header, resp)
        await d.close()
    # without TLS, -PLUS is not advertised, so 'y' is accepted there (RFC 5802 section 6)
    e = await _client(server)
    _, _, resp = await _scram_run(e, ScramClient("SCRAM-SHA-256", "alice", PASSWORD,
                                                 gs2_flag="y"))
    assert resp.code == 235


async def test_absurd_stored_iteration_count_is_refused_quickly(
    running: ServerFactory,
) -> None:
    """A stored secret with i=10^9 (a tampered or hostile import) must not make the
    server run PBKDF2 for hours (MAX_ITERATIONS): answered at once, not 235."""
    server = await running(**PLAIN_OK)
    db = server.config.data_dir / "users.db"
    salt, key = b64(b"s" * 16), b64(b"k" * 32)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE users SET scram_sha256 = ? WHERE name = 'alice'",
                     (f"SCRAM-SHA-256$1000000000:{salt}${key}:{key}",))
    c = await _client(server)
    client = ScramClient("SCRAM-SHA-256", "alice", PASSWORD)
    start = time.monotonic()
    resp = await c.cmd(f"AUTH SCRAM-SHA-256 {b64(client.client_first())}")
    assert resp.code in (454, 535), resp
    assert time.monotonic() - start < 2.0
    # a client that answers a 334 with the proof for an absurd count never gets that far
    await _still_usable(c)


async def test_auth_after_success_and_in_transaction(running: ServerFactory) -> None:
    """RFC 4954 section 4: AUTH after a successful AUTH or inside a transaction is 503."""
    server = await running(**PLAIN_OK)
    c = await authed(server)
    resp = await c.cmd("AUTH PLAIN " + plain("bob", "x"))
    assert (resp.code, resp.enh) == (503, "5.5.1"), resp
    assert (await c.cmd("MAIL FROM:<a@x.test>")).code == 250
    resp = await c.cmd("AUTH PLAIN " + plain())
    assert (resp.code, resp.enh) == (503, "5.5.1"), resp
    await asyncio.sleep(0)

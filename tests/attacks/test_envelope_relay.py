"""Envelope tricks over real sockets (RFC 5321 sections 3.6.1 and 4.1.2 source routes,
4.1.1.3 percent hack; RFC 3461 section 4 xtext; SPEC section 5 Maildir names).

smtpgate has no relay: every accepted recipient becomes exactly one Maildir
directly under mail/, whose name is the %-encoded address.
"""

from __future__ import annotations

import os
from pathlib import Path

from smtpgate.delivery.envelopes import read_envelopes
from smtpgate.server.app import Server
from tests.attacks.raw import PLAIN_OK, Raw, addr, authed, mailboxes, merge, messages
from tests.e2e.conftest import ServerFactory


def _all_paths(root: Path) -> list[Path]:
    return [Path(dirpath) for dirpath, _, _ in os.walk(root)]


async def _deliver(c: Raw, rcpts: list[str]) -> list[int]:
    assert (await c.cmd("MAIL FROM:<alice@x.test>")).code == 250
    codes = [(await c.cmd(f"RCPT TO:<{rcpt}>")).code for rcpt in rcpts]
    if 250 in codes:
        assert (await c.cmd("DATA")).code == 354
        assert (await c.cmd("Subject: t\r\n\r\nbody\r\n.")).code == 250
    else:
        assert (await c.cmd("RSET")).code == 250
    return codes


async def test_rcpt_tricks_never_relay_or_escape(running: ServerFactory) -> None:
    server = await running(**merge(PLAIN_OK, {"limits": {"max_errors": 100}}))
    c = await authed(server)
    accepted = {
        "user%host@x.test": "user%25host@x.test",  # RFC 5321 4.1.1.3: kept as a local part
        "@a.test,@b.test:route@c.test": "route@c.test",  # source route: dropped (4.1.2)
        '"quoted user"@x.test': "%22quoted%20user%22@x.test",
        '"../../../etc/passwd"@x.test': "%22..%2f..%2f..%2fetc%2fpasswd%22@x.test",
        "UPPER@X.TEST": "upper@x.test",
        "user@[127.0.0.1]": "user@%5b127.0.0.1%5d",
    }
    for rcpt, mailbox in accepted.items():
        assert await _deliver(c, [rcpt]) == [250], rcpt
        assert mailbox in mailboxes(server), (rcpt, mailboxes(server))
    refused = [".hidden@x.test", "a@b@c.test", "a\x00b@x.test", "a\rb@x.test", "a b@x.test",
               "@x.test", "user@", "<nested@x.test>", "a@b.test:c@d.test", "@a.test:", "..@x.test",
               '"unterminated@x.test', "a@-bad-.test", "a" * 300 + "@x.test"]
    for rcpt in refused:
        resp = await c.cmd(f"RCPT TO:<{rcpt}>".encode())
        assert resp.code in (501, 503), (rcpt, resp)  # 503: need MAIL first
    root = server.config.data_dir / "mail"
    for path in _all_paths(root):  # nothing but <root>/<mailbox>/{tmp,new,cur,envelopes}
        rel = path.relative_to(root).parts
        assert len(rel) <= 2, path
        assert ".." not in rel and all("/" not in p for p in rel)
    assert not (server.config.data_dir / "etc").exists()
    assert len(messages(server)) == len(accepted)


async def test_unauthenticated_listener_only_delivers_locally(
    running: ServerFactory, tmp_path: Path
) -> None:
    """On a require_auth=false listener anything accepted lands in a local Maildir;
    no recipient form produces an outbound connection or a queue entry."""
    server = await running(**PLAIN_OK)
    open_server = await _open_listener(running, server)
    c = await Raw.open(addr(open_server))
    await c.ehlo()
    codes = await _deliver(c, ["victim@remote.test", "a%b@remote.test",
                               "@relay.test:victim@remote.test"])
    assert codes == [250, 250, 250]
    data = open_server.config.data_dir
    assert sorted(mailboxes(open_server)) == ["a%25b@remote.test", "victim@remote.test"]
    assert not (data / "queue").exists() or not any((data / "queue").iterdir())
    assert open_server.config.delivery.mode == "maildir"


async def _open_listener(running: ServerFactory, _: Server) -> Server:
    from tests.e2e.conftest import free_port

    server: Server = await running(**merge(PLAIN_OK, {
        "data_dir": str(Path(_.config.data_dir).parent / "open-data"),
        "listener": [{"address": f"127.0.0.1:{free_port()}", "tls": "none",
                      "require_auth": False}],
    }))
    return server


async def test_params_with_control_characters_never_reach_metadata(
    running: ServerFactory,
) -> None:
    """RFC 3461 section 4 / RFC 4954 section 5: AUTH= is xtext; an encoded CR, LF or NUL
    is refused (555), a raw one never parses; EHLO names lose control characters."""
    server = await running(**merge(PLAIN_OK, {"limits": {"max_errors": 100}}))
    c = await Raw.open(addr(server))
    await c.ehlo("evil\x00\x7fname\x1b[31m")
    await c.login()
    for param in ("AUTH=a+0Db", "AUTH=a+0Ab", "AUTH=a+00b", "AUTH=+7F", "AUTH=a+0d",
                  "BODY=8BITMIME\x00", "AUTH=x\x00", "X-EVIL=\x01", "BODY=7BIT\rX"):
        resp = await c.cmd(f"MAIL FROM:<alice@x.test> {param}".encode())
        assert resp.code in (501, 555), (param, resp)
    assert (await c.cmd("MAIL FROM:<alice@x.test> AUTH=alice+2Bsub")).code == 250
    assert (await c.cmd("RCPT TO:<bob@x.test>")).code == 250
    assert (await c.cmd("DATA")).code == 354
    assert (await c.cmd("Subject: t\r\n\r\nbody\r\n.")).code == 250
    (maildir,) = (server.config.data_dir / "mail").iterdir()
    (record,) = read_envelopes(maildir)
    assert record["auth_param"] == "alice+sub"
    for key in ("helo", "mail_from", "auth_param", "peer"):
        assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in str(record[key])), key
    (msg,) = messages(server)
    header = msg.read_bytes().split(b"\r\n\r\n")[0]
    assert b"alice+sub" not in header and b"alice+2Bsub" not in header  # AUTH=: envelope only
    assert b"\x00" not in header and b"\x1b" not in header
    # Date and Message-ID: [submission] add_missing_headers (delivery/fixups.py)
    assert all(line.startswith((b"Received:", b"\t", b"Date:", b"Message-ID:", b"Subject:"))
               for line in header.split(b"\r\n")), header

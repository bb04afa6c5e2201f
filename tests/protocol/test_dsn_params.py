"""RFC 3461 DSN parameters: RET and ENVID on MAIL, NOTIFY and ORCPT on RCPT.

Recognised parameters with a bad value are 501 5.5.4 (RFC 5321 section
4.1.1.11); good values reach the transaction decoded and in canonical case.
"""

from __future__ import annotations

import pytest

from smtpgate.protocol import commands as c
from tests.protocol.host import codes, open_host

Params = dict[str, str | None]


def transaction_after(lines: str) -> tuple[list[str], Params, list[Params]]:
    host = open_host()
    out = codes(host.feed(b"EHLO c\r\n" + lines.encode()))
    t = host.session.transaction
    return out[1:], t.params, t.rcpt_params


def test_good_dsn_parameters_reach_the_transaction() -> None:
    replies, mail, rcpts = transaction_after(
        "MAIL FROM:<a@b.example> ret=hdrs ENVID=QQ+2Bid+3D1\r\n"
        "RCPT TO:<c@d.example> NOTIFY=failure,Delay ORCPT=rfc822;c+2Bx@d.example\r\n"
        "RCPT TO:<e@d.example> NOTIFY=NEVER\r\n"
        "RCPT TO:<f@d.example>\r\n"
    )
    assert replies == ["250 2.1.0", "250 2.1.5", "250 2.1.5", "250 2.1.5"]
    assert mail["RET"] == "HDRS" and mail["ENVID"] == "QQ+id=1"
    assert rcpts == [
        {"NOTIFY": "FAILURE,DELAY", "ORCPT": "rfc822;c+x@d.example"},
        {"NOTIFY": "NEVER"},
        {},
    ]


@pytest.mark.parametrize(
    "params",
    ["RET=ALL", "RET", "RET=FULL RET=HDRS", "ENVID", "ENVID=a+0Db", "ENVID=a+zz",
     "ENVID=" + "x" * 101],
)
def test_bad_mail_dsn_values_are_501(params: str) -> None:
    replies, _, _ = transaction_after(f"MAIL FROM:<a@b.example> {params}\r\n")
    assert replies == ["501 5.5.4"]


@pytest.mark.parametrize(
    "params",
    ["NOTIFY=NEVER,SUCCESS", "NOTIFY=SUCCESS,SUCCESS", "NOTIFY=", "NOTIFY", "NOTIFY=SOMETIMES",
     "NOTIFY=FAILURE,", "ORCPT=c@d.example", "ORCPT=;c@d.example", "ORCPT=rfc822;",
     "ORCPT=rfc822;a+0Ab", "ORCPT=rfc_822;a", "ORCPT=x" * 2],
)
def test_bad_rcpt_dsn_values_are_501(params: str) -> None:
    replies, _, rcpts = transaction_after(
        f"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example> {params}\r\n")
    assert replies[1] == "501 5.5.4"
    assert rcpts == []


def test_dsn_parameters_need_ehlo() -> None:
    host = open_host()
    out = codes(host.feed(b"HELO c\r\nMAIL FROM:<a@b.example> RET=FULL\r\n"))
    assert out[1] == "555 5.5.4"


@pytest.mark.parametrize("text", ["plain", "a+b=c", "sp ace", "\x7f\u00e9", "+"])
def test_xtext_round_trip(text: str) -> None:
    encoded = c.encode_xtext(text)
    assert all("!" <= ch <= "~" and ch != "=" for ch in encoded)
    if all(ord(ch) < 256 for ch in text):
        assert c.decode_xtext(encoded) == text

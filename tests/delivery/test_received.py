"""The Received header: RFC 5321 section 4.4 shape, RFC 3848 with-clauses, no injection."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import re
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpgate.delivery.base import Envelope
from smtpgate.delivery.received import address_literal, received_header, with_protocol

BASE = Envelope(
    session_id="a1B2c3",
    peer="192.0.2.7:4567",
    helo="client.example",
    esmtp=True,
    tls=True,
    authenticated_user="alice",
    mail_from="alice@example.org",
    recipients=("bob@example.org",),
    received_at=1_700_000_000.0,
)


def header(
    envelope: Envelope = BASE, *, show_user: bool = False, message_id: str | None = None
) -> str:
    raw = received_header(
        envelope, hostname="mail.example.org", show_user=show_user, message_id=message_id
    )
    assert raw.endswith(b"\r\n")
    assert b"\0" not in raw
    lines = raw[:-2].split(b"\r\n")
    for index, line in enumerate(lines):
        assert len(line) < 998
        assert b"\r" not in line and b"\n" not in line
        if index:
            assert line.startswith(b"\t")  # folded continuation
    return raw.decode("utf-8")


@pytest.mark.parametrize(
    ("esmtp", "tls", "user", "protocol"),
    [
        (True, False, None, "ESMTP"),
        (True, True, None, "ESMTPS"),
        (True, False, "alice", "ESMTPA"),
        (True, True, "alice", "ESMTPSA"),
        (False, False, None, "SMTP"),
        (False, True, None, "SMTP"),
    ],
)
def test_with_clause_rfc3848(esmtp: bool, tls: bool, user: str | None, protocol: str) -> None:
    envelope = dataclasses.replace(BASE, esmtp=esmtp, tls=tls, authenticated_user=user)
    assert with_protocol(envelope) == protocol
    assert f" with {protocol} id " in header(envelope)


def test_full_shape() -> None:
    text = header()
    assert re.fullmatch(
        r"Received: from client\.example \(\[192\.0\.2\.7\]\)\r\n"
        r"\tby mail\.example\.org \(smtpgate\) with ESMTPSA id a1B2c3\r\n"
        r"\tfor <bob@example\.org>; "
        r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d? \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n",
        text,
    ), text
    date = text.rsplit("; ", 1)[1].strip()
    assert parsedate_to_datetime(date).timestamp() == 1_700_000_000.0


def test_parses_as_a_header() -> None:
    message = email.message_from_bytes(
        received_header(BASE, hostname="h.example", show_user=True) + b"\r\nbody",
        policy=email.policy.SMTP,
    )
    assert "by h.example (smtpgate)" in str(message["Received"])


def test_user_only_when_asked() -> None:
    assert "alice" not in header(show_user=False)
    assert "\t(authenticated as alice)\r\n" in header(show_user=True)
    anonymous = dataclasses.replace(BASE, authenticated_user=None)
    assert "authenticated" not in header(anonymous, show_user=True)


def test_for_only_with_one_recipient() -> None:
    two = dataclasses.replace(BASE, recipients=("bob@example.org", "carol@example.org"))
    text = header(two)
    assert "for <" not in text and "carol" not in text and "bob" not in text
    assert " id a1B2c3; " in text


def test_message_id_overrides_session_id() -> None:
    assert " id M42\r\n" in header(message_id="M42")


@pytest.mark.parametrize(
    ("peer", "literal"),
    [
        ("192.0.2.7:4567", "[192.0.2.7]"),
        ("192.0.2.7", "[192.0.2.7]"),
        ("[192.0.2.7]:4567", "[192.0.2.7]"),
        ("[2001:db8::1]:4567", "[IPv6:2001:db8::1]"),
        ("2001:db8::1", "[IPv6:2001:db8::1]"),
        ("[::ffff:192.0.2.9]:25", "[192.0.2.9]"),
        ("unix-socket", None),
    ],
)
def test_address_literal(peer: str, literal: str | None) -> None:
    assert address_literal(peer) == literal


@pytest.mark.parametrize("helo", ["[192.0.2.7]", "[IPv6:2001:db8::1]", "host-1.example."])
def test_valid_helo_is_the_from_domain(helo: str) -> None:
    assert header(dataclasses.replace(BASE, helo=helo)).startswith(f"Received: from {helo} (")


@pytest.mark.parametrize(
    "helo",
    [
        "evil\r\nX-Injected: yes",
        "a\0b",
        "spaces in helo",
        "paren) (fake",
        "unicode-ö",
        "x" * 600,
        "",
    ],
)
def test_hostile_helo_is_cleaned(helo: str) -> None:
    text = header(dataclasses.replace(BASE, helo=helo))
    assert text.startswith("Received: from [192.0.2.7] (helo=")
    assert "\nX-Injected" not in text
    assert text.isascii()
    comment = text.split("(helo=", 1)[1].split("\r\n", 1)[0]
    # every ( or ) from the client is quoted, so the comment closes where we close it
    assert comment.replace("\\(", "").replace("\\)", "").count(")") == 1


def test_hostile_user_and_recipient_are_cleaned() -> None:
    envelope = dataclasses.replace(
        BASE,
        authenticated_user="eve)\r\nBcc: all@x\0" + "u" * 20_000,
        recipients=("bob\r\nX: y@example.org",),
    )
    text = header(envelope, show_user=True)
    assert "\nBcc" not in text and "\nX:" not in text
    assert "(authenticated as eve\\)??Bcc: all@x?" in text


def test_long_recipient_drops_the_for_clause() -> None:
    envelope = dataclasses.replace(BASE, recipients=("x" * 1000 + "@example.org",))
    assert "for <" not in header(envelope)


@given(
    helo=st.text(max_size=600),
    user=st.none() | st.text(max_size=3000),
    rcpt=st.text(max_size=1200),
    smtputf8=st.booleans(),
)
def test_any_input_gives_a_well_formed_header(
    helo: str, user: str | None, rcpt: str, smtputf8: bool
) -> None:
    envelope = dataclasses.replace(
        BASE, helo=helo, authenticated_user=user, recipients=(rcpt,), smtputf8=smtputf8
    )
    text = header(envelope, show_user=True)
    if not smtputf8:
        assert text.isascii()


@pytest.mark.parametrize("show_user", [False, True])
def test_auth_param_is_never_in_the_header(show_user: bool) -> None:
    """MAIL FROM AUTH= (RFC 4954 section 5) is the client's claim: sidecar only."""
    envelope = dataclasses.replace(BASE, auth_param="origin+mark@elsewhere.example")
    text = header(envelope, show_user=show_user)
    assert "origin" not in text and "mark" not in text and "elsewhere" not in text
    assert text == header(dataclasses.replace(BASE, auth_param=None), show_user=show_user)

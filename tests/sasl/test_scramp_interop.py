"""Cross-check the SCRAM server against the independent scramp client."""

from __future__ import annotations

import pytest
from scramp import ScramClient as ScrampClient  # type: ignore[import-untyped,unused-ignore]

from smtpgate.sasl.base import (
    Challenge,
    ChannelBindings,
    Failure,
    MechanismContext,
    NeedSecret,
    Success,
)
from smtpgate.sasl.registry import REGISTRY
from smtpgate.sasl.scram import derive_scram_secret

CB_DATA = b"\x42" * 32


def _exchange(mech_name: str, client: ScrampClient, ctx: MechanismContext, password: str) -> object:
    mech = REGISTRY[mech_name](ctx)
    step = mech.start(client.get_client_first().encode())
    assert isinstance(step, NeedSecret)
    step = mech.resume(derive_scram_secret(mech.secret_scheme or "", password))
    assert isinstance(step, Challenge)
    client.set_server_first(step.data.decode())
    return mech.step(client.get_client_final().encode())


@pytest.mark.parametrize("name", ["SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_scramp_client_succeeds(name: str) -> None:
    client = ScrampClient([name], "user", "pencil")
    step = _exchange(name, client, MechanismContext(), "pencil")
    assert isinstance(step, Success) and step.additional is not None
    client.set_server_final(step.additional.decode())  # raises if the signature is wrong


@pytest.mark.parametrize("name", ["SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"])
@pytest.mark.parametrize("cb_type", ["tls-server-end-point", "tls-unique"])
def test_scramp_client_with_channel_binding(name: str, cb_type: str) -> None:
    client = ScrampClient([name], "user", "pencil", channel_binding=(cb_type, CB_DATA))
    bindings = ChannelBindings(tls_server_end_point=CB_DATA, tls_unique=CB_DATA)
    ctx = MechanismContext(bindings=bindings, plus_advertised=True)
    step = _exchange(name, client, ctx, "pencil")
    assert isinstance(step, Success) and step.additional is not None
    client.set_server_final(step.additional.decode())


def test_scramp_client_wrong_password() -> None:
    client = ScrampClient(["SCRAM-SHA-256"], "user", "wrong")
    assert isinstance(_exchange("SCRAM-SHA-256", client, MechanismContext(), "pencil"), Failure)


def test_scramp_client_non_ascii_password() -> None:
    password = "p\u00e4ss\u00a0w\u00f6rd\u2168"  # SASLprep maps NBSP and the numeral
    client = ScrampClient(["SCRAM-SHA-256"], "user", password)
    step = _exchange("SCRAM-SHA-256", client, MechanismContext(), password)
    assert isinstance(step, Success)


def test_scramp_y_flag_detected_as_downgrade() -> None:
    # scramp sends "y" when it has binding data but picks a non-PLUS mechanism
    client = ScrampClient(
        ["SCRAM-SHA-256"], "user", "pencil", channel_binding=("tls-unique", CB_DATA)
    )
    ctx = MechanismContext(bindings=ChannelBindings(tls_unique=CB_DATA), plus_advertised=True)
    mech = REGISTRY["SCRAM-SHA-256"](ctx)
    first = client.get_client_first()
    assert first.startswith("y,,")
    assert isinstance(mech.start(first.encode()), Failure)

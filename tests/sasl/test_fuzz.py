"""Property tests: whatever the client sends, a mechanism answers with a Step."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from smtpgate.sasl.base import (
    Challenge,
    ChannelBindings,
    CramMd5Secret,
    Failure,
    MechanismContext,
    NeedSecret,
    Secret,
    Success,
    VerifyPassword,
)
from smtpgate.sasl.cram_md5 import cram_md5_secret
from smtpgate.sasl.registry import REGISTRY
from smtpgate.sasl.scram import derive_scram_secret, fake_scram_secret

STEP_TYPES = (Challenge, VerifyPassword, NeedSecret, Success, Failure)
FINAL_TYPES = (VerifyPassword, Success, Failure)

SECRETS: list[Secret] = [
    cram_md5_secret("pw"),
    CramMd5Secret(contexts=b"\x00" * 5),
    derive_scram_secret("SCRAM-SHA-1", "pw", iterations=1),
    derive_scram_secret("SCRAM-SHA-256", "pw", iterations=1),
    fake_scram_secret("SCRAM-SHA-256", "ghost", b"k", iterations=1),
]

CONTEXTS = [
    MechanismContext(),
    MechanismContext(
        bindings=ChannelBindings(tls_server_end_point=b"e" * 32, tls_exporter=b"x" * 32),
        plus_advertised=True,
    ),
]

# Near-valid SCRAM and PLAIN fragments make the interesting paths reachable.
FRAGMENTS = [
    b"n,,",
    b"y,,",
    b"p=tls-exporter,,",
    b"p=tls-unique,,",
    b"a=x=2C,",
    b"n=user,",
    b"r=abc",
    b",",
    b"=",
    b"=2C",
    b"=3D",
    b"c=biws,",
    b"p=",
    b"m=x,",
    b"\x00",
    b"\xff",
    b"user ",
    b"0123456789abcdef0123456789abcdef",
]
messages = st.one_of(
    st.binary(max_size=200),
    st.lists(st.sampled_from(FRAGMENTS), max_size=8).map(b"".join),
)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("step"), messages),
        st.tuples(st.just("resume"), st.sampled_from(range(len(SECRETS)))),
        st.tuples(st.just("start"), st.one_of(st.none(), messages)),
    ),
    max_size=6,
)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(REGISTRY)),
    ctx=st.sampled_from(CONTEXTS),
    initial=st.one_of(st.none(), messages),
    operations=ops,
)
def test_random_input_only_yields_steps(
    name: str,
    ctx: MechanismContext,
    initial: bytes | None,
    operations: list[tuple[str, object]],
) -> None:
    mech = REGISTRY[name](ctx)
    step = mech.start(initial)
    assert isinstance(step, STEP_TYPES)
    finished = isinstance(step, FINAL_TYPES)
    for op, arg in operations:
        if op == "step":
            assert isinstance(arg, bytes)
            step = mech.step(arg)
        elif op == "resume":
            assert isinstance(arg, int)
            step = mech.resume(SECRETS[arg])
        else:
            assert arg is None or isinstance(arg, bytes)
            step = mech.start(arg)
        assert isinstance(step, STEP_TYPES)
        if finished:  # nothing but Failure once the exchange has ended
            assert isinstance(step, Failure)
        finished = finished or isinstance(step, FINAL_TYPES)


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(sorted(REGISTRY)), first=messages, second=messages)
def test_random_bytes_never_succeed_without_a_real_proof(
    name: str, first: bytes, second: bytes
) -> None:
    mech = REGISTRY[name](CONTEXTS[1])
    step = mech.start(None)
    for data in (first, second):
        if isinstance(step, NeedSecret):
            step = mech.resume(SECRETS[3] if "SCRAM" in name else SECRETS[0])
        if not isinstance(step, Challenge):
            break
        step = mech.step(data)
    if isinstance(step, NeedSecret):
        step = mech.resume(SECRETS[3] if "SCRAM" in name else SECRETS[0])
    assert not isinstance(step, Success)

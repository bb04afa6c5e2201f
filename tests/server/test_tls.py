"""TlsLayer against real TLS clients: stdlib ssl, pyOpenSSL, GnuTLS (if installed).

Clients run over memory BIOs (deterministic, single thread) and over a real
loopback TCP connection with the server side in a thread.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from smtpgate.sasl.base import ChannelBindings
from smtpgate.server.certs import ensure_self_signed
from smtpgate.server.tls import (
    TlsConfigError,
    TlsError,
    TlsLayer,
    _server_end_point,
    make_server_context,
)
from tests.tools import require_tool

LABEL = b"EXPORTER-Channel-Binding"
BIG = 5 * 1024 * 1024


# --------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path

    @property
    def der(self) -> bytes:
        pem = x509.load_pem_x509_certificate(self.cert.read_bytes())
        return pem.public_bytes(serialization.Encoding.DER)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Pair:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    assert ensure_self_signed(cert, key, "mail.example.org")
    return Pair(cert, key)


@pytest.fixture(scope="module")
def server_ctx(pair: Pair) -> SSL.Context:
    return make_server_context(pair.cert, pair.key)


def payload(size: int, seed: bytes) -> bytes:
    """Deterministic, incompressible-looking test data."""
    block = hashlib.sha512(seed).digest() * 512  # 32 KiB
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest() + block
        counter += 1
    return bytes(out[:size])


# ------------------------------------------------------- stdlib client, memory BIO


class StdlibClient:
    """An ssl.SSLObject over memory BIOs, verifying our self-signed certificate."""

    def __init__(
        self,
        cafile: Path | None,
        *,
        maximum: ssl.TLSVersion | None = None,
        minimum: ssl.TLSVersion | None = None,
        session: ssl.SSLSession | None = None,
        ciphers: str | None = None,
        context: ssl.SSLContext | None = None,
    ) -> None:
        if context is not None:  # reuse (session resumption needs the same context)
            ctx = context
        else:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if cafile is None:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx.load_verify_locations(cafile=str(cafile))
        self.context = ctx
        if ciphers is not None:
            ctx.set_ciphers(ciphers)
        if minimum is not None:
            ctx.minimum_version = minimum
        if maximum is not None:
            ctx.maximum_version = maximum
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.incoming, self.outgoing, server_hostname="localhost", session=session
        )

    def handshake_step(self) -> bool:
        try:
            self.obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        return True

    def read_all(self) -> bytes:
        chunks = []
        while True:
            try:
                chunk = self.obj.read(1 << 20)
            except ssl.SSLWantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def stdlib_handshake(layer: TlsLayer, client: StdlibClient) -> None:
    for _ in range(20):
        client_done = client.handshake_step()
        layer.receive_ciphertext(client.outgoing.read())
        assert layer.read_plaintext() == b""
        client.incoming.write(layer.outgoing())
        if client_done and layer.handshake_done:
            return
    raise AssertionError("handshake did not finish")


def connect_stdlib(server_ctx: SSL.Context, client: StdlibClient) -> TlsLayer:
    layer = TlsLayer(server_ctx)
    stdlib_handshake(layer, client)
    return layer


# ---------------------------------------------------- pyOpenSSL client, memory BIO


def pyopenssl_client(max_version: int | None = None) -> SSL.Connection:
    ctx = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if max_version is not None:
        ctx.set_max_proto_version(max_version)
    conn = SSL.Connection(ctx, None)
    conn.set_connect_state()
    return conn


def pyopenssl_handshake(layer: TlsLayer, client: SSL.Connection) -> None:
    for _ in range(20):
        client_done = True
        try:
            client.do_handshake()
        except SSL.WantReadError:
            client_done = False
        with contextlib.suppress(SSL.WantReadError):
            layer.receive_ciphertext(client.bio_read(1 << 20))
        assert layer.read_plaintext() == b""
        out = layer.outgoing()
        if out:
            client.bio_write(out)
        if client_done and layer.handshake_done:
            return
    raise AssertionError("handshake did not finish")


# ------------------------------------------------------------- handshake, version


@pytest.mark.parametrize(
    ("maximum", "name"),
    [(ssl.TLSVersion.TLSv1_3, "TLSv1.3"), (ssl.TLSVersion.TLSv1_2, "TLSv1.2")],
)
def test_handshake_and_data_both_ways(
    server_ctx: SSL.Context, pair: Pair, maximum: ssl.TLSVersion, name: str
) -> None:
    client = StdlibClient(pair.cert, maximum=maximum)
    layer = TlsLayer(server_ctx)
    assert not layer.handshake_done
    assert layer.cipher == ""
    stdlib_handshake(layer, client)
    assert layer.handshake_done
    assert layer.version == name == client.obj.version()
    cipher = client.obj.cipher()
    assert cipher is not None and layer.cipher == cipher[0]

    client.obj.write(b"EHLO client.example\r\n")
    layer.receive_ciphertext(client.outgoing.read())
    assert layer.read_plaintext() == b"EHLO client.example\r\n"

    layer.write_plaintext(b"250-mail.example.org\r\n250 AUTH SCRAM-SHA-256-PLUS\r\n")
    client.incoming.write(layer.outgoing())
    assert client.read_all() == b"250-mail.example.org\r\n250 AUTH SCRAM-SHA-256-PLUS\r\n"
    assert layer.outgoing() == b""  # drained


def test_handshake_fed_one_byte_at_a_time(server_ctx: SSL.Context, pair: Pair) -> None:
    client = StdlibClient(pair.cert)
    layer = TlsLayer(server_ctx)
    for _ in range(20):
        client_done = client.handshake_step()
        for byte in client.outgoing.read():
            layer.receive_ciphertext(bytes([byte]))
            assert layer.read_plaintext() == b""
        client.incoming.write(layer.outgoing())
        if client_done and layer.handshake_done:
            break
    assert layer.handshake_done
    client.obj.write(b"NOOP\r\n")
    data = client.outgoing.read()
    got = b""
    for byte in data:
        layer.receive_ciphertext(bytes([byte]))
        got += layer.read_plaintext()
    assert got == b"NOOP\r\n"


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_large_transfers_memory_bio(
    server_ctx: SSL.Context, pair: Pair, maximum: ssl.TLSVersion
) -> None:
    client = StdlibClient(pair.cert, maximum=maximum)
    layer = connect_stdlib(server_ctx, client)

    upload = payload(BIG, b"up")
    client.obj.write(upload)
    wire = client.outgoing.read()
    assert len(wire) > BIG
    received = bytearray()
    step = 100_000  # network-sized pieces
    for start in range(0, len(wire), step):
        piece = wire[start : start + step]
        layer.receive_ciphertext(piece)
        plain = layer.read_plaintext()
        # bounded by what was fed plus the partial record left over from before
        assert len(plain) <= len(piece) + 16 * 1024
        # and nothing decryptable is held back: only an incomplete record remains
        assert len(received) + len(plain) >= start + len(piece) - 2 * (16 * 1024 + 256)
        received += plain
    assert received == upload

    download = payload(BIG, b"down")
    layer.write_plaintext(download)
    out = layer.outgoing()
    assert len(out) > BIG
    assert layer.outgoing() == b""
    client.incoming.write(out)
    assert client.read_all() == download


def test_close_notify_from_peer_sets_closed(server_ctx: SSL.Context, pair: Pair) -> None:
    client = StdlibClient(pair.cert)
    layer = connect_stdlib(server_ctx, client)
    client.obj.write(b"QUIT\r\n")
    with pytest.raises(ssl.SSLWantReadError):
        client.obj.unwrap()  # sends close_notify, waits for ours
    layer.receive_ciphertext(client.outgoing.read())
    assert layer.read_plaintext() == b"QUIT\r\n"
    assert layer.closed
    assert layer.read_plaintext() == b""


def test_shutdown_sends_close_notify(server_ctx: SSL.Context, pair: Pair) -> None:
    client = StdlibClient(pair.cert)
    layer = connect_stdlib(server_ctx, client)
    layer.write_plaintext(b"221 bye\r\n")
    layer.shutdown()
    client.incoming.write(layer.outgoing())
    assert client.obj.read(100) == b"221 bye\r\n"
    assert client.obj.read(100) == b""  # EOF: close_notify received
    layer.shutdown()  # idempotent, never raises


def test_shutdown_before_handshake_is_harmless(server_ctx: SSL.Context) -> None:
    layer = TlsLayer(server_ctx)
    layer.shutdown()
    assert layer.outgoing() == b""


def test_write_before_handshake_is_a_bug(server_ctx: SSL.Context) -> None:
    layer = TlsLayer(server_ctx)
    with pytest.raises(RuntimeError):
        layer.write_plaintext(b"220 too early\r\n")
    with pytest.raises(RuntimeError):
        layer.channel_bindings()


# ------------------------------------------------------------------ refusals


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("seclevel0", [False, True], ids=["default", "seclevel0"])
@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_tls_versions_refused(pair: Pair, maximum: ssl.TLSVersion, seclevel0: bool) -> None:
    server_ctx = make_server_context(pair.cert, pair.key)
    if seclevel0:
        # OpenSSL's default security level already rules out TLS < 1.2; lower it so
        # that only our set_min_proto_version stands in the way.
        server_ctx.set_cipher_list(b"DEFAULT:@SECLEVEL=0")
    client = StdlibClient(
        None, minimum=ssl.TLSVersion.TLSv1, maximum=maximum, ciphers="DEFAULT:@SECLEVEL=0"
    )
    layer = TlsLayer(server_ctx)
    try:
        client.handshake_step()
    except ssl.SSLError as exc:  # pragma: no cover - depends on the local OpenSSL build
        pytest.skip(f"this OpenSSL cannot even offer {maximum.name}: {exc}")
    hello = client.outgoing.read()
    assert hello[:1] == b"\x16"  # a ClientHello really went out
    layer.receive_ciphertext(hello)
    with pytest.raises(TlsError) as info:
        layer.read_plaintext()
    assert "\n" not in str(info.value)
    assert not layer.handshake_done
    alert = layer.outgoing()
    assert alert[:1] == b"\x15"  # the server answered with an alert
    client.incoming.write(alert)
    with pytest.raises(ssl.SSLError):
        client.handshake_step()
    with pytest.raises(TlsError):  # dead for good
        layer.read_plaintext()


@pytest.mark.parametrize(
    "data",
    [
        b"\x8f" * 64,
        bytes(range(256)),
        b"\x16\x03\x01\x00\x05\xff\xff\xff\xff\xff",  # a record, but no ClientHello inside
        b"EHLO x\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["garbage", "bytes", "bad-handshake-record", "ehlo", "http"],
)
def test_non_tls_input_is_tls_error(server_ctx: SSL.Context, data: bytes) -> None:
    layer = TlsLayer(server_ctx)
    layer.receive_ciphertext(data)
    with pytest.raises(TlsError) as info:
        layer.read_plaintext()
    message = str(info.value)
    assert message.startswith("TLS handshake failed: ")
    assert "\n" not in message
    assert "EHLO" not in message and "GET" not in message  # no peer data in logs


def test_garbage_after_handshake_is_tls_error(server_ctx: SSL.Context, pair: Pair) -> None:
    client = StdlibClient(pair.cert)
    layer = connect_stdlib(server_ctx, client)
    layer.receive_ciphertext(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)  # undecryptable record
    with pytest.raises(TlsError) as info:
        layer.read_plaintext()
    assert info.value.args[0].startswith("TLS protocol error: ")
    with pytest.raises(TlsError):
        layer.write_plaintext(b"x")


# ------------------------------------------------------------ channel bindings


def test_bindings_tls12_match_stdlib_client(server_ctx: SSL.Context, pair: Pair) -> None:
    client = StdlibClient(pair.cert, maximum=ssl.TLSVersion.TLSv1_2)
    layer = connect_stdlib(server_ctx, client)
    bindings = layer.channel_bindings()
    expected = client.obj.get_channel_binding("tls-unique")
    assert expected is not None and len(expected) == 12
    assert bindings.tls_unique == expected
    assert bindings.get("tls-unique") == expected
    assert bindings.tls_exporter is None
    assert bindings.tls_server_end_point == hashlib.sha256(pair.der).digest()
    assert layer.channel_bindings() is bindings  # computed once


def test_tls12_resumption_refused_so_tls_unique_stays_right(
    server_ctx: SSL.Context, pair: Pair
) -> None:
    first = StdlibClient(pair.cert, maximum=ssl.TLSVersion.TLSv1_2)
    connect_stdlib(server_ctx, first)
    session = first.obj.session
    assert session is not None
    second = StdlibClient(pair.cert, session=session, context=first.context)
    layer = connect_stdlib(server_ctx, second)
    assert not second.obj.session_reused
    assert layer.channel_bindings().tls_unique == second.obj.get_channel_binding("tls-unique")


def test_bindings_tls13_exporter_match_pyopenssl_client(
    server_ctx: SSL.Context, pair: Pair
) -> None:
    client = pyopenssl_client()
    layer = TlsLayer(server_ctx)
    pyopenssl_handshake(layer, client)
    assert client.get_protocol_version_name() == layer.version == "TLSv1.3"
    bindings = layer.channel_bindings()
    no_context = bytes(client.export_keying_material(LABEL, 32))
    empty_context = bytes(client.export_keying_material(LABEL, 32, b""))
    assert no_context == empty_context  # RFC 8446 section 7.5: the same on 1.3
    assert bindings.tls_exporter == no_context
    assert len(no_context) == 32
    assert bindings.tls_exporter != bytes(client.export_keying_material(b"EXPORTER-other", 32))
    assert bindings.tls_unique is None
    assert bindings.tls_server_end_point == hashlib.sha256(pair.der).digest()


def test_bindings_tls13_differ_per_connection(server_ctx: SSL.Context) -> None:
    values = []
    for _ in range(2):
        client = pyopenssl_client()
        layer = TlsLayer(server_ctx)
        pyopenssl_handshake(layer, client)
        values.append(layer.channel_bindings().tls_exporter)
    assert values[0] != values[1]


def test_bindings_tls12_match_pyopenssl_client(server_ctx: SSL.Context) -> None:
    client = pyopenssl_client(SSL.TLS1_2_VERSION)
    layer = TlsLayer(server_ctx)
    pyopenssl_handshake(layer, client)
    bindings = layer.channel_bindings()
    assert layer.version == "TLSv1.2"
    assert bindings.tls_unique == client.get_finished()  # the client's Finished came first
    assert bindings.tls_unique != client.get_peer_finished()
    assert bindings.tls_exporter is None


def test_bindings_tls13_stdlib_has_no_tls_unique(server_ctx: SSL.Context, pair: Pair) -> None:
    client = StdlibClient(pair.cert, maximum=ssl.TLSVersion.TLSv1_3)
    layer = connect_stdlib(server_ctx, client)
    bindings = layer.channel_bindings()
    assert bindings.tls_unique is None
    assert bindings.tls_exporter is not None


SigningHash = hashes.SHA256 | hashes.SHA384 | hashes.SHA512


def _signed_pair(directory: Path, curve: ec.EllipticCurve, digest: SigningHash) -> Pair:
    key = ec.generate_private_key(curve)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, digest)
    )
    pair = Pair(directory / "c.pem", directory / "k.pem")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pair


@pytest.mark.parametrize(
    ("curve", "digest", "expected"),
    [
        (ec.SECP384R1(), hashes.SHA384(), hashlib.sha384),
        (ec.SECP521R1(), hashes.SHA512(), hashlib.sha512),
    ],
    ids=["sha384", "sha512"],
)
def test_server_end_point_uses_signature_hash(
    tmp_path: Path,
    curve: ec.EllipticCurve,
    digest: SigningHash,
    expected: Callable[[bytes], hashlib._Hash],
) -> None:
    pair = _signed_pair(tmp_path, curve, digest)
    client = pyopenssl_client()
    layer = TlsLayer(make_server_context(pair.cert, pair.key))
    pyopenssl_handshake(layer, client)
    assert layer.channel_bindings().tls_server_end_point == expected(pair.der).digest()


@pytest.mark.parametrize("digest", ["sha1", "md5"])
def test_server_end_point_weak_hash_becomes_sha256(tmp_path: Path, digest: str) -> None:
    """RFC 5929 4.1: MD5 and SHA-1 signatures hash with SHA-256 (cryptography won't sign these)."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    openssl = require_tool("openssl")
    made = subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", f"-{digest}", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost", "-days", "1"),
        ],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"openssl refuses to sign with {digest}")
    der = Pair(cert, key).der
    algorithm = x509.load_der_x509_certificate(der).signature_hash_algorithm
    assert algorithm is not None and algorithm.name == digest
    assert _server_end_point(der) == hashlib.sha256(der).digest()
    with contextlib.suppress(TlsConfigError):  # OpenSSL's security level may refuse it
        layer = TlsLayer(make_server_context(cert, key))
        pyopenssl_handshake(layer, pyopenssl_client())
        assert layer.channel_bindings().tls_server_end_point == hashlib.sha256(der).digest()


# ------------------------------------------------------------ context errors


def test_missing_files_name_the_file(tmp_path: Path, pair: Pair) -> None:
    with pytest.raises(TlsConfigError) as info:
        make_server_context(tmp_path / "nope.pem", pair.key)
    assert str(tmp_path / "nope.pem") in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(TlsConfigError) as info:
        make_server_context(pair.cert, tmp_path / "nokey.pem")
    assert str(tmp_path / "nokey.pem") in str(info.value)


def test_mismatched_key(tmp_path: Path, pair: Pair) -> None:
    other = _signed_pair(tmp_path, ec.SECP256R1(), hashes.SHA256())
    with pytest.raises(TlsConfigError) as info:
        make_server_context(pair.cert, other.key)
    assert "does not match" in str(info.value)
    assert str(other.key) in str(info.value)


def test_garbage_cert_and_encrypted_key(tmp_path: Path, pair: Pair) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(TlsConfigError) as info:
        make_server_context(bad, pair.key)
    assert str(bad) in str(info.value)
    key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TlsConfigError) as info:  # must fail, not prompt on a terminal
        make_server_context(pair.cert, encrypted)
    assert str(encrypted) in str(info.value)


# ------------------------------------------------------------ real sockets


@dataclass
class ServerResult:
    bindings: ChannelBindings | None = None
    version: str = ""
    error: BaseException | None = None
    received: int = 0
    digest: bytes = b""
    closed: bool = False
    extra: dict[str, object] = field(default_factory=dict)


App = Callable[[TlsLayer, bytes, ServerResult], None]


@pytest.fixture
def tls_server(server_ctx: SSL.Context) -> Iterator[Callable[[App], tuple[int, ServerResult]]]:
    """Serve one connection with TlsLayer in a thread; yields start(app) -> (port, result)."""
    threads: list[threading.Thread] = []
    listeners: list[socket.socket] = []

    def start(app: App) -> tuple[int, ServerResult]:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(30)
        listeners.append(listener)
        result = ServerResult()

        def run() -> None:
            try:
                conn, _ = listener.accept()
                with conn:
                    conn.settimeout(30)
                    _serve(conn, TlsLayer(server_ctx), app, result)
            except BaseException as exc:
                result.error = exc

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return listener.getsockname()[1], result

    yield start
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    for listener in listeners:
        listener.close()


def _serve(conn: socket.socket, layer: TlsLayer, app: App, result: ServerResult) -> None:
    while True:
        data = conn.recv(256 * 1024)
        if not data:
            break
        layer.receive_ciphertext(data)
        try:
            plain = layer.read_plaintext()
        finally:
            conn.sendall(layer.outgoing())
        if layer.handshake_done and result.bindings is None:
            result.bindings = layer.channel_bindings()
            result.version = layer.version
        if plain:
            app(layer, plain, result)
            conn.sendall(layer.outgoing())
        if layer.closed:
            result.closed = True
            layer.shutdown()
            conn.sendall(layer.outgoing())
            break


def _sink_then_source(layer: TlsLayer, plain: bytes, result: ServerResult) -> None:
    """Count and hash BIG bytes, then answer with the digest and BIG bytes of our own."""
    hasher = result.extra.setdefault("hash", hashlib.sha256())
    assert isinstance(hasher, type(hashlib.sha256()))
    hasher.update(plain)
    result.received += len(plain)
    if result.received == BIG:
        result.digest = hasher.digest()
        layer.write_plaintext(result.digest)
        layer.write_plaintext(payload(BIG, b"socket-down"))


def _recv_exactly(sock: ssl.SSLSocket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(min(1 << 20, size - len(buf)))
        if not chunk:
            raise AssertionError(f"EOF after {len(buf)} of {size} bytes")
        buf += chunk
    return bytes(buf)


@pytest.mark.parametrize(
    ("maximum", "name"),
    [(ssl.TLSVersion.TLSv1_3, "TLSv1.3"), (ssl.TLSVersion.TLSv1_2, "TLSv1.2")],
)
def test_socket_large_transfer_and_bindings(
    tls_server: Callable[[App], tuple[int, ServerResult]],
    pair: Pair,
    maximum: ssl.TLSVersion,
    name: str,
) -> None:
    port, result = tls_server(_sink_then_source)
    ctx = ssl.create_default_context(cafile=str(pair.cert))
    ctx.maximum_version = maximum
    upload = payload(BIG, b"socket-up")
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        assert sock.version() == name
        sock.sendall(upload)
        assert _recv_exactly(sock, 32) == hashlib.sha256(upload).digest()
        assert _recv_exactly(sock, BIG) == payload(BIG, b"socket-down")
        client_unique = sock.get_channel_binding("tls-unique")
        sock.unwrap()  # close_notify both ways
    assert result.error is None, result.error
    assert result.closed
    assert result.version == name
    assert result.bindings is not None
    assert result.bindings.tls_server_end_point == hashlib.sha256(pair.der).digest()
    if name == "TLSv1.2":
        assert result.bindings.tls_unique == client_unique
        assert result.bindings.tls_exporter is None
    else:
        assert result.bindings.tls_unique is None
        assert result.bindings.tls_exporter is not None


def _echo(layer: TlsLayer, plain: bytes, result: ServerResult) -> None:
    layer.write_plaintext(plain)


def test_socket_plaintext_client_gets_tls_error(
    tls_server: Callable[[App], tuple[int, ServerResult]],
) -> None:
    port, result = tls_server(_echo)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"EHLO x\r\n")
        sock.recv(1024)  # an alert or EOF
    for _ in range(300):
        if result.error is not None:
            break
        threading.Event().wait(0.01)
    assert isinstance(result.error, TlsError)


# ------------------------------------------------------------ GnuTLS (gsasl's TLS)


@pytest.mark.parametrize(
    ("priority", "name"),
    [("NORMAL", "TLSv1.3"), ("NORMAL:-VERS-ALL:+VERS-TLS1.2", "TLSv1.2")],
)
def test_gnutls_client_interop(
    tls_server: Callable[[App], tuple[int, ServerResult]],
    pair: Pair,
    priority: str,
    name: str,
) -> None:
    gnutls_cli = require_tool("gnutls-cli")
    port, result = tls_server(_echo)
    proc = subprocess.run(
        [
            gnutls_cli,
            "--x509cafile",
            str(pair.cert),
            "--priority",
            priority,
            "--keymatexport",
            LABEL.decode(),
            "--keymatexportsize",
            "32",
            "-p",
            str(port),
            "localhost",
        ],
        input=b"NOOP\r\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = proc.stdout.decode(errors="replace") + proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, output
    assert "NOOP" in proc.stdout.decode(errors="replace")  # echoed back through TLS
    assert result.error is None, result.error
    assert result.version == name
    assert result.bindings is not None
    if name == "TLSv1.3":
        exported = _gnutls_field(output, "Key material")
        assert result.bindings.tls_exporter is not None
        assert exported == result.bindings.tls_exporter.hex().upper()
    else:  # gnutls-cli prints no tls-unique; RFC 9266 defines no 1.2 exporter binding
        assert result.bindings.tls_unique is not None
        assert result.bindings.tls_exporter is None


def _gnutls_field(output: str, label: str) -> str:
    for line in output.splitlines():
        if line.strip().startswith(f"- {label}:"):
            return line.split(":", 1)[1].strip().upper()
    raise AssertionError(f"{label!r} not in gnutls-cli output:\n{output}")

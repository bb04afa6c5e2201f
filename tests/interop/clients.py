"""One wrapper per command-line client: build its argv/config for a ``Gate`` and run it.

Each wrapper calls ``require_tool`` (skip, or fail under CI=true) and returns the
client's ``ToolResult``; the tests decide what success means. Wherever the client
can, it verifies the server's self-signed certificate for real: the certificate
is its own trust anchor and is issued to ``config.hostname``.
"""

from __future__ import annotations

from tests.interop.conftest import (
    PASSWORD,
    Gate,
    ToolResult,
    message_bytes,
    require,
    require_tool,
    run_tool,
    sasl_lines,
)

TLS12 = "NORMAL:-VERS-ALL:+VERS-TLS1.2"  # GnuTLS priority strings (gsasl, msmtp)
TLS13 = "NORMAL:-VERS-ALL:+VERS-TLS1.3"


async def swaks(gate: Gate, port: int, *args: str, tls: bool = True) -> ToolResult:
    """swaks with our defaults; ``args`` adds --tls/--tlsc, --auth ..., --to ..."""
    path = require_tool("swaks")
    if tls:
        support = await run_tool([path, "--support"])
        require("TLS supported" in support.output,
                "swaks lacks TLS support (Debian package libnet-ssleay-perl)")
    return await run_tool([
        path, "--server", gate.host, "--port", str(port), "--helo", "client.test",
        "--from", "alice@example.org", "--timeout", "15", *args,
    ])


async def swaks_send(gate: Gate, rcpt: str, mechanism: str, *, user: str = "alice",
                     password: str = PASSWORD) -> ToolResult:
    """swaks: STARTTLS, AUTH ``mechanism``, one message to ``rcpt``."""
    return await swaks(gate, gate.starttls_port, "--tls", "--auth", mechanism,
                       "--auth-user", user, "--auth-password", password, "--to", rcpt)


async def gsasl(
    gate: Gate,
    mechanism: str,
    *,
    tls: bool = True,
    channel_binding: bool = True,
    priority: str | None = None,
    user: str = "alice",
    password: str = PASSWORD,
) -> ToolResult:
    """gsasl in SMTP mode: (STARTTLS,) EHLO, AUTH ``mechanism``, QUIT. Sends no mail."""
    argv = [
        require_tool("gsasl"), "--smtp", "--verbose", "--mechanism", mechanism,
        "--authentication-id", user, "--password", password,
    ]
    if tls:
        argv += [
            f"--connect={gate.host}:{gate.starttls_port}", "--starttls",
            f"--x509-ca-file={gate.config.tls.cert}", f"--hostname={gate.config.hostname}",
        ]
        if priority is not None:
            argv.append(f"--priority={priority}")
        if not channel_binding:
            argv.append("--no-cb")
    else:
        argv += [f"--connect={gate.host}:{gate.plain_port}", "--no-starttls"]
    return await run_tool(argv)


def scram_client_first(result: ToolResult) -> str:
    """The decoded SCRAM client-first message in a verbose transcript (gsasl, msmtp)."""
    for line in sasl_lines(result.output):
        if ",n=" in line and ",r=" in line:
            return line
    raise AssertionError(f"no SCRAM client-first message\n{result.describe()}")


async def msmtp(gate: Gate, rcpt: str, auth: str, *, implicit: bool = False,
                tls_priorities: str | None = None, user: str = "alice",
                password: str = PASSWORD) -> ToolResult:
    """msmtp --debug: TLS, AUTH ``auth`` (msmtp's lower-case name), one message to ``rcpt``."""
    path = require_tool("msmtp")
    lines = [
        "account default",
        f"host {gate.host}",
        f"port {gate.implicit_port if implicit else gate.starttls_port}",
        "from alice@example.org",
        f"auth {auth}",
        f"user {user}",
        f"password {password}",
        "tls on",
        f"tls_starttls {'off' if implicit else 'on'}",
        f"tls_trust_file {gate.config.tls.cert}",
        f"tls_host_override {gate.config.hostname}",
        "domain client.test",
        "timeout 15",
    ]
    if tls_priorities is not None:
        lines.append(f"tls_priorities {tls_priorities}")
    config = gate.workdir / f"msmtprc-{rcpt}"
    config.write_text("\n".join(lines) + "\n")
    config.chmod(0o600)  # msmtp refuses a password in a file others can read
    return await run_tool([path, "--file", str(config), "--debug", rcpt],
                          stdin=message_bytes(f"msmtp-{auth}", rcpt))


async def curl(gate: Gate, rcpt: str, mechanism: str, *extra: str, implicit: bool = False,
               user: str = "alice", password: str = PASSWORD) -> ToolResult:
    """curl: STARTTLS (or smtps://), AUTH ``mechanism``, one message to ``rcpt``."""
    path = require_tool("curl")
    port = gate.implicit_port if implicit else gate.starttls_port
    name = gate.config.hostname
    message = gate.message_file(f"curl-{mechanism}-{rcpt}", rcpt)
    return await run_tool([
        path, "--verbose", "--silent", "--show-error", "--max-time", "15",
        "--url", f"{'smtps' if implicit else 'smtp'}://{name}:{port}", "--ssl-reqd",
        "--cacert", str(gate.config.tls.cert), "--resolve", f"{name}:{port}:{gate.host}",
        "--login-options", f"AUTH={mechanism}", "--user", f"{user}:{password}",
        "--mail-from", "alice@example.org", "--mail-rcpt", rcpt,
        "--upload-file", str(message), *extra,
    ])

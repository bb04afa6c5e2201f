"""``smtpgate relay test [ACCOUNT]``: check a relay set-up end to end without sending mail.

One line per step, in order, stopping at the first failure, which says what
to fix and quotes the upstream's reply:

    connect  TCP to [relay] host:port (TLS handshake first when tls = "implicit")
    tls      STARTTLS and the certificate (skipped with tls = "none")
    token    an access token from token_url (only for xoauth2 / oauthbearer)
    auth     AUTH with the account (skipped with auth = "none")
    mail     MAIL FROM:<the account's address> accepted
    quit     RSET and QUIT

``ACCOUNT`` is an account's ``username`` (default: the first account).
The result is True only when every step passed.
"""

from __future__ import annotations

from collections.abc import Callable

from smtpgate.config.schema import Config, RelayAccount
from smtpgate.relay.oauth import TokenClient, TokenError
from smtpgate.relay.upstream import Upstream, UpstreamError

HINTS = {
    "connect": "check [relay] host, port and tls (587: starttls, 465: implicit) and the firewall",
    "tls": "check [relay] tls and ca_file; the upstream certificate must match [relay] host",
    "token": "check token_url, client_id, scope and the secret files; for refresh_token run "
             "`smtpgate oauth authorize ACCOUNT`",
    "auth": "check username and the credentials; Microsoft 365 needs SMTP AUTH enabled for the "
            "mailbox (Set-CASMailbox -SmtpClientAuthenticationDisabled $false)",
    "mail": "the account may not send as this address; check senders and send-as rights",
}


def find_account(config: Config, name: str | None) -> RelayAccount:
    accounts = config.relay.accounts
    if name is None:
        return accounts[0]
    for account in accounts:
        if account.username.lower() == name.lower():
            return account
    known = ", ".join(a.username for a in accounts if a.username) or "none with a username"
    raise ValueError(f"no [[relay.account]] with username {name!r} (known: {known})")


def sender_for(config: Config, account: RelayAccount) -> str:
    if "@" in account.username:
        return account.username
    exact = [s for s in account.senders if "*" not in s]
    return exact[0] if exact else f"postmaster@{config.hostname}"


async def run_checks(config: Config, account: RelayAccount, say: Callable[[str], None]) -> bool:
    relay = config.relay
    tokens = None
    if account.auth in ("xoauth2", "oauthbearer"):
        tokens = TokenClient(account, config.data_dir)
    step = "connect"
    try:
        upstream = Upstream(relay, account, config.hostname, tokens)
    except UpstreamError as exc:
        say(f"tls      FAILED: {exc}; fix: {HINTS['tls']}")
        return False
    try:
        greeting = await upstream.connect()
        say(f"connect  ok: {relay.host}:{relay.port} answered {greeting!r}")
        step = "tls"
        await upstream.secure()
        say(_tls_line(config))
        step = "token"
        if tokens is not None:
            await tokens.token()
            say(f"token    ok: access token from {account.token_url} ({account.oauth2_flow})")
        else:
            say("token    skipped: no OAuth2 for this account")
        step = "auth"
        await upstream.authenticate()
        say(f"auth     ok: AUTH {account.auth.upper()} as {account.username}"
            if account.auth != "none" else "auth     skipped: auth = \"none\"")
        step = "mail"
        sender = sender_for(config, account)
        result = await upstream.mail_from(sender)
        if result.code != 250:
            raise UpstreamError("mail", f"MAIL FROM:<{sender}> refused", str(result))
        say(f"mail     ok: MAIL FROM:<{sender}> accepted ({result})")
        await upstream.smtp.rset()
        await upstream.close()
        say("quit     ok: RSET, QUIT; no mail was sent")
        return True
    except (UpstreamError, TokenError) as exc:
        failed = exc.step if isinstance(exc, UpstreamError) else "token"
        say(f"{failed:<8} FAILED: {exc}; fix: {HINTS.get(failed, HINTS[step])}")
        upstream.smtp.close()
        return False


def _tls_line(config: Config) -> str:
    relay = config.relay
    if relay.tls == "none":
        return "tls      skipped: tls = \"none\" (mail and credentials in clear)"
    how = "STARTTLS" if relay.tls == "starttls" else "implicit TLS"
    check = "certificate verified" if relay.verify else "certificate NOT verified (verify = false)"
    return f"tls      ok: {how}, {check}"

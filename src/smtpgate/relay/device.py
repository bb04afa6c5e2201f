"""``smtpgate oauth authorize ACCOUNT``: the OAuth 2.0 device authorization grant (RFC 8628).

For headless machines: smtpgate asks the device authorization endpoint for
a user code, prints where to enter it, polls ``token_url`` until the user
has signed in (honouring ``authorization_pending`` and ``slow_down``), and
saves the refresh token to ``refresh_token_file`` (atomically, 0600).

The endpoint is ``device_url`` when set, else derived from ``token_url``:
Microsoft identity platform ``.../oauth2/v2.0/token`` ->
``.../oauth2/v2.0/devicecode``; Google ``https://oauth2.googleapis.com/token``
-> ``https://oauth2.googleapis.com/device/code``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from smtpgate.config.schema import RelayAccount
from smtpgate.relay.oauth import (
    TokenError,
    describe_error,
    post_form,
    read_secret_file,
    write_secret_file,
)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
GOOGLE_TOKEN = "https://oauth2.googleapis.com/token"
GOOGLE_DEVICE = "https://oauth2.googleapis.com/device/code"


def device_endpoint(account: RelayAccount) -> str:
    if account.device_url:
        return account.device_url
    if account.token_url == GOOGLE_TOKEN:
        return GOOGLE_DEVICE
    if account.token_url.endswith("/oauth2/v2.0/token"):
        return account.token_url[: -len("token")] + "devicecode"
    raise TokenError("cannot derive the device authorization endpoint; set device_url")


async def authorize(
    account: RelayAccount, say: Callable[[str], None], *, clock: Callable[[], float] = time.time
) -> Path:
    """Run the grant; the file the refresh token was written to."""
    if account.oauth2_flow != "refresh_token" or not account.refresh_token_file:
        raise TokenError("oauth authorize is for oauth2_flow = \"refresh_token\" accounts")
    form = {"client_id": account.client_id}
    if account.scope:
        form["scope"] = account.scope
    status, body = await post_form(device_endpoint(account), form)
    device_code = body.get("device_code")
    if status != 200 or not isinstance(device_code, str):
        raise TokenError(describe_error(status, body))
    say(str(body.get("message") or f"Open {body.get('verification_uri')} and enter the code "
                                     f"{body.get('user_code')}"))
    interval = float(body.get("interval", 5) or 0)
    deadline = clock() + float(body.get("expires_in", 900))
    poll = {"grant_type": DEVICE_GRANT, "device_code": device_code,
            "client_id": account.client_id}
    if account.client_secret_file:
        poll["client_secret"] = read_secret_file(account.client_secret_file, "client_secret_file")
    while clock() < deadline:
        await asyncio.sleep(interval)
        status, body = await post_form(account.token_url, poll)
        error = body.get("error")
        if status == 200 and isinstance(body.get("refresh_token"), str):
            target = Path(account.refresh_token_file)
            await asyncio.to_thread(write_secret_file, target, body["refresh_token"])
            return target
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            continue
        raise TokenError(describe_error(status, body))
    raise TokenError("the code expired before anyone signed in; run the command again")

"""OAuth2 access tokens for XOAUTH2 / OAUTHBEARER (RFC 6749 sections 4.4 and 6, RFC 7628).

Theory of operation
-------------------
``TokenClient.token()`` returns a valid access token for one account:

1. from memory, while it is not due for refresh;
2. else from the cache file ``<data_dir>/relay/tokens/<key>.json`` (0600),
   which another worker process may have refreshed;
3. else from the token endpoint: ``grant_type=refresh_token`` (the refresh
   token read from ``refresh_token_file``) or ``client_credentials`` (the
   secret read from ``client_secret_file``), with ``client_id`` and
   ``scope``. When the answer carries a new refresh token (Microsoft rotates
   them), it is written to ``refresh_token_file`` atomically (tmp file 0600,
   fsync, rename, directory fsync) before the access token is used.

A token is refreshed before it expires: at ``expires_in`` minus a tenth of
its life (at most ``MARGIN`` seconds). ``token(force=True)`` skips 1 and 2
(the upstream refused the token with 535). Refreshes are single-flight: an
``asyncio.Lock`` in the process and an ``flock`` on ``<key>.lock`` across
processes, so a rotating refresh token is never spent twice.

Every failure is a ``TokenError``, which the deliverer treats as temporary:
an endpoint that is down or a refresh token that was revoked keeps the mail
queued (and the log says why) until the operator fixes it or the queue
lifetime ends. Tokens and secrets never appear in messages or logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from smtpgate.config.schema import RelayAccount
from smtpgate.delivery.groupcommit import fsync_dir

MARGIN = 300.0  # seconds: refresh at most this long before expiry
HTTP_TIMEOUT = 20.0
TOKEN_DIR = "relay/tokens"


class TokenError(Exception):
    """No token now; always a temporary failure for the message."""


def read_secret_file(path: str, what: str) -> str:
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise TokenError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not lines or not lines[0].strip():
        raise TokenError(f"{what} {path} is empty (run `smtpgate oauth authorize`?)")
    return lines[0].strip()


def write_secret_file(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text`` and a newline, mode 0600."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def account_key(account: RelayAccount) -> str:
    ident = "\0".join((account.token_url, account.client_id, account.username, account.scope))
    return hashlib.sha256(ident.encode()).hexdigest()[:24]


async def post_form(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """POST a form to a token endpoint; (status, JSON object). Transport failures: TokenError."""
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            response = await client.post(url, data=form, headers={"Accept": "application/json"})
    except httpx.HTTPError as exc:
        raise TokenError(f"token endpoint unreachable: {exc.__class__.__name__}: {exc}") from None
    try:
        body = response.json()
    except ValueError:
        body = {}
    return response.status_code, body if isinstance(body, dict) else {}


def describe_error(status: int, body: dict[str, Any]) -> str:
    error = str(body.get("error", "")) or "no error code"
    detail = " ".join(str(body.get("error_description", "")).split())[:200]
    return f"token endpoint answered HTTP {status}: {error}" + (f": {detail}" if detail else "")


class TokenClient:
    """Access tokens for one account (see the module docstring)."""

    def __init__(
        self, account: RelayAccount, data_dir: Path, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.account = account
        key = account_key(account)
        self.cache = data_dir / TOKEN_DIR / f"{key}.json"
        self.lock_path = data_dir / TOKEN_DIR / f"{key}.lock"
        self.clock = clock
        self._token = ""
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self, *, force: bool = False) -> str:
        async with self._lock:
            if not force and self._token and self.clock() < self._refresh_at:
                return self._token
            seen = self._token
            fd = await asyncio.to_thread(self._lock_file)
            try:
                self._read_cache()
                fresh = self._token and self.clock() < self._refresh_at
                if fresh and not (force and self._token == seen):
                    return self._token
                await self._fetch()
                return self._token
            finally:
                os.close(fd)  # releases the flock

    def _lock_file(self) -> int:
        self.cache.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _read_cache(self) -> None:
        try:
            record = json.loads(self.cache.read_text(encoding="utf-8"))
            token, refresh_at = str(record["access_token"]), float(record["refresh_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return
        self._token, self._refresh_at = token, refresh_at

    async def _fetch(self) -> None:
        form = self._form()
        status, body = await post_form(self.account.token_url, form)
        token = body.get("access_token")
        if status != 200 or not isinstance(token, str) or not token:
            raise TokenError(describe_error(status, body))
        lifetime = _number(body.get("expires_in"), 3600.0)
        rotated = body.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != form.get("refresh_token"):
            await asyncio.to_thread(
                write_secret_file, Path(self.account.refresh_token_file), rotated
            )
        now = self.clock()
        self._token = token
        self._refresh_at = now + lifetime - min(MARGIN, lifetime / 10)
        record = {"access_token": token, "refresh_at": self._refresh_at, "fetched_at": now}
        await asyncio.to_thread(write_secret_file, self.cache, json.dumps(record))

    def _form(self) -> dict[str, str]:
        account = self.account
        form = {"client_id": account.client_id}
        if account.scope:
            form["scope"] = account.scope
        if account.client_secret_file:
            form["client_secret"] = read_secret_file(account.client_secret_file,
                                                     "client_secret_file")
        if account.oauth2_flow == "client_credentials":
            form["grant_type"] = "client_credentials"
        else:
            form["grant_type"] = "refresh_token"
            form["refresh_token"] = read_secret_file(account.refresh_token_file,
                                                     "refresh_token_file")
        return form


def _number(value: object, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return float(value)
    return default

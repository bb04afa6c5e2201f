"""The admin pages behind the login: overview, users, AUTH events, blocks, config.

Each GET renders one Jinja2 template; each POST changes one thing through the
same functions the CLI calls (``credentials/users.py``, the ``Throttle``),
logs who did it, and redirects back (303) with a one-line notice in the query
string, so a reload never repeats an action. ``app.guard`` has already
checked the session and the CSRF token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

from aiohttp import web

from smtpgate.admin.charts import chart
from smtpgate.admin.events import MAX_LISTED
from smtpgate.admin.http import CONTEXT, render, session_of
from smtpgate.auth.outcomes import Outcome
from smtpgate.config.schema import Config
from smtpgate.credentials.base import StoreUnavailable, UnknownUser, UserExists
from smtpgate.credentials.devices import DEVICE
from smtpgate.credentials.users import add_user, delete_user, list_users
from smtpgate.relay.queue import QUEUE_DIR, QueueStore

log = logging.getLogger("smtpgate.admin")
SECRET_WORDS = ("password", "secret", "token")  # config keys whose values are never shown
TOML_NAMES = {"import_": "import", "listeners": "listener"}  # Config fields -> TOML keys
DERIVED = frozenset({"host", "port"})  # ListenerConfig's parts of address: not TOML keys
GENERATED_PASSWORD_BYTES = 18  # 24 URL-safe characters
SHOWN: web.RequestKey[tuple[str, str]] = web.RequestKey("shown", tuple)  # (user, new password)


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/", overview)
    router.add_get("/users", users)
    router.add_post("/users/add", user_add)
    router.add_post("/users/delete", user_delete)
    router.add_get("/events", events)
    router.add_get("/blocks", blocks)
    router.add_post("/blocks/unblock", unblock)
    router.add_get("/config", config)


def back(path: str, notice: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"{path}?{urlencode({'notice': notice})}")


def notice(request: web.Request) -> str:
    return request.query.get("notice", "")[:200]


async def overview(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    hours = context.events.hours()
    charts = [
        chart("Messages accepted", hours, (("messages", "bar-msg"),)),
        chart("AUTH outcomes", hours, (("auth_ok", "bar-ok"), ("auth_failed", "bar-fail"))),
    ]
    store = queue_store(context.config)
    queued = None if store is None else len(await asyncio.to_thread(store.ids))
    return render(
        request, "overview.html", charts=charts, blocked_ips=context.throttle.blocked_ips(),
        blocked_logins=context.throttle.blocked_logins(), notice=notice(request), queued=queued,
    )


def queue_store(config: Config) -> QueueStore | None:
    """The relay queue, or None when this server does not relay."""
    if config.delivery.mode != "relay":
        return None
    return QueueStore(config.data_dir / QUEUE_DIR)


async def users(request: web.Request) -> web.Response:
    store = request.app[CONTEXT].store
    try:
        accounts, error = [a for a in await list_users(store) if a.kind != DEVICE], ""
    except StoreUnavailable:
        accounts, error = [], "The credential store is unavailable."
    return render(
        request, "users.html", accounts=accounts, error=error, notice=notice(request),
        shown=request.get(SHOWN),
    )


async def user_add(request: web.Request) -> web.Response:
    """Add a user; with no password given, one is made and shown once on this answer."""
    context = request.app[CONTEXT]
    form = await request.post()
    name, password = str(form.get("name", "")).strip(), str(form.get("password", ""))
    generated = not password
    if generated:
        password = secrets.token_urlsafe(GENERATED_PASSWORD_BYTES)
    try:
        account = await add_user(
            context.store, name, password, allow_mechanisms=None, may_act_as=[],
            cram_md5="CRAM-MD5" in context.config.auth.mechanisms,
        )
    except UserExists:
        raise back("/users", f"User {name} already exists; nothing changed.") from None
    except (ValueError, StoreUnavailable) as exc:
        raise back("/users", f"Not added: {exc}") from None
    admin = session_of(request).admin
    log.info("admin=%s added user %s", admin, account.name)
    if not generated:
        raise back("/users", f"Added user {account.name}.")
    # Shown on this one answer (no redirect), never stored in clear or logged.
    request[SHOWN] = (account.name, password)
    return await users(request)


async def user_delete(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    name = str((await request.post()).get("name", ""))
    try:
        await delete_user(context.store, name)
    except (UnknownUser, ValueError):
        raise back("/users", f"No user {name}.") from None
    except StoreUnavailable as exc:
        raise back("/users", f"Not deleted: {exc}") from None
    log.info("admin=%s deleted user %s", session_of(request).admin, name)
    raise back("/users", f"Deleted user {name}.")


async def events(request: web.Request) -> web.Response:
    q = request.query
    filters = {key: q.get(key, "")[:200].strip() for key in ("ip", "login", "outcome")}
    rows = request.app[CONTEXT].events.recent(
        ip=filters["ip"], login=filters["login"], outcome=filters["outcome"]
    )
    outcomes = ["failed", *[o.value for o in Outcome]]
    return render(
        request, "events.html", rows=rows, filters=filters, outcomes=outcomes, limit=MAX_LISTED,
    )


async def blocks(request: web.Request) -> web.Response:
    throttle = request.app[CONTEXT].throttle
    return render(
        request, "blocks.html", blocked_ips=throttle.blocked_ips(),
        blocked_logins=throttle.blocked_logins(), limits=throttle.limits, notice=notice(request),
    )


async def unblock(request: web.Request) -> web.Response:
    throttle = request.app[CONTEXT].throttle
    form = await request.post()
    kind, key = str(form.get("kind", "")), str(form.get("key", ""))
    if kind not in ("ip", "login") or not key:
        raise back("/blocks", "Nothing to unblock.")
    if kind == "ip":
        throttle.unblock_ip(key)
    else:
        throttle.unblock_login(key)
    log.info("admin=%s unblocked %s %s", session_of(request).admin, kind, key)
    raise back("/blocks", f"Unblocked {key}.")


async def config(request: web.Request) -> web.Response:
    rows = effective_config(request.app[CONTEXT].config)
    return render(request, "config.html", rows=rows)


def effective_config(config: Config) -> list[tuple[str, str]]:
    """Every key and its value as TOML would say it; secrets shown as ``(hidden)``."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, value: object) -> None:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for f in dataclasses.fields(value):
                if f.name in DERIVED:
                    continue
                name = TOML_NAMES.get(f.name, f.name)
                walk(f"{prefix}.{name}" if prefix else name, getattr(value, f.name))
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            for number, item in enumerate(value, start=1):
                walk(f"{prefix}[{number}]", item)
        else:
            rows.append((prefix, shown(prefix, value)))

    walk("", config)
    return rows


def shown(key: str, value: object) -> str:
    if any(word in key.rsplit(".", 1)[-1] for word in SECRET_WORDS):
        return "(hidden)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, str):
        return json.dumps(hide_url_password(value), ensure_ascii=False)
    if isinstance(value, tuple):
        return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in value) + "]"
    return str(value)


def hide_url_password(text: str) -> str:
    """``scheme://user:secret@host/...`` -> ``scheme://user:(hidden)@host/...``."""
    if "://" not in text:
        return text
    parts = urlsplit(text)
    if parts.password is None:
        return text
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:(hidden)@{host}"))

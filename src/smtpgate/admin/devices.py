"""The devices page: device accounts (docs/device-accounts.md) through the same
functions as ``smtpgate device ...`` (``credentials/device_admin.py``).

Devices never choose a password: adding or rotating one generates it and this
answer alone shows it (no redirect, so a reload cannot show it again; it is
neither stored in clear nor logged). Other actions redirect back with a notice.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web

from smtpgate.admin.http import CONTEXT, render, session_of
from smtpgate.admin.pages import back, notice
from smtpgate.credentials.base import StoreUnavailable, UnknownUser, UserExists
from smtpgate.credentials.device_admin import (
    DeviceSpec,
    add_device,
    list_devices,
    revoke_device,
    rotate_device,
    set_disabled,
    update_device,
)

log = logging.getLogger("smtpgate.admin")
SHOWN: web.RequestKey[tuple[str, str]] = web.RequestKey("device_shown", tuple)  # name, password
_SPLIT = re.compile(r"[\s,]+")


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/devices", devices)
    router.add_post("/devices/add", device_add)
    router.add_post("/devices/rotate", device_rotate)
    router.add_post("/devices/disable", device_disable)
    router.add_post("/devices/enable", device_enable)
    router.add_post("/devices/revoke", device_revoke)
    router.add_post("/devices/edit", device_edit)


async def devices(request: web.Request) -> web.Response:
    store = request.app[CONTEXT].store
    try:
        found, error = await list_devices(store), ""
    except StoreUnavailable:
        found, error = [], "The credential store is unavailable."
    return render(
        request, "devices.html", devices=found, error=error, notice=notice(request),
        shown=request.get(SHOWN),
    )


async def device_add(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    form = await request.post()
    name = str(form.get("name", "")).strip()
    quota = str(form.get("max_per_day", "")).strip()
    try:
        spec = DeviceSpec(
            senders=_items(form.get("senders")),
            networks=_items(form.get("networks")),
            max_per_day=int(quota) if quota else None,
            expires=str(form.get("expires", "")).strip() or None,
        )
        account, password = await add_device(
            context.store, name, spec, cram_md5=_cram_md5(request)
        )
    except UserExists:
        raise back("/devices", f"{name} already exists; nothing changed.") from None
    except (ValueError, StoreUnavailable) as exc:
        raise back("/devices", f"Not added: {exc}") from None
    log.info("admin=%s added device %s", session_of(request).admin, account.name)
    request[SHOWN] = (account.name, password)
    return await devices(request)


async def device_rotate(request: web.Request) -> web.Response:
    name = await _name(request)
    try:
        password = await rotate_device(
            request.app[CONTEXT].store, name, cram_md5=_cram_md5(request)
        )
    except (UnknownUser, ValueError, StoreUnavailable) as exc:
        raise back("/devices", f"Not rotated: {_reason(exc)}") from None
    log.info("admin=%s rotated the password of device %s", session_of(request).admin, name)
    request[SHOWN] = (name, password)
    return await devices(request)


async def device_disable(request: web.Request) -> web.Response:
    return await _switch(request, disabled=True)


async def device_enable(request: web.Request) -> web.Response:
    return await _switch(request, disabled=False)


async def device_revoke(request: web.Request) -> web.Response:
    name = await _name(request)
    try:
        await revoke_device(request.app[CONTEXT].store, name)
    except (UnknownUser, ValueError, StoreUnavailable) as exc:
        raise back("/devices", f"Not revoked: {_reason(exc)}") from None
    log.info("admin=%s revoked device %s", session_of(request).admin, name)
    raise back("/devices", f"Revoked {name}.")


async def device_edit(request: web.Request) -> web.Response:
    """Replace senders, networks and quota in one write (an empty quota: no limit)."""
    form = await request.post()
    name = str(form.get("name", ""))
    quota = str(form.get("max_per_day", "")).strip()
    try:
        await update_device(
            request.app[CONTEXT].store, name, _items(form.get("senders")),
            _items(form.get("networks")), int(quota) if quota else None,
        )
    except (UnknownUser, ValueError, StoreUnavailable) as exc:
        raise back("/devices", f"Not changed: {_reason(exc)}") from None
    log.info("admin=%s edited device %s", session_of(request).admin, name)
    raise back("/devices", f"Saved {name}.")


async def _switch(request: web.Request, *, disabled: bool) -> web.Response:
    name = await _name(request)
    word = "disabled" if disabled else "enabled"
    try:
        await set_disabled(request.app[CONTEXT].store, name, disabled)
    except (UnknownUser, ValueError, StoreUnavailable) as exc:
        raise back("/devices", f"Not {word}: {_reason(exc)}") from None
    log.info("admin=%s %s device %s", session_of(request).admin, word, name)
    raise back("/devices", f"{name} {word}.")


async def _name(request: web.Request) -> str:
    return str((await request.post()).get("name", ""))


def _items(value: object) -> list[str]:
    """Senders or networks as typed: separated by commas, spaces or new lines."""
    return [item for item in _SPLIT.split(str(value or "")) if item][:100]


def _cram_md5(request: web.Request) -> bool:
    return "CRAM-MD5" in request.app[CONTEXT].config.auth.mechanisms


def _reason(exc: Exception) -> str:
    return f"no device {exc}" if isinstance(exc, UnknownUser) else str(exc)

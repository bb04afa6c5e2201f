"""The admin HTTP application: health endpoints, login, and the guard on every page.

Theory of operation
-------------------
One aiohttp ``Application`` (``make_app``) on the server's own event loop.
``/healthz``, ``/readyz`` and ``/metrics`` answer anyone (load balancers and
Prometheus carry no cookie); ``/login`` and ``/static/`` (the stylesheet and
script, which hold no data) too. For every other path the ``guard``
middleware wants a live session: without one a GET is sent to ``/login``
(303) and anything else is refused (401). Every POST must also carry the
session's CSRF token. So an unknown path is a 404 only after login, and a
route added later is guarded without anyone remembering to.

A session counts only while its admin exists: ``smtpgate admin del`` (another
process) ends it at the next request.

Logins: the form's own CSRF token sits in a short cookie (there is no session
yet). A failed login counts in the server's ``Throttle`` exactly like a failed
SMTP AUTH from that address (the same ``ip`` window, ``[auth]
ip_failure_limit``), is answered after ``failure_delay``, and once the address
is blocked no password is even checked (429). Admin names are not counted
per login: they are not SMTP logins. Every answer carries a strict
Content-Security-Policy and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from smtpgate.admin import devices, pages, queue
from smtpgate.admin.accounts import check_login
from smtpgate.admin.context import AdminContext
from smtpgate.admin.http import (
    CONTEXT,
    SESSION,
    SESSIONS,
    TEMPLATES,
    render,
    session_of,
    set_cookie,
    templates,
)
from smtpgate.admin.sessions import (
    COOKIE,
    LOGIN_COOKIE,
    Session,
    Sessions,
    new_token,
    same_token,
)
from smtpgate.credentials.base import StoreUnavailable

log = logging.getLogger("smtpgate.admin")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/login"})
STATIC = Path(__file__).parent / "static"
MAX_BODY = 64 * 1024  # bytes of one request body: forms are small
TOKEN_LENGTH = len(new_token())
READY_TIMEOUT = 5.0  # seconds /readyz waits for the store and the shared state
CSP = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def make_app(context: AdminContext, sessions: Sessions | None = None) -> web.Application:
    app = web.Application(middlewares=[headers, guard], client_max_size=MAX_BODY)
    app[CONTEXT] = context
    app[SESSIONS] = sessions if sessions is not None else Sessions()
    app[TEMPLATES] = templates()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_static("/static/", STATIC)
    pages.add_routes(app.router)
    devices.add_routes(app.router)
    queue.add_routes(app.router)
    return app


# -- middleware ------------------------------------------------------------------


@web.middleware
async def headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    if isinstance(response, web.HTTPException) and response.status >= 300:
        raise response
    return response


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A live session for every path but the open ones; its CSRF token on every POST."""
    if request.path in OPEN_PATHS or request.path.startswith("/static/"):
        return await handler(request)
    session = await live_session(request)
    if session is None:
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther("/login")
        raise web.HTTPUnauthorized(text="log in first\n")
    if request.method not in ("GET", "HEAD"):
        form = await request.post()
        if not same_token(str(form.get("csrf", "")), session.csrf):
            raise web.HTTPForbidden(text="stale or missing form token: reload the page\n")
    request[SESSION] = session
    return await handler(request)


async def live_session(request: web.Request) -> Session | None:
    """The request's session, if its admin still exists (``admin del`` ends it at once)."""
    sessions = request.app[SESSIONS]
    token = request.cookies.get(COOKIE)
    session = sessions.find(token)
    if session is None:
        return None
    try:
        exists = await request.app[CONTEXT].admins.admin_hash(session.admin) is not None
    except StoreUnavailable:
        raise web.HTTPServiceUnavailable(text="the account store is unavailable\n") from None
    if not exists:
        sessions.close(token)
        return None
    return session


# -- open endpoints ----------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """200 when the credential store answers (and the shared state, if any)."""
    context = request.app[CONTEXT]
    problem = ""
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await context.store.get("")  # one indexed read: the file opens and answers
            if context.ready is not None and not await context.ready():
                problem = "shared state unavailable"
    except (StoreUnavailable, TimeoutError) as exc:
        problem = "credential store unavailable" if isinstance(exc, StoreUnavailable) else "timeout"
    if problem:
        return web.Response(text=f"not ready: {problem}\n", status=503)
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    render_metrics = request.app[CONTEXT].metrics
    if render_metrics is None:
        return web.Response(text="metrics unavailable\n", status=503)
    body, content_type = render_metrics()
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


# -- login and logout ----------------------------------------------------------------


async def login_form(
    request: web.Request, *, error: str = "", status: int = 200, name: str = ""
) -> web.Response:
    # Keep the browser's token: a second tab, or the favicon's detour through this
    # page, must not invalidate a form already shown.
    token = request.cookies.get(LOGIN_COOKIE, "")
    if len(token) != TOKEN_LENGTH:
        token = new_token()
    response = render(request, "login.html", status=status, csrf=token, error=error, name=name)
    set_cookie(request, response, LOGIN_COOKIE, token, max_age=3600)
    return response


async def login(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    form = await request.post()
    if not same_token(str(form.get("csrf", "")), request.cookies.get(LOGIN_COOKIE, "")):
        return await login_form(request, error="The form expired; please try again.", status=403)
    ip = request.remote or ""
    throttle = context.throttle
    if throttle.ip_blocked(ip):
        log.warning("admin login refused: too many failures ip=%s", ip)
        return await login_form(
            request, error="Too many failed logins from your address; try again later.", status=429
        )
    name, password = str(form.get("name", "")), str(form.get("password", ""))
    try:
        admin = await check_login(context.admins, name, password)
    except StoreUnavailable:
        return await login_form(request, error="The account store is unavailable.", status=503)
    if admin is None:
        throttle.record_failure(ip, None)
        log.warning("admin login failed ip=%s", ip)
        await asyncio.sleep(context.config.auth.failure_delay)
        return await login_form(
            request, error="Wrong name or password.", status=401, name=name[:200]
        )
    token, _ = request.app[SESSIONS].open(admin)
    log.info("admin login ok admin=%s ip=%s", admin, ip)
    response = web.HTTPSeeOther("/")
    set_cookie(request, response, COOKIE, token)
    response.del_cookie(LOGIN_COOKIE, path="/")
    raise response


async def logout(request: web.Request) -> web.Response:
    request.app[SESSIONS].close(request.cookies.get(COOKIE))
    log.info("admin logout admin=%s", session_of(request).admin)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response

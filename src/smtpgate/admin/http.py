"""What the app and the pages share: the application's keys and rendering."""

from __future__ import annotations

import time

import jinja2
from aiohttp import web

from smtpgate.admin.context import AdminContext
from smtpgate.admin.sessions import Session, Sessions

CONTEXT: web.AppKey[AdminContext] = web.AppKey("context", AdminContext)
SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions", Sessions)
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)
SESSION: web.RequestKey[Session] = web.RequestKey("session", Session)


def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("smtpgate.admin", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["utc"] = utc
    return env


def utc(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(at))


def session_of(request: web.Request) -> Session:
    """The logged-in session (set by ``app.guard`` on every guarded path)."""
    return request[SESSION]


def render(
    request: web.Request, template: str, status: int = 200, **values: object
) -> web.Response:
    text = request.app[TEMPLATES].get_template(template).render(
        session=request.get(SESSION), path=request.path, **values
    )
    return web.Response(text=text, status=status, content_type="text/html")


def set_cookie(
    request: web.Request, response: web.StreamResponse, name: str, value: str,
    max_age: int | None = None,
) -> None:
    response.set_cookie(
        name, value, path="/", httponly=True, samesite="Strict", secure=request.secure,
        max_age=max_age,
    )

"""Nothing behind the login is reachable without it; forms need their CSRF token;
the session cookie is HttpOnly and SameSite=Strict (RFC 6265bis)."""

from __future__ import annotations

import aiohttp

from smtpgate.admin.app import OPEN_PATHS, make_app
from smtpgate.credentials.sqlite import SqliteStore
from tests.admin.conftest import Admin, csrf_of, log_in


def guarded_routes(admin: Admin) -> list[tuple[str, str]]:
    """Every (method, path) the application registers, but the open ones."""
    assert admin.server.admin is not None
    app = make_app(admin.server.admin.context)
    found = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path in OPEN_PATHS or path.startswith("/static"):
            continue
        found.append((route.method, path))
    return found


async def test_every_route_wants_a_login(admin: Admin) -> None:
    routes = guarded_routes(admin)
    assert {("GET", "/"), ("GET", "/users"), ("POST", "/users/add"), ("GET", "/events"),
            ("GET", "/blocks"), ("POST", "/blocks/unblock"), ("GET", "/config"),
            ("POST", "/logout"), ("GET", "/queue"), ("GET", "/queue/show"),
            ("POST", "/queue/retry"), ("POST", "/queue/delete"),
            ("POST", "/devices/edit")} <= set(routes)
    async with admin.client() as client:
        for method, path in [*routes, ("GET", "/no-such-page"), ("POST", "/no-such-page")]:
            async with client.request(method, path, allow_redirects=False) as response:
                body = await response.text()
            if method in ("GET", "HEAD"):
                assert response.status == 303, (method, path)
                assert response.headers["Location"] == "/login"
            else:
                assert response.status == 401, (method, path)
            assert "root" not in body and "alice" not in body


async def test_open_endpoints_need_no_login(admin: Admin) -> None:
    async with admin.client() as client:
        for path in ("/healthz", "/readyz", "/metrics", "/login", "/static/admin.css"):
            async with client.get(path, allow_redirects=False) as response:
                assert response.status == 200, path


async def test_login_sets_a_strict_http_only_cookie(admin: Admin) -> None:
    async with admin.client() as client:
        response = await log_in(client)
        assert response.status == 303 and response.headers["Location"] == "/"
        cookie = response.cookies["smtpgate_admin"]
        assert cookie["httponly"] is True
        assert cookie["samesite"] == "Strict"
        assert not cookie["secure"]  # plain HTTP here; Secure when the request came over TLS
        async with client.get("/users") as page:
            assert page.status == 200
            assert "alice" in await page.text()


async def test_a_form_without_its_token_is_refused(admin: Admin) -> None:
    async with admin.client() as client:
        await log_in(client)
        for token in ("", "forged"):
            data = {"name": "mallory", "password": "x" * 12, "csrf": token}
            async with client.post("/users/add", data=data) as response:
                assert response.status == 403
        async with client.get("/users") as page:
            assert "mallory" not in await page.text()


async def test_the_login_form_wants_its_own_token(admin: Admin) -> None:
    async with admin.client() as client:
        await csrf_of(client, "/login")
        data = {"csrf": "forged", "name": "root", "password": "admin pass phrase"}
        async with client.post("/login", data=data, allow_redirects=False) as response:
            assert response.status == 403
            assert "smtpgate_admin" not in response.cookies


async def test_logout_ends_the_session(admin: Admin) -> None:
    async with admin.client() as client:
        stolen = (await log_in(client)).cookies["smtpgate_admin"]
        token = await csrf_of(client, "/")
        async with client.post("/logout", data={"csrf": token}, allow_redirects=False) as out:
            assert out.status == 303 and out.headers["Location"] == "/login"
    # The old cookie, replayed, is worth nothing.
    cookies = {"smtpgate_admin": stolen.value}
    async with (
        aiohttp.ClientSession(admin.url, cookies=cookies) as again,
        again.get("/users", allow_redirects=False) as response,
    ):
        assert response.status == 303


async def test_wrong_passwords_and_unknown_admins_get_the_same_answer(admin: Admin) -> None:
    async with admin.client() as client:
        wrong = await log_in(client, password="not it")
        unknown = await log_in(client, name="nobody")
        assert wrong.status == unknown.status == 401


async def test_deleting_an_admin_ends_its_sessions(admin: Admin) -> None:
    store = admin.server.store
    assert isinstance(store, SqliteStore)
    async with admin.client() as client:
        await log_in(client)
        async with client.get("/blocks", allow_redirects=False) as page:
            assert page.status == 200
        await store.delete_admin("root")  # as `smtpgate admin del root` does
        async with client.get("/blocks", allow_redirects=False) as page:
            assert page.status == 303 and page.headers["Location"] == "/login"

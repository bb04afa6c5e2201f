"""The admin page in a real browser: Debian's chromium driven by Playwright, against
``smtpgate serve`` with two workers, real SMTP clients (smtplib) on the side.

One walk, in order: log in, see failed SMTP logins appear among the AUTH events,
find their address blocked and unblock it, add a user and a device and read their
passwords off the screen (then log in with them), edit the device, retry a queued
message, read the configuration, log out. The server relays to a smarthost port
nobody listens on (retry an hour away), so a message sent stays queued until the
page's "Retry" makes the deliverer try it again at once. Each page is
saved as a PNG under tests/admin/screenshots/ (git-ignored; the path is printed).
The server runs as its own process: only one of its workers serves the admin
listener, while failures and events from either worker show up on its pages.
"""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.admin.conftest import ADMIN, ADMIN_PASSWORD, admin_sections
from tests.e2e.cluster import SMTPGATE, START_TIMEOUT, _accepts, to_toml
from tests.e2e.conftest import PASSWORD, config_data, free_port
from tests.tools import require_tool

SHOTS = Path(__file__).parent / "screenshots"
ATTACKER = "127.0.0.2"  # the failing SMTP client's source address (all of 127/8 is loopback)


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One headless chromium process for the test session; its DevTools endpoint.

    Each test drives it through its own Playwright connection (``connect_over_cdp``),
    opened and closed inside the test: Playwright's sync API runs an event loop while
    connected, which must not outlive the test (the asyncio tests need theirs).
    """
    path = require_tool("chromium")
    profile = tmp_path_factory.mktemp("chromium-profile")
    # Chromium's sandbox needs an unprivileged user namespace; as root it refuses to run.
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []
    proc = subprocess.Popen(
        [path, "--headless=new", *sandbox, "--remote-debugging-address=127.0.0.1",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", "--no-first-run",
         "--disable-gpu", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        yield devtools_endpoint(proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def devtools_endpoint(proc: subprocess.Popen[str]) -> str:
    """The ws:// address chromium prints on stderr once it listens (at most 200 lines)."""
    assert proc.stderr is not None
    for _ in range(200):
        line = proc.stderr.readline()
        if not line:
            break
        if line.startswith("DevTools listening on "):
            return line.split(" on ", 1)[1].strip()
    raise AssertionError(f"chromium did not start (exit status {proc.poll()})")


@contextlib.contextmanager
def browser(endpoint: str) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        connected = playwright.chromium.connect_over_cdp(endpoint, timeout=30_000)
        try:
            yield connected
        finally:
            connected.close()


class Served:
    """``smtpgate serve`` (workers = 2) with [admin] address, an admin and user alice,
    relaying to a smarthost that is down."""

    def __init__(self, root: Path) -> None:
        relay = {"host": "127.0.0.1", "port": free_port(), "tls": "none", "retry": "1h"}
        data = config_data(root, **admin_sections(auth={"ip_failure_limit": 3}),
                           delivery={"mode": "relay"}, relay=relay, server={"workers": 2})
        self.config_file = root / "smtpgate.toml"
        self.config_file.write_text(to_toml(data))
        self.admin_url = "http://" + data["admin"]["address"]
        self.smtp_port = int(data["listener"][2]["address"].rpartition(":")[2])
        self.log = root / "serve.err"
        self.cli("admin", "add", ADMIN, "--password-stdin", stdin=ADMIN_PASSWORD)
        self.cli("user", "add", "alice", "--password-stdin", stdin=PASSWORD)
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen([*SMTPGATE, "--config", str(self.config_file), "serve"],
                                         stderr=err)
        admin_host, _, admin_port = data["admin"]["address"].rpartition(":")
        deadline = time.monotonic() + START_TIMEOUT
        for address in [("127.0.0.1", self.smtp_port), (admin_host, int(admin_port))]:
            while not _accepts(address):
                assert self.proc.poll() is None, self.log.read_text()
                assert time.monotonic() < deadline, "smtpgate serve did not start listening"
                time.sleep(0.05)

    def cli(self, *args: str, stdin: str) -> None:
        subprocess.run([*SMTPGATE, "--config", str(self.config_file), *args], check=True,
                       input=stdin + "\n", text=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        assert self.proc.returncode == 0, self.log.read_text()

    def smtp_auth(self, user: str, password: str, source: str = "127.0.0.1") -> int:
        """One AUTH PLAIN (RFC 4616) from ``source``; the reply code."""
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30,
                          source_address=(source, 0)) as smtp:
            smtp.ehlo("browser-test")
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            code, _ = smtp.docmd("AUTH", "PLAIN " + token)
            return code

    def send(self, user: str, password: str) -> None:
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as smtp:
            smtp.login(user, password)
            smtp.sendmail(f"{user}@example.test", ["bob@example.test"],
                          b"Subject: from the browser test\r\n\r\nhello\r\n")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    running = Served(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def test_admin_walk(chromium: str, served: Served) -> None:
    with browser(chromium) as connected:
        context = connected.new_context(viewport={"width": 1200, "height": 800})
        try:
            walk(context.new_page(), served)
        finally:
            context.close()
    assert served.log.read_text().count("admin listening on") == 1  # one worker serves it


def walk(page: Page, served: Served) -> None:
    page.on("dialog", lambda dialog: dialog.accept())  # the Unblock confirmation
    base = served.admin_url

    # Not logged in: every page leads to the login form.
    page.goto(base + "/users")
    expect(page).to_have_url(base + "/login")
    page.fill("#name", ADMIN)
    page.fill("#password", "not the password")
    page.click("#login")
    expect(page.locator(".error")).to_have_text("Wrong name or password.")
    expect(page.locator("#name")).to_have_value(ADMIN)  # kept; the password is not
    expect(page.locator("#password")).to_have_value("")
    shot(page, "01-login-failed")
    page.fill("#password", ADMIN_PASSWORD)
    page.click("#login")
    expect(page).to_have_url(base + "/")
    expect(page.locator("h1")).to_have_text("Overview")

    # A device guesses from another address and gets blocked; a real one sends.
    assert [served.smtp_auth("alice", f"guess {n}", ATTACKER) for n in range(3)] == [535] * 3
    assert served.smtp_auth("alice", PASSWORD, ATTACKER) == 454  # blocked
    served.send("alice", PASSWORD)

    page.goto(base + "/events")
    page.select_option("#filter-outcome", "failed")
    page.fill("#filter-ip", ATTACKER)
    page.click("#filter")
    rows = page.locator("table.events tbody tr")
    expect(rows).to_have_count(4)  # three wrong passwords, then the refusal
    expect(rows.first.locator(".outcome")).to_have_text("blocked")
    expect(rows.nth(1).locator(".outcome")).to_have_text("invalid")
    shot(page, "03-events")

    page.goto(base + "/")
    expect(page.locator("table.ip-blocks")).to_contain_text(ATTACKER)
    expect(page.locator("figure.chart").first).to_contain_text("1 in 24 h")
    shot(page, "02-overview")

    page.goto(base + "/blocks")
    row = page.locator("table.ip-blocks tr", has_text=ATTACKER)
    expect(row).to_contain_text("3")
    shot(page, "04-blocks")
    row.get_by_role("button", name="Unblock").click()
    expect(page.locator(".notice")).to_have_text(f"Unblocked {ATTACKER}.")
    expect(page.locator("table.ip-blocks")).to_have_count(0)
    assert served.smtp_auth("alice", PASSWORD, ATTACKER) == 235

    page.goto(base + "/users")
    page.fill("#new-name", "copier-3f")
    page.click("#add-user")
    expect(page.locator("#new-user")).to_have_text("copier-3f")
    password = page.locator("#new-password").inner_text()
    assert len(password) == 24
    shot(page, "05-users")
    assert served.smtp_auth("copier-3f", password) == 235
    page.reload()  # shown once: a reload shows the list, not the password
    expect(page.locator("#new-password")).to_have_count(0)
    expect(page.locator("table.users")).to_contain_text("copier-3f")

    page.goto(base + "/devices")
    page.fill("#device-new-name", "copier-4")
    page.fill("#device-senders", "scan@example.test")
    page.fill("#device-quota", "200")
    page.click("#add-device")
    expect(page.locator("#device-name")).to_have_text("copier-4")
    device_password = page.locator("#device-password").inner_text()
    shot(page, "06-devices")
    assert served.smtp_auth("copier-4", device_password) == 235
    expect(page.locator("table.devices")).to_contain_text("scan@example.test")

    row = page.locator("table.devices tr", has_text="copier-4")
    row.locator("details.edit summary").click()
    row.locator("input[name=senders]").fill("scan@example.test, fax@example.test")
    row.locator("input[name=networks]").fill("127.0.0.0/8")
    row.get_by_role("button", name="Save").click()
    expect(page.locator(".notice")).to_have_text("Saved copier-4.")
    row = page.locator("table.devices tr", has_text="copier-4")
    expect(row).to_contain_text("fax@example.test")
    expect(row).to_contain_text("127.0.0.0/8")
    row.locator("details.edit summary").click()
    shot(page, "08-device-edit")
    assert served.smtp_auth("copier-4", device_password) == 235  # same password

    retry_queued(page, base)

    page.goto(base + "/config")
    expect(page.locator("table.config")).to_contain_text("admin.address")
    expect(page.locator("table.config")).to_contain_text("ip_failure_limit")
    shot(page, "07-config")

    page.click("#logout")
    expect(page).to_have_url(base + "/login")
    page.goto(base + "/")
    expect(page).to_have_url(base + "/login")


def retry_queued(page: Page, base: str) -> None:
    """The message alice sent waits (the smarthost is down); "Retry" has it tried again."""
    page.goto(base + "/queue")
    row = page.locator("table.queue tbody tr", has_text="alice@example.test")
    for _ in range(100):  # the first attempt comes moments after acceptance
        if row.locator(".attempts").inner_text() == "1":
            break
        time.sleep(0.1)
        page.reload()
    expect(row.locator(".attempts")).to_have_text("1")
    expect(row.locator(".state")).to_have_text("deferred")
    expect(page.locator("#queue-total")).to_have_text("1 message(s) queued")
    row.locator("a").click()
    expect(page.locator("#headers")).to_contain_text("Subject: from the browser test")
    shot(page, "09-queue-message")
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".notice")).to_contain_text("will be tried now.")
    for _ in range(100):  # the deliverers rescan within a second of the kick
        if row.locator(".attempts").inner_text() == "2":
            break
        time.sleep(0.1)
        page.reload()
    expect(row.locator(".attempts")).to_have_text("2")
    shot(page, "10-queue")

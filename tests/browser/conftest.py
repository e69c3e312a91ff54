"""Browser tests: headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, against the
real ASGI server (uvicorn in a subprocess) with the Redis layer and the pytest-django PostgreSQL
test database, seeded by `manage.py seed_demo`.

Identity is cookieless (IP + User-Agent) and every shopper here comes from 127.0.0.1, so each
browser context gets its own ordinary desktop User-Agent: headless Chromium's own one contains
"HeadlessChrome", which Candor counts as a bot by design.

`bin/install_browser.sh` installs Chromium and axe-core. Run with `bash bin/test -m slow` (or
`-m browser tests/browser`).
"""

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from tests.conftest import IN_CI
from tests.servers import free_port, port_wait, process_stop

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CANDOR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
AXE = ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
CHROME_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
# Products of the seeded catalog. A utilitarian product seen from a non-individualist locale
# gets the shipped "utilitarian" policy: "N other people are viewing this", two toasts a page.
UTILITARIAN = "cable-usbc"
LOCALE = "ja-JP"
TOAST = "[data-candor] .toast"
SERVER_APP = "candor-browser-test-server"

# Recorded in the page before any of its own scripts run; not enumerable, so it is not a global
# the page's `Object.keys(window)` shows.
RECORDER = """
(() => {
  const seen = [];
  Object.defineProperty(window, "__cspViolations", { value: seen });
  document.addEventListener("securitypolicyviolation", (e) => {
    seen.push({ directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample });
  }, true);
})();
"""


try:  # the default run collects this folder too: it must import without Playwright
    from playwright.sync_api import expect

    expect.set_options(timeout=10_000)
except ImportError:  # the `browser` fixture says so, loudly
    expect = None


def _need(what: str, ok: bool, how: str) -> None:
    if ok:
        return
    message = f"{what} is missing ({how})"
    if IN_CI:
        pytest.fail(f"CI=true and {message}")
    pytest.skip(f"SKIPPED LOUDLY: {message}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.candor_failed = report.failed


# --- the browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    _need("playwright", expect is not None, "pip install -r requirements-dev.txt")
    from playwright.sync_api import sync_playwright

    _need("Chromium", Path(CHROMIUM).exists(), f"{CHROMIUM}; run bin/install_browser.sh")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def axe_path():
    _need("axe-core", AXE.exists(), f"{AXE}; run bin/install_browser.sh")
    return AXE


@pytest.fixture(autouse=True)
def _orm_beside_playwright(monkeypatch):
    """Playwright's sync API keeps an event loop marked as running in this thread, so Django
    takes every ORM call here for one made from async code. Only these tests' own set-up and
    checks are allowed through; the server and seed subprocesses never get this variable."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


# --- the server --------------------------------------------------------------------------


@dataclass
class Shop:
    url: str
    key: str
    log: Path

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@pytest.fixture
def shop(request, redis_url, postgres, transactional_db, tmp_path):
    """uvicorn serving Candor and the demo shop on a free port, seeded, sharing the test
    database and Redis. One per test: frequency caps and silences live in the server process."""
    from storefront_demo.models import DemoStore

    db = settings.DATABASES["default"]
    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DATABASE_URL": (
            f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}?application_name={SERVER_APP}"
        ),
        "REDIS_URL": redis_url,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,  # the secrets this process stored are encrypted under it
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "CANDOR_DEMO_ORIGINS": origin,
        "CANDOR_DEMO_API_BASE": origin,
        "DJANGO_DB_POOL": "1",  # as in production
        # Every browser here comes from 127.0.0.1, and SPEC 7 counts at most two visitors of one
        # address: the shoppers stand behind a trusted proxy, each with an X-Forwarded-For of its own.
        "CANDOR_TRUSTED_PROXIES": "127.0.0.1",
    }
    if db.get("PASSWORD"):
        env["PGPASSWORD"] = db["PASSWORD"]
    log = tmp_path / "server.log"
    seed = subprocess.run(
        [sys.executable, "manage.py", "seed_demo"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert seed.returncode == 0, seed.stdout + seed.stderr
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--no-proxy-headers",
                "--ws-max-size",
                "65536",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    shop = Shop(url=origin, key=DemoStore.objects.get().candor_key, log=log)
    try:
        port_wait(server, port, log=shop.log_tail)
        yield shop
    finally:
        process_stop(server)
        if getattr(request.node, "candor_failed", False):
            print(f"--- server log ---\n{shop.log_tail()}")
        _wait_for_server_sessions_to_end()


def _wait_for_server_sessions_to_end(timeout_s=10.0):
    """PostgreSQL notices a dead client's session a moment later; the test database can only be
    flushed and dropped once it has. (Only the server's: while Playwright's loop runs, Django in
    this process may hold a second connection of its own.)"""
    from django.db import connection

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = %s",
                [SERVER_APP],
            )
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.1)


def purchase(shop: Shop, sku: str) -> dict:
    """The store's backend reports a paid order, signed, as the demo checkout does."""
    from storefront_demo.candor_client import candor_send

    order = uuid.uuid4().hex[:12]
    report = candor_send(
        base_url=shop.url,
        payload={
            "type": "purchase",
            "event_id": f"purchase-{order}",
            "order_id": order,
            "occurred_at": timezone.now().isoformat(),
            "items": [{"product": sku, "quantity": 1}],
        },
    )
    assert report.ok, report
    return report.body


# --- shoppers ----------------------------------------------------------------------------


@dataclass
class Shopper:
    """One browser context: one visitor (its own User-Agent), one page, and what it saw."""

    name: str
    context: object
    page: object
    received: list = field(default_factory=list)  # socket frames from the server, parsed
    sent: list = field(default_factory=list)  # socket frames to the server, parsed
    sockets: list = field(default_factory=list)  # Playwright WebSocket objects, in order
    requests: list = field(default_factory=list)  # "METHOD url" of every request
    console_errors: list = field(default_factory=list)
    dialogs: list = field(default_factory=list)

    def open(self, shop: Shop, sku: str):
        response = self.page.goto(f"{shop.url}/product/{sku}/")
        assert response.ok, response.status
        return response

    @property
    def toast(self):
        return self.page.locator(TOAST)

    @property
    def region(self):
        return self.page.locator("[data-candor] [role=status]")

    def notifications(self, kind: str | None = None) -> list[dict]:
        return [m for m in self.received if m["type"] == "notification" and kind in (None, m["kind"])]

    def wait_until(self, condition, timeout_s: float = 10.0, what: str = "condition"):
        """Poll `condition` while Playwright delivers this page's events."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: timed out waiting for {what}")
            self.page.wait_for_timeout(50)

    def wait_for_page_message(self, *, visible: bool = True, count: int = 1):
        self.wait_until(
            lambda: sum(1 for m in self.sent if m["type"] == "page" and m["visible"] is visible) >= count,
            what=f"page visible={visible} sent",
        )

    def set_hidden(self, hidden: bool = True):
        """What the browser does when the tab goes to the background (or comes back)."""
        self.page.evaluate(
            """(hidden) => {
                Object.defineProperty(document, "visibilityState", {
                    configurable: true, get: () => (hidden ? "hidden" : "visible") });
                Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
                document.dispatchEvent(new Event("visibilitychange"));
            }""",
            hidden,
        )

    def csp_violations(self) -> list:
        return self.page.evaluate("window.__cspViolations || []")

    def assert_clean(self):
        """No CSP violation, no console error, no uncaught exception, no dialog."""
        assert self.csp_violations() == [], self.name
        assert self.console_errors == [], self.name
        assert self.dialogs == [], self.name


@pytest.fixture
def shoppers(browser):
    """shoppers(n, **context options) -> n new visitors, each in its own browser context."""
    made = []
    run = uuid.uuid4().hex[:6]

    def make(n: int = 1, *, locale: str = LOCALE, init_script: str = "", **options) -> list[Shopper]:
        out = []
        for _ in range(n):
            name = f"shopper/{run}-{len(made) + 1}"
            number = len(made) + 1
            headers = {"X-Forwarded-For": f"198.51.{100 + number // 250}.{1 + number % 250}"}
            context = browser.new_context(
                user_agent=f"{CHROME_UA} {name}",
                locale=locale,
                viewport={"width": 1200, "height": 800},
                **{"extra_http_headers": headers, **options},
            )
            context.add_init_script(RECORDER + init_script)
            shopper = Shopper(name=name, context=context, page=context.new_page())
            _watch(shopper, shopper.page)
            context.on("page", partial(_watch_other, shopper))
            made.append(shopper)
            out.append(shopper)
        return out

    yield make
    for shopper in made:
        try:
            shopper.context.close()
        except Exception:  # noqa: S110 (a context the test closed itself)
            pass


def _watch_other(shopper: Shopper, page) -> None:
    if page is not shopper.page:
        _watch(shopper, page)


def _watch(shopper: Shopper, page) -> None:
    """Every page of the context (a "Why?" tab too) reports console errors, uncaught errors and
    any dialog (an alert() that ran); the shopper's own page also its sockets and requests."""

    def on_dialog(dialog):
        shopper.dialogs.append(f"{page.url}: {dialog.type} {dialog.message}")
        dialog.dismiss()

    def on_console(message):
        if message.type == "error":
            shopper.console_errors.append(f"{page.url}: {message.text}")

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", lambda error: shopper.console_errors.append(f"{page.url}: uncaught {error}"))
    if page is not shopper.page:
        return

    def on_socket(ws):
        shopper.sockets.append(ws)
        ws.on("framereceived", lambda payload: shopper.received.append(json.loads(payload)))
        ws.on("framesent", lambda payload: shopper.sent.append(json.loads(payload)))

    page.on("websocket", on_socket)
    page.on("request", lambda request: shopper.requests.append(f"{request.method} {request.url}"))

"""`simulate_shoppers` against the demo as `bin/demo` serves it (embedded: SQLite, in-process
layer, no services): real HTTP and websockets only, and every purchase it causes reaches the
ledger through the demo checkout's signed request."""

import http.cookiejar
import os
import re
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.servers import free_port, port_wait

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def demo(tmp_path):
    yield from _demo(tmp_path)


@pytest.fixture
def demo_with_experiment(tmp_path):
    yield from _demo(tmp_path, "--experiment", "--admin-password", ADMIN_PASSWORD)


ADMIN_PASSWORD = "demo-admin-for-tests"


def _demo(tmp_path, *seed_args):
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    env.update(
        CANDOR_SQLITE_PATH=str(tmp_path / "demo.sqlite3"),
        CANDOR_DEMO_ORIGINS=f"http://127.0.0.1:{port}",
        DJANGO_SECURE_SSL_REDIRECT="0",
    )
    run = {"cwd": ROOT, "env": env, "check": True, "capture_output": True, "text": True}
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], **run)
    subprocess.run([sys.executable, "manage.py", "seed_demo", *seed_args], **run)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--port",
            str(port),
            "--no-proxy-headers",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    port_wait(server, port, log=lambda: "")
    yield port, env, tmp_path / "demo.sqlite3"
    server.terminate()
    output, _ = server.communicate(timeout=10)
    assert "Traceback" not in output, output[-3000:]


def test_simulated_shoppers_browse_cart_and_buy_through_public_interfaces(demo):
    port, env, db = demo
    result = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "simulate_shoppers",
            "--shoppers",
            "6",
            "--minutes",
            "0.4",
            "--base-url",
            f"http://127.0.0.1:{port}",
            "--dwell",
            "2",
            "5",
            "--cart-rate",
            "0.7",
            "--buy-rate",
            "0.8",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    summary = re.search(
        r"Done: (\d+) page views, (\d+) adds to cart, (\d+) orders, (\d+) toasts seen, (\d+) errors", out
    )
    assert summary, out[-2000:]
    pages, carts, orders, toasts, errors = map(int, summary.groups())
    assert pages >= 6 and carts >= 1 and orders >= 1 and errors == 0, out[-2000:]
    assert "views " in out and "places order D-" in out
    with sqlite3.connect(db) as conn:
        demo_orders = conn.execute("select count(*) from storefront_demo_demoorder").fetchone()[0]
        ledger_orders = conn.execute(
            "select count(distinct order_id) from notifications_event where kind='purchase' and verified=1"
        ).fetchone()[0]
        carted = conn.execute(
            "select count(*) from notifications_event where kind='add_to_cart' and source='browser'"
        ).fetchone()[0]
        addresses, visitors = conn.execute(
            "select count(distinct address_hash), count(distinct visitor_hash) from notifications_event "
            "where kind='add_to_cart'"
        ).fetchone()
    # Every order the shoppers placed reached the ledger once, through the signed request, and
    # nothing else did: the simulator wrote no row itself.
    assert demo_orders == orders == ledger_orders
    assert carted == carts
    # Each simulated shopper came from its own loopback address (SPEC 7 counts at most two of one).
    assert addresses == visitors >= 1


def _simulate(port, env, *extra):
    return subprocess.run(
        [
            sys.executable,
            "manage.py",
            "simulate_shoppers",
            "--base-url",
            f"http://127.0.0.1:{port}",
            *extra,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _admin_get(port, path):
    """Log in to the admin over HTTP, as the store owner would, and fetch `path`."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    base = f"http://127.0.0.1:{port}"
    login = opener.open(f"{base}/admin/login/").read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login).group(1)
    form = urllib.parse.urlencode(
        {"username": "admin", "password": ADMIN_PASSWORD, "csrfmiddlewaretoken": token, "next": path}
    ).encode()
    request = urllib.request.Request(f"{base}/admin/login/?next={path}", data=form, headers={"Referer": base})  # noqa: S310 (loopback http)
    return opener.open(request).read().decode()


def test_with_an_experiment_configured_the_dashboard_shows_arms_lifts_and_the_curve(demo_with_experiment):
    port, env, db = demo_with_experiment
    # Shoppers step away often, and each time a new one arrives: many visitor-days in a short run.
    result = _simulate(
        port,
        env,
        *("--shoppers", "8", "--minutes", "0.75", "--dwell", "1", "3", "--leave-rate", "0.6"),
        *("--cart-rate", "0.8", "--buy-rate", "0.7"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with sqlite3.connect(db) as conn:
        site_id = conn.execute("select id from notifications_site where is_demo = 1").fetchone()[0]
        arms = dict(
            conn.execute("select arm, count(distinct visitor_hash) from notifications_exposure group by arm")
        )
        conversions = conn.execute("select count(*) from notifications_conversion").fetchone()[0]
        orders = conn.execute("select count(*) from storefront_demo_demoorder").fetchone()[0]
    assert set(arms) == {"holdout", "cap 10", "cap 50"}, arms
    assert sum(arms.values()) >= 20, arms
    # Every order the shoppers placed carried the token the cart page got: each one is attributed.
    assert orders >= 3 and conversions == orders

    html = _admin_get(port, f"/admin/notifications/site/{site_id}/experiment/")
    assert "Experiments — Candor demo store" in html
    for text in (
        "holdout",
        "cap 10",
        "cap 50",
        "absolute lift",
        "relative lift",
        "still needed",
        "reactance curve",
    ):
        assert text in html, text
    assert re.search(r"[+−]\d+\.\d+ pts \([+−]?\d+\.\d+ to [+−]?\d+\.\d+ pts\)", html), (
        "a lift with its interval"
    )
    assert html.count('class="candor-chart"') == 2
    assert html.count("<circle") >= 4  # arms and curve points plotted
    change = _admin_get(port, f"/admin/notifications/site/{site_id}/change/")
    assert "Experiment, last 28 days" in change and "Holdout:" in change

"""A real PostgreSQL outage (SPEC 5): a purchase, refund or cancel is committed before the 2xx; with
the database down both ingestion endpoints answer 503 with Retry-After, never a 2xx.

No mocks: the test starts its own PostgreSQL cluster (never the machine's shared one on 5432) and
its own uvicorn process, stops the cluster with `pg_ctl stop -m immediate` and starts it again.
It needs no pytest-django database: set-up runs `manage.py` in subprocesses and the ledger is read
with psycopg. Run with `bash bin/test -m slow tests/test_slow_faults_ledger.py`."""

import datetime as dt
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from notifications.signing import signature_header_make
from tests.servers import free_port, port_wait, process_stop

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
PG_BIN = Path("/usr/lib/postgresql/15/bin")
ORIGIN = "http://shop.test"
UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
SKU = "mug-1"


def _tail(path: Path, lines=40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


class PrivatePostgres:
    """A throw-away cluster owned by the `postgres` user (initdb refuses root), trust auth,
    listening on 127.0.0.1 only, with its socket in its own directory."""

    def __init__(self, base: Path):
        self.base = base
        self.data, self.sockets, self.log = base / "data", base / "sockets", base / "postgres.log"
        self.port = free_port()
        self.dbname = "candor_outage"
        self.running = False

    def _as_postgres(self, *args, check=True):
        return subprocess.run(
            ["runuser", "-u", "postgres", "--", *map(str, args)],
            check=check,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def init(self):
        self.sockets.mkdir()
        shutil.chown(self.base, user="postgres", group="postgres")
        shutil.chown(self.sockets, user="postgres", group="postgres")
        self._as_postgres(
            PG_BIN / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        )

    def start(self):
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        result = self._as_postgres(
            PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "-t", "60", "start"
        )
        self.running = True
        return result

    def stop(self, mode="immediate", check=True):
        result = self._as_postgres(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "stop", check=check)
        self.running = False
        return result

    def url(self, dbname=None):
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname or self.dbname}"

    def connect(self, dbname=None):
        return psycopg.connect(self.url(dbname), autocommit=True, connect_timeout=5)


@pytest.fixture
def private_postgres():
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"SKIPPED LOUDLY: PostgreSQL 15 binaries are not installed in {PG_BIN}.")
    base = Path(tempfile.mkdtemp(prefix="candor-outage-"))
    base.chmod(0o755)
    pg = PrivatePostgres(base)
    try:
        pg.init()
        pg.start()
        with pg.connect("postgres") as conn:
            conn.execute(f"CREATE DATABASE {pg.dbname}")
        yield pg
    finally:
        if pg.running or (pg.data / "postmaster.pid").exists():
            pg.stop(check=False)
        shutil.rmtree(base, ignore_errors=True)


def _manage(env, *args):
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(params=["0", "1"], ids=["connection_per_request", "connection_pool"])
def app(request, private_postgres):
    """Migrate the private database, create a site and a product, and serve it with uvicorn; with
    a fresh connection per request, and with the pool whose connections the outage leaves dead."""
    pg = private_postgres
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DJANGO_DEBUG")}
    env.update(
        DJANGO_DB_POOL=request.param,
        DATABASE_URL=pg.url(),
        DJANGO_SECRET_KEY="test-only-" + "o" * 40,
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
    )
    _manage(env, "migrate", "--noinput")
    site = json.loads(_manage(env, "candor_site", "create", "--name", "Outage shop", "--origin", ORIGIN))
    catalog = pg.base / "catalog.json"
    product = {"sku": SKU, "name": "Mug", "url": f"{ORIGIN}/mug", "category": "Home"}
    product["category_kind"] = "other"
    catalog.write_text(json.dumps([product]))
    _manage(env, "candor_site", "products", "--key", site["key"], str(catalog))

    port, log = free_port(), pg.base / "uvicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "config.asgi:application",
                "--no-proxy-headers",
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        port_wait(proc, port, log=lambda: _tail(log))
        yield {"port": port, "key": site["key"], "secret": site["secret"], "pg": pg, "log": log}
    finally:
        process_stop(proc)


def _post(app, path, body: bytes, headers: dict):
    conn = http.client.HTTPConnection("127.0.0.1", app["port"], timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        response = conn.getresponse()
        raw = response.read()
        try:
            data = json.loads(raw)
        except ValueError:
            data = raw
        return response.status, {k.lower(): v for k, v in response.getheaders()}, data
    finally:
        conn.close()


def _order(app, kind, order_id, *, items=True):
    payload = {
        "key": app["key"],
        "type": kind,
        "event_id": f"{kind}-{order_id}-{uuid.uuid4().hex[:8]}",
        "order_id": order_id,
        "occurred_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    if items:
        payload["items"] = [{"product": SKU, "quantity": 1}]
    return json.dumps(payload).encode()


def _signed(app, body: bytes):
    """Signed at send time, so a retry after a slow restart is never refused as stale."""
    header = signature_header_make(secret=app["secret"], body=body)
    return _post(app, "/api/v1/server/events", body, {"Candor-Signature": header})


def _view(app):
    body = json.dumps({"key": app["key"], "type": "view", "product": SKU}).encode()
    return _post(app, "/api/v1/events", body, {"Origin": ORIGIN, "User-Agent": UA})


def _assert_unavailable(app, answer, what):
    status, headers, data = answer
    assert status == 503, f"{what} during the outage answered {status} {data!r}\n{_tail(app['log'])}"
    assert int(headers["retry-after"]) >= 1, headers
    assert isinstance(data, dict) and data["error"]["code"] == "unavailable", data


def _until_accepted(app, send, what, attempts=10):
    """After the restart Django may first meet a dead connection: a 503 is then fine, any other
    non-202 is not."""
    answers = []
    for _ in range(attempts):
        status, headers, data = send()
        answers.append((status, data))
        if status == 202:
            return data
        assert status == 503, f"{what} after recovery answered {status} {data!r}\n{_tail(app['log'])}"
        assert int(headers["retry-after"]) >= 1, headers
        time.sleep(0.5)
    pytest.fail(f"{what} was never accepted after recovery: {answers}\n{_tail(app['log'])}")


def _ledger(pg):
    with pg.connect() as conn:
        return conn.execute("SELECT kind, order_id, verified FROM notifications_event ORDER BY id").fetchall()


def test_the_ledger_is_committed_before_2xx_and_an_outage_is_503_never_2xx(app):
    pg = app["pg"]

    # 1. Up: a signed purchase is 202, and its row is already committed when the 202 arrives.
    status, _, data = _signed(app, _order(app, "purchase", "order-1"))
    assert status == 202, data
    assert data == {"accepted": True, "duplicate": False, "refused_items": []}
    assert _ledger(pg) == [("purchase", "order-1", True)]

    # 2. Down: PostgreSQL dies without a goodbye.
    pg.stop(mode="immediate")
    purchase_2 = _order(app, "purchase", "order-2")
    refund_1 = _order(app, "refund", "order-1", items=False)
    cancel_2 = _order(app, "cancel", "order-2")
    _assert_unavailable(app, _signed(app, purchase_2), "a signed purchase")
    _assert_unavailable(app, _signed(app, refund_1), "a signed refund")
    _assert_unavailable(app, _signed(app, cancel_2), "a signed cancel")
    _assert_unavailable(app, _view(app), "a browser view")
    # A retry while still down is still refused, never accepted from some buffer.
    _assert_unavailable(app, _signed(app, purchase_2), "a retried purchase")

    # 3. Back up: the same retried bodies are accepted once the app reconnects.
    pg.start()
    data = _until_accepted(app, lambda: _signed(app, purchase_2), "the retried purchase")
    assert data == {"accepted": True, "duplicate": False, "refused_items": []}
    data = _until_accepted(app, lambda: _signed(app, refund_1), "the retried refund")
    assert data["accepted"] is True and data["duplicate"] is False, data
    data = _until_accepted(app, lambda: _signed(app, cancel_2), "the retried cancel")
    assert data["accepted"] is True and data["duplicate"] is False, data
    # The same purchase sent again is a duplicate, not a second order.
    status, _, data = _signed(app, purchase_2)
    assert status == 200 and data["duplicate"] is True, data

    # 4. The ledger holds exactly what was acknowledged with a 2xx: two purchases, each once, one
    # refund, one cancel, and no view (the one sent during the outage was refused, not queued).
    rows = _ledger(pg)
    purchases = sorted(order for kind, order, _ in rows if kind == "purchase")
    assert purchases == ["order-1", "order-2"], rows
    others = [(kind, order) for kind, order, _ in rows if kind != "purchase"]
    assert others == [("refund", "order-1"), ("cancel", "order-2")], rows
    assert all(verified for _, _, verified in rows), rows

"""Ingestion: accepted browser events and signed purchases per second, each beside its ceiling,
with the same load client and concurrency, in one run.

    python -m bench.ingest [--seconds 20] [--concurrency 32] [--clients 2] [--quick]
    python -m bench.ingest --profile      # pyinstrument profile of the browser path

Four measurements, one after the other, each against a fresh server (or none) while the same
load client (--clients processes holding --concurrency keep-alive connections in all, one
request in flight on each) sends as fast as the answers come back:

  raw       bench/ingest_raw_app.py under uvicorn: 202 `{"accepted":true}` to the very same
            `POST /api/v1/events` requests (the ceiling for browser events)
  browser   Candor, `config.asgi:application` under uvicorn (same flags): `POST /api/v1/events`
            `{"key","type":"view","product"}` with an allowed Origin; every request a new
            (visitor, product) pair, so none is de-duplicated and each 202 is a ledger row
  pg        no server: the client processes run psycopg 3 connections (as many as the
            concurrency), each looping INSERT + COMMIT of one row per purchase into a plain table
            of the same database (the ceiling for signed purchases)
  purchase  Candor: signed `POST /api/v1/server/events` purchases (`Candor-Signature`), each a
            new event_id and order_id; Candor commits before its 2xx

Only 202s count as throughput; other statuses are counted and shown. After each Candor run the
ledger is checked to hold one row per 202. CPU seconds of the client processes, the server,
PostgreSQL (all its processes) and Redis are read from /proc/<pid>/stat over the measured
window. Everything this starts is stopped at the end, on Ctrl-C and on SIGTERM.
"""

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import ROOT
from bench.harness.candor import ORIGIN, UA, database_prepare, database_url, products_add, sign, site_create
from bench.harness.processes import PY, LineReader, clock, cpu_s, service_cpu_s, spawn, stop_all, stop_child
from bench.harness.redis import redis_clear as _redis_clear
from bench.harness.redis import redis_url
from bench.harness.servers import INGEST_SETTINGS, HttpServer, raw_env
from bench.harness.servers import candor_env as _candor_env
from bench.result import result_print

REDIS_URL = redis_url(10)
DATABASE_URL = database_url("candor_bench_ingest")
RAW_TABLE = "bench_raw_purchase"
PRODUCTS = 256  # SKUs BENCH-000 … BENCH-255
VIEWS_PER_VISITOR = 4  # each visitor views 4 consecutive products: no (visitor, product) repeats

CEILINGS = {"browser": "raw", "purchase": "pg"}
MEASUREMENTS = {
    "raw": "raw ASGI app: 202 to the same POST (ceiling)",
    "browser": "Candor POST /api/v1/events, browser view",
    "pg": "raw psycopg: INSERT + COMMIT a row (ceiling)",
    "purchase": "Candor POST /api/v1/server/events, signed purchase",
}


def sku(n: int) -> str:
    return f"BENCH-{n % PRODUCTS:03d}"


# ======================================================================================
# Load client (one process of --clients): keep-alive HTTP/1.1 on asyncio protocols, responses
# parsed by httptools, one request in flight per connection; or psycopg connections.
# ======================================================================================
class Window:
    """Counts what completes inside [t_start, t_end] (statuses, latencies); everything total."""

    def __init__(self, t_start: float, t_end: float) -> None:
        self.t_start, self.t_end = t_start, t_end
        self.statuses: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self.latency_ms = array("f")
        self.errors: Counter[str] = Counter()

    def record(self, status: str, sent: float, now: float) -> None:
        self.total[status] += 1
        if self.t_start <= now <= self.t_end:
            self.statuses[status] += 1
            self.latency_ms.append((now - sent) * 1000.0)

    def report(self, unfinished: int) -> dict:
        fd, path = tempfile.mkstemp(prefix="bench-ingest-lat-", suffix=".f32")
        with os.fdopen(fd, "wb") as fh:
            self.latency_ms.tofile(fh)
        return {
            "op": "done",
            "statuses": self.statuses,
            "total": self.total,
            "latency_file": path,
            "errors": self.errors.most_common(5),
            "unfinished": unfinished,
        }


class Requests:
    """The bytes of each next request: a template built once, a counter formatted per request."""

    def __init__(self, cmd: dict) -> None:
        self.kind = cmd["kind"]
        self.n = 0
        self.tag = f"{cmd['run']}-{cmd['index']}"
        host = f"Host: 127.0.0.1:{cmd['port']}\r\n"
        if self.kind == "purchase":
            self.key = cmd["key"]
            self.secret = cmd["secret"].encode()
            self.head = f"POST /api/v1/server/events HTTP/1.1\r\n{host}Content-Type: application/json\r\n"
            self._second = -1
        else:
            # Fixed-width SKUs keep every body, and so Content-Length, the same length.
            self.bodies = [
                json.dumps(
                    {"key": cmd["key"], "type": "view", "product": sku(p)}, separators=(",", ":")
                ).encode()
                for p in range(PRODUCTS)
            ]
            self.head = (
                f"POST /api/v1/events HTTP/1.1\r\n{host}Origin: {ORIGIN}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(self.bodies[0])}\r\n"
                f"User-Agent: {UA} bench/{self.tag}-"
            ).encode()

    def next(self) -> bytes:
        n = self.n
        self.n += 1
        if self.kind == "purchase":
            return self._purchase(n)
        # A new visitor (its own User-Agent) every VIEWS_PER_VISITOR requests, viewing
        # consecutive products: never a repeat view, so Candor records every one.
        return b"".join((self.head, b"%d" % (n // VIEWS_PER_VISITOR), b"\r\n\r\n", self.bodies[n % PRODUCTS]))

    def _purchase(self, n: int) -> bytes:
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            self._t = str(self._second)
            self._occurred = dt.datetime.fromtimestamp(self._second, dt.UTC).isoformat()
        order = f"ing-{self.tag}-{n}"
        body = (
            f'{{"key":"{self.key}","type":"purchase","event_id":"{order}","order_id":"{order}",'
            f'"occurred_at":"{self._occurred}","items":[{{"product":"{sku(n)}","quantity":1}}]}}'
        ).encode()
        digest = sign(self.secret, self._t, body)
        head = f"{self.head}Content-Length: {len(body)}\r\nCandor-Signature: t={self._t},v1={digest}\r\n\r\n"
        return head.encode() + body


async def http_load(cmd: dict, go) -> dict:
    import asyncio

    import httptools

    loop = asyncio.get_running_loop()
    requests = Requests(cmd)
    window: Window | None = None
    finished = loop.create_future()
    live: set = set()

    class Conn(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = httptools.HttpResponseParser(self)
            self.transport = None
            self.sent = 0.0
            self.busy = False

        def connection_made(self, transport) -> None:
            self.transport = transport
            live.add(self)

        def send(self) -> None:
            self.busy = True
            self.sent = clock()
            self.transport.write(requests.next())

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                window.errors[f"parse: {exc}"] += 1
                self.transport.close()

        def on_message_complete(self) -> None:
            now = clock()
            self.busy = False
            window.record(str(self.parser.get_status_code()), self.sent, now)
            if now >= window.t_end:
                self.transport.close()
            elif self.parser.should_keep_alive():
                self.send()
            else:
                window.errors["server closed keep-alive"] += 1
                self.transport.close()

        def connection_lost(self, exc) -> None:
            live.discard(self)
            if window is None:
                return
            if self.busy:
                window.errors[f"connection lost mid-request: {exc}"] += 1
            if clock() < window.t_end:
                loop.create_task(reopen())
            elif not live and not finished.done():
                finished.set_result(None)

    async def open_one() -> Conn:
        _, conn = await loop.create_connection(Conn, "127.0.0.1", cmd["port"])
        return conn

    async def reopen() -> None:
        await asyncio.sleep(0.05)
        try:
            conn = await open_one()
        except OSError as exc:
            window.errors[f"connect: {exc}"] += 1
            if clock() < window.t_end:
                loop.create_task(reopen())
            return
        conn.send()

    conns = [await open_one() for _ in range(cmd["connections"])]
    t_start, t_end = await go()
    window = Window(t_start, t_end)
    for conn in conns:
        conn.send()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, t_end - clock()) + cmd["grace_s"]):
            await finished
    unfinished = sum(conn.busy for conn in live)
    for conn in list(live):
        conn.transport.abort()
    return window.report(unfinished)


async def pg_load(cmd: dict, go) -> dict:
    import asyncio

    import psycopg

    insert = (
        f"INSERT INTO {RAW_TABLE} (event_id, order_id, product, quantity, occurred_at) "  # noqa: S608
        "VALUES (%s, %s, %s, %s, %s)"
    )
    conns = [await psycopg.AsyncConnection.connect(cmd["dsn"]) for _ in range(cmd["connections"])]
    t_start, t_end = await go()
    window = Window(t_start, t_end)
    tag = f"{cmd['run']}-{cmd['index']}"

    async def worker(j: int, conn) -> None:
        n = 0
        while (sent := clock()) < t_end:
            order = f"raw-{tag}-{j}-{n}"
            try:
                await conn.execute(insert, (order, order, sku(n), 1, dt.datetime.now(dt.UTC)))
                await conn.commit()
            except psycopg.Error as exc:
                window.errors[type(exc).__name__] += 1
                await conn.rollback()
                continue
            window.record("commit", sent, clock())
            n += 1

    tasks = [asyncio.ensure_future(worker(j, conn)) for j, conn in enumerate(conns)]
    done, pending = await asyncio.wait(tasks, timeout=max(0.0, t_end - clock()) + cmd["grace_s"])
    for task in pending:
        task.cancel()
    for conn in conns:
        with contextlib.suppress(Exception):
            await conn.close()
    return window.report(len(pending))


def client_main() -> int:
    import asyncio

    with contextlib.suppress(ImportError):
        import uvloop  # the client's own cost matters: it must stay far from the bottleneck

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    cmd = json.loads(sys.stdin.readline())

    def emit(message: dict) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    async def go() -> tuple[float, float]:
        emit({"op": "ready"})
        line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        if not line:
            raise SystemExit(0)
        message = json.loads(line)
        return message["t_start"], message["t_end"]

    load = pg_load if cmd["kind"] == "pg" else http_load
    emit(asyncio.run(load(cmd, go)))
    return 0


# ======================================================================================
# Coordinator
# ======================================================================================
@dataclass
class Result:
    name: str
    seconds: float = 0.0
    statuses: Counter = field(default_factory=Counter)
    total: Counter = field(default_factory=Counter)
    latency_ms: list[float] = field(default_factory=list)
    errors: list = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ok_status: str = "202"
    unfinished: int = 0
    server_less: bool = False

    @property
    def ok(self) -> int:
        return self.statuses[self.ok_status]

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        values = sorted(self.latency_ms)
        return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def run_load(
    name: str, cmd: dict, args: argparse.Namespace, server: HttpServer | None, on_window=None
) -> Result:
    """Spawn the client processes, let them warm up, measure one window, collect."""
    result = Result(name, seconds=args.seconds, ok_status="commit" if cmd["kind"] == "pg" else "202")
    shares = [
        args.concurrency // args.clients + (i < args.concurrency % args.clients) for i in range(args.clients)
    ]
    procs, readers = [], []
    try:
        for index, share in enumerate(shares):
            proc = spawn(
                [PY, "-m", "bench.ingest", "--_client"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            procs.append(proc)
            readers.append(LineReader(proc))
            proc.stdin.write((json.dumps({**cmd, "index": index, "connections": share}) + "\n").encode())
            proc.stdin.flush()
        for reader in readers:
            reader.read(60)  # ready: connections open
        t_start = clock() + 0.05 + args.warmup
        t_end = t_start + args.seconds
        for proc in procs:
            proc.stdin.write((json.dumps({"op": "go", "t_start": t_start, "t_end": t_end}) + "\n").encode())
            proc.stdin.flush()
        watched = {"client": [p.pid for p in procs], "server": [server.proc.pid] if server else []}

        def snapshot() -> dict[str, float]:
            cpu = {role: sum(cpu_s(pid) for pid in pids) for role, pids in watched.items()}
            cpu["postgres"] = service_cpu_s("postgres")
            cpu["redis"] = service_cpu_s("redis-server")
            return cpu

        time.sleep(max(0.0, t_start - clock()))
        if on_window:
            on_window("start")
        before = snapshot()
        time.sleep(max(0.0, t_end - clock()))
        after = snapshot()
        if on_window:
            on_window("stop")
        result.cpu = {role: after[role] - before[role] for role in after}
        result.server_less = server is None
        for reader in readers:
            report = reader.read(args.grace + 30)
            result.statuses.update(report["statuses"])
            result.total.update(report["total"])
            result.errors.extend(report["errors"])
            result.unfinished += report["unfinished"]
            with open(report["latency_file"], "rb") as fh:
                latencies = array("f")
                latencies.frombytes(fh.read())
            os.unlink(report["latency_file"])
            result.latency_ms.extend(latencies)
    finally:
        for proc in procs:
            stop_child(proc)
    return result


# --- Set-up ----------------------------------------------------------------------------------
def candor_env(extra: list[str] = ()) -> dict[str, str]:
    return _candor_env(REDIS_URL, DATABASE_URL, INGEST_SETTINGS, extra)


def candor_prepare(env: dict[str, str]) -> tuple[str, str]:
    """The database (made if missing, migrated), the raw table, and a new site with PRODUCTS
    products through the operator CLI (SPEC 5): (key, secret)."""
    import psycopg

    database_prepare(env)
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        # The raw ceiling's table: what a purchase needs, with its idempotency key unique.
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {RAW_TABLE} (id bigserial PRIMARY KEY,"
            " event_id text NOT NULL UNIQUE, order_id text NOT NULL, product text NOT NULL,"
            " quantity integer NOT NULL, occurred_at timestamptz NOT NULL)"
        )
    key, secret = site_create(env, "Bench ingest")
    catalog = [
        {
            "sku": sku(p),
            "name": f"Bench product {p}",
            "url": f"{ORIGIN}/product/{sku(p)}/",
            "category": "Bench",
        }
        for p in range(PRODUCTS)
    ]
    products_add(env, key, catalog)
    return key, secret


def ledger_rows(key: str, kind: str) -> int:
    import psycopg

    with psycopg.connect(DATABASE_URL) as conn:
        return conn.execute(
            "SELECT count(*) FROM notifications_event e JOIN notifications_site s ON s.id = e.site_id"
            " WHERE s.public_key = %s AND e.kind = %s",
            (key, kind),
        ).fetchone()[0]


def raw_table(action: str) -> int:
    import psycopg

    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        if action == "truncate":
            conn.execute(f"TRUNCATE {RAW_TABLE}")
            return 0
        return conn.execute(f"SELECT count(*) FROM {RAW_TABLE}").fetchone()[0]  # noqa: S608


def redis_clear() -> int:
    """Delete only `candor:*` keys in the bench's Redis database (db 10)."""
    return _redis_clear(REDIS_URL)


# --- The four measurements -------------------------------------------------------------------
def measure_http(
    name: str, app: str, env: dict, cmd: dict, args: argparse.Namespace, on_window=None
) -> Result:
    redis_clear()
    server = HttpServer(app, env)
    keep_log = False
    try:
        result = run_load(name, {**cmd, "port": server.port}, args, server, on_window)
        keep_log = args.keep_logs or not result.ok
        if not result.ok:
            result.notes.append(f"server log:\n{server.log_tail()}")
        return result
    finally:
        server.stop(keep_log=keep_log)
        redis_clear()


def measure(name: str, args: argparse.Namespace, site: tuple[str, str]) -> Result:
    key, secret = site
    common = {"run": args.run_id, "key": key, "secret": secret, "grace_s": args.grace}
    if name == "raw":
        env = raw_env()
        return measure_http(name, "bench.ingest_raw_app:app", env, {**common, "kind": "browser"}, args)
    if name == "pg":
        raw_table("truncate")
        result = run_load(name, {**common, "kind": "pg", "dsn": DATABASE_URL}, args, None)
        rows = raw_table("count")
        committed = result.total["commit"]
        result.notes.append(
            f"table rows {rows:,} = commits {committed:,}: {'yes' if rows == committed else 'NO'}"
        )
        raw_table("truncate")
        return result
    kind = "view" if name == "browser" else "purchase"
    result = measure_http(
        name,
        "config.asgi:application",
        candor_env(args.candor_env),
        {**common, "kind": "browser" if kind == "view" else kind},
        args,
    )
    rows = ledger_rows(key, kind)
    accepted = result.total["202"]
    result.notes.append(
        f"ledger rows ({kind}, this site) {rows:,} = 202s over the whole run {accepted:,}: "
        f"{'yes' if rows == accepted else 'NO'}"
    )
    return result


# --- Output ----------------------------------------------------------------------------------
def _ratio(value: float, ceiling: float | None) -> str:
    return _times(value / ceiling) if ceiling else "-"


def _times(ratio: float) -> str:
    return f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.3f}×"


def print_table(results: dict[str, Result], args: argparse.Namespace) -> None:
    import uvicorn

    print()
    print(
        f"Ingestion: accepted requests per second over {args.seconds:g} s (after {args.warmup:g} s warm-up) "
        f"per measurement, latency p50/p99 of those; one uvicorn {uvicorn.__version__} process per server "
        f"(httptools, {_loop_name()}); load client: {args.clients} processes, {args.concurrency} keep-alive "
        f"connections in all, one request in flight on each; {os.cpu_count()} CPUs; load average "
        f"{args.load_before} before, {os.getloadavg()[0]:.2f} after"
    )
    width = max(len(MEASUREMENTS[name]) for name in results)
    header = (
        f"{'figure':<{width}} {'per s':>8} {'p50 ms':>7} {'p99 ms':>7} {'x raw':>6} {'accepted':>9} "
        f"{'other':>6} {'client':>7} {'server':>7} {'pg':>6} {'redis':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        ceiling = results.get(CEILINGS.get(name, ""))
        ratio = _ratio(r.rate, ceiling.rate if ceiling else None) if name in CEILINGS else "1.00×"
        cpu = r.cpu
        cells = [
            f"{MEASUREMENTS[name]:<{width}}",
            f"{r.rate:>8,.0f}",
            f"{r.pct(0.5):>7.2f}",
            f"{r.pct(0.99):>7.2f}",
            f"{ratio:>6}",
            f"{r.ok:>9,}",
            f"{sum(r.statuses.values()) - r.ok:>6,}",
            f"{cpu['client']:>7.1f}",
            f"{'-' if r.server_less else format(cpu['server'], '.1f'):>7}",
            f"{cpu['postgres']:>6.1f}",
            f"{cpu['redis']:>6.1f}",
        ]
        print(" ".join(cells))
    print()
    print(
        "accepted = 202s (commits for raw psycopg) completed in the window; other = any other answer. "
        f"CPU columns: CPU seconds used during the {args.seconds:g} s window (utime + stime from "
        "/proc/<pid>/stat): the client processes, the server process, all of PostgreSQL, all of Redis."
    )
    for name, r in results.items():
        statuses = ", ".join(f"{status}: {count:,}" for status, count in sorted(r.statuses.items()))
        print(f"  {name:<8} statuses in window {{{statuses}}}; unfinished at the end {r.unfinished}")
        for error, count in r.errors:
            print(f"           error: {error} ×{count}")
        for note in r.notes:
            print(f"           {note}")
    for name, r in results.items():
        if r.ok:
            per = {role: r.cpu[role] / r.ok * 1e6 for role in ("client", "server")}
            server = "" if r.server_less else f", server {per['server']:,.0f} µs"
            print(f"  {name:<8} CPU per accepted request: client {per['client']:,.0f} µs{server}")
    raw, browser = results.get("raw"), results.get("browser")
    if raw and raw.rate:
        client_cores = raw.cpu["client"] / args.seconds
        than_candor = f"; {raw.rate / browser.rate:,.1f}× Candor's rate" if browser and browser.rate else ""
        print(
            f"  load client: {raw.rate:,.0f}/s against the raw app, using {client_cores:.2f} of "
            f"{os.cpu_count()} cores{than_candor}"
        )
    suffix = " (targets not enforced)" if args.quick else ""
    print()
    for name, label, ceiling_label in (
        ("browser", "browser events", "raw ASGI"),
        ("purchase", "signed purchases", "raw psycopg INSERT+COMMIT"),
    ):
        r, c = results.get(name), results.get(CEILINGS[name])
        if not r or not c or not c.rate:
            continue
        ratio = r.rate / c.rate
        verdict = "PASS" if ratio >= 0.5 else "FAIL"
        print(
            f"Target, {label} ≥ 0.5× {ceiling_label}: {verdict} at {_times(ratio)} "
            f"({r.rate:,.0f}/s against {c.rate:,.0f}/s){suffix}"
        )
        result_print(
            scenario=f"ingestion, {label}",
            figure=f"{r.rate:,.0f}/s, p50 {r.pct(0.5):.1f} ms, p99 {r.pct(0.99):.1f} ms",
            ceiling=f"{c.rate:,.0f}/s {ceiling_label}",
            ratio=ratio,
            target="≥ 0.5×",
            passed=None if args.quick else ratio >= 0.5,
        )


def _loop_name() -> str:
    try:
        import uvloop  # noqa: F401 - uvicorn's --loop auto picks it when installed
    except ImportError:
        return "asyncio loop"
    return "uvloop"


# --- Profile -----------------------------------------------------------------------------------
def profile(args: argparse.Namespace, site: tuple[str, str]) -> int:
    """The browser path under the same load as the 'browser' measurement, served through
    bench/ingest_profile_app.py (pyinstrument, wall clock)."""
    import pyinstrument

    key, secret = site
    out = Path(args.profile_out).resolve()
    cmd = {"run": args.run_id, "key": key, "secret": secret, "grace_s": args.grace, "kind": "browser"}
    print(f"[profile] {args.seconds:g} s under load ...", flush=True)
    texts: dict[str, bytes] = {}
    redis_clear()
    server = HttpServer("bench.ingest_profile_app:application", candor_env(args.candor_env))

    def on_window(phase: str) -> None:
        texts[phase] = server.request("POST", f"/__bench/profile/{phase}")

    try:
        result = run_load("browser", {**cmd, "port": server.port}, args, server, on_window)
    finally:
        server.stop(keep_log=args.keep_logs)
        redis_clear()
    measured = (
        f"# under the profiler: {result.rate:,.0f} accepted/s, p50 {result.pct(0.5):.2f} ms, "
        f"p99 {result.pct(0.99):.2f} ms, statuses {dict(result.statuses)}; CPU seconds in the "
        f"{args.seconds:g} s window: client {result.cpu['client']:.1f}, "
        f"server {result.cpu['server']:.1f}, PostgreSQL {result.cpu['postgres']:.1f}, "
        f"Redis {result.cpu['redis']:.1f}\n\n"
    )
    report = texts.get("stop", b"(the profile app answered nothing)\n").decode()
    head = (
        f"# Candor's browser-event path under load, profiled with pyinstrument {pyinstrument.__version__}\n"
        f"# {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, "
        f"load average {args.load_before} before, {os.getloadavg()[0]:.2f} after\n"
        f"# command: .venv/bin/python -m bench.ingest --profile --seconds {args.seconds:g} "
        f"--concurrency {args.concurrency} --clients {args.clients}\n"
        "# served by bench/ingest_profile_app.py wrapping config.asgi:application (uvicorn, the same "
        "flags and environment as bench/ingest.py), loaded as bench/ingest.py's 'browser' measurement; "
        "the profiler slows the server, so its rates are not the benchmark's\n\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(head + measured + report)
    print(head + measured + report.split("===== pyinstrument tree")[0])
    print(f"written: {out}")
    return 0 if result.ok else 1


# --- Main --------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=None, help="measured window per measurement (20; 3 quick)"
    )
    parser.add_argument("--warmup", type=float, default=None, help="unmeasured seconds first (3; 1 quick)")
    parser.add_argument("--concurrency", type=int, default=32, help="connections in all (requests in flight)")
    parser.add_argument("--clients", type=int, default=2, help="load client processes")
    parser.add_argument(
        "--only", default=",".join(MEASUREMENTS), help=f"comma-separated subset of {list(MEASUREMENTS)}"
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds each; targets not enforced")
    parser.add_argument("--profile", action="store_true", help="profile the browser path (pyinstrument)")
    parser.add_argument(
        "--profile-out",
        default=str(ROOT / "bench" / "profiles" / "ingest-browser-events.txt"),
        help="where --profile writes its text",
    )
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds for answers still due after a window"
    )
    parser.add_argument(
        "--candor-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for Candor's server (repeatable); DJANGO_CONN_MAX_AGE above 0 "
        "exhausts PostgreSQL's connections under this load (see candor_env)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep each server's log (kept on failure)")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 3.0 if args.quick else 20.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 3.0
    if args.concurrency < args.clients:
        parser.error("--concurrency must be at least --clients")
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    if unknown := [name for name in args.only if name not in MEASUREMENTS]:
        parser.error(f"unknown measurement(s) {unknown}")
    args.run_id = uuid.uuid4().hex[:8]
    return args


def coordinator(args: argparse.Namespace) -> int:
    args.load_before = f"{os.getloadavg()[0]:.2f}"  # other work on the box shows up as noise
    print(f"set-up: database {DATABASE_URL.rsplit('/', 1)[1]}, Redis db 10, a new site ...", flush=True)
    site = candor_prepare(candor_env())
    if args.profile:
        return profile(args, site)
    results: dict[str, Result] = {}
    for name in [n for n in MEASUREMENTS if n in args.only]:
        print(f"[{name}] {MEASUREMENTS[name]} ...", flush=True)
        result = results[name] = measure(name, args, site)
        p50, p99 = result.pct(0.5), result.pct(0.99)
        print(f"[{name}] {result.rate:,.0f}/s accepted, p50 {p50:.2f} ms, p99 {p99:.2f} ms", flush=True)
    print_table(results, args)
    return 0 if all(r.ok for r in results.values()) else 1


def _terminate(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops the run the way Ctrl-C does


def main() -> int:
    if sys.argv[1:] == ["--_client"]:
        return client_main()
    args = parse_args(sys.argv[1:])
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return coordinator(args)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping servers and clients", file=sys.stderr)
        return 130
    finally:
        stop_all()
        with contextlib.suppress(Exception):
            redis_clear()


if __name__ == "__main__":
    sys.exit(main())

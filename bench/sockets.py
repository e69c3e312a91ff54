"""Sockets held: N widget sockets opened, the first ones in a burst, then held, in one run with a
raw ASGI ceiling.

    python -m bench.sockets [--sockets 25000] [--hold-s 600] [--servers N] [--clients M] [--quick]

Two designs, one after the other, each served by S uvicorn processes on S ports (same flags),
the same M client processes (bench/sockets_client.py) opening the same sockets:

  raw     bench/raw_app.py: a bare ASGI app that accepts and reads (the ceiling)
  candor  config.asgi:application: the widget consumer with Redis presence (db 11) and
          PostgreSQL (`candor_bench_sockets`), a site and product made with `manage.py candor_site`

Every socket is a distinct visitor (its own User-Agent), sends the page message
`{"type":"page","product":sku,"visible":true}` and reads all it is sent. Sockets are spread over
the servers and over several source addresses (127.0.0.2…), as one address pair has 28k ports.

Per design: one socket per server first (warm-up, then closed), the servers' RSS, a burst of
5,000 connects (time from the first to the last socket open with its page message sent, and
errors, no retries), the ramp to N (retries allowed, counted), then the hold: every --check-s all
sockets are pinged (each must answer) and counted open, Candor's presence set is counted in Redis
(every socket must be in it: its refresher re-writes each one every TTL/3), and RSS is read. RSS
per socket = (RSS at the end of the hold - RSS before) / sockets, summed over the servers.
The raw app is held --raw-hold-s only: it has no refresher. bench/README.md, "sockets.py".
"""

import argparse
import asyncio
import contextlib
import json
import math
import os
import resource
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import ROOT
from bench.harness.candor import ORIGIN, SKU, UA, candor_prepare, database_url
from bench.harness.clients import ClientPool
from bench.harness.processes import clock, cpu_s, open_files, rss_kb, stop_all
from bench.harness.product import PRESENCE_PREFIX
from bench.harness.redis import redis_clear as _redis_clear
from bench.harness.redis import redis_url
from bench.harness.servers import Server as _Server
from bench.harness.servers import candor_env, raw_env
from bench.result import result_print

REDIS_URL = redis_url(11)
DATABASE_URL = database_url("candor_bench_sockets")
# A process may open 20,000 files here (hard limit); a server also holds Redis and database
# connections and a client its control connection, so each holds at most this many sockets.
PER_PROCESS_MAX = 9000
# uvicorn's accept backlog; the kernel caps it at net.core.somaxconn (4096 on this machine).
BACKLOG = 8192
TARGET_KB_PER_SOCKET = 100
TARGET_BURST = 5000
TARGET_BURST_S = 10.0
HELLO = json.dumps({"type": "page", "product": SKU, "visible": True})

DESIGNS = {
    "raw": "raw ASGI app, accept and read (ceiling)",
    "candor": "Candor: config.asgi widget consumer, Redis presence",
}


class Server(_Server):
    """The harness's server (readiness, log, stop) with the accept backlog raised for the burst;
    it dies with the coordinator."""

    def __init__(self, app: str, env: dict[str, str], cwd: Path = ROOT) -> None:
        super().__init__(
            app,
            env,
            cwd,
            log_prefix="bench-sockets-",
            extra=["--backlog", str(BACKLOG)],
            die_with_parent=True,
        )

    def problems(self) -> Counter[str]:
        """Warnings, errors and tracebacks the server logged, by their first 110 characters."""
        found: Counter[str] = Counter()
        for line in Path(self.log.name).read_text(errors="replace").splitlines():
            if any(word in line for word in ("WARNING", "ERROR", "Traceback", "Exception", "Error:")):
                found[line.strip()[:110]] += 1
        return found


class Clients(ClientPool):
    """The harness's pool of client processes, running bench/sockets_client.py."""

    def __init__(self, count: int) -> None:
        # Replies carry per-socket latencies: lines longer than asyncio's 64 KiB default.
        super().__init__(count, ("-m", "bench.sockets_client"), limit=1 << 24, die_with_parent=True)

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.clients]


def redis_clear() -> int:
    """Delete only `candor:*` keys in the bench's Redis database (db 11)."""
    return _redis_clear(REDIS_URL)


def product_id(key: str) -> int:
    """The id of this run's product (its presence set is `candor:v1:presence:<id>`)."""
    import psycopg

    with psycopg.connect(DATABASE_URL.replace("postgres://", "postgresql://", 1)) as conn:
        row = conn.execute(
            "SELECT p.id FROM notifications_product p JOIN notifications_site s ON s.id = p.site_id"
            " WHERE s.public_key = %s AND p.sku = %s",
            (key, SKU),
        ).fetchone()
    return row[0]


def presence_count(product: int) -> int:
    """Live members of the product's presence set: one per counted socket."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return client.zcount(PRESENCE_PREFIX + str(product), int(time.time() * 1000) + 1, "+inf")
    finally:
        client.close()


def lock_or_exit() -> None:
    """One run at a time on this machine: two would share Redis db 11 and the CPUs."""
    import fcntl

    handle = open(Path(tempfile.gettempdir()) / "candor-bench-sockets.lock", "w")  # noqa: SIM115
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit("another bench/sockets.py run is going on; wait for it to end") from None
    globals()["_lock"] = handle  # held until the process exits


@dataclass
class Phase:
    """A burst or the ramp: connects, errors, wall time and the CPU it took."""

    wanted: int = 0
    ok_each: list[int] = field(default_factory=list)
    started: float = 0.0
    seconds: float | None = None
    errors: Counter = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    server_cpu_pct: list[float] = field(default_factory=list)
    client_cpu_pct: list[float] = field(default_factory=list)
    wall_s: float = 0.0  # the coordinator's view of the phase, over which CPU is measured

    @property
    def ok(self) -> int:
        return sum(self.ok_each)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    def server_cpu_ms(self) -> float | None:
        """Server CPU per socket opened, all servers: less moved by other work on the machine
        than wall time."""
        if not self.ok or not self.server_cpu_pct:
            return None
        return sum(self.server_cpu_pct) / 100 * self.wall_s * 1000 / self.ok

    def p(self, q: int) -> float | None:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else None
        return statistics.quantiles(self.latencies_ms, n=100, method="inclusive")[q - 1]


@dataclass
class Check:
    at_s: float
    open: int
    pinged: int
    answered: int
    dropped: int
    presence: int | None
    rss_kb: list[int]
    alive: int


@dataclass
class Result:
    design: str
    burst: Phase = field(default_factory=Phase)
    ramp: Phase = field(default_factory=Phase)
    first_message_s: float | None = None
    first_message_got: int = 0
    rss_before_kb: list[int] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    held_s: float = 0.0
    hold_cpu_pct: list[float] = field(default_factory=list)
    open_files_max: list[int] = field(default_factory=list)
    drops: Counter = field(default_factory=Counter)
    kinds: Counter = field(default_factory=Counter)
    client_rss_kb: list[int] = field(default_factory=list)
    problems: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)

    @property
    def opened(self) -> int:
        return self.burst.ok + self.ramp.ok

    @property
    def last(self) -> Check | None:
        return self.checks[-1] if self.checks else None

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def cpu_ms_per_open(self) -> float | None:
        """The servers' CPU per socket opened (burst and ramp): handshake, consumer, page message."""
        phases = [p for p in (self.burst, self.ramp) if p.ok and p.server_cpu_pct]
        if not phases:
            return None
        cpu_s = sum(sum(p.server_cpu_pct) / 100 * p.wall_s for p in phases)
        return cpu_s * 1000 / sum(p.ok for p in phases)

    def kb_per_socket(self) -> float | None:
        last = self.last
        if last is None or not last.open or not self.rss_before_kb or not all(last.rss_kb):
            return None
        return (sum(last.rss_kb) - sum(self.rss_before_kb)) / last.open


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def _cpus(pids: list[int]) -> list[float]:
    out = []
    for pid in pids:
        try:
            out.append(cpu_s(pid))
        except OSError:
            out.append(math.nan)
    return out


def _cpu_pct(pids: list[int], before: list[float], wall_s: float) -> list[float]:
    """Per process, the CPU it used since `before`, in % of one core."""
    return [100 * (after - t0) / max(wall_s, 1e-6) for after, t0 in zip(_cpus(pids), before, strict=True)]


async def connect_phase(pool: Clients, servers: list[Server], messages: list[dict]) -> Phase:
    """Each client process opens its count of sockets; the phase runs from the first client's
    start to the last socket open (its handshake answered 101 and its page message written)."""
    phase = Phase(wanted=sum(m["count"] for m in messages))
    server_pids, client_pids = [s.proc.pid for s in servers], pool.pids()
    s0, c0, t0 = _cpus(server_pids), _cpus(client_pids), clock()
    replies = await pool.ask(messages, "connected", within_s=900)
    phase.wall_s = clock() - t0
    phase.server_cpu_pct = _cpu_pct(server_pids, s0, phase.wall_s)
    phase.client_cpu_pct = _cpu_pct(client_pids, c0, phase.wall_s)
    phase.ok_each = [r["ok"] for r in replies]
    phase.started = min(r["started"] for r in replies)
    for r in replies:
        phase.errors.update(r["errors"])
        phase.latencies_ms += r["latencies_ms"]
    lasts = [r["last"] for r in replies if r["last"] is not None]
    if lasts:
        phase.seconds = max(lasts) - phase.started
    return phase


async def check(
    pool: Clients, servers: list[Server], result: Result, at_s: float, product: int | None
) -> Check:
    """Every socket pinged (it must answer), counted open; Candor's presence; the servers' RSS."""
    candor = product is not None
    replies = await pool.ask_all({"op": "status", "ping": True, "ping_timeout": 20}, "status", 60)
    presence = await asyncio.to_thread(presence_count, product) if candor else None
    rss, alive = [], 0
    for n, server in enumerate(servers):
        rss.append(0)
        if server.proc.poll() is None:
            with contextlib.suppress(OSError):
                rss[n] = rss_kb(server.proc.pid)
                result.open_files_max[n] = max(result.open_files_max[n], open_files(server.proc.pid))
                alive += 1
    result.drops = sum((Counter(r["drops"]) for r in replies), Counter())
    result.kinds = sum((Counter(r["kinds"]) for r in replies), Counter())
    result.client_rss_kb = [r["rss_kb"] for r in replies]
    done = Check(
        at_s=at_s,
        open=sum(r["open"] for r in replies),
        pinged=sum(r["pinged"] or 0 for r in replies),
        answered=sum(r["answered"] or 0 for r in replies),
        dropped=result.dropped,
        presence=presence,
        rss_kb=rss,
        alive=alive,
    )
    result.checks.append(done)
    presence_text = f", {presence} in presence" if candor else ""
    print(
        f"[{result.design}] {at_s:4.0f} s: {done.open} open, {done.dropped} dropped, "
        f"{done.answered}/{done.pinged} pings answered{presence_text}, RSS "
        f"{' + '.join(f'{kb / 1024:.0f}' for kb in rss)} MB, {alive}/{len(servers)} servers up",
        flush=True,
    )
    return done


async def run_design(design: str, args: argparse.Namespace, pool: Clients) -> Result:
    result = Result(design)
    candor = design == "candor"
    await asyncio.to_thread(redis_clear)
    if candor:
        env = candor_env(REDIS_URL, DATABASE_URL, extra=args.candor_env)
        root = args.candor_root
        key, _secret = await asyncio.to_thread(candor_prepare, env, root)
        product = await asyncio.to_thread(product_id, key)
        app, path = args.candor_app, f"/ws/v1/widget?key={key}&product={SKU}"
    else:
        env = raw_env()
        app, path, product, root = "bench.raw_app:app", "/ws", None, ROOT
    servers = [Server(app, env, root) for _ in range(args.servers)]
    server_pids = [s.proc.pid for s in servers]
    result.open_files_max = [0] * len(servers)
    interrupted = False
    try:
        await asyncio.gather(*(s.ready() for s in servers))
        run_id = uuid.uuid4().hex[:6]
        base = {
            "op": "connect",
            "targets": [["127.0.0.1", s.port, path] for s in servers],
            "sources": args.source_addresses,
            "origin": ORIGIN,
            "hello": HELLO,
            "deflate": args.deflate,
            "concurrency": args.connect_concurrency,
            "timeout": 30,
        }

        # Warm-up: one socket a server, then closed, so that what a process sets up once
        # (imports, the database connection, Redis pools, threads) is in the RSS before.
        warm = dict(base, ua=f"{UA} sockets-{run_id}-warm", retries=2, batch=-1)
        await pool.ask(
            [dict(warm, count=len(servers) if i == 0 else 0) for i in range(pool.count)], "connected", 60
        )
        await asyncio.sleep(1.0)
        await pool.ask_all({"op": "close", "timeout": 10}, "closed", 30)
        await asyncio.sleep(2.0)
        result.rss_before_kb = [rss_kb(pid) for pid in server_pids]

        # One User-Agent per socket (a client process's prefix and the socket's number): every
        # socket is its own visitor, as identity is IP + User-Agent.
        per_client = [dict(base, ua=f"{UA} sockets-{run_id}-{i}") for i in range(pool.count)]
        print(f"[{design}] {len(servers)} servers up; a burst of {args.burst} connects ...", flush=True)
        result.burst = await connect_phase(
            pool,
            servers,
            [
                dict(m, count=n, retries=0, batch=0)
                for m, n in zip(per_client, _shares(args.burst, pool.count), strict=True)
            ],
        )
        print(
            f"[{design}] burst: {result.burst.ok}/{args.burst} open in {_s(result.burst.seconds)} s, "
            f"{result.burst.failed} errors",
            flush=True,
        )
        if candor and result.burst.ok:
            # Candor answers a visible page with its toasts: the burst's page messages were read
            # and acted on. (The raw app sends nothing.)
            replies = await pool.ask_all({"op": "firsts", "batch": 0, "timeout": 30}, "firsts", 60)
            result.first_message_got = sum(r["got"] for r in replies)
            lasts = [r["last"] for r in replies if r["last"] is not None]
            if lasts and result.first_message_got == sum(r["sockets"] for r in replies):
                result.first_message_s = max(lasts) - result.burst.started
        shares = _shares(args.sockets, pool.count)
        result.ramp = await connect_phase(
            pool,
            servers,
            [
                dict(m, count=max(0, share - ok), retries=2, batch=1)
                for m, share, ok in zip(per_client, shares, result.burst.ok_each, strict=True)
            ],
        )
        print(
            f"[{design}] ramp: {result.opened}/{args.sockets} open after {_s(result.ramp.seconds)} s more, "
            f"{result.ramp.failed} errors (retried)",
            flush=True,
        )

        # The hold: a check every --check-s and one at the end.
        hold_s = args.hold_s if candor else min(args.hold_s, args.raw_hold_s)
        marks = [min(k * args.check_s, hold_s) for k in range(1, math.ceil(hold_s / args.check_s) + 1)]
        cpu0, t0 = _cpus(server_pids), clock()
        for mark in marks:
            await asyncio.sleep(max(0.0, t0 + mark - clock()))
            done = await check(pool, servers, result, clock() - t0, product)
            if not done.alive:
                result.notes.append(f"every server had exited {done.at_s:.0f} s into the hold")
                break
        result.held_s = clock() - t0
        result.hold_cpu_pct = _cpu_pct(server_pids, cpu0, result.held_s)
        return result
    except asyncio.CancelledError:  # Ctrl-C or SIGTERM: no polite goodbyes, just stop
        interrupted = True
        raise
    finally:
        if not interrupted:
            with contextlib.suppress(Exception):
                await pool.ask_all({"op": "close", "timeout": 15}, "closed", 60)
        for server in servers:
            with contextlib.suppress(OSError):
                result.problems.update(server.problems())
            if server.proc.poll() is not None and not interrupted:
                result.notes.append(f"server :{server.port} exited with {server.proc.returncode}")
        for server in servers:
            await server.stop(keep_log=args.keep_logs or bool(result.problems))
        with contextlib.suppress(Exception):
            await asyncio.to_thread(redis_clear)


def _s(seconds: float | None, digits: int = 2) -> str:
    return "-" if seconds is None else f"{seconds:.{digits}f}"


def _pcts(values: list[float]) -> str:
    return "/".join("-" if math.isnan(v) else f"{v:.0f}" for v in values)


def _ratio(value: float | None, ceiling: float | None) -> str:
    return f"{value / ceiling:.2f}" if value is not None and ceiling else "-"


def print_details(results: list[Result]) -> None:
    for r in results:
        print(f"\n{r.design}:")
        before, held = r.rss_before_kb, (r.last.rss_kb if r.last else [])
        rss = ", ".join(f"{b / 1024:.0f} -> {h / 1024:.0f}" for b, h in zip(before, held, strict=False))
        print(f"  RSS per server, MB, before -> end of hold: {rss}; open files at most {r.open_files_max}")
        print(
            f"  server CPU, % of a core: burst {_pcts(r.burst.server_cpu_pct)}, ramp "
            f"{_pcts(r.ramp.server_cpu_pct)}, hold {_pcts(r.hold_cpu_pct)}; client processes: burst "
            f"{_pcts(r.burst.client_cpu_pct)}, ramp {_pcts(r.ramp.client_cpu_pct)}"
        )
        print(
            f"  server CPU per socket opened, ms: burst {_s(r.burst.server_cpu_ms())}, ramp "
            f"{_s(r.ramp.server_cpu_ms())} (the ramp's sockets join a larger crowd)"
        )
        if r.client_rss_kb and r.last and r.last.open:
            per = sum(r.client_rss_kb) / r.last.open
            print(
                f"  client processes' RSS: {' + '.join(f'{kb / 1024:.0f}' for kb in r.client_rss_kb)} MB "
                f"({per:.1f} KB a socket, client side)"
            )
        checks = ", ".join(
            f"{c.at_s:.0f}s {c.answered}/{c.open}" + (f" p{c.presence}" if c.presence is not None else "")
            for c in r.checks
        )
        print(f"  checks (s: pings answered/open, p = in presence): {checks}")
        if r.kinds:
            print(f"  messages received: {dict(r.kinds)}")
        if r.design == "candor":
            got = f"{r.first_message_got}/{r.burst.ok}"
            print(f"  burst sockets with a first message within 30 s: {got}")
        for label, phase in (("burst", r.burst), ("ramp", r.ramp)):
            if phase.errors:
                print(f"  {label} errors: {dict(phase.errors.most_common(4))}")
        if r.drops:
            print(f"  dropped, by how: {dict(r.drops.most_common(5))}")
        for line, n in r.problems.most_common(4):
            print(f"  server log, {n}x: {line}")
        for note in r.notes:
            print(f"  {note}")


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    import uvicorn

    raw = next((r for r in results if r.design == "raw"), None)
    raw_kb = raw.kb_per_socket() if raw else None
    raw_cpu = raw.cpu_ms_per_open() if raw else None
    raw_burst = raw.burst.seconds if raw and raw.burst.failed == 0 else None
    enforced = "" if not args.quick else " (targets not enforced)"
    print()
    print(
        f"Sockets held: N = {args.sockets:,} widget sockets, the first {args.burst:,} in a burst, held "
        f"{args.hold_s:g} s (raw {min(args.hold_s, args.raw_hold_s):g} s), checked every {args.check_s:g} s; "
        f"{args.servers} uvicorn {uvicorn.__version__} processes per design, {args.clients} client "
        f"processes ({args.connect_concurrency} handshakes in flight each), sources "
        f"{args.source_addresses[0]}-{args.source_addresses[-1].rsplit('.', 1)[1]}; "
        f"{os.cpu_count()} CPUs; load average {args.load_before} before, {os.getloadavg()[0]:.2f} after"
        f"{enforced}"
    )
    width = max(len(DESIGNS[r.design]) for r in results)
    header = (
        f"{'design':<{width}} {'open':>6} {'burst s':>7} {'x raw':>6} {'errors':>6} {'p99 ms':>7} "
        f"{'1st msg s':>9} {'ramp s':>7} {'errors':>6} {'dropped':>7} {'answered':>8} "
        f"{'CPU ms/open':>11} {'x raw':>6} {'KB/socket':>9} {'x raw':>6} {'RSS MB':>7} {'CPU% held':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        kb, cpu = r.kb_per_socket(), r.cpu_ms_per_open()
        p99 = r.burst.p(99)
        last = r.last
        total_mb = sum(last.rss_kb) / 1024 if last else None
        print(
            f"{DESIGNS[r.design]:<{width}} {last.open if last else r.opened:>6} {_s(r.burst.seconds):>7} "
            f"{_ratio(r.burst.seconds, raw_burst):>6} {r.burst.failed:>6} {_s(p99, 0):>7} "
            f"{_s(r.first_message_s):>9} {_s(r.ramp.seconds):>7} {r.ramp.failed:>6} {r.dropped:>7} "
            f"{last.answered if last else 0:>8} {_s(cpu, 2):>11} {_ratio(cpu, raw_cpu):>6} "
            f"{_s(kb, 1):>9} {_ratio(kb, raw_kb):>6} "
            f"{_s(total_mb, 0):>7} {_s(sum(r.hold_cpu_pct) if r.hold_cpu_pct else None, 1):>9}"
        )
    print(
        "\nopen/answered/dropped: at the last check. burst s: from the first connect to the last of the "
        "burst's sockets open\n(101 received, page message sent). 1st msg s: from the burst's start until "
        "each of its sockets had a message from\nthe server. CPU ms/open: the servers' CPU time per socket "
        "opened, burst and ramp (less moved by other work on\nthe machine than the times). KB/socket: "
        "(RSS at the end of the hold - RSS before) / sockets, all servers.\nRSS MB: the servers' total at "
        "the end. CPU% held: % of one core, all servers, over the hold."
    )
    candor = next((r for r in results if r.design == "candor"), None)
    if candor is None:
        return
    verdict = (lambda ok: "PASS" if ok else "FAIL") if not args.quick else (lambda ok: "not enforced")
    last = candor.last
    held_ok = bool(
        last
        and candor.opened >= args.sockets
        and last.open >= args.sockets
        and last.answered >= args.sockets
        and candor.dropped == 0
        and candor.held_s >= args.hold_s - 1
        and last.presence == last.open
    )
    presence = last.presence if last else None
    print(
        f"\nTarget, {args.sockets:,} sockets held {args.hold_s:g} s with 0 dropped: {verdict(held_ok)} at "
        f"{candor.dropped} dropped; at the last of {len(candor.checks)} checks ({candor.held_s:.0f} s) "
        f"{last.open if last else 0:,} open, {last.answered if last else 0:,} answering a ping, "
        f"{presence if presence is not None else 0:,} in presence"
    )
    kb = candor.kb_per_socket()
    kb_ok = kb is not None and kb <= TARGET_KB_PER_SOCKET
    raw_text = f" ({_ratio(kb, raw_kb)}x the raw app's {raw_kb:.1f} KB)" if raw_kb else ""
    total = f"{sum(last.rss_kb) / 1024:,.0f} MB over {len(last.rss_kb)} processes" if last else "-"
    print(
        f"Target, server memory <= {TARGET_KB_PER_SOCKET} KB RSS per socket: {verdict(kb_ok)} at "
        f"{_s(kb, 1)} KB{raw_text}; RSS {total}"
    )
    burst = candor.burst
    burst_ok = (
        burst.seconds is not None
        and burst.seconds <= TARGET_BURST_S
        and burst.failed == 0
        and burst.ok == args.burst >= TARGET_BURST
    )
    raw_text = f" ({_ratio(burst.seconds, raw_burst)}x the raw app's {raw_burst:.2f} s)" if raw_burst else ""
    print(
        f"Target, {TARGET_BURST:,} connects within {TARGET_BURST_S:g} s with 0 errors: "
        f"{verdict(burst_ok)} at {args.burst:,} in {_s(burst.seconds)} s, {burst.failed} errors{raw_text}"
    )
    judged = (lambda ok: None) if args.quick else (lambda ok: ok)
    result_print(
        scenario=f"sockets held, {args.sockets:,} for {args.hold_s:g} s",
        figure=f"{candor.dropped} dropped; {last.answered if last else 0:,} of {args.sockets:,} open and "
        f"answering at the end",
        ceiling=f"{raw.dropped} dropped, raw ASGI app" if raw else "-",
        ratio=None,
        target="0 dropped",
        passed=judged(held_ok),
    )
    result_print(
        scenario=f"server memory per socket, {args.sockets:,} sockets",
        figure=f"{_s(kb, 1)} KB RSS",
        ceiling=f"{raw_kb:.1f} KB raw ASGI app" if raw_kb else "-",
        ratio=kb / raw_kb if kb is not None and raw_kb else None,
        target=f"≤ {TARGET_KB_PER_SOCKET} KB",
        passed=judged(kb_ok),
    )
    result_print(
        scenario=f"{args.burst:,} connects in a burst",
        figure=f"{_s(burst.seconds)} s, {burst.failed} errors",
        ceiling=f"{raw_burst:.2f} s raw ASGI app" if raw_burst else "-",
        ratio=burst.seconds / raw_burst if burst.seconds is not None and raw_burst else None,
        target=f"≤ {TARGET_BURST_S:g} s, 0 errors",
        passed=judged(burst_ok),
    )


async def coordinator(args: argparse.Namespace) -> int:
    # SIGTERM and SIGINT (even where SIGINT came ignored, as in a background job) stop the run
    # the same way: the running design is cancelled, then every process it started is stopped.
    main_task = asyncio.current_task()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, main_task.cancel)
    args.load_before = f"{os.getloadavg()[0]:.2f}"  # other work on the box shows up as noise
    started = clock()
    pool = Clients(args.clients)
    results: list[Result] = []
    try:
        await pool.start()
        for design in args.designs:
            print(f"[{design}] {DESIGNS[design]} ...", flush=True)
            results.append(await run_design(design, args, pool))
    finally:
        await pool.stop()
    print_details(results)
    print_table(results, args)
    took = clock() - started
    print(f"\nrun took {int(took // 60)} min {took % 60:.0f} s")
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, help="sockets held per design (N; 25000, --quick 1000)")
    parser.add_argument("--hold-s", type=float, help="seconds Candor holds them (600, --quick 20)")
    parser.add_argument("--burst", type=int, help="connects in the burst (5000, --quick 500)")
    parser.add_argument(
        "--servers", type=int, help=f"uvicorn processes per design (≤ {PER_PROCESS_MAX:,} sockets each)"
    )
    parser.add_argument("--clients", type=int, help=f"client processes (≤ {PER_PROCESS_MAX:,} sockets each)")
    parser.add_argument("--sources", type=int, help="source addresses 127.0.0.2… (one per 5,000 sockets)")
    parser.add_argument("--check-s", type=float, help="seconds between checks (30, --quick 5)")
    parser.add_argument("--raw-hold-s", type=float, help="seconds the raw app holds them (30, --quick 3)")
    parser.add_argument(
        "--connect-concurrency", type=int, default=256, help="handshakes in flight per client"
    )
    parser.add_argument("--designs", default="raw,candor", help=f"comma-separated, of {list(DESIGNS)}")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate, as browsers do")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (kept on problems)")
    parser.add_argument(
        "--candor-app",
        default="config.asgi:application",
        help="the ASGI application to serve as candor (e.g. a variant being tried)",
    )
    parser.add_argument(
        "--candor-root",
        default=str(ROOT),
        help="the checkout whose manage.py and config.asgi to serve as candor (default: this one)",
    )
    parser.add_argument(
        "--candor-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for candor's servers and manage.py (repeatable)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, finishes in < 60 s, no targets")
    args = parser.parse_args(argv)
    args.candor_root = Path(args.candor_root).resolve()
    quick = args.quick
    defaults = {
        "sockets": 1000 if quick else 25000,
        "hold_s": 20.0 if quick else 600.0,
        "burst": 500 if quick else TARGET_BURST,
        "check_s": 5.0 if quick else 30.0,
        "raw_hold_s": 3.0 if quick else 30.0,
    }
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    # Quick mode still uses two of each, so the multi-process paths keep running in CI.
    least = 2 if quick else 1
    args.servers = args.servers or max(least, math.ceil(args.sockets / PER_PROCESS_MAX))
    args.clients = args.clients or max(least, math.ceil(args.sockets / PER_PROCESS_MAX))
    args.sources = args.sources or max(2, math.ceil(args.sockets / 5000))
    args.source_addresses = [f"127.0.0.{2 + i}" for i in range(args.sources)]
    args.designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    if unknown := [d for d in args.designs if d not in DESIGNS]:
        parser.error(f"unknown design(s) {unknown}; choose from {list(DESIGNS)}")
    if not 0 < args.burst <= args.sockets:
        parser.error("--burst must be 1..--sockets")
    if not 0 < args.sources <= 250:
        parser.error("--sources must be 1..250")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    for name in ("servers", "clients"):
        each = math.ceil(args.sockets / getattr(args, name))
        if hard != resource.RLIM_INFINITY and each > hard - 1000:
            parser.error(
                f"{each} sockets per process with --{name} {getattr(args, name)}: the limit is {hard} files"
            )
    return args


def main() -> int:
    args = parse_args(sys.argv[1:])
    lock_or_exit()
    # Children inherit it: every server and client may use the hard limit of open files.
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        return asyncio.run(coordinator(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted; stopping servers and clients", file=sys.stderr)
        return 130
    finally:
        stop_all()
        with contextlib.suppress(Exception):
            redis_clear()


if __name__ == "__main__":
    sys.exit(main())

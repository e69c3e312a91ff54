"""End to end: a signed purchase to the last viewer's screen, at a steady rate, with N viewers.

    python -m bench.e2e [--viewers 1000] [--rate 5] [--seconds 60] [--quick]

N viewers (distinct visitors: each socket its own User-Agent, Origin http://bench.test) hold
visible widget sockets, spread evenly over P products (8 by default). Then a store's server posts
signed purchases (`POST /api/v1/server/events`, each a new order) at a steady rate, round-robin
over the products: at 5/s each product gets one every 1.6 s, outside SPEC 5's 1 s coalescing
interval, so a purchase is normally sent on the leading edge (with 5 products, exactly 1 s apart,
the rounds lock 1 s apart and every purchase waits as long as the worst delay so far). For each
purchase the time runs from just before the request is written to the moment the LAST of that
product's viewers receives the message whose purchases count shows it (an `update` or
`notification` of `purchases_in_window` whose `claim.displayed`, and text, reach the count that
purchase made). p50, p99 and max over all purchases; a purchase not shown on every one of its
product's sockets within 5 s is a failure.

The ceiling, in the same run with the same client processes and the same N sockets over the same
products: `bench/raw_app.py` (a bare ASGI send loop), one process per product holding that
product's viewers, triggered at the same rate by a frame on its control socket; trigger to last
receipt. Everything else (client processes, CLOCK_MONOTONIC times, signing, the site made with
`manage.py candor_site`, 3 old purchases so every page shows a count) is the harness's
(bench/harness/). bench/README.md, "End to end", explains the choices.
"""

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import json
import math
import os
import resource
import signal
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field

from bench.e2e_report import FAIL_AFTER_S, INTERVAL_S, print_report, probe_report, verdicts
from bench.harness.candor import (
    ORIGIN,
    SEED_PURCHASES,
    UA,
    candor_prepare,
    database_url,
    manage,
    products_add,
)
from bench.harness.clients import ClientPool, ClientWorker, http_status, json_line, signed_post
from bench.harness.clients import drain as socket_drain
from bench.harness.processes import clock, cpu_s, machine_busy_s, stop_all
from bench.harness.product import LEDGER_ORIGIN
from bench.harness.redis import ChangeWatcher, redis_url
from bench.harness.redis import redis_clear as _redis_clear
from bench.harness.servers import Server as _Server
from bench.harness.servers import candor_env

# This scenario's own Redis database and PostgreSQL database.
REDIS_URL = redis_url(9)
DATABASE_URL = database_url("candor_bench_e2e")

SEED = SEED_PURCHASES  # old purchases per product: every page shows "Ordered 3 times …"
KIND = "purchases_in_window"
# The default policy shows "50+" above 50 purchases in the window, after which a purchase no
# longer changes any page. The bench site's policy is the shipped default with that cap raised,
# so every purchase of a 60 s run shows (bench/README.md, "End to end").
PURCHASES_CAP = 1_000_000


# ======================================================================================
# Client process: holds its share of the sockets and records, per (product, count), when each
# socket first showed it.
# ======================================================================================
class E2EWorker(ClientWorker):
    def __init__(self, writer: asyncio.StreamWriter, index: int) -> None:
        super().__init__(writer)
        self.index = index
        self._phase_reset()

    def _phase_reset(self) -> None:
        self.product: list[int] = []  # socket -> product index
        self.level: list[int] = []  # socket -> highest purchases count it has shown
        self.mode = "candor"
        self._stats_reset()

    def _stats_reset(self) -> None:
        # "p:L" (candor: product p's count reached L) or "r:k" (raw: trigger k) -> [n, first, last]
        self.agg: dict[str, list] = {}
        self.kinds: Counter[str] = Counter()
        self.odd: Counter[str] = Counter()  # anything a viewer should not have seen

    def _hit(self, key: str, t: float) -> None:
        entry = self.agg.get(key)
        if entry is None:
            self.agg[key] = [1, t, t]
        else:
            entry[0] += 1
            entry[1] = min(entry[1], t)
            entry[2] = max(entry[2], t)

    async def _read(self, j: int, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in ws:
                t = clock()
                message = json.loads(raw)
                if self.mode == "raw":
                    # The raw ceiling's id is "bench-<16 digits>" (payload.py): the digits are
                    # the trigger's number, the `round` its control frame carried.
                    digits = str(message.get("id", "")).removeprefix("bench-")
                    if digits.isdigit():
                        self._hit(f"r:{int(digits)}", t)
                    continue
                claim = message.get("claim") or {}
                kind = self._track(j, message, claim)
                kind_type = message.get("type")
                self.kinds[f"{kind_type} {kind}"] += 1
                if kind != KIND or kind_type not in ("update", "notification"):
                    continue
                displayed = str(claim.get("displayed", ""))
                if not displayed.rstrip("+").isdigit():
                    self.odd[f"unreadable displayed {displayed!r}"] += 1
                    continue
                if displayed.endswith("+"):
                    self.odd["a capped count (the cap hides purchases)"] += 1
                if displayed.rstrip("+") not in message.get("text", ""):
                    self.odd["text does not show claim.displayed"] += 1
                value = int(displayed.rstrip("+"))
                before = self.level[j]
                if value < before:
                    self.odd["the count went down"] += 1
                # One message may show several purchases (coalesced): each is reflected by it.
                for reached in range(before + 1, value + 1):
                    self._hit(f"{self.product[j]}:{reached}", t)
                self.level[j] = max(before, value)
        except ConnectionClosed:
            pass
        finally:
            self.closed += 1

    async def connect(self, cmd: dict) -> None:
        from websockets.asyncio.client import connect

        self.mode = cmd["mode"]
        gate = asyncio.Semaphore(cmd["concurrency"])
        headers = {"Origin": ORIGIN}
        errors: Counter[str] = Counter()
        products, servers = cmd["products"], len(cmd["urls"])

        async def one(i: int):
            p = i % products
            url = cmd["urls"][(i // products) % servers][p]
            async with gate:
                for attempt in range(4):
                    try:
                        ws = await connect(
                            url,
                            additional_headers=headers,
                            user_agent_header=f"{UA} e2e/{cmd['run']}/{i}",
                            compression=None,
                            ping_interval=None,
                            open_timeout=60,
                            close_timeout=2,
                            max_queue=None,
                            proxy=None,
                            local_addr=(cmd["source"], 0),
                        )
                    except Exception as exc:  # counted and reported, then retried
                        errors[type(exc).__name__ + ": " + str(exc)[:80]] += 1
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    if cmd["hellos"]:
                        await ws.send(cmd["hellos"][p])
                    return p, ws
            return p, None

        results = await asyncio.gather(*(one(cmd["first"] + j) for j in range(cmd["count"])))
        per_product: Counter[int] = Counter()
        for p, ws in results:
            if ws is None:
                continue
            j = len(self.sockets)
            self.sockets.append(ws)
            self.shown.append({})
            self.ids.append({})
            self.seen.append(-1)
            self.product.append(p)
            self.level.append(0)
            per_product[p] += 1
            self.readers.append(asyncio.get_running_loop().create_task(self._read(j, ws)))
        gc.collect()
        gc.freeze()  # the sockets live for the whole phase: keep them out of the collector's scans
        self.emit(
            {
                "op": "connected",
                "ok": len(self.sockets),
                "per_product": {str(p): n for p, n in per_product.items()},
                "errors": errors.most_common(3),
            }
        )

    def _states(self) -> Counter:
        return Counter(
            f"{KIND}={shown.get(KIND)} viewing_now={'shown' if 'viewing_now' in shown else 'no'}"
            for shown in self.shown
        )

    async def settle(self, cmd: dict) -> None:
        """Until every socket shows the count `displayed` and a viewing_now toast (then its page has
        its two toasts, and a new kind, "Someone bought this just now", stays capped)."""
        deadline = clock() + cmd["timeout"]
        want = cmd["displayed"]
        while clock() < deadline:
            if all(s.get(KIND) == want and "viewing_now" in s for s in self.shown):
                break
            await asyncio.sleep(0.05)
        self.emit({"op": "settled", "values": self._states()})

    async def check(self, cmd: dict) -> None:
        """What each socket shows now, against what each product's purchases should have made."""
        expected = cmd["displayed"]  # product index (str) -> displayed
        good = sum(1 for j, s in enumerate(self.shown) if s.get(KIND) == expected[str(self.product[j])])
        self.emit({"op": "checked", "good": good, "values": self._states()})

    async def close(self) -> None:
        await super().close()
        self._phase_reset()

    async def serve(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "connect":
                await self.connect(cmd)
            elif op == "settle":
                await self.settle(cmd)
            elif op == "check":
                await self.check(cmd)
            elif op == "reset":
                self._stats_reset()
                self.emit({"op": "reset"})
            elif op == "report":
                self.emit(
                    {
                        "op": "report",
                        "agg": self.agg,
                        "kinds": self.kinds,
                        "odd": self.odd,
                        "closed": self.closed,
                    }
                )
            elif op == "close":
                await self.close()
            elif op == "exit":
                break
            await self.writer.drain()


async def client_main(port: int, index: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(json_line({"op": "hello", "index": index}))
    await writer.drain()
    await E2EWorker(writer, index).serve(reader)
    os._exit(0)  # the coordinator is done: no polite close of every socket


# ======================================================================================
# Coordinator
# ======================================================================================
class Pool(ClientPool):
    """The harness's pool of client processes, running this file's worker."""

    def __init__(self, count: int) -> None:
        super().__init__(count, ("-m", "bench.e2e", "--_client"))


class Server(_Server):
    """The harness's uvicorn server, the same flags, its log named for this scenario."""

    def __init__(self, app: str, env: dict[str, str]) -> None:
        super().__init__(app, env, log_prefix="bench-e2e-uvicorn-")


def redis_clear() -> int:
    """Delete only `candor:*` keys in the bench's Redis database (db 9)."""
    return _redis_clear(REDIS_URL)


class CpuUse:
    """CPU used from now until `done()`: the servers, the client processes, and the whole machine
    (what is left over is other work on the box, the coordinator included)."""

    def __init__(self, pool: "Pool", servers: list) -> None:
        self.servers = [s.proc.pid for s in servers]
        self.clients = [c.proc.pid for c in pool.clients]
        self.start = clock()
        self.before = (
            [cpu_s(p) for p in self.servers],
            [cpu_s(p) for p in self.clients],
            machine_busy_s(),
        )

    def done(self) -> str:
        wall = clock() - self.start
        servers = sum(cpu_s(p) for p in self.servers) - sum(self.before[0])
        clients = sum(cpu_s(p) for p in self.clients) - sum(self.before[1])
        busy, total = machine_busy_s()
        machine_busy = busy - self.before[2][0]
        cores = (total - self.before[2][1]) / wall if wall else 0
        rest = machine_busy - servers - clients
        return (
            f"CPU while the triggers were sent ({wall:.0f} s, {cores:.1f} cores): server process(es) "
            f"{servers / wall:.0%} of a core, {len(self.clients)} client processes {clients / wall:.0%}, "
            f"everything else on the machine {rest / wall:.0%}"
        )


@dataclass
class Trigger:
    """One purchase (or one raw broadcast): what it should show and when it was sent."""

    k: int
    product: int
    level: int  # candor: the count of purchases its viewers should see
    t0: float = 0.0
    answered: float | None = None
    status: str = ""
    published: float | None = None
    first: float | None = None
    last: float | None = None
    reached: int = 0
    hold: float | None = None  # the modelled coalescing wait (coalescing_holds)

    @property
    def key(self) -> str:
        return f"{self.product}:{self.level}" if self.level else f"r:{self.k}"


@dataclass
class Phase:
    name: str
    triggers: list[Trigger] = field(default_factory=list)
    viewers: dict[int, int] = field(default_factory=dict)  # product -> sockets held
    kinds: Counter = field(default_factory=Counter)
    odd: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    setup_s: float = 0.0
    product_ids: list[int] = field(default_factory=list)  # candor: product index -> database id
    cpu: str = ""  # CPU used while the triggers were sent (CpuUse)

    def latencies(self, attr: str = "last", since: str = "t0") -> list[float]:
        out = []
        for t in self.triggers:
            end, start = getattr(t, attr), getattr(t, since)
            if t.reached >= self.viewers.get(t.product, 0) and end is not None and start is not None:
                out.append((end - start) * 1000)
        return out

    @property
    def ok(self) -> list[Trigger]:
        return [
            t
            for t in self.triggers
            if t.reached >= self.viewers.get(t.product, 0)
            and t.last is not None
            and (t.last - t.t0) <= FAIL_AFTER_S
        ]

    @property
    def failed(self) -> list[Trigger]:
        ok = {id(t) for t in self.ok}
        return [t for t in self.triggers if id(t) not in ok]


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


async def connect_all(pool: Pool, args, urls: list[list[str]], mode: str, hellos: list[str] | None) -> Phase:
    phase = Phase(mode)
    shares = _shares(args.viewers, pool.count)
    firsts = [sum(shares[:i]) for i in range(pool.count)]
    replies = await pool.ask(
        [
            {
                "op": "connect",
                "mode": mode,
                "urls": urls,
                "products": args.products,
                "count": shares[i],
                "first": firsts[i],
                "hellos": hellos,
                "run": args.run_id,
                # Each client process its own source address: N sockets never run short of ports.
                "source": f"127.0.0.{10 + i}",
                "concurrency": args.connect_concurrency,
            }
            for i in range(pool.count)
        ],
        "connected",
        within_s=600,
    )
    for reply in replies:
        for p, n in reply["per_product"].items():
            phase.viewers[int(p)] = phase.viewers.get(int(p), 0) + n
    connected = sum(r["ok"] for r in replies)
    if connected < args.viewers:
        errors = [e for r in replies for e in r["errors"]]
        phase.notes.append(f"only {connected}/{args.viewers} sockets connected; errors: {errors[:3]}")
    return phase


async def collect(pool: Pool, phase: Phase, deadline: float) -> None:
    """Ask every client what it saw until every trigger reached all its product's sockets, or
    until `deadline`; then fill each trigger's first/last receipt and count."""
    while True:
        replies = await pool.ask_all({"op": "report"}, "report", 60)
        merged: dict[str, list] = {}
        for reply in replies:
            for key, (n, first, last) in reply["agg"].items():
                entry = merged.setdefault(key, [0, math.inf, 0.0])
                entry[0] += n
                entry[1] = min(entry[1], first)
                entry[2] = max(entry[2], last)
        done = all(merged.get(t.key, [0])[0] >= phase.viewers.get(t.product, 0) for t in phase.triggers)
        if done or clock() >= deadline:
            break
        await asyncio.sleep(0.25)
    for t in phase.triggers:
        n, first, last = merged.get(t.key, [0, None, None])
        t.reached, t.first, t.last = n, first, last
    phase.kinds = sum((Counter(r["kinds"]) for r in replies), Counter())
    phase.odd = sum((Counter(r["odd"]) for r in replies), Counter())
    closed = sum(r["closed"] for r in replies)
    if closed:
        phase.notes.append(f"{closed} sockets closed during the phase")


async def paced(args, fire) -> float:
    """Call `fire(k)` at k / rate seconds from now, for `seconds`; returns the last send's time."""
    start = clock() + 0.05
    total = int(args.rate * args.seconds)
    tasks = []
    for k in range(total):
        await asyncio.sleep(max(0.0, start + k / args.rate - clock()))
        tasks.append(asyncio.get_running_loop().create_task(fire(k)))
    await asyncio.gather(*tasks)
    return clock()


# --- the ceiling -------------------------------------------------------------------------
async def run_raw(pool: Pool, args) -> Phase:
    from websockets.asyncio.client import connect

    started = clock()
    redis_clear()
    servers = [Server("bench.raw_app:app", dict(os.environ)) for _ in range(args.products)]
    ctrls: list = []
    drains: list[asyncio.Task] = []
    interrupted = False
    phase = Phase("raw")
    try:
        for server in servers:
            await server.ready()
        # One raw_app process per product, holding that product's viewers: a trigger reaches the
        # sockets a purchase of that product reaches (raw_app broadcasts to all its listeners).
        urls = [[server.url("/ws") for server in servers]]
        phase = await connect_all(pool, args, urls, "raw", None)
        if phase.notes:
            return phase
        for server in servers:
            ctrl = await connect(server.url("/ctrl"), compression=None, ping_interval=None, proxy=None)
            ctrls.append(ctrl)
            drains.append(asyncio.get_running_loop().create_task(socket_drain(ctrl)))
        await pool.ask_all({"op": "reset"}, "reset", 30)
        phase.setup_s = clock() - started
        phase.triggers = [Trigger(k, k % args.products, 0) for k in range(int(args.rate * args.seconds))]

        async def fire(k: int) -> None:
            trigger = phase.triggers[k]
            frame = json.dumps({"round": k})
            trigger.t0 = clock()
            await ctrls[trigger.product].send(frame)

        usage = CpuUse(pool, servers)
        last_sent = await paced(args, fire)
        phase.cpu = usage.done()
        await collect(pool, phase, last_sent + FAIL_AFTER_S + 0.5)
        return phase
    except asyncio.CancelledError:
        interrupted = True
        raise
    finally:
        for task in drains:
            task.cancel()
        for ctrl in ctrls:
            with contextlib.suppress(Exception):
                await ctrl.close()
        if not interrupted:
            with contextlib.suppress(Exception):
                await pool.ask_all({"op": "close"}, "closed", 120)
        for server in servers:
            await server.stop(keep_log=args.keep_logs)


# --- Candor ------------------------------------------------------------------------------
POLICY_CODE = """
import json
from notifications.models import PolicyConfig, SegmentConfig, Site
site = Site.objects.get(public_key={key!r})
policy = PolicyConfig.objects.create(site=site, name="bench-e2e", cap_purchases_in_window={cap})
SegmentConfig.objects.create(site=site, name="Everyone (bench)", is_default=True, policy=policy)
from notifications.models import Product
print(json.dumps({{p.sku: p.id for p in Product.objects.filter(site=site)}}))
"""


def e2e_prepare(env: dict[str, str], skus: list[str]) -> tuple[str, str, dict[str, int]]:
    """The harness's set-up (database, migrations, a site through `candor_site create`), then this
    scenario's products through `candor_site products` and the site's policy: the shipped
    default's settings (PolicyConfig's defaults) with the purchases cap raised."""
    key, secret = candor_prepare(env)
    catalog = [
        {
            "sku": sku,
            "name": f"E2E product {sku}",
            "url": f"{ORIGIN}/product/{sku}/",
            "category": "Bench",
            "category_kind": "other",
        }
        for sku in skus
    ]
    products_add(env, key, catalog)
    out = manage(env, "shell", "-c", POLICY_CODE.format(cap=PURCHASES_CAP, key=key))
    ids = json.loads(out.strip().splitlines()[-1])
    return key, secret, {sku: ids[sku] for sku in skus}


def _purchase(run_id: str, n: str, sku: str, *, age_s: int = 0) -> dict:
    occurred_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
    return {
        "type": "purchase",
        "event_id": f"e2e-{run_id}-p{n}",
        "order_id": f"e2e-{run_id}-{n}",
        "occurred_at": occurred_at.isoformat(),
        "items": [{"product": sku, "quantity": 1}],
    }


async def _post(port: int, request: bytes, trigger: Trigger | None = None) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    if trigger is not None:
        trigger.t0 = clock()  # just before the request is written
    writer.write(request)
    status = await http_status(reader, writer)
    if trigger is not None:
        trigger.answered = clock()
        trigger.status = status
    return status


async def run_candor(pool: Pool, args) -> Phase:
    started = clock()
    redis_clear()
    env = candor_env(REDIS_URL, DATABASE_URL, extra=args.candor_env)
    skus = [f"E2E-{i + 1}" for i in range(args.products)]
    key, secret, ids = await asyncio.to_thread(e2e_prepare, env, skus)
    app = "config.asgi:application"
    args.probe_logs = []
    if args.probe:
        app = "bench.e2e_probe:application"
    if args.profile:
        app = "bench.e2e_profile:application"  # the probe's too, with --probe
    args.profiles = []
    servers = []
    for s in range(args.servers):
        server_env = dict(env)
        if args.probe:
            args.probe_logs.append(tempfile.mkstemp(prefix="bench-e2e-probe-", suffix=".jsonl")[1])
            server_env["BENCH_E2E_PROBE_LOG"] = args.probe_logs[-1]
        if args.profile:
            args.profiles.append(args.profile if args.servers == 1 else f"{args.profile}.{s}")
            server_env["BENCH_E2E_PROFILE"] = args.profiles[-1]
        servers.append(Server(app, server_env))
    watcher: ChangeWatcher | None = None
    interrupted = False
    phase = Phase("candor")
    try:
        for server in servers:
            await server.ready()
        # 3 verified purchases two hours old on every product: every page gets "Ordered 3 times
        # in the last 24 hours" (and no "Someone bought this N minutes ago").
        for p, sku in enumerate(skus):
            for n in range(SEED):
                status = await _post(
                    servers[0].port,
                    signed_post(key, secret, _purchase(args.run_id, f"s{p}-{n}", sku, age_s=7200)),
                )
                if " 202 " not in status + " ":
                    phase.notes.append(f"seeding a purchase answered {status!r}")
                    return phase
        urls = [[server.url(f"/ws/v1/widget?key={key}&product={sku}") for sku in skus] for server in servers]
        # What the widget sends when its page is visible (its context: the browser's language).
        hellos = [
            json.dumps({"type": "page", "product": sku, "visible": True, "context": {"locale": "en-US"}})
            for sku in skus
        ]
        phase = await connect_all(pool, args, urls, "candor", hellos)
        if phase.notes:
            return phase
        # Every page gets its two toasts: "20+ other people are viewing this" and the count (the
        # policy's 15 s between new toasts applies), then the count is "3" everywhere.
        replies = await pool.ask_all(
            {"op": "settle", "displayed": str(SEED), "timeout": args.settle_timeout},
            "settled",
            args.settle_timeout + 30,
        )
        values = sum((Counter(r["values"]) for r in replies), Counter())
        steady = f"{KIND}={SEED} viewing_now=shown"
        if values != Counter({steady: args.viewers}):
            phase.notes.append(
                f"initial toasts: not every socket shows {steady!r} after {args.settle_timeout:g} s: "
                f"{dict(values)}"
            )
            return phase
        await asyncio.sleep(INTERVAL_S + 0.5)  # the last set-up round's interval passes
        await pool.ask_all({"op": "reset"}, "reset", 30)
        watcher = ChangeWatcher(REDIS_URL)
        await watcher.start()
        phase.setup_s = clock() - started
        bought: Counter[int] = Counter()
        total = int(args.rate * args.seconds)
        for k in range(total):
            p = k % args.products
            bought[p] += 1
            phase.triggers.append(Trigger(k, p, SEED + bought[p]))
        requests = [
            signed_post(key, secret, _purchase(args.run_id, str(k), skus[t.product]))
            for k, t in enumerate(phase.triggers)
        ]  # signed ahead: the clock starts at the write, as it would in a store's backend

        async def fire(k: int) -> None:
            await _post(servers[k % len(servers)].port, requests[k], phase.triggers[k])

        if args.profile:
            for server in servers:
                os.kill(server.proc.pid, signal.SIGUSR1)  # bench/e2e_profile.py: start
        usage = CpuUse(pool, servers)
        last_sent = await paced(args, fire)
        phase.cpu = usage.done()
        await collect(pool, phase, last_sent + FAIL_AFTER_S + 0.5)
        if args.profile:
            for server, path in zip(servers, args.profiles, strict=True):
                os.kill(server.proc.pid, signal.SIGUSR2)  # stop, write the report
                for _ in range(300):
                    if await asyncio.to_thread(os.path.exists, path + ".brief.txt"):
                        break
                    await asyncio.sleep(0.1)
        for t in phase.triggers:
            t.published = watcher.first_after(t.t0, f"{LEDGER_ORIGIN}:{ids[skus[t.product]]}")
        phase.product_ids = [ids[sku] for sku in skus]
        bad = [t for t in phase.triggers if " 202 " not in t.status + " "]
        if bad:
            phase.notes.append(f"{len(bad)} purchases not answered 202, e.g. {bad[0].status!r}")
        # After the run, every page shows its product's final count.
        final = {str(p): str(SEED + bought[p]) for p in range(args.products)}
        replies = await pool.ask_all({"op": "check", "displayed": final}, "checked", 60)
        good = sum(r["good"] for r in replies)
        if good != sum(phase.viewers.values()):
            values = sum((Counter(r["values"]) for r in replies), Counter())
            phase.notes.append(
                f"after the run {good}/{args.viewers} sockets show their final count: "
                f"{dict(values.most_common(5))}"
            )
        return phase
    except asyncio.CancelledError:
        interrupted = True
        raise
    finally:
        if watcher is not None:
            await watcher.stop()
        if not interrupted:
            with contextlib.suppress(Exception):
                await pool.ask_all({"op": "close"}, "closed", 120)
        for server in servers:
            await server.stop(keep_log=args.keep_logs or (not phase.triggers and not interrupted))
        redis_clear()


async def coordinator(args) -> int:
    main_task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    args.load_before = f"{os.getloadavg()[0]:.2f}"
    pool = Pool(args.clients)
    raw = candor = None
    try:
        await pool.start()
        if not args.no_ceiling:
            print(f"[raw] {args.products} raw_app processes, {args.viewers} sockets ...", flush=True)
            raw = await run_raw(pool, args)
            print(
                f"[raw] {len(raw.ok)}/{len(raw.triggers)} triggers reached every viewer "
                f"{'; '.join(raw.notes)}",
                flush=True,
            )
        print(f"[candor] {args.servers} server process(es), {args.viewers} sockets ...", flush=True)
        candor = await run_candor(pool, args)
        print(
            f"[candor] {len(candor.ok)}/{len(candor.triggers)} purchases reached every viewer "
            f"{'; '.join(candor.notes)}",
            flush=True,
        )
    finally:
        await pool.stop()
    print_report(args, raw, candor)
    if args.probe and candor:
        probe_report(args, candor)
    verdicts(args, raw, candor)
    for path in getattr(args, "profiles", []):
        print(f"\nprofile of a Candor server while purchases were posted (pyinstrument): {path}")
        print(f"  (and {path}.brief.txt, library frames folded; the event loop's thread only)")
    return 0 if candor and candor.latencies() else 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=1000, help="N: viewers (sockets, distinct visitors)")
    parser.add_argument("--rate", type=float, default=5.0, help="purchases per second, over all products")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long purchases are posted")
    parser.add_argument(
        "--products",
        type=int,
        default=8,
        help="products the viewers are spread over; purchases go round-robin, so each product gets one every "
        "products / rate seconds (8 at 5/s: 1.6 s, outside the 1 s coalescing interval; bench/README.md)",
    )
    parser.add_argument("--quick", action="store_true", help="small and fast; targets not enforced")
    parser.add_argument(
        "--servers", type=int, default=0, help="Candor server processes (default: as open files need)"
    )
    parser.add_argument(
        "--clients", type=int, default=0, help="client processes (default: one per 2,500 viewers, at least 2)"
    )
    parser.add_argument("--no-ceiling", action="store_true", help="skip the raw ASGI phase")
    parser.add_argument("--settle-timeout", type=float, default=90.0)
    parser.add_argument("--connect-concurrency", type=int, default=64, help="handshakes in flight per client")
    parser.add_argument("--candor-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="profile the Candor server's event loop with pyinstrument while purchases are posted "
        "(bench/e2e_profile.py); text report to FILE",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="serve Candor through bench/e2e_probe.py: each purchase's actual coalescing hold and its cause",
    )
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        explicit = {a.split("=")[0] for a in argv}
        if "--viewers" not in explicit:
            args.viewers = 100
        if "--seconds" not in explicit:
            args.seconds = 6.0
    if args.viewers < 4 * args.products:
        parser.error("at least 4 viewers per product: each page must see 3 others to show its two toasts")
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if not args.servers:
        # One socket is one open file; keep each server under 80 % of the limit.
        args.servers = max(1, math.ceil((args.viewers + 500) / (0.8 * limit)))
    if not args.clients:
        args.clients = max(2, math.ceil(args.viewers / 2500))
    args.run_id = uuid.uuid4().hex[:8]
    return args


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--_client":
        asyncio.run(client_main(int(sys.argv[2]), int(sys.argv[3])))
        return 0
    args = parse_args(sys.argv[1:])
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

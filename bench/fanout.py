"""Fan-out of one update to N websockets, several designs measured in one run.

    python -m bench.fanout [--sockets 3000] [--rounds 6]

Designs, each served by its own uvicorn process (same flags) while the same client processes
hold the N sockets:

  raw     bench/raw_app.py: a bare ASGI app loops `await send(...)` over its sockets (the ceiling)
  candor  config.asgi:application with Redis and PostgreSQL: presence, one PUBLISH on
          `candor:v1:changes`, the hub's round (presence read, policy, one log row, sends)
  pubsub  bench/group_app.py: Channels consumers in one group, `group_send` on
          RedisPubSubChannelLayer
  core    the same on RedisChannelLayer (channels-redis's default layer)

A round: every client process is armed, the coordinator takes the trigger time and sends the
trigger, each client process records when each of its sockets received its first message of
the round and reports its last; the round's latency is the last receipt over all N minus the
trigger time. The trigger is a control-socket frame for raw/pubsub/core. For candor it must
change the text on every one of the N pages, which one more viewer cannot do once the count
shows "20+": by default it is a signed purchase (the count of purchases every page shows goes
up), then its refund (down again), through `POST /api/v1/server/events`; after each round
every socket is checked to show the new value. Why, and the alternative: bench/README.md.
"""

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import statistics
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from bench.harness import ROOT
from bench.harness.candor import ORIGIN, SEED_PURCHASES, SKU, UA, candor_prepare, database_url
from bench.harness.clients import ClientPool, client_main, http_status, signed_post
from bench.harness.clients import drain as socket_drain
from bench.harness.processes import clock, stop_all
from bench.harness.product import CHANGES_CHANNEL, MIN_COUNT, UPDATE_INTERVAL_MS, VIEWING_CAP
from bench.harness.redis import ChangeWatcher, redis_url
from bench.harness.redis import redis_clear as _redis_clear
from bench.harness.servers import Server, candor_env, raw_env
from bench.result import result_print

REDIS_URL = redis_url(12)
DATABASE_URL = database_url("candor_bench")

DESIGNS = {
    "raw": "raw ASGI app, in-process send loop (ceiling)",
    "candor": "Candor hub: config.asgi, Redis PUBLISH, local sends",
    "pubsub": "Channels group_send, RedisPubSubChannelLayer",
    "core": "Channels group_send, RedisChannelLayer",
}


def redis_clear() -> int:
    """Delete only `candor:*` keys in the bench's Redis database (db 12)."""
    return _redis_clear(REDIS_URL)


def _shown(true_value: int) -> str:
    return f"{VIEWING_CAP}+" if true_value > VIEWING_CAP else str(true_value)


@dataclass
class Result:
    design: str
    last_ms: list[float] = field(default_factory=list)
    first_ms: list[float] = field(default_factory=list)
    from_publish_ms: list[float] = field(default_factory=list)
    rounds: int = 0
    setup_s: float = 0.0
    notes: list[str] = field(default_factory=list)


def _order(run_id: str, n: int, *, refund: bool = False, age_s: int = 0) -> dict:
    occurred_at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
    payload = {
        "type": "refund" if refund else "purchase",
        "event_id": f"bench-{run_id}-{'r' if refund else 'p'}{n}",
        "occurred_at": occurred_at.isoformat(),
        "order_id": f"bench-{run_id}-{n}",
    }
    if not refund:
        payload["items"] = [{"product": SKU, "quantity": 1}]
    return payload


async def run_design(design: str, args: argparse.Namespace, pool: ClientPool) -> Result:
    from websockets.asyncio.client import connect

    result = Result(design)
    started = clock()
    redis_clear()
    candor = design == "candor"
    by_purchase = candor and args.candor_trigger == "purchase"
    hello = None
    visitors = 0  # every socket its own User-Agent: its own visitor
    key = secret = ""
    run_id = uuid.uuid4().hex[:8]
    if design == "raw":
        server = Server("bench.raw_app:app", dict(os.environ))
        listen_path = "/ws"
    elif design in ("pubsub", "core"):
        env = raw_env()
        env.update(BENCH_LAYER=design, BENCH_REDIS_URL=REDIS_URL)
        server = Server("bench.group_app:application", env)
        listen_path = "/ws"
    else:
        env = candor_env(REDIS_URL, DATABASE_URL, extra=args.candor_env)
        root = args.candor_root
        if root != ROOT:  # another checkout's code; bench/ modules (the probe) still from here
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))
        key, secret = await asyncio.to_thread(candor_prepare, env, root)
        app = args.candor_app
        if args.probe:
            app = "bench.candor_probe:application"
            env["BENCH_PROBE_LOG"] = args.probe_log = tempfile.mkstemp(
                prefix="bench-probe-", suffix=".jsonl"
            )[1]
        server = Server(app, env, root)
        listen_path = f"/ws/v1/widget?key={key}&product={SKU}"
        hello = json.dumps({"type": "page", "product": SKU, "visible": True})
        if not by_purchase:
            visitors = args.visitors
    ctrl = drain = watcher = None
    interrupted = False
    try:
        await server.ready()
        if by_purchase:
            # Verified purchases two hours old: a count every page shows ("3 … in the last 24
            # hours"), no "bought N minutes ago" yet.
            for n in range(SEED_PURCHASES):
                request = signed_post(key, secret, _order(run_id, 1000 + n, age_s=7200))
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(request)
                status = await http_status(reader, writer)
                if " 202 " not in status + " ":
                    result.notes.append(f"seeding a purchase answered {status!r}")
                    return result
        shares = [args.sockets // pool.count + (i < args.sockets % pool.count) for i in range(pool.count)]
        firsts = [sum(shares[:i]) for i in range(pool.count)]
        replies = await pool.ask(
            [
                {
                    "op": "connect",
                    "url": server.url(listen_path),
                    "count": shares[i],
                    "first": firsts[i],
                    "visitors": visitors,
                    "hello": hello,
                    "concurrency": args.connect_concurrency,
                    "deflate": args.deflate,
                }
                for i in range(pool.count)
            ],
            "connected",
            within_s=240,
        )
        connected = sum(r["ok"] for r in replies)
        errors = [e for r in replies for e in r["errors"]]
        if connected < args.sockets:
            result.notes.append(f"only {connected}/{args.sockets} sockets connected; errors: {errors[:3]}")
            return result

        def expectation(round_no: int) -> tuple[str, str]:
            """What every listener must show after a round (before the first: round -1)."""
            up = round_no % 2 == 0
            if by_purchase:
                return "purchases_in_window", str(SEED_PURCHASES + 1 if up else SEED_PURCHASES)
            return "viewing_now", _shown(visitors if up else visitors - 1)

        async def everyone_shows(kind: str, displayed: str, within_s: float) -> Counter:
            message = {"op": "settle", "kind": kind, "displayed": displayed, "timeout": within_s}
            replies = await pool.ask_all(message, "settled", within_s + 10)
            return sum((Counter(r["values"]) for r in replies), Counter())

        if candor:
            # The initial burst: every listener gets its toasts and ends on the steady value;
            # then the coalescing interval passes before the first round.
            kind, steady = expectation(-1)
            values = await everyone_shows(kind, steady, args.settle_timeout)
            if values != Counter({steady: args.sockets}):
                result.notes.append(
                    f"initial burst: {kind} is not {steady!r} on every socket after "
                    f"{args.settle_timeout:g} s: {dict(values)} (bench/README.md, 'The trigger')"
                )
                return result
            await asyncio.sleep(1.5)
            watcher = ChangeWatcher(REDIS_URL)
            await watcher.start()
        if not by_purchase:
            ctrl_path, ctrl_headers, ctrl_ua = "/ctrl", {}, UA
            if candor:  # one more visitor on the product page: the trigger
                ctrl_path, ctrl_headers, ctrl_ua = listen_path, {"Origin": ORIGIN}, f"{UA} bench/trigger"
            ctrl = await connect(
                server.url(ctrl_path),
                additional_headers=ctrl_headers,
                user_agent_header=ctrl_ua,
                compression=None,
                ping_interval=None,
                proxy=None,
            )
            drain = asyncio.get_running_loop().create_task(socket_drain(ctrl))
        result.setup_s = clock() - started

        interval_s = UPDATE_INTERVAL_MS / 1000  # leading-edge coalescing per product
        next_at = clock()
        for round_no in range(args.warmup + args.rounds):
            await asyncio.sleep(max(0.0, next_at - clock()))
            await pool.ask_all({"op": "arm", "round": round_no}, "armed", 10)
            answer = None
            if by_purchase:
                # A verified purchase lands (the count goes up), then its refund (down again).
                request = signed_post(key, secret, _order(run_id, round_no // 2, refund=round_no % 2 == 1))
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                t0 = clock()
                writer.write(request)
                answer = asyncio.get_running_loop().create_task(http_status(reader, writer))
            elif candor:
                # The extra visitor's page turns visible (the count goes up), then hidden.
                trigger = json.dumps({"type": "page", "product": SKU, "visible": round_no % 2 == 0})
                t0 = clock()
                await ctrl.send(trigger)
            else:
                trigger = json.dumps({"round": round_no})
                t0 = clock()
                await ctrl.send(trigger)
            reports = await pool.collect(round_no, args.round_timeout)
            got = sum(r["got"] for r in reports)
            measured = round_no >= args.warmup
            result.rounds += measured
            if answer is not None:
                status = await answer
                if " 202 " not in status + " ":
                    result.notes.append(f"round {round_no}: the server event answered {status!r}")
            if got < args.sockets:
                closed = sum(r["closed"] for r in reports)
                result.notes.append(
                    f"round {round_no}: {got}/{args.sockets} received within {args.round_timeout:g} s"
                    f" ({closed} sockets closed)"
                )
            else:
                ok = True
                if candor:
                    kind, displayed = expectation(round_no)
                    values = await everyone_shows(kind, displayed, 5)
                    if values != Counter({displayed: args.sockets}):
                        ok = False
                        result.notes.append(
                            f"round {round_no}: {kind} should be {displayed!r}: {dict(values)}"
                        )
                if ok and measured:
                    last = max(r["last"] for r in reports)
                    result.last_ms.append((last - t0) * 1000)
                    result.first_ms.append((min(r["first"] for r in reports) - t0) * 1000)
                    published = watcher.first_after(t0) if watcher else None
                    if published is not None:
                        result.from_publish_ms.append((last - published) * 1000)
                    if candor and round_no in (args.warmup, args.warmup + 1):
                        kinds = sum((Counter(r["kinds"]) for r in reports), Counter())
                        result.notes.append(f"round {round_no}, first message per socket: {dict(kinds)}")
            if candor:
                # The next change must fall outside the coalescing interval after this round
                # began (at the latest when its first message arrived), or the hub would
                # (correctly) hold it back and we would be timing the wait.
                began = min((r["first"] for r in reports if r["first"] is not None), default=t0)
                next_at = max(clock() + args.gap, began + interval_s + 0.3)
            else:
                next_at = clock() + args.gap
        return result
    except asyncio.CancelledError:  # Ctrl-C or SIGTERM: no polite goodbyes, just stop
        interrupted = True
        raise
    finally:
        if drain is not None:
            drain.cancel()
        if ctrl is not None:
            with contextlib.suppress(Exception):
                await ctrl.close()
        if watcher is not None:
            await watcher.stop()
        if not interrupted:
            with contextlib.suppress(Exception):
                await pool.ask_all({"op": "close"}, "closed", 60)
        await server.stop(keep_log=args.keep_logs or (not result.last_ms and not interrupted))
        redis_clear()


def _p90(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


def print_probe(args: argparse.Namespace, rounds: int) -> None:
    lines = Path(args.probe_log).read_text().splitlines()
    os.unlink(args.probe_log)
    entries = [json.loads(line) for line in lines]
    entries = [e for e in entries if e.get("sent", 0) >= args.sockets][-rounds:]
    if not entries:
        print("\nprobe: no measured round was logged")
        return
    n = len(entries)
    print(f"\nprobe, candor, last {n} rounds: median ms from the change reaching the server")
    marks = {k for e in entries for k in e if k not in ("recipients", "sent") and not k.endswith("_total")}
    for key in sorted(marks, key=lambda k: statistics.median(e.get(k, 0.0) for e in entries)):
        print(f"  {key:<36} {statistics.median(e[key] for e in entries if key in e):>8.2f}")
    print("  per round: coalescing wait, round end, gen-2 collection (ms):")
    for e in entries:
        print(
            f"    wait {e.get('coalescing_wait', 0.0):7.1f}  round< {e.get('round<', 0.0):7.1f}"
            f"  gc2 {e.get('gc2_total', 0.0):6.1f}  {' '.join(k for k in e if '(self-scheduled)' in k)}"
        )
    print("  time inside, summed over a round's recipients (rounds where it happened):")
    for key in sorted({k for e in entries for k in e if k.endswith("_total")}):
        values = [e[key] for e in entries if key in e]
        print(f"  {key:<36} {statistics.median(values):>8.2f}   in {len(values)}/{n} rounds")


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    import uvicorn

    raw = next((r for r in results if r.design == "raw" and r.last_ms), None)
    ceiling = statistics.median(raw.last_ms) if raw else None
    trigger = {"purchase": "a signed purchase/refund", "viewer": "one viewer more/fewer"}
    labels = dict(DESIGNS, candor=f"{DESIGNS['candor']} ({trigger[args.candor_trigger]})")
    print()
    print(
        f"Fan-out of one update to N = {args.sockets} sockets: ms from the trigger to the last socket's "
        f"receipt, median and p90 of {args.rounds} rounds (+{args.warmup} warm-up) per design; one "
        f"uvicorn {uvicorn.__version__} process per design; {args.clients} client processes; "
        f"{os.cpu_count()} CPUs; load average {args.load_before} before, {os.getloadavg()[0]:.2f} after"
    )
    width = max(len(label) for label in labels.values())
    header = (
        f"{'design':<{width}} {'median':>7} {'p90':>7} {'x raw':>6} {'first':>7} "
        f"{'PUBLISH->last':>13} {'x raw':>6} {'rounds':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        label = labels[r.design]
        if not r.last_ms:
            print(f"{label:<{width}} {'failed':>7}")
            continue
        median = statistics.median(r.last_ms)
        ratio = f"{median / ceiling:.2f}" if ceiling else "-"
        pub = pub_ratio = "-"
        if r.from_publish_ms:
            pub_median = statistics.median(r.from_publish_ms)
            pub = f"{pub_median:.1f}"
            pub_ratio = f"{pub_median / ceiling:.2f}" if ceiling else "-"
        print(
            f"{label:<{width}} {median:>7.1f} {_p90(r.last_ms):>7.1f} {ratio:>6} "
            f"{statistics.median(r.first_ms):>7.1f} {pub:>13} {pub_ratio:>6} "
            f"{len(r.last_ms):>3}/{r.rounds:<3}"
        )
    print()
    print(
        "first = trigger to the first socket's receipt; PUBLISH->last = from the change's message on "
        f"{CHANGES_CHANNEL} (seen by a subscriber here) to the last socket's receipt. All in ms."
    )
    for r in results:
        rounds = ", ".join(f"{v:.0f}" for v in r.last_ms)
        print(f"  {r.design:<7} rounds: [{rounds}]  setup {r.setup_s:.1f} s")
        for note in r.notes:
            print(f"          {note}")
    candor = next((r for r in results if r.design == "candor" and r.last_ms), None)
    if candor and args.probe:
        print_probe(args, len(candor.last_ms))
    if candor and ceiling:
        # The fan-out is what happens once the change is accepted (committed and announced on
        # candor:v1:changes) until the last socket has it: that is what the raw ceiling does. The
        # trigger-to-last figure adds the signed request's own handling, which the raw app has not.
        # Issue 12's targets: 1.25x at 1,000 sockets, 1.3x at 3,000, 1.5x at 10,000.
        limit = 1.25 if args.sockets <= 1000 else 1.3 if args.sockets <= 3000 else 1.5
        end_to_end = statistics.median(candor.last_ms) / ceiling
        measured = statistics.median(candor.from_publish_ms or candor.last_ms)
        fan_out = measured / ceiling
        verdict = "PASS" if fan_out <= limit else "FAIL"
        print(
            f"\nTarget, Candor's fan-out (accepted change to last socket) within {limit}x of the raw "
            f"ceiling: {verdict} at {fan_out:.2f}x; from the signed request's send, ingest "
            f"included: {end_to_end:.2f}x"
        )
        result_print(
            scenario=f"fan-out {args.sockets:,} sockets",
            figure=f"{measured:.1f} ms median, accepted change to last socket "
            f"({statistics.median(candor.last_ms):.1f} ms with ingest)",
            ceiling=f"{ceiling:.1f} ms raw ASGI broadcast",
            ratio=fan_out,
            target=f"≤ {limit}×",
            passed=None if args.quick else fan_out <= limit,
        )


async def coordinator(args: argparse.Namespace) -> int:
    designs = [d.strip() for d in args.designs.split(",") if d.strip()]
    unknown = [d for d in designs if d not in DESIGNS]
    if unknown:
        raise SystemExit(f"unknown design(s) {unknown}; choose from {list(DESIGNS)}")
    if "candor" in designs and args.candor_trigger == "viewer":
        if not MIN_COUNT + 1 <= args.visitors <= VIEWING_CAP + 1:
            raise SystemExit(
                f"--visitors must be {MIN_COUNT + 1}..{VIEWING_CAP + 1}: listeners must see at least "
                f"the minimum count, and one more visitor must change the text (above {VIEWING_CAP} it "
                f'stays "{VIEWING_CAP}+" and, correctly, nothing is sent). See bench/README.md.'
            )
        if args.sockets < args.visitors:
            raise SystemExit("--sockets must be at least --visitors")
    # SIGTERM stops the run the way Ctrl-C does: the running design is cancelled, then every
    # process this run started is stopped.
    main_task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    args.load_before = f"{os.getloadavg()[0]:.2f}"  # other work on the box shows up as noise
    pool = ClientPool(args.clients)
    results: list[Result] = []
    try:
        await pool.start()
        for design in designs:
            print(f"[{design}] {DESIGNS[design]} ...", flush=True)
            try:
                result = await run_design(design, args, pool)
            except Exception as exc:  # one design failing must not lose the others' figures
                result = Result(design, notes=[f"the run failed: {exc!r}"])
            results.append(result)
            if result.last_ms:
                summary = f"median {statistics.median(result.last_ms):.1f} ms"
            else:
                summary = "; ".join(result.notes)
            print(f"[{design}] {summary}", flush=True)
    finally:
        await pool.stop()
    print_table(results, args)
    # The comparison designs (Channels' layers) may fail at large N (the core layer runs out of
    # Redis connections at 3,000 here); that is noted in the table. Only raw and Candor count.
    return 0 if all(r.last_ms for r in results if r.design in ("raw", "candor")) else 1


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=3000, help="listening sockets per design (N)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: the target is not judged")
    parser.add_argument("--rounds", type=int, default=6, help="measured rounds per design")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured rounds first")
    parser.add_argument("--designs", default=",".join(DESIGNS), help=f"comma-separated, of {list(DESIGNS)}")
    parser.add_argument("--clients", type=int, default=4, help="client processes holding the sockets")
    parser.add_argument(
        "--candor-trigger",
        choices=("purchase", "viewer"),
        default="purchase",
        help="what changes every listener's text: a verified purchase, then its refund, with N "
        "distinct visitors (default); or one more viewer, then one fewer, with the N sockets "
        "being tabs of --visitors visitors (bench/README.md, 'The trigger')",
    )
    parser.add_argument(
        "--visitors",
        type=int,
        default=10,
        help="with --candor-trigger viewer: distinct visitors (User-Agents) among the N sockets",
    )
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=90.0,
        help="seconds for candor's initial burst to reach every socket (frequency caps space toasts)",
    )
    parser.add_argument("--gap", type=float, default=0.3, help="seconds between a round's end and the next")
    parser.add_argument("--round-timeout", type=float, default=15.0)
    parser.add_argument("--connect-concurrency", type=int, default=64, help="handshakes in flight per client")
    parser.add_argument("--keep-logs", action="store_true", help="keep each server's log (kept on failure)")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate like a browser")
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
        help="extra environment for candor's server and manage.py (repeatable)",
    )
    parser.add_argument(
        "--probe",
        action="store_true",
        help="run candor through bench/candor_probe.py and print where a round's time goes",
    )
    args = parser.parse_args(argv)
    args.candor_root = Path(args.candor_root).resolve()
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

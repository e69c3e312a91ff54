"""Candor's ASGI application under pyinstrument, for `python -m bench.ingest --profile`.

pyinstrument samples one thread per profiler, and a Django request runs on two: the event
loop's (uvicorn, Django's async handler, the middleware's async adapters) and a thread of its
own for everything sync (Django gives each request a `ThreadSensitiveContext`, so a fresh
single-thread executor, hence a fresh thread, per request). So:

- the loop thread has one profiler (async_mode "disabled": every sample on the thread, idle
  included), between `POST /__bench/profile/start` and `/__bench/profile/stop`;
- each request runs inside a `ThreadSensitiveContext` whose executor is a new one-thread
  executor, as Django would make, but whose thread starts its own profiler; Django's own
  context then nests inside it and changes nothing. The request's sessions are merged.

`/__bench/profile/stop` answers the rendered text: a per-request summary, then both trees.
Everything else goes to `config.asgi:application` unchanged.
"""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext
from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer
from pyinstrument.session import Session

from config.asgi import application as candor

INTERVAL_S = 0.0005
# Library frames worth seeing in the trees; the rest are folded into "[n frames hidden]".
SHOW = (
    r".*/(notifications|django_ratelimit|django/db/backends|django/core/cache|django/core/handlers"
    r"|whitenoise|redis|psycopg|ninja)/.*"
)
TREE_LINES = 140
THREADS_ROOT = "request threads\x00<thread>\x000"


class _RequestThread(ThreadPoolExecutor):
    """One request's sync work on one new thread, as Django's handler would run it, profiled."""

    def __init__(self) -> None:
        self.profiler = Profiler(interval=INTERVAL_S, async_mode="disabled")
        super().__init__(max_workers=1, initializer=self.profiler.start)


class _State:
    active = False
    loop_profiler: Profiler | None = None
    records: list = []
    sessions = 0
    duration_s = 0.0
    first: Session | None = None
    requests = 0
    started = 0.0


async def _profiled(scope, receive, send) -> None:
    executor = _RequestThread()
    loop = asyncio.get_running_loop()
    try:
        async with ThreadSensitiveContext(executor=executor):
            await candor(scope, receive, send)
    finally:
        session = await loop.run_in_executor(executor, executor.profiler.stop)
        executor.shutdown(wait=False)
        if _State.active:
            _State.requests += 1
            _State.sessions += 1
            _State.duration_s += session.duration
            # pyinstrument roots each stack at its thread; one root merges the requests' trees.
            _State.records.extend(([THREADS_ROOT, *stack[1:]], t) for stack, t in session.frame_records)
            _State.first = _State.first or session


def _merged() -> Session | None:
    first = _State.first
    if first is None:
        return None
    return Session(
        frame_records=_State.records,
        start_time=first.start_time,
        duration=_State.duration_s,
        min_interval=first.min_interval,
        max_interval=first.max_interval,
        sample_count=len(_State.records),
        start_call_stack=[THREADS_ROOT],
        target_description=f"{_State.sessions} request threads, merged",
        cpu_time=0.0,
        sys_path=first.sys_path,
        sys_prefixes=first.sys_prefixes,
    )


def _frame(identifier: str) -> tuple[str, str]:
    function, _, rest = identifier.partition("\x00")
    return function, rest.partition("\x00")[0]


def _own(stack: list[str]) -> tuple[str, str]:
    """The innermost Python frame (C functions show as `<built-in>` frames below it)."""
    for info in reversed(stack):
        name, filename = _frame(info)
        if filename != "<built-in>":
            return name, filename
    return "", ""


def _has(stack: list[str], function: str | None, path: str) -> bool:
    for info in stack:
        name, filename = _frame(info)
        if (function is None or name == function) and path in filename:
            return True
    return False


def _request_part(stack: list[str]) -> str:
    """One part per sample, the first that fits, so the parts add up to the thread's time."""
    name, filename = _own(stack)
    if filename.endswith(("threading.py", "queue.py")) or name == "_worker":
        if _has(stack, "run_until_future", "asgiref/current_thread_executor.py"):
            return "waiting: in async_to_sync below WhiteNoise (sync-only) for the loop"
        if _has(stack, "_worker", "concurrent/futures/thread.py"):
            return "waiting: the thread idles until the loop hands it the next step"
    if _has(stack, "connect", "django/db/backends/base/base.py"):
        return "PostgreSQL: opening a connection (a new one per request)"
    if _has(stack, "make_connection", "redis/") or _has(stack, "connect", "redis/connection.py"):
        return "Redis: opening a connection (a new cache client per request)"
    if _has(stack, "close", "django/db/backends/base/base.py"):
        return "PostgreSQL: closing the connection"
    if _has(stack, "_rate_limit", "notifications/api.py"):
        return "rate limit: django-ratelimit's commands (2 counters)"
    if _has(stack, None, "django/db/") or _has(stack, None, "psycopg"):
        return "PostgreSQL: queries (site, product, INSERT) via the ORM"
    if _has(stack, None, "django/core/cache/"):
        return "Redis: the view's de-dupe cache.add"
    if _has(stack, None, "notifications/"):
        return "view: other Python (JSON, checks, visitor hash, response)"
    if _has(stack, None, "whitenoise/") or _has(stack, None, "django/") or _has(stack, None, "ninja/"):
        return "Django: middleware, signals, handler, ninja (sync parts)"
    if "pyinstrument" in filename or "bench/ingest_profile_app.py" in filename:
        return "the profiler itself"
    return "other: thread start, asgiref, executor"


LOOP_PARTS = (
    ("uvicorn/", "uvicorn: HTTP protocol, ASGI send/receive"),
    ("django/", "Django async handler, middleware adapters, signals"),
    ("asgiref/", "asgiref: sync_to_async / async_to_sync hand-offs"),
    ("asyncio/", "asyncio: futures, tasks, executors"),
    ("concurrent/", "asyncio: futures, tasks, executors"),
    ("threading.py", "thread start-up (a new thread per request)"),
    ("whitenoise/", "WhiteNoise"),
    ("notifications/", "Candor code on the loop"),
    ("pyinstrument", "the profiler itself"),
    ("bench/ingest_profile_app.py", "the profiler itself"),
)


def _loop_part(stack: list[str]) -> str:
    name, filename = _own(stack)
    if name == "run" and "asyncio/runners.py" in filename:
        return "idle: the loop waits for I/O"
    for marker, label in LOOP_PARTS:
        if marker in filename:
            return label
    return "other"


def _summary(title: str, records: list, part, requests: int) -> list[str]:
    totals: dict[str, float] = {}
    for stack, t in records:
        if stack:
            key = part(stack)
            totals[key] = totals.get(key, 0.0) + t
    whole = sum(totals.values())
    lines = [f"{title:<66} {'s total':>8} {'ms/request':>11} {'share':>6}"]
    for label, total in sorted(totals.items(), key=lambda item: -item[1]):
        per = total / requests * 1000 if requests else float("nan")
        lines.append(f"  {label:<64} {total:>8.2f} {per:>11.3f} {total / whole:>6.1%}")
    lines.append(f"  {'all':<64} {whole:>8.2f} {whole / requests * 1000 if requests else 0:>11.3f}")
    return lines


def _render(loop_session: Session | None, elapsed_s: float) -> str:
    n = _State.requests
    rate = n / elapsed_s if elapsed_s else 0
    out = [
        f"profiled window {elapsed_s:.1f} s, {n:,} requests completed in it ({rate:,.0f}/s under the "
        f"profiler; a sample every {INTERVAL_S * 1000:g} ms, wall clock)",
        "",
        "Where a request's wall time goes: each sample goes to the first part that fits its stack,",
        "summed, divided by the requests. Request threads run concurrently (one per request in",
        "flight), so their total exceeds the window. A blocking call that returns must get the GIL",
        "back before it can go on: that wait shows in the call (socket.recv, epoll, lock.acquire).",
        "",
    ]
    out += _summary("request threads (one per request: its sync work)", _State.records, _request_part, n)
    if loop_session is not None:
        out += ["", *_summary("event-loop thread", loop_session.frame_records, _loop_part, n)]
    options = {"filter_threshold": 0.01, "show_regex": SHOW}
    renderer = ConsoleRenderer(unicode=True, color=False, processor_options=options)
    for title, session in (("request threads, merged", _merged()), ("event-loop thread", loop_session)):
        out += ["", f"===== pyinstrument tree: {title} (top {TREE_LINES} lines) ====="]
        if session is None:
            out.append("(no samples)")
            continue
        out += renderer.render(session).splitlines()[:TREE_LINES]
    return "\n".join(out) + "\n"


async def _control(scope, receive, send) -> None:
    while (await receive()).get("more_body"):
        pass
    body = b"ok\n"
    if scope["path"].endswith("/start"):
        _State.records, _State.sessions, _State.duration_s, _State.first, _State.requests = (
            [],
            0,
            0.0,
            None,
            0,
        )
        _State.loop_profiler = Profiler(interval=INTERVAL_S, async_mode="disabled")
        _State.loop_profiler.start()
        _State.started = time.perf_counter()
        _State.active = True
    elif scope["path"].endswith("/stop") and _State.active:
        _State.active = False
        elapsed = time.perf_counter() - _State.started
        loop_session = _State.loop_profiler.stop()
        body = _render(loop_session, elapsed).encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    start = {"type": "http.response.start", "status": 200, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})


async def application(scope, receive, send):
    if scope["type"] == "http" and scope["path"].startswith("/__bench/profile/"):
        return await _control(scope, receive, send)
    if scope["type"] == "http" and _State.active:
        return await _profiled(scope, receive, send)
    return await candor(scope, receive, send)

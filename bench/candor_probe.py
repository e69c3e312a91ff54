"""Candor's ASGI application with timing marks around each step of an update round.

Used by `python -m bench.fanout --probe`: the project's code runs unchanged, wrapped from outside,
and each round that sent something appends one JSON line to `$BENCH_PROBE_LOG` with the
milliseconds from the change (the trigger's page frame arriving at the consumer, or the change
message scheduling the round) to each step, and `coalescing_wait_total`: how long the round
was held back because another round for the product ran less than the interval before. The wrappers
cost a few microseconds per recipient (two clock reads around `metrics.viewing_now`), so a
probed run is a little slower than the plain one; use it to see where the time goes, not
for the table.
"""

import functools
import gc
import json
import os
import time

from config.asgi import application
from notifications import consumers, presence, streaming

__all__ = ["application"]

LOG_PATH = os.environ.get("BENCH_PROBE_LOG", "")
_marks: dict[str, float] = {}
_totals: dict[str, float] = {}
_counts: dict[str, int] = {}


def _mark(name: str) -> None:
    _marks[name] = time.perf_counter()


def _wrap_async(owner, name: str, label: str, *, reset: bool = False) -> None:
    original = getattr(owner, name, None)
    if original is None:  # the project moved on; time what is still there
        return

    @functools.wraps(original)
    async def wrapper(*args, **kwargs):
        if reset:
            _marks.clear()
            _totals.clear()
        _mark(f"{label}>")
        try:
            return await original(*args, **kwargs)
        finally:
            _mark(f"{label}<")

    setattr(owner, name, wrapper)


def _wrap_sync_total(owner, name: str, label: str) -> None:
    original = getattr(owner, name, None)
    if original is None:
        return

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            _totals[label] = _totals.get(label, 0.0) + time.perf_counter() - start

    setattr(owner, name, wrapper)


_gc_started = 0.0


def _gc_callback(phase: str, info: dict) -> None:
    # Collector pauses count too: a round allocates per recipient.
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
    else:
        label = f"gc{info['generation']}_total"
        _totals[label] = _totals.get(label, 0.0) + time.perf_counter() - _gc_started


gc.callbacks.append(_gc_callback)

# The trigger's frame arriving resets the marks; every later step is timed from it.
_wrap_async(consumers.WidgetConsumer, "receive", "receive", reset=True)
_wrap_async(presence.RedisPresence, "show", "presence_write")
_wrap_async(presence.RedisPresence, "hide", "presence_write")
_wrap_async(presence.RedisPresence, "visitors", "presence_read")
_wrap_async(streaming, "_send_all", "send_all")
_original_send_all = streaming._send_all


async def _counting_send_all(outgoing):
    _counts["sent"] = sum(1 for _, message in outgoing if message)
    return await _original_send_all(outgoing)


streaming._send_all = _counting_send_all
_wrap_sync_total(streaming.metrics, "viewing_now", "metrics_total")
_wrap_sync_total(streaming, "decide", "decide_total")
_wrap_sync_total(consumers.WidgetConsumer, "claim_message", "claim_message_total")
_wrap_sync_total(consumers.WidgetConsumer, "needs", "needs_total")

_original_on_change = streaming.Hub.on_change


def _on_change(self, product_id: int) -> None:
    # A change that schedules a round starts the timeline, unless the trigger's own frame
    # (a page message) just did; a change arriving while a round is pending is noted only.
    scheduling = product_id in self.sockets and product_id not in self._scheduled
    if scheduling and time.perf_counter() - _marks.get("receive>", 0.0) > 0.05:
        _marks.clear()
        _totals.clear()
    _mark("on_change" if scheduling else "on_change(coalesced)")
    _original_on_change(self, product_id)
    if scheduling:
        wait_s = max(0.0, self._last_round.get(product_id, 0.0) + _interval_s() - time.monotonic())
        _totals["coalescing_wait"] = wait_s


def _interval_s() -> float:
    from django.conf import settings

    return settings.CANDOR_UPDATE_INTERVAL_MS / 1000


streaming.Hub.on_change = _on_change

_original_dsa = streaming.database_sync_to_async


def _dsa(fn):
    label = f"db:{getattr(fn, '__name__', 'call')}"

    @functools.wraps(fn)
    def in_thread(*args, **kwargs):
        _mark(f"{label}:thread>")
        try:
            return fn(*args, **kwargs)
        finally:
            _mark(f"{label}:thread<")

    inner = _original_dsa(in_thread)

    async def call(*args, **kwargs):
        _mark(f"{label}>")
        try:
            return await inner(*args, **kwargs)
        finally:
            _mark(f"{label}<")

    return call


streaming.database_sync_to_async = _dsa

_original_round = streaming.Hub.round


async def _round(self, product_id: int) -> None:
    _mark("round>")
    recipients = sum(1 for c in self.sockets.get(product_id, ()) if c.listening)
    try:
        await _original_round(self, product_id)
    finally:
        _mark("round<")
        start = min(_marks.values(), default=None)
        if LOG_PATH and start is not None and _counts.get("sent"):
            entry = {
                name: round((t - start) * 1000, 2) for name, t in sorted(_marks.items(), key=lambda kv: kv[1])
            }
            entry.update({name: round(total * 1000, 2) for name, total in _totals.items()})
            entry.update(_counts, recipients=recipients)
            # After the round's last mark: a small append, outside what is timed.
            with open(LOG_PATH, "a", encoding="utf-8") as fh:  # noqa: ASYNC230
                fh.write(json.dumps(entry) + "\n")
        _marks.clear()
        _totals.clear()
        _counts.clear()


streaming.Hub.round = _round


def _note_source(name: str, label: str) -> None:
    """Rounds the hub schedules itself (ledger ticks, retries after a gap): named in the log."""
    original = getattr(streaming.Hub, name, None)
    if original is None:
        return

    @functools.wraps(original)
    def wrapper(self, *args, **kwargs):
        try:
            return original(self, *args, **kwargs)
        finally:  # after: a round it schedules starts a new timeline
            _marks[f"{label}(self-scheduled)"] = time.perf_counter()

    setattr(streaming.Hub, name, wrapper)


_note_source("_tick_ledger_claims", "tick")
_note_source("_retry_later", "retry")

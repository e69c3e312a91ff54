"""Candor's ASGI application with the hub's coalescing logged, for `python -m bench.e2e --probe`.

The project's code runs unchanged, wrapped from outside. One JSON line per event in
`$BENCH_E2E_PROBE_LOG`, times on CLOCK_MONOTONIC (`time.monotonic()`, the clock bench/e2e.py
reads in every process):

  {"ev": "change", "t", "p", "scheduled", "wait", "cause"}   the hub heard of a change to product
      p; `scheduled`: it scheduled a round `wait` s later (the coalescing hold); otherwise a
      round was already pending and the change joined it. `cause`: "tick" when the hub's own
      refresh asked (products showing a ledger claim, every TTL/3), else "change".
  {"ev": "round", "p", "start", "end", "sent", "cause"}      one update round and what it sent.
  {"ev": "gc", "gen", "start", "end", "collected"}          a full collection (generation 2), or one
      of generation 1 over 2 ms: the collector stops the whole process, and with thousands of
      sockets a full one takes long.

A few microseconds per change and per round: cheap beside a round, but use it to explain.
"""

import gc
import json
import os
import time

from django.conf import settings

from config.asgi import application
from notifications import streaming

__all__ = ["application"]

LOG_PATH = os.environ.get("BENCH_E2E_PROBE_LOG", "")
_log_file = open(LOG_PATH, "a", buffering=1, encoding="utf-8") if LOG_PATH else None  # noqa: SIM115
_in_tick = False
_cause: dict[int, str] = {}


def _log(entry: dict) -> None:
    if _log_file is not None:
        _log_file.write(json.dumps(entry) + "\n")


_gc_started = 0.0


def _gc_callback(phase: str, info: dict) -> None:
    global _gc_started
    if info["generation"] < 1:
        return
    if phase == "start":
        _gc_started = time.monotonic()
    else:
        end = time.monotonic()
        if info["generation"] == 2 or end - _gc_started > 0.002:  # the rest are many, and cheap
            entry = {
                "gen": info["generation"],
                "start": _gc_started,
                "end": end,
                "collected": info["collected"],
            }
            _log({"ev": "gc", **entry})


if _log_file is not None:
    gc.callbacks.append(_gc_callback)

_on_change = streaming.Hub.on_change


def on_change(self, product_id: int) -> None:
    now = time.monotonic()
    scheduling = product_id in self.sockets and product_id not in self._scheduled
    wait = None
    if scheduling:
        interval_s = settings.CANDOR_UPDATE_INTERVAL_MS / 1000
        wait = max(0.0, self._last_round.get(product_id, 0.0) + interval_s - now)
        _cause[product_id] = "tick" if _in_tick else "change"
    _on_change(self, product_id)
    if product_id in self.sockets:
        cause = "tick" if _in_tick else "change"
        _log(
            {"ev": "change", "t": now, "p": product_id, "scheduled": scheduling, "wait": wait, "cause": cause}
        )


_tick = streaming.Hub._tick_ledger_claims


def tick_ledger_claims(self) -> None:
    global _in_tick
    _in_tick = True
    try:
        _tick(self)
    finally:
        _in_tick = False


_round = streaming.Hub.round


async def round_logged(self, product_id: int) -> int:
    start = time.monotonic()
    cause = _cause.pop(product_id, "change")
    sent = 0
    try:
        sent = await _round(self, product_id)
        return sent
    finally:
        _log(
            {
                "ev": "round",
                "p": product_id,
                "start": start,
                "end": time.monotonic(),
                "sent": sent,
                "cause": cause,
            }
        )


streaming.Hub.on_change = on_change
streaming.Hub._tick_ledger_claims = tick_ledger_claims
streaming.Hub.round = round_logged

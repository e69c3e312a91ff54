"""Garbage-collector pacing for a process holding thousands of sockets.

Every open socket is a few hundred long-lived Python objects (its consumer, scope, transport,
buffers). CPython's full collection walks every tracked object, so with 10,000 sockets one
takes most of a second, and it stops the whole process: sends, ingest, everything
(`bench/profiles/e2e-10000.txt`). A full collection runs whenever the objects that survived
since the last one reach a quarter of those before, which a busy process reaches often.

So the hub paces it:
- when the number of sockets has changed by more than `grow` (10%) since the last look, the
  objects alive now are *frozen* (`gc.freeze()`: moved out of the collector's sight; it costs
  a list splice). Freed objects are still freed at once by reference counting; what the
  collector no longer sees are cycles among frozen objects: a closed socket's cycles wait;
- every `full_s` (15 minutes by default) everything is unfrozen and collected in one full pass,
  then frozen again: those waiting cycles are reclaimed, at the cost of one pause per interval
  instead of one every few seconds.
"""

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


# The youngest generation is collected after this many net allocations (CPython: 700). A fan-out
# round to thousands of sockets allocates tens of thousands of short-lived objects; at 700 they
# are scanned, and promoted, dozens of times before the round ends and frees them.
YOUNG_THRESHOLD = 50_000


class GcPacer:
    def __init__(self, *, check_s: float, full_s: float, grow: float = 0.1, min_change: int = 200) -> None:
        self.check_s, self.full_s, self.grow, self.min_change = check_s, full_s, grow, min_change
        _, middle, old = gc.get_threshold()
        gc.set_threshold(max(YOUNG_THRESHOLD, gc.get_threshold()[0]), middle, old)
        self.frozen_at_size = 0
        self.last_full = time.monotonic()
        self.freezes = 0
        self.fulls = 0

    def step(self, size: int, now: float) -> str:
        """One look: "full", "freeze" or "" (nothing to do)."""
        if now - self.last_full >= self.full_s:
            started = time.perf_counter()
            gc.unfreeze()
            found = gc.collect()
            gc.freeze()
            self.last_full, self.frozen_at_size = now, size
            self.fulls += 1
            log.info(
                "full collection: %d unreachable objects, %.0f ms, %d frozen",
                found,
                (time.perf_counter() - started) * 1000,
                gc.get_freeze_count(),
            )
            return "full"
        if abs(size - self.frozen_at_size) > max(self.min_change, self.frozen_at_size * self.grow):
            gc.collect(1)  # the young generations only: what just died in cycles is not frozen
            gc.freeze()
            self.frozen_at_size = size
            self.freezes += 1
            return "freeze"
        return ""

    async def run(self, size: Callable[[], int]) -> None:
        while True:
            await asyncio.sleep(self.check_s)
            self.step(size(), time.monotonic())

"""Candor's ASGI application, profiled by pyinstrument only while bench/e2e.py says so.

`python -m bench.e2e --profile FILE` serves this module: SIGUSR1 starts the profiler (sent just before
the first purchase), SIGUSR2 stops it and writes a text report to `$BENCH_E2E_PROFILE` (sent after
the last purchase was shown), and `FILE.brief.txt` with library frames folded. Only the event
loop's thread is sampled (the hub's database calls and Django's views run in threads beside it);
the `[self]` of `Runner.run` is the loop waiting for work. Set-up (connecting N sockets, the first
toasts) and teardown stay out of the report. The code is the project's, unchanged.
"""

import os
import signal

from pyinstrument import Profiler

if os.environ.get("BENCH_E2E_PROBE_LOG"):  # --probe too: the probe's wrapped application
    from bench.e2e_probe import application
else:
    from config.asgi import application

__all__ = ["application"]

PATH = os.environ.get("BENCH_E2E_PROFILE", "")
_profiler: Profiler | None = None


def _start(*_) -> None:
    global _profiler
    if _profiler is None:
        _profiler = Profiler(interval=0.001, async_mode="disabled")
        _profiler.start()


def _stop(*_) -> None:
    global _profiler
    if _profiler is None:
        return
    profiler, _profiler = _profiler, None
    session = profiler.stop()
    if PATH:
        from pyinstrument.renderers import ConsoleRenderer

        text = ConsoleRenderer(unicode=True, color=False, show_all=True, short_mode=False).render(session)
        with open(PATH, "w", encoding="utf-8") as fh:
            fh.write(text)
        with open(PATH + ".brief.txt", "w", encoding="utf-8") as fh:  # last: bench/e2e.py waits for it
            fh.write(ConsoleRenderer(unicode=True, color=False).render(session))


signal.signal(signal.SIGUSR1, _start)
signal.signal(signal.SIGUSR2, _stop)

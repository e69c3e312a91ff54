"""Rate limits and view de-duplication for browser events, for a whole batch in one Redis round
trip (or in-process without Redis).

The beacon (`beacon.py`) takes browser events in batches, so what django-ratelimit did with
two Redis round trips per request (and the de-duplication with a third) is done here for every
event of a batch in one pipeline: fixed windows per visitor and per address (`120/m` style
rates, as django-ratelimit counts them), and a "seen" mark per (product, visitor). The keys live
under the Django cache's prefix, so they are shared by every process like the cache itself.
"""

import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

KEY_PREFIX = "candor:cache:limit"
PERIODS_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


@dataclass(frozen=True)
class Rate:
    count: int
    period_s: int


@lru_cache(maxsize=32)
def rate_parse(text: str) -> Rate:
    """`120/m`, `5/s`, `1000/h`, `10/5m` (django-ratelimit's notation)."""
    count, _, period = text.partition("/")
    multiplier = int(period[:-1]) if len(period) > 1 else 1
    return Rate(int(count), multiplier * PERIODS_S[period[-1]])


@dataclass(frozen=True)
class Check:
    """One event's questions: its limit counters (group, value, rate) and, for a view, its
    de-duplication mark."""

    counters: tuple[tuple[str, str, Rate], ...]
    seen_key: str = ""


@dataclass(frozen=True)
class Verdict:
    limited: bool
    retry_after_s: float
    repeat: bool  # a view this visitor already made of this product within the interval


def _window(rate: Rate, now: float) -> tuple[int, float]:
    start = int(now // rate.period_s) * rate.period_s
    return start, start + rate.period_s - now


def checks_apply(checks: list[Check], *, seen_ttl_s: int, now: float | None = None) -> list[Verdict]:
    now = time.time() if now is None else now
    if settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        return _redis_apply(checks, seen_ttl_s=seen_ttl_s, now=now)
    return _local.apply(checks, seen_ttl_s=seen_ttl_s, now=now)


@lru_cache(maxsize=4)
def _client(url: str):
    import redis

    return redis.Redis.from_url(url)


# One script call per batch: pipelining INCR/EXPIRE/SET per event cost more in redis-py's
# command packing and reply parsing (≈25 µs a command) than the round trip it saved. Each op is
# ("c", period): count in a fixed window, or ("s", ttl): mark as seen if not already.
# (Redis Cluster would need the batch's keys in one hash slot; one Redis or Sentinel is assumed.)
_SCRIPT = """
local out = {}
for i = 1, #KEYS do
  local arg = tonumber(ARGV[2 * i])
  if ARGV[2 * i - 1] == "c" then
    local count = redis.call("INCR", KEYS[i])
    if count == 1 then redis.call("EXPIRE", KEYS[i], arg) end
    out[i] = count
  elseif redis.call("SET", KEYS[i], 1, "NX", "EX", arg) then
    out[i] = 1
  else
    out[i] = 0
  end
end
return out
"""


@lru_cache(maxsize=4)
def _script(url: str):
    return _client(url).register_script(_SCRIPT)


def _redis_apply(checks: list[Check], *, seen_ttl_s: int, now: float) -> list[Verdict]:
    keys: list[str] = []
    args: list = []
    for check in checks:
        for group, value, rate in check.counters:
            start, _ = _window(rate, now)
            keys.append(f"{KEY_PREFIX}:{group}:{value}:{start}")
            args += ["c", rate.period_s + 1]
        if check.seen_key:
            keys.append(f"{KEY_PREFIX}:seen:{check.seen_key}")
            args += ["s", seen_ttl_s]
    replies = iter(_script(settings.CACHES["default"]["LOCATION"])(keys=keys, args=args) if keys else [])
    verdicts = []
    unmark = []
    for check in checks:
        limited, retry = False, 0.0
        for _group, _value, rate in check.counters:
            if next(replies) > rate.count:
                limited, retry = True, max(retry, _window(rate, now)[1])
        marked = bool(check.seen_key) and bool(next(replies))
        if limited and marked:
            unmark.append(f"{KEY_PREFIX}:seen:{check.seen_key}")  # a refused view was not seen
        verdicts.append(Verdict(limited, retry, bool(check.seen_key) and not marked))
    if unmark:
        _client(settings.CACHES["default"]["LOCATION"]).delete(*unmark)
    return verdicts


class _LocalLimits:
    """The embedded mode's (one process) counters, with the same windows."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, tuple[float, int]] = {}
        self.seen: dict[str, float] = {}

    def apply(self, checks: list[Check], *, seen_ttl_s: int, now: float) -> list[Verdict]:
        with self.lock:
            if len(self.counts) + len(self.seen) > 200_000:
                self.counts = {k: v for k, v in self.counts.items() if v[0] > now}
                self.seen = {k: v for k, v in self.seen.items() if v > now}
            verdicts = []
            for check in checks:
                limited, retry = False, 0.0
                for group, value, rate in check.counters:
                    start, left = _window(rate, now)
                    key = f"{group}:{value}:{start}"
                    count = self.counts.get(key, (0.0, 0))[1] + 1
                    self.counts[key] = (start + rate.period_s, count)
                    if count > rate.count:
                        limited, retry = True, max(retry, left)
                repeat = False
                if check.seen_key:
                    expires = self.seen.get(check.seen_key)
                    repeat = expires is not None and expires > now
                    if not repeat and not limited:  # a refused view was not seen
                        self.seen[check.seen_key] = now + seen_ttl_s
                verdicts.append(Verdict(limited, retry, repeat))
            return verdicts

    def clear(self) -> None:
        with self.lock:
            self.counts.clear()
            self.seen.clear()


_local = _LocalLimits()


def seen_forget(keys: list[str]) -> None:
    """Undo de-duplication marks of views that were not recorded after all."""
    if not keys:
        return
    if settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
        _client(settings.CACHES["default"]["LOCATION"]).delete(*(f"{KEY_PREFIX}:seen:{k}" for k in keys))
    else:
        with _local.lock:
            for key in keys:
                _local.seen.pop(key, None)


def limits_forget() -> None:
    """Tests: drop the in-process counters (Redis keys go with the cache's)."""
    _local.clear()

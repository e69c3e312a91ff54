"""Presence: which visitors have a visible page open on a product, now.

One sorted set per product, member `<visitor hash>|<socket id>`, score = expiry (ms since the
epoch). A visitor with two tabs has two members and counts once. The process that holds a
socket refreshes its score every TTL/3 (clients send no heartbeat, SPEC 5), so when a process
dies its sockets vanish after one TTL instead of lingering as ghost viewers: `disconnect()`
never runs for a killed process (docs/conventions.md, "Known traps").

Two stores behind one interface: Redis (production, shared by every server process) and an
in-process dict (the embedded default, one process). Both are keyed by the event loop's
lifetime where they hold connections.
"""

import asyncio
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass

import redis.asyncio as aioredis
from django.conf import settings
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

KEY_PREFIX = "candor:v1:presence:"


SITE_KEY_PREFIX = KEY_PREFIX + "site:"


@dataclass(frozen=True)
class Entry:
    product_id: int
    visitor: str
    socket_id: str
    # The same member is also kept per site, for `shoppers_on_site_now` (the admin's Site page,
    # `site_visitors_now`); 0 = not tracked.
    site_id: int = 0
    # Coarse attributes for reference groups ("shoppers from your country"): a country code and
    # the store's returning hint. Never anything that identifies.
    country: str = ""
    returning: str = ""
    # The keyed, salted hash of the client address (identity.address_hash_compute), never the
    # address: at most CANDOR_VISITORS_PER_ADDRESS visitors of one address count (SPEC 7).
    address: str = ""

    @property
    def member(self) -> str:
        return f"{self.visitor}|{self.socket_id}|{self.country}|{self.returning}|{self.address}"

    @property
    def keys(self) -> tuple[str, ...]:
        product_key = KEY_PREFIX + str(self.product_id)
        return (product_key, SITE_KEY_PREFIX + str(self.site_id)) if self.site_id else (product_key,)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _by_visitor(members, *, per_address: int | None = None) -> dict[str, tuple[str, str]]:
    """Distinct visitors (two tabs are one) with their (country, returning) attributes, at most
    `per_address` (CANDOR_VISITORS_PER_ADDRESS) of one client address (SPEC 7): one machine
    rotating User-Agents is many visitor hashes but adds at most that many. Which of an address's
    visitors count is fixed by their hashes (the smallest), so every process and every round picks
    the same ones. A member without an address (written before this rule) is grouped under "".
    """
    if per_address is None:
        per_address = settings.CANDOR_VISITORS_PER_ADDRESS
    found: dict[str, tuple[str, str]] = {}
    address_of: dict[str, str] = {}
    for member in members:
        visitor, _socket, country, returning, address = ([*member.split("|", 4), "", "", ""])[:5]
        if visitor not in found:
            found[visitor] = (country, returning)
            address_of[visitor] = address
    by_address: dict[str, list[str]] = {}
    for visitor, address in address_of.items():
        by_address.setdefault(address, []).append(visitor)
    for visitors in by_address.values():
        if len(visitors) > per_address:
            for visitor in sorted(visitors)[per_address:]:
                del found[visitor]
    return found


class MemoryPresence:
    """The embedded default: one process, so a dict is the whole truth."""

    def __init__(self) -> None:
        self._sets: dict[str, dict[str, int]] = {}

    async def show(self, entry: Entry, *, ttl_s: int) -> None:
        for key in entry.keys:
            self._sets.setdefault(key, {})[entry.member] = _now_ms() + ttl_s * 1000

    async def hide(self, entry: Entry) -> None:
        for key in entry.keys:
            members = self._sets.get(key)
            if members is not None:
                members.pop(entry.member, None)
                if not members:
                    del self._sets[key]

    async def refresh(self, entries: Iterable[Entry], *, ttl_s: int) -> None:
        for entry in entries:
            await self.show(entry, ttl_s=ttl_s)

    async def prune(self, product_ids: Iterable[int], site_ids: Iterable[int] = ()) -> set[int]:
        now = _now_ms()
        changed = set()
        for key in [SITE_KEY_PREFIX + str(s) for s in site_ids]:
            for member in [m for m, expiry in self._sets.get(key, {}).items() if expiry <= now]:
                del self._sets[key][member]
        for product_id in product_ids:
            members = self._sets.get(KEY_PREFIX + str(product_id), {})
            expired = [m for m, expiry in members.items() if expiry <= now]
            for member in expired:
                del members[member]
            if expired:
                changed.add(product_id)
        return changed

    async def _visitors(self, key: str) -> dict[str, tuple[str, str]]:
        now = _now_ms()
        return _by_visitor(m for m, expiry in self._sets.get(key, {}).items() if expiry > now)

    async def visitors(self, product_id: int) -> dict[str, tuple[str, str]]:
        return await self._visitors(KEY_PREFIX + str(product_id))

    async def close(self) -> None:
        return None


class RedisPresence:
    def __init__(self, url: str) -> None:
        # A blocking pool waits for a free connection instead of failing a burst of connects
        # (redis-py 8's default pool raises MaxConnectionsError past 100).
        self.pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=settings.CANDOR_REDIS_MAX_CONNECTIONS, timeout=5, retry=Retry(NoBackoff(), 1)
        )
        self.redis = aioredis.Redis(connection_pool=self.pool)

    async def show(self, entry: Entry, *, ttl_s: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in entry.keys:
                pipe.zadd(key, {entry.member: _now_ms() + ttl_s * 1000})
                pipe.expire(key, ttl_s * 2)
            await pipe.execute()

    async def hide(self, entry: Entry) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in entry.keys:
                pipe.zrem(key, entry.member)
            await pipe.execute()

    async def refresh(self, entries: Iterable[Entry], *, ttl_s: int) -> None:
        # Plain ZADD, not XX: after a Redis restart or flush this re-creates presence from the
        # sockets that are really open, within one refresh interval.
        expiry = _now_ms() + ttl_s * 1000
        by_key: dict[str, dict[str, int]] = {}
        for entry in entries:
            for key in entry.keys:
                by_key.setdefault(key, {})[entry.member] = expiry
        if not by_key:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for key, mapping in by_key.items():
                pipe.zadd(key, mapping)
                pipe.expire(key, ttl_s * 2)
            await pipe.execute()

    async def prune(self, product_ids: Iterable[int], site_ids: Iterable[int] = ()) -> set[int]:
        product_ids = list(product_ids)
        site_keys = [SITE_KEY_PREFIX + str(s) for s in site_ids]
        if not product_ids and not site_keys:
            return set()
        now = _now_ms()
        async with self.redis.pipeline(transaction=False) as pipe:
            for product_id in product_ids:
                pipe.zremrangebyscore(KEY_PREFIX + str(product_id), "-inf", now)
            for key in site_keys:
                pipe.zremrangebyscore(key, "-inf", now)
            removed = await pipe.execute()
        return {pid for pid, n in zip(product_ids, removed[: len(product_ids)], strict=True) if n}

    async def _visitors(self, key: str) -> dict[str, tuple[str, str]]:
        members = await self.redis.zrangebyscore(key, _now_ms() + 1, "+inf")
        return _by_visitor(m.decode() for m in members)

    async def visitors(self, product_id: int) -> dict[str, tuple[str, str]]:
        return await self._visitors(KEY_PREFIX + str(product_id))

    async def close(self) -> None:
        await self.redis.aclose()
        await self.pool.disconnect()


_stores: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MemoryPresence | RedisPresence]" = (
    weakref.WeakKeyDictionary()
)


def presence_store() -> "MemoryPresence | RedisPresence":
    """The store for the running loop (connections cannot cross event loops)."""
    loop = asyncio.get_running_loop()
    store = _stores.get(loop)
    if store is None:
        url = settings.CANDOR_REDIS_URL
        store = RedisPresence(url) if url else MemoryPresence()
        _stores[loop] = store
    return store


def _live_now(key: str) -> list[str]:
    """The unexpired members of one presence key, read synchronously (outside any event loop).
    With Redis, one ZRANGEBYSCORE; embedded, the server process's own in-memory sets."""
    url = settings.CANDOR_REDIS_URL
    if url:
        import redis

        client = redis.Redis.from_url(url)
        try:
            return [m.decode() for m in client.zrangebyscore(key, _now_ms() + 1, "+inf")]
        finally:
            client.close()
    now = _now_ms()
    live: list[str] = []
    for store in list(_stores.values()):
        if isinstance(store, MemoryPresence):
            live += [m for m, expiry in list(store._sets.get(key, {}).items()) if expiry > now]
    return live


def visitors_now(product_id: int) -> dict[str, tuple[str, str]]:
    """The visitors with a visible page on a product now, for the admin preview."""
    return _by_visitor(_live_now(KEY_PREFIX + str(product_id)))


def site_visitors_now(site_id: int) -> dict[str, tuple[str, str]]:
    """The visitors with a visible page anywhere on a site now (capped per address like every
    presence count), for `shoppers_on_site_now` on the admin's Site page."""
    return _by_visitor(_live_now(SITE_KEY_PREFIX + str(site_id)))


def prune_expired() -> list[int]:
    """Drop expired members from every presence key in Redis; return the products whose
    viewers changed. Each server process prunes the products it holds sockets for; this is for
    the products no live process holds any more (all their processes died). Embedded, the only
    process prunes its own sets, so there is nothing to do."""
    url = settings.CANDOR_REDIS_URL
    if not url:
        return []
    import redis

    client = redis.Redis.from_url(url)
    try:
        changed = []
        now_ms = _now_ms()
        for key in client.scan_iter(match=f"{KEY_PREFIX}*", count=500):
            suffix = key.decode()[len(KEY_PREFIX) :]
            # Site keys ("site:<id>") are pruned too but announce nothing: no toast counts them.
            if client.zremrangebyscore(key, "-inf", now_ms) and suffix.isdigit():
                changed.append(int(suffix))
        return changed
    finally:
        client.close()

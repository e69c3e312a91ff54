"""The bench's Redis: one database per scenario on 127.0.0.1:6379 (fanout 12, sockets 11,
ingest 10, e2e 9), where only `candor:*` keys are ever deleted; and a subscriber that
timestamps Candor's change messages."""

import asyncio
import contextlib

from bench.harness.processes import clock
from bench.harness.product import CHANGES_CHANNEL


def redis_url(db: int) -> str:
    return f"redis://127.0.0.1:6379/{db}"


def redis_clear(url: str) -> int:
    """Delete only `candor:*` keys in the bench's Redis database `url`."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter("candor:*", count=1000))
        for start in range(0, len(keys), 500):
            client.unlink(*keys[start : start + 500])
        return len(keys)
    finally:
        client.close()


class ChangeWatcher:
    """Timestamps each message on Candor's change channel: when the update reached fan-out."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def start(self) -> None:
        import redis.asyncio as aioredis

        self.seen: list[tuple[float, str]] = []
        self.client = aioredis.Redis.from_url(self.url)
        self.pubsub = self.client.pubsub()
        await self.pubsub.subscribe(CHANGES_CHANNEL)
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        async for message in self.pubsub.listen():
            if message["type"] == "message":
                self.seen.append((clock(), message["data"].decode()))

    def first_after(self, t0: float, data: str | None = None) -> float | None:
        """The first message at or after t0 (with this data, if given)."""
        return next((t for t, d in self.seen if t >= t0 and (data is None or d == data)), None)

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()
            await self.client.aclose()

"""Channels' own fan-out: every socket a consumer in one group, the update a `group_send`.

`/ws` is a consumer that joins the group on connect and forwards each group message to its
socket; a frame on `/ctrl` (`{"round": n}`) does one `channel_layer.group_send`. The layer is
channels-redis on Redis db 12 (keys and channel names under `candor:bench:`), chosen by
`BENCH_LAYER`: `pubsub` (RedisPubSubChannelLayer: one PUBLISH, fanned out to per-channel
queues in the process) or `core` (RedisChannelLayer: one Lua script that pushes a copy per
member, each then popped by its own Redis round trip; capacity raised so none is dropped,
docs/conventions.md, "Known traps"). Run by bench/fanout.py as `uvicorn bench.group_app:application`.
"""

import json
import os

import django
from django.conf import settings

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
LAYER = os.environ.get("BENCH_LAYER", "pubsub")
GROUP = "bench-fanout"

_BACKENDS = {
    "pubsub": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [{"address": REDIS_URL}], "prefix": "candor:bench:"},
    },
    "core": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [{"address": REDIS_URL, "max_connections": 1000}],
            "prefix": "candor:bench:",
            "capacity": 100_000,
            "expiry": 120,
            "group_expiry": 3600,
        },
    },
}

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=[],
        CHANNEL_LAYERS={"default": _BACKENDS[LAYER]},
    )
    django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from bench.payload import payload_text  # noqa: E402


class Listener(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.channel_layer.group_add(GROUP, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(GROUP, self.channel_name)

    async def bench_update(self, event: dict) -> None:
        await self.send(text_data=event["text"])


class Control(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        round_no = json.loads(text_data or "{}")["round"]
        await self.channel_layer.group_send(GROUP, {"type": "bench.update", "text": payload_text(round_no)})


application = URLRouter([path("ws", Listener.as_asgi()), path("ctrl", Control.as_asgi())])

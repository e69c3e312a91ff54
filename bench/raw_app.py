"""The ceiling: a bare ASGI websocket app that loops `await send(...)` over its sockets.

`/ws` registers a listener; each frame on `/ctrl` (`{"round": n}`) sends one small JSON message,
serialised once, to every listener in turn. No framework, no Redis, no database: nothing a
real design could skip. Run by bench/fanout.py as `uvicorn bench.raw_app:app`.
"""

import json

from bench.payload import payload_text

listeners: set = set()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "websocket":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    if scope["path"] == "/ctrl":
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            out = {"type": "websocket.send", "text": payload_text(json.loads(message["text"])["round"])}
            for listener in list(listeners):
                try:
                    await listener(out)
                except Exception:  # noqa: S112 - a socket closing mid-loop must not stop the rest
                    continue
    else:
        listeners.add(send)
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            listeners.discard(send)

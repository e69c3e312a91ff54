"""The ceiling for browser events: a bare ASGI app that answers every HTTP request 202
`{"accepted": true}`, as `POST /api/v1/events` does.

It reads the whole body (as any real handler must) and parses nothing: no JSON, no framework,
no Redis, no database. Run by bench/ingest.py as `uvicorn bench.ingest_raw_app:app` with the
same flags as Candor's server.
"""

from bench.harness.candor import ORIGIN

BODY = b'{"accepted":true}'
START = {
    "type": "http.response.start",
    "status": 202,
    "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
        (b"access-control-allow-origin", ORIGIN.encode()),
        (b"vary", b"Origin"),
    ],
}
END = {"type": "http.response.body", "body": BODY}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(START)
    await send(END)

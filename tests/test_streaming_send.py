"""The hub's send loop: one socket whose client stopped reading must not hold up the others."""

import asyncio
import time

from notifications.consumers import WidgetConsumer
from notifications.streaming import SEND_STALL_S, _send_all


class Socket:
    """The parts of WidgetConsumer that `_send_all` uses, with a real outbox."""

    outbox_start = WidgetConsumer.outbox_start
    outbox_put = WidgetConsumer.outbox_put
    _outbox_drain = WidgetConsumer._outbox_drain
    OUTBOX_MAX = WidgetConsumer.OUTBOX_MAX

    def __init__(self, *, stalled=False):
        self.stalled = stalled
        self.received = []
        self.outbox = None
        self._outbox_task = None
        self.unblock = asyncio.Event()

    async def base_send(self, event):
        # As a websocket server does: the frame goes into the socket's buffer at once; the wait
        # is for the buffer to drain, which never happens while the client is not reading.
        self.received.append(event["text"])
        if self.stalled:
            await self.unblock.wait()

    async def close(self, code=None):
        self.closed = code


async def test_a_stalled_socket_is_moved_off_the_shared_loop():
    sockets = [Socket(stalled=(i == 7)) for i in range(400)]
    event = {"type": "websocket.send", "text": "x"}
    started = time.monotonic()
    sent = await _send_all([(s, event) for s in sockets])
    took = time.monotonic() - started
    assert sent == 400
    assert all(s.received == ["x"] for i, s in enumerate(sockets) if i != 7)
    assert took < SEND_STALL_S * 4, "the others waited for the stalled one"
    stalled = sockets[7]
    assert stalled.outbox is not None
    # Later rounds do not wait for it at all; its messages queue and go out, in order, when it reads.
    started = time.monotonic()
    await _send_all([(s, {"type": "websocket.send", "text": "y"}) for s in sockets])
    assert time.monotonic() - started < SEND_STALL_S
    stalled.unblock.set()
    await asyncio.sleep(0.05)
    assert stalled.received == ["x", "y"]
    stalled._outbox_task.cancel()


async def test_a_socket_that_never_reads_is_closed_not_buffered_forever():
    socket = Socket(stalled=True)
    await _send_all([(socket, {"type": "websocket.send", "text": "0"})])
    for n in range(Socket.OUTBOX_MAX + 1):
        await _send_all([(socket, {"type": "websocket.send", "text": str(n)})])
    await asyncio.sleep(0)
    assert socket.closed == 1013

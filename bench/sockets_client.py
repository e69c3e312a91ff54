"""A client process of bench/sockets.py: holds its share of the widget sockets, cheaply.

    python -m bench.sockets_client CONTROL_PORT INDEX     (started by bench/sockets.py)

Each socket is a bare `asyncio.Protocol` speaking just enough RFC 6455 for the bench: the
upgrade request (its own User-Agent, the store's Origin), one masked text frame (the page
message), and then it reads every frame the server sends (Candor closes a socket whose client
stops reading), answers the server's keepalive pings, and counts messages. No task and no
buffer per socket beyond the protocol object: with ~9,000 sockets a process, the client must
not be the bottleneck of the ceiling (`websockets`' client costs a task and a reader per socket).

The coordinator talks to it over one TCP connection, one JSON object a line (ops below).
"""

import asyncio
import base64
import contextlib
import json
import os
import resource
import socket
import sys
import zlib
from collections import Counter

from bench.harness.clients import json_line
from bench.harness.processes import clock, rss_kb

# Linux: let connect() pick the source port per destination, not bind(): each (source address,
# server port) pair then has the whole ephemeral range (28k ports) to itself.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

CONNECTING, OPEN, CLOSING, CLOSED = range(4)
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def frame(opcode: int, payload: bytes) -> bytes:
    """One client frame: FIN set and masked, as RFC 6455 requires of a client."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + masked


class WidgetSocket(asyncio.Protocol):
    __slots__ = (
        "worker",
        "batch",
        "request",
        "hello",
        "transport",
        "buf",
        "state",
        "handshake",
        "first_at",
        "messages",
        "inflate",
        "fragments",
        "compressed",
        "by_us",
    )

    def __init__(self, worker: "Worker", batch: int, request: bytes, hello: bytes) -> None:
        self.worker = worker
        self.batch = batch
        self.request = request
        self.hello = hello
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = CONNECTING
        # Resolved with the time the 101 arrived (possibly before create_connection returns).
        self.handshake: asyncio.Future = worker.loop.create_future()
        self.first_at: float | None = None
        self.messages = 0
        self.inflate = None  # a zlib inflater when permessage-deflate was agreed
        self.fragments: list[bytes] = []
        self.compressed = False
        self.by_us = False  # we closed it: not a drop

    # --- asyncio.Protocol ----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.state == CONNECTING:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self._handshake_failed("response head too long")
                return
            head = bytes(self.buf[:end])
            del self.buf[: end + 4]
            status = head.split(b"\r\n", 1)[0].decode("latin-1")
            if status.split(" ")[1:2] != ["101"]:
                self._handshake_failed(f"HTTP {' '.join(status.split(' ')[1:])}")
                return
            if b"permessage-deflate" in head.lower():
                # Server frames may be compressed, with context takeover: one inflater a socket.
                self.inflate = zlib.decompressobj(-15)
            self.state = OPEN
            if self.hello:
                self.transport.write(self.hello)
            if not self.handshake.done():  # not given up on (timed out) meanwhile
                self.handshake.set_result(clock())
        if self.state in (OPEN, CLOSING):
            self._frames()

    def connection_lost(self, exc: Exception | None) -> None:
        was = self.state
        self.state = CLOSED
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError(f"closed during the handshake ({exc})"))
        if was in (OPEN, CLOSING) and not self.by_us:
            self.worker.dropped(self, "lost: " + (type(exc).__name__ if exc else "EOF, no close frame"))
        self.worker.closing.discard(self)
        if not self.worker.closing:
            self.worker.closed.set()

    # --- frames ------------------------------------------------------------------------
    def _frames(self) -> None:
        buf = self.buf
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n, pos = b1 & 0x7F, 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, pos = int.from_bytes(buf[2:4], "big"), 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, pos = int.from_bytes(buf[2:10], "big"), 10
            if b1 & 0x80:  # a server never masks
                self.worker.dropped(self, "protocol: masked server frame")
                self.by_us = True
                self.transport.abort()
                return
            if len(buf) < pos + n:
                return
            payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            self._frame(b0, payload)
            if self.state == CLOSED:
                return

    def _frame(self, b0: int, payload: bytes) -> None:
        opcode, fin = b0 & 0x0F, b0 & 0x80
        if opcode == OP_PING:
            self.transport.write(frame(OP_PONG, payload))
        elif opcode == OP_PONG:
            self.worker.ponged(payload)
        elif opcode == OP_CLOSE:
            if not self.by_us:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                reason = payload[2:].decode("utf-8", "replace")
                self.worker.dropped(self, f"close frame {code} {reason}".strip())
                self.by_us = True  # counted once
                with contextlib.suppress(Exception):
                    self.transport.write(frame(OP_CLOSE, payload[:2]))
            self.state = CLOSED
            self.transport.close()
        elif opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            if opcode != OP_CONT:
                self.fragments = []
                self.compressed = bool(b0 & 0x40)
            self.fragments.append(payload)
            if fin:
                data = b"".join(self.fragments)
                self.fragments = []
                if self.compressed and self.inflate is not None:
                    data = self.inflate.decompress(data + b"\x00\x00\xff\xff")
                self.messages += 1
                if self.first_at is None:
                    self.first_at = clock()
                    self.worker.waiting.discard(self)
                    if not self.worker.waiting:
                        self.worker.waited.set()
                self.worker.received(data)

    def _handshake_failed(self, why: str) -> None:
        self.state = CLOSED
        self.by_us = True
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError(why))
        self.transport.abort()

    def close(self) -> None:
        """A tab closing: the close frame (1001, going away); the server ends the TCP connection."""
        self.by_us = True
        if self.state == OPEN:
            self.state = CLOSING
            with contextlib.suppress(Exception):
                self.transport.write(frame(OP_CLOSE, (1001).to_bytes(2, "big")))
        elif self.transport is not None and self.state != CLOSED:
            self.transport.abort()


def _request(host: str, port: int, path: str, user_agent: str, origin: str, deflate: bool) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        f"Origin: {origin}",
        f"User-Agent: {user_agent}",
        "Accept-Language: en-US,en;q=0.9",
    ]
    if deflate:  # what Chrome and Firefox offer
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Worker:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.loop = asyncio.get_running_loop()
        self.writer = writer
        self.sockets: list[WidgetSocket] = []
        self.drops: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()
        self.next_index = 0  # sockets are numbered per process: server, source and User-Agent
        self.ping_payload = b""
        self.pongs = 0
        self.all_ponged = asyncio.Event()
        self.pongs_wanted = 0
        # Sockets still awaited by `first_messages` and by `close`, each with its event.
        self.waiting: set[WidgetSocket] = set()
        self.waited = asyncio.Event()
        self.closing: set[WidgetSocket] = set()
        self.closed = asyncio.Event()

    def emit(self, message: dict) -> None:
        self.writer.write(json_line(message))

    def dropped(self, ws: WidgetSocket, why: str) -> None:
        self.drops[why] += 1

    def ponged(self, payload: bytes) -> None:
        if payload == self.ping_payload:
            self.pongs += 1
            if self.pongs >= self.pongs_wanted:
                self.all_ponged.set()

    def received(self, data: bytes) -> None:
        try:
            self.kinds[str(json.loads(data).get("type"))] += 1
        except (ValueError, AttributeError):
            self.kinds["(not JSON)"] += 1

    async def _open(self, cmd: dict, i: int) -> tuple[WidgetSocket, float]:
        """This process's socket number `i`: its server, source address and User-Agent."""
        targets, sources = cmd["targets"], cmd["sources"]
        host, port, path = targets[i % len(targets)]
        source = sources[(i // len(targets)) % len(sources)]
        request = _request(host, port, path, f"{cmd['ua']}/{i}", cmd["origin"], cmd["deflate"])
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            sock.setblocking(False)
            await self.loop.sock_connect(sock, (host, port))
            hello = frame(OP_TEXT, cmd["hello"].encode()) if cmd["hello"] else b""
            _, ws = await self.loop.create_connection(
                lambda: WidgetSocket(self, cmd["batch"], request, hello), sock=sock
            )
        except BaseException:
            sock.close()
            raise
        try:
            opened = await ws.handshake
        except BaseException:
            ws.by_us = True
            if ws.transport is not None:
                ws.transport.abort()
            raise
        return ws, opened

    async def connect(self, cmd: dict) -> None:
        """Open the next `count` sockets, at most `concurrency` handshakes
        in flight; each failure is counted, then retried up to `retries` times."""
        gate = asyncio.Semaphore(cmd["concurrency"])
        errors: Counter[str] = Counter()
        latencies_ms: list[float] = []
        ends: list[float] = []

        async def one(i: int) -> None:
            async with gate:
                for _attempt in range(cmd["retries"] + 1):
                    t0 = clock()
                    try:
                        async with asyncio.timeout(cmd["timeout"]):
                            ws, opened = await self._open(cmd, i)
                    except Exception as exc:  # counted, then retried (or given up)
                        errors[f"{type(exc).__name__} {exc}".strip()[:100]] += 1
                        continue
                    self.sockets.append(ws)
                    latencies_ms.append(round((opened - t0) * 1000, 1))
                    ends.append(opened)
                    return

        first, self.next_index = self.next_index, self.next_index + cmd["count"]
        started = clock()
        await asyncio.gather(*(one(first + j) for j in range(cmd["count"])))
        self.emit(
            {
                "op": "connected",
                "ok": len(ends),
                "errors": dict(errors),
                "started": started,
                "last": max(ends, default=None),
                "latencies_ms": latencies_ms,
            }
        )

    async def first_messages(self, cmd: dict) -> None:
        """Wait until every open socket of `batch` has received a message (or the timeout)."""
        batch = [ws for ws in self.sockets if ws.batch == cmd["batch"] and ws.state == OPEN]
        self.waiting = {ws for ws in batch if ws.first_at is None}
        self.waited.clear()
        if self.waiting:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(cmd["timeout"]):
                    await self.waited.wait()
        self.waiting = set()
        firsts = [ws.first_at for ws in batch if ws.first_at is not None]
        last = max(firsts, default=None)
        self.emit({"op": "firsts", "sockets": len(batch), "got": len(firsts), "last": last})

    async def status(self, cmd: dict) -> None:
        """Count open sockets and drops; with `ping`, ping every open socket and count pongs."""
        open_ = [ws for ws in self.sockets if ws.state == OPEN]
        answered = None
        if cmd.get("ping") and open_:
            self.ping_payload = os.urandom(8)
            self.pongs, self.pongs_wanted = 0, len(open_)
            self.all_ponged.clear()
            ping = frame(OP_PING, self.ping_payload)  # one mask for all: the server does not care
            for ws in open_:
                ws.transport.write(ping)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(cmd["ping_timeout"]):
                    await self.all_ponged.wait()
            answered = self.pongs
        elif cmd.get("ping"):
            answered = 0
        self.emit(
            {
                "op": "status",
                "open": sum(ws.state == OPEN for ws in self.sockets),
                "pinged": len(open_) if answered is not None else None,
                "answered": answered,
                "drops": dict(self.drops),
                "kinds": dict(self.kinds),
                "rss_kb": rss_kb(os.getpid()),
            }
        )

    async def close(self, cmd: dict) -> None:
        sockets, self.sockets = self.sockets, []
        self.closing = {ws for ws in sockets if ws.state != CLOSED}
        self.closed.clear()
        for ws in sockets:
            ws.close()
        if self.closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(cmd.get("timeout", 10)):
                    await self.closed.wait()
        self.closing = set()
        lingering = [ws for ws in sockets if ws.state != CLOSED]
        for ws in lingering:
            ws.transport.abort()
        self.drops.clear()
        self.kinds.clear()
        self.emit({"op": "closed", "aborted": len(lingering)})

    async def serve(self, reader: asyncio.StreamReader) -> None:
        handlers = {
            "connect": self.connect,
            "firsts": self.first_messages,
            "status": self.status,
            "close": self.close,
        }
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd["op"] == "exit":
                break
            await handlers[cmd["op"]](cmd)
            await self.writer.drain()


async def client_main(port: int, index: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(json_line({"op": "hello", "index": index}))
    await writer.drain()
    await Worker(writer).serve(reader)
    # The coordinator is done or gone: leave without closing every socket politely.
    os._exit(0)


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop
    except ImportError:  # plain asyncio works, a little slower
        asyncio.run(client_main(int(sys.argv[1]), int(sys.argv[2])))
    else:
        uvloop.run(client_main(int(sys.argv[1]), int(sys.argv[2])))


if __name__ == "__main__":
    main()

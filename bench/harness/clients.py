"""The load clients: client processes that hold websockets and report receipt times to the
coordinator over one TCP connection each (one JSON object a line), the coordinator's pool of
them, and small HTTP helpers (the signed server event a store's backend sends).

A client process is `python -m <module> --_client PORT INDEX` (bench.fanout's, or a script's
own worker, as bench.e2e's), or any command given to `ClientPool` (bench.sockets_client).
"""

import asyncio
import contextlib
import json
import math
import os
import subprocess
import time
from collections import Counter

from bench.harness import ROOT
from bench.harness.candor import ORIGIN, UA, sign
from bench.harness.processes import PY, clock, spawn, stop_child


def json_line(message: dict) -> bytes:
    return (json.dumps(message) + "\n").encode()


# ======================================================================================
# Client process: holds its share of the sockets and reports receipt times.
# ======================================================================================
class ClientWorker:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.sockets: list = []
        self.readers: list[asyncio.Task] = []
        # What each socket shows, as the widget would: kind -> displayed value, and id -> kind.
        self.shown: list[dict[str, str]] = []
        self.ids: list[dict[int, str]] = []
        self.seen: list[int] = []
        self.closed = 0
        self._reset_round(-1)

    def _reset_round(self, round_no: int) -> None:
        self.armed = round_no
        self.got = 0
        self.first = math.inf
        self.last = 0.0
        self.kinds: Counter[str] = Counter()
        self.done_sent = round_no < 0

    def emit(self, message: dict) -> None:
        self.writer.write(json_line(message))

    def _report(self, complete: bool) -> None:
        self.done_sent = True
        self.emit(
            {
                "op": "done",
                "round": self.armed,
                "complete": complete,
                "got": self.got,
                "expected": len(self.sockets),
                "first": self.first if self.got else None,
                "last": self.last if self.got else None,
                "kinds": self.kinds,
                "closed": self.closed,
            }
        )

    async def _read(self, j: int, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for raw in ws:
                t = clock()
                message = json.loads(raw)
                claim = message.get("claim") or {}
                kind = self._track(j, message, claim)
                if self.armed >= 0 and self.seen[j] != self.armed:
                    self.seen[j] = self.armed
                    self.got += 1
                    self.first = min(self.first, t)
                    self.last = max(self.last, t)
                    self.kinds[f"{message.get('type')} {kind} {claim.get('displayed', '')}".strip()] += 1
                    if self.got == len(self.sockets) and not self.done_sent:
                        self._report(complete=True)
        except ConnectionClosed:
            pass
        finally:
            self.closed += 1

    def _track(self, j: int, message: dict, claim: dict) -> str:
        kind = claim.get("metric") or self.ids[j].get(message.get("id"), "?")
        if message.get("type") == "withdraw":
            self.ids[j].pop(message.get("id"), None)
            self.shown[j].pop(kind, None)
        else:
            self.ids[j] = {i: k for i, k in self.ids[j].items() if k != kind}
            self.ids[j][message.get("id")] = kind
            self.shown[j][kind] = str(claim.get("displayed"))
        return kind

    async def connect(self, cmd: dict) -> None:
        from websockets.asyncio.client import connect

        gate = asyncio.Semaphore(cmd["concurrency"])
        headers = {"Origin": ORIGIN}
        errors: Counter[str] = Counter()

        async def one(i: int):
            modulus = cmd["visitors"]
            user_agent = f"{UA} bench/{i % modulus if modulus else i}"
            async with gate:
                for attempt in range(4):
                    try:
                        ws = await connect(
                            cmd["url"],
                            additional_headers=headers,
                            user_agent_header=user_agent,
                            compression="deflate" if cmd["deflate"] else None,
                            ping_interval=None,
                            open_timeout=60,
                            proxy=None,
                        )
                    except Exception as exc:  # counted and reported, then retried
                        errors[type(exc).__name__ + ": " + str(exc)[:80]] += 1
                        await asyncio.sleep(0.2 * (attempt + 1))
                        continue
                    if cmd["hello"]:
                        await ws.send(cmd["hello"])
                    return ws
            return None

        results = await asyncio.gather(*(one(cmd["first"] + j) for j in range(cmd["count"])))
        for ws in results:
            if ws is None:
                continue
            j = len(self.sockets)
            self.sockets.append(ws)
            self.shown.append({})
            self.ids.append({})
            self.seen.append(-1)
            self.readers.append(asyncio.get_running_loop().create_task(self._read(j, ws)))
        self.emit({"op": "connected", "ok": len(self.sockets), "errors": errors.most_common(3)})

    async def settle(self, cmd: dict) -> None:
        deadline = clock() + cmd["timeout"]
        kind, displayed = cmd["kind"], cmd["displayed"]
        while clock() < deadline:
            if all(shown.get(kind) == displayed for shown in self.shown):
                break
            await asyncio.sleep(0.05)
        self.emit({"op": "settled", "values": Counter(str(shown.get(kind)) for shown in self.shown)})

    async def close(self) -> None:
        sockets, self.sockets = self.sockets, []
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        self.readers, self.shown, self.ids, self.seen, self.closed = [], [], [], [], 0
        self._reset_round(-1)
        self.emit({"op": "closed"})

    async def serve(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "connect":
                await self.connect(cmd)
            elif op == "settle":
                await self.settle(cmd)
            elif op == "arm":
                self._reset_round(cmd["round"])
                self.emit({"op": "armed", "round": cmd["round"]})
            elif op == "report":
                if not self.done_sent:
                    self._report(complete=False)
            elif op == "close":
                await self.close()
            elif op == "exit":
                break
            await self.writer.drain()


async def client_main(port: int, index: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(json_line({"op": "hello", "index": index}))
    await writer.drain()
    await ClientWorker(writer).serve(reader)
    # The coordinator is gone or done: leave without a polite close of every socket.
    os._exit(0)


# ======================================================================================
# Coordinator side
# ======================================================================================
class Client:
    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.writer: asyncio.StreamWriter | None = None
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()

    async def send(self, message: dict) -> None:
        assert self.writer is not None
        self.writer.write(json_line(message))
        await self.writer.drain()

    async def expect(self, op: str, within_s: float, round_no: int | None = None) -> dict:
        async with asyncio.timeout(within_s):
            while True:
                message = await self.inbox.get()
                if message["op"] == "eof":
                    raise RuntimeError(f"client process {self.proc.pid} exited")
                if message["op"] == op and (round_no is None or message.get("round") == round_no):
                    return message


class ClientPool:
    """`count` client processes, each started as `python <command> PORT INDEX` and talking to
    this coordinator on PORT; `limit`: the longest line a client may send."""

    def __init__(
        self,
        count: int,
        command: tuple[str, ...] = ("-m", "bench.fanout", "--_client"),
        *,
        limit: int = 2**16,
        die_with_parent: bool = False,
    ) -> None:
        self.count = count
        self.command = list(command)
        self.limit = limit
        self.die_with_parent = die_with_parent
        self.clients: list[Client] = []
        self._ready = asyncio.Event()
        self._hellos = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hello = json.loads(await reader.readline())
        client = self.clients[hello["index"]]
        client.writer = writer
        self._hellos += 1
        if self._hellos == self.count:
            self._ready.set()
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                client.inbox.put_nowait(json.loads(line))
        client.inbox.put_nowait({"op": "eof"})

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0, limit=self.limit)
        port = self.server.sockets[0].getsockname()[1]
        for index in range(self.count):
            proc = spawn(
                [PY, *self.command, str(port), str(index)], cwd=ROOT, die_with_parent=self.die_with_parent
            )
            self.clients.append(Client(proc))
        async with asyncio.timeout(30):
            await self._ready.wait()

    async def ask(self, messages: list[dict], op: str, within_s: float) -> list[dict]:
        for client, message in zip(self.clients, messages, strict=True):
            await client.send(message)
        return list(await asyncio.gather(*(c.expect(op, within_s) for c in self.clients)))

    async def ask_all(self, message: dict, op: str, within_s: float) -> list[dict]:
        return await self.ask([message] * self.count, op, within_s)

    async def collect(self, round_no: int, within_s: float) -> list[dict]:
        async def one(client: Client) -> dict:
            try:
                return await client.expect("done", within_s, round_no)
            except TimeoutError:
                await client.send({"op": "report"})
                return await client.expect("done", 10, round_no)

        return list(await asyncio.gather(*(one(c) for c in self.clients)))

    async def stop(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await client.send({"op": "exit"})
        for client in self.clients:
            await asyncio.to_thread(stop_child, client.proc)
        self.server.close()


async def drain(ws) -> None:
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


def signed_post(key: str, secret: str, payload: dict) -> bytes:
    """`POST /api/v1/server/events` as a store's backend sends it (SPEC 5, Candor-Signature)."""
    body = json.dumps({"key": key, **payload}, separators=(",", ":")).encode()
    t = int(time.time())
    digest = sign(secret.encode(), str(t), body)
    head = (
        "POST /api/v1/server/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nCandor-Signature: t={t},v1={digest}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


async def http_status(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
    response = await reader.read()
    writer.close()
    return response.split(b"\r\n", 1)[0].decode(errors="replace")

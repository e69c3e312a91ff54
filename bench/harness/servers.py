"""Servers under test: uvicorn with the standard flags (the raw ASGI apps and Candor alike, so
only the application differs), and the environment of Candor's server (`candor_env`).

Apps are given as `bench.raw_app:app` or `config.asgi:application`, and uvicorn runs with the
repository root (or --candor-root) as its working directory.
"""

import asyncio
import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

from bench.harness import ROOT
from bench.harness.processes import PY, clock, free_port, spawn, stop_child
from bench.harness.product import UPDATE_INTERVAL_MS

# Websocket benchmarks (fanout, sockets, e2e): the same flags for every design.
UVICORN_FLAGS = ["--no-proxy-headers", "--ws-max-size", "65536", "--log-level", "warning", "--no-access-log"]
# HTTP benchmark (ingest): the same flags for both servers; httptools named so that neither
# falls back to h11.
UVICORN_HTTP_FLAGS = [
    "--no-proxy-headers",
    "--http",
    "httptools",
    "--log-level",
    "warning",
    "--no-access-log",
]

# Far above anything reachable here: the bench measures the path, not the limiter's refusals.
RATE_UNLIMITED = "100000000/m"

# Candor's settings for the websocket benchmarks.
SOCKETS_SETTINGS = {
    "CANDOR_UPDATE_INTERVAL_MS": str(UPDATE_INTERVAL_MS),
    # The load clients hold thousands of sockets from a handful of loopback addresses: SPEC 7's
    # per-address limits would (rightly) refuse them. The per-address grouping still runs on
    # every presence read; only the numbers are raised so the benchmark measures fan-out.
    "CANDOR_SOCKETS_PER_ADDRESS": "1000000",
    "CANDOR_VISITORS_PER_ADDRESS": "1000000",
}
# Candor's settings for the ingestion benchmark.
INGEST_SETTINGS = {
    "DJANGO_DEBUG": "0",
    "CANDOR_RATE_PER_VISITOR": RATE_UNLIMITED,
    "CANDOR_RATE_PER_IP": RATE_UNLIMITED,
    # Not Candor's default (60): under ASGI Django runs each request's sync code on a thread of
    # its own, so a persistent connection is one per request, left open until its thread's
    # objects are collected. Under this load that reaches PostgreSQL's max_connections
    # within a second (503s here, "too many clients" for everyone else on the server).
    # Closing at the end of each request is what Django advises for ASGI.
    "DJANGO_CONN_MAX_AGE": "0",
}


def env_apply(env: dict[str, str], items: Iterable[str]) -> dict[str, str]:
    """`--candor-env NAME=VALUE` items (repeatable) applied over env."""
    for item in items:
        name, _, value = item.partition("=")
        env[name] = value
    return env


def candor_env(
    redis_url: str, database_url: str, settings: dict[str, str] = SOCKETS_SETTINGS, extra: Iterable[str] = ()
) -> dict[str, str]:
    """The environment of Candor's server and its manage.py: this process's, without any
    DJANGO_* or CANDOR_* variable, then the bench's databases, settings and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CANDOR_"))}
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="config.settings",
        DJANGO_SECRET_KEY="bench-not-a-secret-" + "x" * 40,
        DJANGO_SECURE_SSL_REDIRECT="0",
        DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
        DJANGO_LOG_LEVEL="WARNING",
    )
    env.update(settings)
    return env_apply(env, extra)


def raw_env() -> dict[str, str]:
    """The environment of a raw ASGI app (no Django settings to pick up by accident)."""
    return {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}


def uvicorn_command(app: str, port: int, flags: list[str] = UVICORN_FLAGS) -> list[str]:
    return [PY, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), *flags]


class Server:
    """One uvicorn process on a free port, its output in a temporary log (kept on request)."""

    def __init__(
        self,
        app: str,
        env: dict[str, str],
        cwd: Path = ROOT,
        *,
        log_prefix: str = "bench-uvicorn-",
        extra: list[str] = (),
        die_with_parent: bool = False,
    ) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix=log_prefix, suffix=".log", delete=False)  # noqa: SIM115
        self.proc = spawn(
            uvicorn_command(app, self.port) + list(extra),
            cwd=cwd,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            die_with_parent=die_with_parent,
        )

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    async def ready(self) -> None:
        deadline = clock() + 60
        while clock() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            return
        raise RuntimeError(f"server did not listen within 60 s:\n{self.log_tail()}")

    async def stop(self, *, keep_log: bool = False) -> None:
        await asyncio.to_thread(stop_child, self.proc)
        self.log.close()
        if keep_log:
            print(f"  server log kept: {self.log.name}", flush=True)
        else:
            os.unlink(self.log.name)


class HttpServer:
    """A uvicorn process for the HTTP benchmark (UVICORN_HTTP_FLAGS), started and waited for
    synchronously: the ingest coordinator has no event loop."""

    def __init__(self, app: str, env: dict[str, str]) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="bench-ingest-uvicorn-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = spawn(
            uvicorn_command(app, self.port, UVICORN_HTTP_FLAGS),
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = clock() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}):\n{self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                break
            if clock() > deadline:
                raise RuntimeError(f"server did not listen within 60 s:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-lines:])

    def request(self, method: str, path: str, timeout_s: float = 30) -> bytes:
        """One request on its own connection (control endpoints of the profile app)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s) as s:
            s.sendall(f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            chunks = []
            while chunk := s.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).split(b"\r\n\r\n", 1)[-1]

    def stop(self, *, keep_log: bool = False) -> None:
        stop_child(self.proc)
        self.log.close()
        if keep_log:
            print(f"  server log kept: {self.log.name}", flush=True)
        else:
            os.unlink(self.log.name)

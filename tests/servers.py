"""Helpers for tests that start their own server processes: a free port, waiting for it to
answer, stopping a process group, waiting for its database sessions to end, a private
redis-server, and a uvicorn process run as docs/operations.md runs it."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_wait(
    proc: subprocess.Popen, port: int, *, log: Callable[[], str] = str, timeout_s: float = 30
) -> None:
    """Until something answers on `port`; fails the test, with `log()`, if `proc` dies first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the server on port {port} did not start:\n{log()}")
            time.sleep(0.05)


def process_stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (started with start_new_session=True), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def other_sessions_wait_end(timeout_s: float = 10.0) -> None:
    """PostgreSQL notices a dead client's session a moment later; the test database can only be
    flushed and dropped once it has."""
    from django.db import connection

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0] == 0:
                return
        time.sleep(0.1)


def log_tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


class PrivateRedis:
    """A throw-away redis-server on 127.0.0.1:<port>, no persistence: a restart comes back empty.
    Fault tests kill, flush or restart this one, never the machine's shared Redis on 6379."""

    def __init__(self, base: Path):
        self.port = free_port()
        self.log = base / f"redis-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        import redis

        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
                + ["--save", "", "--appendonly", "no", "--daemonize", "no"],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"redis-server on {self.port} did not start:\n{log_tail(self.log)}")
                    time.sleep(0.05)
        finally:
            client.close()

    def kill(self):
        """No goodbye: SIGKILL, as when the machine or the container dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


def private_redis_start(base: Path) -> PrivateRedis:
    import shutil

    if shutil.which("redis-server") is None:
        pytest.skip("SKIPPED LOUDLY: redis-server is not installed.")
    server = PrivateRedis(base)
    server.start()
    return server


def database_url_of_tests() -> str:
    """The pytest-django test database, as a URL for a server process of our own."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def server_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The environment of a production-like Candor process on the test database."""
    from django.conf import settings

    env = {
        **os.environ,
        "DATABASE_URL": database_url_of_tests(),
        "REDIS_URL": redis_url,
        # The test process's own key: the sites' secrets it stored are encrypted under it (as every
        # process of one deployment shares DJANGO_SECRET_KEY).
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "DJANGO_SECRET_KEY_FALLBACKS": ",".join(settings.SECRET_KEY_FALLBACKS),
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        **extra,
    }
    env.pop("DJANGO_DEBUG", None)
    return env


def uvicorn_start(env: dict[str, str], log: Path, *, extra_args: tuple[str, ...] = ()) -> tuple:
    """One uvicorn process with docs/operations.md's production flags; returns (process, port)."""
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--no-proxy-headers"]
            + ["--ws-max-size", "65536", "--no-access-log", "--host", "127.0.0.1", "--port", str(port)]
            + ["--limit-concurrency", "10000", "--timeout-keep-alive", "5"]
            + list(extra_args),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    port_wait(proc, port, log=lambda: log_tail(log))
    return proc, port

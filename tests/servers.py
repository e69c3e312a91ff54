"""Helpers for tests that start their own server processes: a free port, waiting for it to
answer, stopping a process group, and waiting for its database sessions to end."""

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable

import pytest


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

"""Child processes: start them in their own session, stop them (and only them), free ports, the
clock every process shares, and what /proc says about a process (CPU, memory, files).

Every process a benchmark starts goes through `spawn`, which records it in `children`; a
script's `main` stops each of them in its `finally` (normal end, Ctrl-C, SIGTERM), with
`stop_all`.
"""

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")

children: list[subprocess.Popen] = []


def clock() -> float:
    # CLOCK_MONOTONIC is one system-wide clock on Linux: receipt times taken in the client
    # processes and the trigger time taken in the coordinator compare directly, immune to
    # wall-clock steps.
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def _die_with_parent() -> None:
    # A child outlives a coordinator killed with SIGKILL otherwise (start_new_session keeps
    # Ctrl-C away from it). Spawned from the main thread only: the signal follows the thread.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(args: list[str], *, die_with_parent: bool = False, **kwargs) -> subprocess.Popen:
    # Own session: a terminal's Ctrl-C reaches only the coordinator, which stops each child.
    if die_with_parent:
        kwargs["preexec_fn"] = _die_with_parent
    proc = subprocess.Popen(args, start_new_session=True, **kwargs)  # noqa: PLW1509
    children.append(proc)
    return proc


def stop_child(proc: subprocess.Popen) -> None:
    """Stop one child we started (it leads its own process group; nothing else is touched)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    for stream in (proc.stdin, proc.stdout):
        if stream:
            with contextlib.suppress(OSError):
                stream.close()


def stop_all() -> None:
    """Stop every child this process started (a script's `finally`)."""
    for proc in children:
        stop_child(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LineReader:
    """Whole lines (JSON objects) from a child's stdout, with a timeout."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.buffer = proc, b""

    def read(self, timeout_s: float) -> dict:
        import select

        deadline = clock() + timeout_s
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - clock()
            if left <= 0:
                raise TimeoutError(f"client {self.proc.pid} said nothing within {timeout_s:g} s")
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"client {self.proc.pid} exited ({self.proc.wait()})")
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


# --- /proc ---------------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat as [comm, state, ppid, …] (comm may hold spaces and parentheses)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    return [comm, *text[text.rindex(")") + 2 :].split()]


def cpu_s(pid: int) -> float:
    """utime + stime of one process so far, all its threads (0 if it is gone)."""
    fields = _stat(pid)
    return (int(fields[12]) + int(fields[13])) / CLK_TCK if fields else 0.0


def service_cpu_s(comm: str) -> float:
    """CPU of every process named `comm` (PostgreSQL's backends come and go: those reaped during
    the window are in the postmaster's cutime + cstime, so they are counted too)."""
    total, stats = 0.0, {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) and fields[0] == comm:
            stats[int(entry.name)] = fields
    for fields in stats.values():
        total += int(fields[12]) + int(fields[13])
        if int(fields[2]) not in stats:  # the root (postmaster): add its reaped children
            total += int(fields[14]) + int(fields[15])
    return total / CLK_TCK


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (Linux /proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))

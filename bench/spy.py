"""Profile a benchmark's server from outside with py-spy, while the benchmark runs.

    .venv/bin/python -m bench.spy --match "uvicorn config.asgi" --after-s 60 --seconds 20 \
        --out bench/profiles/fanout-1000.txt --note "python -m bench.fanout --sockets 1000"

Waits for a process whose command line contains `--match` (the Candor server a benchmark
started), waits `--after-s` more (set-up), samples it with `py-spy record` for `--seconds`
(all threads, idle samples excluded, without pausing it) and writes a text summary: the share of samples per
function, by own time and by total time, plus Candor's own frames. Used for the scenarios whose
target is missed (bench/README.md)."""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


def _find(match: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if match in command and "spy.py" not in command:
            return int(entry.name)
    return None


def summary(raw: str, *, top: int = 30) -> str:
    own: Counter = Counter()
    total: Counter = Counter()
    candor: Counter = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
            if "notifications/" in frame or "config/" in frame:
                candor[frame] += n
    lines = [f"{samples} samples (busy threads only)", "", "by own time:"]
    lines += [f"  {n / samples:6.1%}  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "Candor's frames, by total time (the time spent in and under them):"]
    lines += [f"  {n / samples:6.1%}  {frame}" for frame, n in candor.most_common(top)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--match", required=True)
    parser.add_argument("--after-s", type=float, default=0.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--wait-s", type=float, default=600.0, help="how long to wait for the process")
    parser.add_argument("--out", required=True)
    parser.add_argument("--note", default="")
    parser.add_argument(
        "--gil", action="store_true", help="only samples where a thread holds the GIL: where the CPU goes"
    )
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait_s
    pid = None
    while pid is None and time.monotonic() < deadline:
        pid = _find(args.match)
        time.sleep(0.5)
    if pid is None:
        print(f"no process matching {args.match!r}", file=sys.stderr)
        return 1
    time.sleep(args.after_s)
    spy = Path(sys.executable).with_name("py-spy")
    with tempfile.NamedTemporaryFile(suffix=".txt") as out:
        subprocess.run(  # noqa: S603
            [
                str(spy),
                "record",
                "--nonblocking",
                *(["--gil"] if args.gil else []),
                "-p",
                str(pid),
                "-d",
                str(int(args.seconds)),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                out.name,
            ],
            check=True,
            capture_output=True,
        )
        raw = Path(out.name).read_text()
    header = (
        f"# py-spy record --nonblocking{' --gil' if args.gil else ''} of pid {pid} ({args.match}) "
        f"for {args.seconds:.0f} s, 200 samples/s\n"
    )
    if args.note:
        header += f"# during: {args.note}\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(header + summary(raw), encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

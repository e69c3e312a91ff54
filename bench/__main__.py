"""`python -m bench [--quick]`: every benchmark in one run, and `bench/RESULTS.md`
(`bench/RESULTS-quick.md` for a quick run).

Runs `python -m bench.policy`, `python -m bench.fanout` and the other scripts (each prints its
figures next to a ceiling measured in the same run) and writes their output to `bench/RESULTS.md`
with the machine, the date, the versions and the exact commands. `--quick` uses small sizes and
enforces no target: `.ci/run` runs it so the benchmark code never rots. Without `--quick` it exits
1 if a target is missed.
"""

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from bench.harness import ROOT
from bench.harness.processes import PY
from bench.result import results_parse


def _machine() -> str:
    memory_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {memory_kb / 1024 / 1024:.1f} GiB, {platform.platform()}"


def _versions() -> str:
    names = ("django", "channels", "channels-redis", "uvicorn", "redis", "psycopg")
    found = [f"Python {platform.python_version()}"] + [f"{n} {version(n)}" for n in names]
    return ", ".join(found)


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}×" if value < 0.1 else f"{value:.2f}×"


def summary_table(rows: list[dict], *, quick: bool) -> str:
    lines = [
        "| scenario | figure | ceiling (same run) | ratio | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        verdict = (
            "not judged (quick)" if quick or row["passed"] is None else ("met" if row["passed"] else "MISSED")
        )
        lines.append(
            f"| {row['scenario']} | {row['figure']} | {row['ceiling']} | {_ratio(row['ratio'])} "
            f"| {row['target']} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="small sizes, no targets enforced (CI)")
    args = parser.parse_args()
    if args.quick:
        runs = [
            [PY, "-m", "bench.policy", "--n", "20000", "--quick"],
            [PY, "-m", "bench.fanout", "--sockets", "200", "--rounds", "2", "--warmup", "1"]
            + ["--designs", "raw,candor", "--quick"],
            [PY, "-m", "bench.sockets", "--quick"],
            [PY, "-m", "bench.ingest", "--quick"],
            [PY, "-m", "bench.e2e", "--quick"],
            [PY, "-m", "bench.widget", "--quick"],
        ]
    else:
        runs = [
            [PY, "-m", "bench.policy", "--n", "200000"],
            [PY, "-m", "bench.fanout", "--sockets", "1000", "--rounds", "10"],
            [PY, "-m", "bench.fanout", "--sockets", "3000", "--rounds", "10"],
            [PY, "-m", "bench.fanout", "--sockets", "10000", "--rounds", "6", "--designs", "raw,candor"],
            [PY, "-m", "bench.sockets"],
            [PY, "-m", "bench.ingest"],
            [PY, "-m", "bench.e2e", "--viewers", "1000"],
            [PY, "-m", "bench.e2e", "--viewers", "10000"],
            [PY, "-m", "bench.widget"],
        ]
    sections = []
    rows: list[dict] = []
    missed = []
    crashed: list[str] = []
    for command in runs:
        shown = " ".join(["python", *command[1:]])
        print(f"== {shown}", flush=True)
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=2400)  # noqa: S603
        output = result.stdout.strip()
        print(output[-4000:])
        if result.returncode != 0:
            # A script that crashed: its error goes in the report and the run goes on.
            print(result.stderr[-4000:], file=sys.stderr)
            missed.append(f"{shown}: exited {result.returncode}")
            crashed.append(shown)
            output += f"\n\nexited {result.returncode}; the end of its stderr:\n{result.stderr[-2000:]}"
        missed += [line for line in output.splitlines() if "NOT met" in line or ": FAIL" in line]
        rows += results_parse(output)
        detail = "\n".join(line for line in output.splitlines() if not line.startswith("RESULT "))
        sections.append(f"### `{shown}`\n\n```\n{detail[-6000:]}\n```\n")
    mode = "quick (small sizes, targets not enforced)" if args.quick else "full"
    report = (
        "# Benchmark results\n\n"
        f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC\n"
        f"- machine: {_machine()}\n"
        f"- versions: {_versions()}\n"
        f"- command: `python -m bench{' --quick' if args.quick else ''}` ({mode})\n"
        f"- targets missed: {len(missed) if not args.quick else 'not enforced'}\n\n"
        "Each scenario's figure beside a ceiling measured in the same run, and the ratio "
        "(`bench/README.md` explains how each is measured; `bench/profiles/` holds the profiles of "
        "the misses). The detailed output of every command follows the table.\n\n"
        + summary_table(rows, quick=args.quick)
        + "\n"
        + "\n".join(sections)
    )
    # A quick run must not overwrite the last full results.
    target = ROOT / "bench" / ("RESULTS-quick.md" if args.quick else "RESULTS.md")
    target.write_text(report, encoding="utf-8")
    print(f"wrote {target.relative_to(ROOT)}")
    if crashed:
        print("crashed:\n" + "\n".join(crashed))
        return 2
    if missed and not args.quick:
        print("targets missed:\n" + "\n".join(missed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

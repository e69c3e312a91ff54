"""One machine-readable line per scenario, which `python -m bench` gathers into the summary table
of `bench/RESULTS.md`: the figure, its ceiling from the same run, the ratio, the target, the
verdict. Each script still prints its own detailed table above it."""

import json

PREFIX = "RESULT "


def result_print(
    *, scenario: str, figure: str, ceiling: str, ratio: float | None, target: str, passed: bool | None
) -> None:
    """`passed=None`: not judged (a quick run, or a figure with no target)."""
    row = {
        "scenario": scenario,
        "figure": figure,
        "ceiling": ceiling,
        "ratio": None if ratio is None else round(ratio, 4),
        "target": target,
        "passed": passed,
    }
    print(PREFIX + json.dumps(row, ensure_ascii=False), flush=True)


def results_parse(output: str) -> list[dict]:
    return [json.loads(line[len(PREFIX) :]) for line in output.splitlines() if line.startswith(PREFIX)]

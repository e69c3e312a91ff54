"""Known-vulnerability check of the packages installed in this virtual environment (CI).

1. pip-audit (pinned in requirements-dev.txt) with `--strict`, against the environment: when its
   vulnerability service answers for every package, its verdict is final (exit 1 on any finding).
2. When it cannot audit (this workplace reaches PyPI's index but neither PyPI's per-version JSON
   API nor OSV, so pip-audit "could not audit" every package and, without --strict, would report
   "No known vulnerabilities found" having checked nothing), the installed versions are checked
   against the vendored list .ci/advisories.json instead, and the output says so. That list is only
   as current as its `updated` date: a warning is printed once it is older than STALE_DAYS.

    python .ci/cve_check.py                       # as CI runs it
    python .ci/cve_check.py --offline --installed django==5.2.12   # the vendored list only, for
                                                  # the given versions (tests use this)
Exit status: 0 clean, 1 a known vulnerability is installed, 2 the check itself could not run.
"""

import argparse
import datetime as dt
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

ADVISORIES = Path(__file__).resolve().parent / "advisories.json"
STALE_DAYS = 90


def _versions(vuln: dict) -> str:
    return ", ".join(vuln.get("fix_versions") or ["?"])


def pip_audit() -> tuple[str, list[str]]:
    """('clean' | 'vulnerable' | 'unavailable', report lines)."""
    try:
        run = subprocess.run(  # noqa: S603 (a fixed command)
            [sys.executable, "-m", "pip_audit", "--strict", "--progress-spinner", "off", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "unavailable", [f"pip-audit did not run: {exc}"]
    try:
        report = json.loads(run.stdout or "{}")
    except ValueError:
        report = {}
    found = [
        f"{dep['name']} {dep['version']}: {vuln['id']} (fixed in {_versions(vuln)})"
        for dep in report.get("dependencies", [])
        for vuln in dep.get("vulns", [])
    ]
    if found:
        return "vulnerable", found
    if run.returncode == 0 and report.get("dependencies"):
        return "clean", [f"pip-audit: {len(report['dependencies'])} packages audited, no known vulnerability"]
    # With --strict, pip-audit stops at the first package it could not audit.
    reason = (run.stderr.strip().splitlines() or ["no report"])[-1]
    return "unavailable", [f"pip-audit could not audit this environment: {reason}"]


def installed_versions(pins: list[str]) -> dict[str, str]:
    if pins:
        return {canonicalize_name(p.split("==")[0]): p.split("==")[1] for p in pins}
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}


def vendored_findings(installed: dict[str, str], data: dict) -> list[str]:
    found = []
    for advisory in data["advisories"]:
        version = installed.get(canonicalize_name(advisory["package"]))
        if version is None:
            continue
        for affected in advisory["affected"]:
            if SpecifierSet(affected, prereleases=True).contains(Version(version), prereleases=True):
                aliases = f" ({', '.join(advisory['aliases'])})" if advisory["aliases"] else ""
                summary = f": {advisory['summary']}" if advisory["summary"] else ""
                name = f"{advisory['package']} {version}: {advisory['id']}{aliases}"
                found.append(f"{name}, affected {affected}{summary}")
                break
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="skip pip-audit: the vendored list only")
    parser.add_argument(
        "--installed", nargs="*", default=[], help="NAME==VERSION to check instead of this env"
    )
    parser.add_argument("--advisories", type=Path, default=ADVISORIES)
    args = parser.parse_args()

    if not args.offline and not args.installed:
        verdict, lines = pip_audit()
        print("\n".join(lines))
        if verdict == "clean":
            return 0
        if verdict == "vulnerable":
            print("known vulnerabilities are installed: move the pins past them")
            return 1
        print("falling back to the vendored advisory list (.ci/advisories.json)")

    try:
        data = json.loads(args.advisories.read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.advisories}: {exc}")
        return 2
    installed = installed_versions(args.installed)
    found = vendored_findings(installed, data)
    age_days = (dt.date.today() - dt.date.fromisoformat(data["updated"])).days
    print(
        f"vendored advisories: {len(data['advisories'])} (updated {data['updated']}, {age_days} days ago)"
        f" checked against {len(installed)} installed packages"
    )
    if age_days > STALE_DAYS:
        print(f"WARNING: the vendored advisory list is over {STALE_DAYS} days old; refresh it")
    if found:
        print("known vulnerabilities are installed: move the pins past them")
        print("\n".join(found))
        return 1
    print("no known vulnerability in the vendored list")
    return 0


if __name__ == "__main__":
    sys.exit(main())

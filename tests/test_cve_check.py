"""The CI's known-vulnerability check (.ci/cve_check.py) can fail: a pinned version inside an
advisory's range is reported and exits 1; the environment as pinned passes."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / ".ci" / "cve_check.py"


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--offline", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("pin", "advisory"),
    [
        ("django==5.2.12", "CVE-2026-3902"),
        ("django==4.2.23", "CVE-2025-57833"),
        ("h11==0.14.0", "CVE-2025-43859"),
        ("setuptools==65.5.0", "CVE-2024-6345"),
    ],
)
def test_a_version_inside_an_advisory_fails_the_check(pin, advisory):
    run = check("--installed", pin)
    assert run.returncode == 1, run.stdout
    assert advisory in run.stdout


def test_versions_past_every_advisory_pass():
    run = check("--installed", "django==5.2.19", "h11==0.16.0", "requests==2.34.2")
    assert run.returncode == 0, run.stdout
    assert "no known vulnerability" in run.stdout


def test_the_installed_environment_passes_the_vendored_list():
    run = check()
    assert run.returncode == 0, run.stdout

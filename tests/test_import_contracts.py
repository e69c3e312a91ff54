"""The import contracts (pyproject.toml, checked by `lint-imports` in .ci/run) stay complete: the
policy's forbidden list names every module of the app beside the policy itself, so a new module
is forbidden to the policy the day it is added."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _contracts() -> dict[str, dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {contract["name"]: contract for contract in config["contracts"]}


def test_the_policy_is_forbidden_every_other_module_of_the_app():
    app = ROOT / "notifications"
    modules = {f"notifications.{p.stem}" for p in app.glob("*.py") if p.stem != "__init__"}
    modules |= {f"notifications.{p.name}" for p in app.iterdir() if (p / "__init__.py").exists()}
    modules.discard("notifications.policy")
    (policy,) = [c for c in _contracts().values() if c["source_modules"] == ["notifications.policy"]]
    assert set(policy["forbidden_modules"]) == modules


def test_the_demo_shop_is_forbidden_the_app():
    (demo,) = [c for c in _contracts().values() if c["source_modules"] == ["storefront_demo"]]
    assert demo["forbidden_modules"] == ["notifications"]

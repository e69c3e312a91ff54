"""What the policy decides on: one true metric, a lower bound over an explicit window, with its
evidence. `metrics.py` computes these; the policy only reads them, so the type lives here and the
policy imports nothing else of the app (an import-linter contract, pyproject.toml)."""

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Metric:
    metric: str
    true_value: int
    window_s: int
    evidence: dict = field(default_factory=dict)
    # Reference groups this claim could name instead of "everyone": group → (label, true count
    # within the group). A group's count is never more than the whole.
    groups: Mapping[str, tuple[str, int]] = field(default_factory=dict)

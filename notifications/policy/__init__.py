"""The policy layer: every notification passes through `decide` (SPEC 3)."""

from .decision import Decision, Policy, Refusal, RefusalReason, decide
from .segments import policy_default

__all__ = ["Decision", "Policy", "Refusal", "RefusalReason", "decide", "policy_default"]

"""True metrics, each a lower bound over an explicit window, each with its evidence."""

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Metric:
    metric: str
    true_value: int
    window_s: int
    evidence: dict = field(default_factory=dict)


def viewing_now(*, visitors: set[str], recipient: str, ttl_s: int, at: datetime) -> Metric:
    """Distinct non-bot visitors with a visible page on the product, minus the recipient.

    `visitors` comes from presence (bots are never entered there). Two tabs of one visitor
    are one hash, so they count once; the recipient's own hash is never counted for them.
    """
    others = len(visitors) - (1 if recipient in visitors else 0)
    return Metric(
        metric="viewing_now",
        true_value=others,
        window_s=ttl_s,
        evidence={
            "aggregate": "distinct visitor hashes with a visible page on the product",
            "distinct_visitors": len(visitors),
            "recipient_excluded": recipient in visitors,
            "presence_ttl_s": ttl_s,
            "computed_at": at.isoformat(),
        },
    )

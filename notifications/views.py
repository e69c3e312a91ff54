"""The transparency page: what a toast claimed and on what basis (SPEC 5, `/why/<id>`)."""

from django.shortcuts import get_object_or_404, render

from .models import Notification
from .policy import policy_default

METRIC_BASIS = {
    "viewing_now": (
        "people other than you with this product's page open and visible right now",
        "Each visitor is counted once however many tabs they have open, bots are not counted, "
        "and you are never counted in what you are shown. A page counts while it is open and "
        "visible and our server has confirmed it within the last {window_s} seconds.",
    ),
}


def _window_words(window_s: int) -> str:
    if window_s % 86400 == 0:
        days = window_s // 86400
        return "the last 24 hours" if days == 1 else f"the last {days} days"
    if window_s % 3600 == 0:
        return f"the last {window_s // 3600} hours"
    return f"the last {window_s} seconds"


def why(request, notification_id: int):
    notification = get_object_or_404(
        Notification.objects.select_related("site", "product"), pk=notification_id
    )
    what, how = METRIC_BASIS.get(notification.kind, (notification.kind, ""))
    policy = policy_default()
    return render(
        request,
        "notifications/why.html",
        {
            "n": notification,
            "what": what,
            "how": how.format(window_s=notification.window_s),
            "window": _window_words(notification.window_s),
            "displayed": notification.claim.get("displayed"),
            "capped": str(notification.claim.get("displayed", "")).endswith("+"),
            "policy": policy,
        },
    )

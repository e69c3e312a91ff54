"""How the shop's backend talks to Candor: signed server-to-server requests, exactly as a store's
own backend would (docs/api.md, "From the store's server"). Nothing here touches Candor's tables."""

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from .models import DemoOrder, DemoStore


@dataclass(frozen=True)
class Report:
    ok: bool
    status: int
    body: dict


def candor_send(*, payload: dict, base_url: str, timeout_s: float = 5.0) -> Report:
    store = DemoStore.objects.get()
    body = json.dumps({"key": store.candor_key, **payload}).encode()
    t = int(time.time())
    v1 = hmac.new(store.candor_secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    url = base_url.rstrip("/") + "/api/v1/server/events"
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"Candor's address must be http(s): {url!r}")
    request = urllib.request.Request(  # noqa: S310 (checked above: http or https only)
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "Candor-Signature": f"t={t},v1={v1}"},
    )
    try:
        # The scheme was checked above: http or https only, never file:// or a custom one.
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310  # nosec B310  # http(s)
            return Report(ok=True, status=response.status, body=json.load(response))
    except urllib.error.HTTPError as exc:
        try:
            detail = json.load(exc)
        except ValueError:
            detail = {}
        return Report(ok=False, status=exc.code, body=detail)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        return Report(ok=False, status=0, body={"error": {"code": "unreachable", "message": str(exc)}})


def candor_base_url(request) -> str:
    """Where Candor answers: CANDOR_DEMO_API_BASE, else the server this page came from."""
    return settings.CANDOR_DEMO_API_BASE or request.build_absolute_uri("/")


def purchase_report(*, order: DemoOrder, base_url: str, visitor_token: str = "") -> Report:
    payload = {
        "type": "purchase",
        "event_id": f"purchase-{order.number}",
        "order_id": order.number,
        "occurred_at": order.created_at.isoformat(),
        "items": [{"product": line.product.sku, "quantity": line.quantity} for line in order.lines.all()],
    }
    if visitor_token:
        payload["visitor_token"] = visitor_token
    report = candor_send(base_url=base_url, payload=payload)
    order.candor_purchase = {"status": report.status, "body": report.body}
    order.save(update_fields=["candor_purchase"])
    return report


def refund_report(*, order: DemoOrder, base_url: str) -> Report:
    report = candor_send(
        base_url=base_url,
        payload={
            "type": "refund",
            "event_id": f"refund-{order.number}",
            "order_id": order.number,
            "occurred_at": timezone.now().isoformat(),
        },
    )
    order.candor_refund = {"status": report.status, "body": report.body}
    order.save(update_fields=["candor_refund"])
    return report

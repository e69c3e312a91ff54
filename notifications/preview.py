"""The admin preview (SPEC 3, issue 5): pick a product and a visitor context, and see what the
policy layer would show now, under which segment and policy version, and why anything is refused.
It reads the same metrics and runs the same `decide` as the live path; it sends nothing."""

from dataclasses import dataclass

from django import forms
from django.conf import settings
from django.utils import timezone

from . import metrics
from .models import Product
from .policy import Decision, decide
from .policy.decision import VisitorContext
from .policy.segments import segment_for
from .presence import visitors_now
from .selectors import policy_catalog_build


class PreviewForm(forms.Form):
    product = forms.ModelChoiceField(queryset=Product.objects.select_related("site").order_by("site", "name"))
    locale = forms.CharField(required=False, help_text="e.g. en-us, de, ja")
    country = forms.CharField(required=False, max_length=2, help_text="ISO code, e.g. us")
    device = forms.ChoiceField(
        required=False, choices=[("desktop", "desktop"), ("mobile", "mobile"), ("tablet", "tablet")]
    )
    returning = forms.ChoiceField(
        required=False, choices=[("", "unknown"), ("false", "first visit"), ("true", "returning")]
    )
    referrer = forms.CharField(required=False)
    campaign = forms.CharField(required=False)
    hints = forms.CharField(required=False, help_text="name=value, comma-separated")


@dataclass(frozen=True)
class PreviewRow:
    kind: str
    window_s: int
    true_value: int
    text: str
    displayed: str
    refusal: str


@dataclass(frozen=True)
class Preview:
    segment: str
    policy_version: str
    policy_summary: str
    rows: list[PreviewRow]


def preview_build(data: dict) -> Preview:
    product: Product = data["product"]
    hints = dict(pair.split("=", 1) for pair in (data.get("hints") or "").split(",") if "=" in pair)
    context = VisitorContext(
        visitor="preview",
        category=product.category,
        category_kind=product.category_kind,
        locale=(data.get("locale") or "").strip().lower(),
        country=(data.get("country") or "").strip().lower(),
        device=data.get("device") or "desktop",
        returning=data.get("returning") or "",
        referrer=(data.get("referrer") or "").lower(),
        campaign=(data.get("campaign") or "").lower(),
        hints={k.strip(): v.strip() for k, v in hints.items()},
    )
    catalog = policy_catalog_build(product.site_id)
    segment = segment_for(catalog.segments, context)
    now = timezone.now()
    presence = metrics.PresenceSnapshot.of(visitors_now(product.pk))
    found = [
        metrics.viewing_now(
            presence=presence,
            recipient=context.visitor,
            ttl_s=settings.CANDOR_PRESENCE_TTL_S,
            at=now,
            category=context.category,
            country=context.country,
            returning=context.returning,
        ),
        *metrics.product_ledger_metrics(product_id=product.pk, at=now, category=product.category),
    ]
    rows = []
    for metric in found:
        result = decide(
            metric=metric,
            policy=segment.policy,
            context=context,
            templates=catalog.templates_for(context.locale),
        )
        if isinstance(result, Decision):
            rows.append(
                PreviewRow(
                    metric.metric, metric.window_s, metric.true_value, result.text, result.displayed, ""
                )
            )
        else:
            rows.append(
                PreviewRow(metric.metric, metric.window_s, metric.true_value, "", "", str(result.reason))
            )
    return Preview(
        segment=segment.name,
        policy_version=segment.policy.version,
        policy_summary=segment.policy.summary(),
        rows=rows,
    )

"""The transparency page: what a toast claimed and on what basis (SPEC 5, `/why/<id>`)."""

from django.conf import settings
from django.shortcuts import get_object_or_404, render

from .metrics import EVIDENCE_IDS_MAX
from .models import EventSource, Notification
from .policy import Policy, policy_default
from .policy.decision import window_words
from .selectors import policy_by_version, purchase_sources_count

# What the number in the message is, in plain words (no internal kind, policy or arm names),
# and how it was counted. `{window}` is the claim's window in the toast's own words ("in the last
# 24 hours": `policy.decision.window_words`, so the page and the toast cannot word it differently).
METRIC_BASIS = {
    "viewing_now": (
        "the number of people other than you with this page open in the last {window_s} seconds",
        "Each visitor is counted once however many tabs they have open, bots are not counted, "
        "and you are never counted in what you are shown. A page counts while it is open and "
        "visible and our server has confirmed it within the last {window_s} seconds.",
    ),
    "recent_purchase": (
        "minutes since the most recent verified order of this product, rounded down",
        "The store's server reported this order with a valid signature (or a verified Shopify or "
        "WooCommerce webhook); a browser can never report a purchase. The minutes are counted from "
        "the moment the store says the order was placed, rounded down. Refunded, cancelled and test "
        "orders are never shown, and only orders placed {window} are.",
    ),
    "purchases_in_window": (
        "the number of orders of this product {window}",
        "Each order counts once however many units it had. Only orders the store's server reported "
        "with a valid signature (or a verified platform webhook) count; refunded, cancelled and test "
        "orders do not.",
    ),
    "add_to_cart_in_window": (
        "shoppers who added this to their cart {window}, at most {per_address} per network address",
        "Each shopper counts once, and bots are not counted. Because our visitor identifiers change "
        "every day, the count is that of the busiest single day, so one shopper is never counted twice.",
    ),
}


# Where the counted purchases came from, in the shopper's words (SPEC 7). The store's own
# reports come first: they are the ones a shopper should weigh.
SOURCE_WORDS = {
    EventSource.SERVER: "Reported by the store's own server (signed API)",
    EventSource.SHOPIFY: "Verified by Shopify",
    EventSource.WOOCOMMERCE: "Verified by WooCommerce",
}
SERVER_CAVEAT = (
    "The store's own server signs its reports with the store's secret key, so no one else can send "
    "them, but no platform checks them: they are only as truthful as the store."
)
PURCHASE_KINDS = ("recent_purchase", "purchases_in_window")


def _provenance(notification: Notification) -> tuple[list[str], bool, int]:
    """Where a purchase claim's purchases came from: one sentence per source (distinct orders,
    read from the ledger rows its evidence names), whether any came from the store's own server,
    and EVIDENCE_IDS_MAX when the evidence list was cut there (else 0). Nothing for other kinds."""
    if notification.kind not in PURCHASE_KINDS:
        return [], False, 0
    event_ids = (notification.evidence or {}).get("event_ids") or []
    orders = purchase_sources_count(product_id=notification.product_id, event_ids=event_ids)
    lines = [
        f"{words}: {orders[source]} order{'' if orders[source] == 1 else 's'}."
        for source, words in SOURCE_WORDS.items()
        if orders.get(source)
    ]
    partial = EVIDENCE_IDS_MAX if len(event_ids) >= EVIDENCE_IDS_MAX else 0
    return lines, bool(orders.get(EventSource.SERVER)), partial


_SMALL_NUMBERS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def _number_words(n: int) -> str:
    return _SMALL_NUMBERS[n] if 0 <= n < len(_SMALL_NUMBERS) else str(n)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _rules(policy: Policy, kind: str) -> list[str]:
    """The store's rules that shaped this claim, in plain words: no policy version, no
    experiment arm, no internal kind names (SPEC 5: "the store's policy summary")."""
    rules = []
    if kind == "recent_purchase":
        oldest = policy.recency_s.get("recent_purchase", 3600) // 60
        rules.append(
            f"A purchase is shown only while it is at most {_plural(oldest, 'minute')} old, and its "
            "age is rounded down to whole minutes."
        )
    else:
        rules.append(
            f"Nothing is shown below a true count of {policy.min_count}, and nothing that rounding "
            f"brings below {policy.min_count}."
        )
        cap = policy.display_caps.get(kind)
        if cap:
            rules.append(f"Above {cap} the number is shown as “{cap}+”.")
        step = max(1, policy.rounding_steps.get(kind, 1))
        if step > 1:
            rules.append(
                f"Numbers are rounded down to a multiple of {step}, with “+” when that drops "
                f"anything ({step * 7 + 2} is shown as “{step * 7}+”); never rounded up."
            )
        else:
            rules.append("Numbers below that are shown exactly, never rounded up.")
    often = f"At most {_plural(policy.per_page_view, 'new message')} per page"
    often += f" and {policy.per_session} per visit"
    if policy.min_gap_s:
        often += f", at least {_plural(policy.min_gap_s, 'second')} apart"
    silence = policy.dismiss_silence_s // 60
    if silence:
        often += f"; none for {_plural(silence, 'minute')} after you close one"
    rules.append(often + ".")
    rules.append("Numbers come only from recorded events, never typed in by hand.")
    return rules


def why(request, public_id: str):
    # Looked up by the random public id only: the row's integer id is never a /why/ address.
    notification = get_object_or_404(
        Notification.objects.select_related("site", "product"), public_id=public_id
    )
    what, how = METRIC_BASIS.get(notification.kind, ("the number in the message", ""))
    # The page is written in English (it has no translations yet), whatever language is active.
    window = window_words(notification.window_s, language="en")
    per_address = (notification.evidence or {}).get("visitors_per_address")
    if not isinstance(per_address, int) or per_address < 1:
        per_address = settings.CANDOR_VISITORS_PER_ADDRESS
    words = {
        "window": window,
        "window_s": notification.window_s,
        "per_address": _number_words(per_address),
    }
    policy = policy_by_version(notification.policy_version, site_id=notification.site_id) or policy_default()
    provenance, from_server, provenance_partial = _provenance(notification)
    # The name the claim was shown under, not today's: a product renamed since ("brand-new gadget
    # (launched today)") must not take over the orders an old claim counted. Rows without one
    # (made outside the log's service) fall back to the current name.
    shown_name = notification.product_name or notification.product.name
    renamed_to = notification.product.name if notification.product.name != shown_name else ""
    response = render(
        request,
        "notifications/why.html",
        {
            "n": notification,
            "product_name": shown_name,
            "renamed_to": renamed_to,
            "what": what.format(**words),
            "how": how.format(**words),
            "window": window,
            "displayed": notification.claim.get("displayed"),
            "capped": str(notification.claim.get("displayed", "")).endswith("+"),
            "rules": _rules(policy, notification.kind),
            "provenance": provenance,
            "provenance_partial": provenance_partial,
            "server_caveat": SERVER_CAVEAT if from_server else "",
        },
    )
    # The page shows store-provided text (product names): a strict policy, no inline anything.
    response["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    # A claim is for the shopper who saw it, not for search engines (SPEC 7); the page says it too.
    response["X-Robots-Tag"] = "noindex"
    return response

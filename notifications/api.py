"""HTTP ingestion adapters: bad input gets a clear JSON error, is counted, and changes nothing.

Errors are `{"error": {"code", "message"[, "field"]}}` with the status SPEC 5 names; 429 carries
`Retry-After`.
"""

import hashlib
import re

from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from .beacon import (
    DB_RETRY_AFTER_S,
    RawRequest,
    browser_event_handle,
    server_event_answer,
    server_event_verify,
)
from .identity import (
    VISITOR_TOKEN_TTL_S,
    client_ip_resolve,
    user_agent_is_bot,
    visitor_hash_compute,
    visitor_token_make,
)
from .ingest import Unacceptable, browser_events_record
from .intake_parse import (
    BROWSER_MAX_BODY_BYTES,
    PLATFORM_MAX_INTEGER,
    SERVER_MAX_BODY_BYTES,
    WEBHOOK_MAX_BODY_BYTES,
    Refused,
    browser_body_parse,
    json_object_parse,
)
from .limits import Check, checks_apply, rate_parse
from .models import Site, origin_normalize
from .selectors import site_active_by_key
from .services import ingest_refusal_count
from .webhooks import order_news_record, platform_signature_valid, shopify_news, woocommerce_news


def _error(
    exc: Refused, *, site_id: int | None, cors_origin: str | None = None, endpoint: str = "events"
) -> JsonResponse:
    try:
        ingest_refusal_count(site_id=site_id, endpoint=endpoint, code=exc.code)
    except DatabaseError:  # the answer must not depend on the counter (e.g. database down)
        pass
    body = {"code": exc.code, "message": exc.message}
    if exc.field:
        body["field"] = exc.field
    response = JsonResponse({"error": body}, status=exc.status)
    if exc.retry_after is not None:
        response["Retry-After"] = str(max(1, int(exc.retry_after)))
    return _cors(response, cors_origin)


def _cors(response: JsonResponse, origin: str | None) -> JsonResponse:
    if origin:
        response["Access-Control-Allow-Origin"] = origin
        response["Vary"] = "Origin"
    return response


def _origin(request: HttpRequest) -> str | None:
    try:
        return origin_normalize(request.headers.get("Origin", ""))
    except ValueError:
        return None


def _client_ip(request: HttpRequest) -> str:
    return client_ip_resolve(
        peer=request.META.get("REMOTE_ADDR"), forwarded_for=request.headers.get("X-Forwarded-For")
    )


def _preflight(request: HttpRequest) -> JsonResponse:
    origin = _origin(request)
    # A preflight has no body and so no key: any active site's origin may ask.
    allowed = origin and any(
        origin in site.origins for site in Site.objects.filter(is_active=True).only("allowed_origins")
    )
    if not allowed:
        return _error(
            Refused(403, "forbidden_origin", "This origin is not allowed by any site."),
            site_id=None,
            cors_origin=None,
        )
    response = JsonResponse({}, status=204)
    response["Access-Control-Allow-Methods"] = "POST"
    response["Access-Control-Allow-Headers"] = "Content-Type"
    response["Access-Control-Max-Age"] = "600"
    return _cors(response, origin)


def _json_object(request: HttpRequest) -> dict:
    """415, 413, then 400: the checks every browser-facing JSON endpoint runs first."""
    return browser_body_parse(
        content_type=request.content_type or "",
        content_length=request.META.get("CONTENT_LENGTH"),
        body=request.read(BROWSER_MAX_BODY_BYTES + 1),
    )


def _count_safely(site_id: int | None, code: str) -> None:
    try:
        ingest_refusal_count(site_id=site_id, endpoint="events", code=code)
    except DatabaseError:  # the answer must not depend on the counter (e.g. database down)
        pass


@csrf_exempt
def events(request: HttpRequest) -> JsonResponse:
    """`POST /api/v1/events`: a browser's `view` or `add_to_cart` (SPEC 5, checks in order).

    Served by `beacon.py` in front of Django (config/asgi.py); this view runs the same handler
    for Django's own clients (the test client), with a batch of one. A 202 is sent after the
    event's row is committed; with the database down the answer is 503 with Retry-After, so the
    page (or its retry) knows it was not recorded."""
    raw = RawRequest(
        method=request.method or "",
        headers={name.lower(): value for name, value in request.headers.items()},
        body=request.read(BROWSER_MAX_BODY_BYTES + 1) if request.method == "POST" else b"",
        peer=request.META.get("REMOTE_ADDR"),
    )

    async def record(event):
        return (await sync_to_async(browser_events_record)([event]))[0]

    async def count(site_id, code):
        await sync_to_async(_count_safely)(site_id, code)

    try:
        response = async_to_sync(browser_event_handle)(raw, record=record, count=count)
    except DatabaseError:
        exc = Refused(503, "unavailable", "The ledger is unavailable; retry.", retry_after=DB_RETRY_AFTER_S)
        return _error(exc, site_id=None, cors_origin=None)
    answer = JsonResponse(response.body, status=response.status)
    for name, value in response.headers.items():
        answer[name] = value
    return answer


@csrf_exempt
def visitor_token(request: HttpRequest) -> JsonResponse:
    """`POST /api/v1/visitor-token` `{"key"}` from an allowed origin: what `Candor.visitorToken()`
    asks for on a checkout page. `{"token": null}` under Global Privacy Control (`Sec-GPC: 1`) or
    for a bot: they are in no experiment."""
    try:
        return _visitor_token(request)
    except DatabaseError:
        exc = Refused(503, "unavailable", "The ledger is unavailable; retry.", retry_after=DB_RETRY_AFTER_S)
        return _error(exc, site_id=None, cors_origin=None, endpoint="visitor_token")


def _visitor_token(request: HttpRequest) -> JsonResponse:
    if request.method == "OPTIONS":
        return _preflight(request)
    origin = _origin(request)
    site = None
    cors_origin = None
    try:
        if request.method != "POST":
            raise Refused(405, "method_not_allowed", "Use POST.")
        data = _json_object(request)
        if not isinstance(data.get("key"), str) or not data["key"]:
            raise Refused(400, "malformed", "'key' must be a non-empty string.", field="key")
        unknown = sorted(set(data) - {"key"})
        if unknown:
            raise Refused(400, "malformed", f"Unknown field '{unknown[0]}'.", field=unknown[0])
        site = site_active_by_key(key=data["key"])
        if site is None:
            raise Refused(404, "unknown_site", "No active site has this key.", field="key")
        if origin is None or origin not in site.origins:
            raise Refused(403, "forbidden_origin", "This origin is not allowed for this site.")
        cors_origin = origin
        ip = _client_ip(request)
        user_agent = request.headers.get("User-Agent", "")
        address_key = visitor_hash_compute(site_id=0, ip=ip, user_agent="")
        (verdict,) = checks_apply(
            [Check(counters=(("visitor-token-ip", address_key, rate_parse(settings.CANDOR_RATE_PER_IP)),))],
            seen_ttl_s=0,
        )
        if verdict.limited:
            raise Refused(
                429, "rate_limited", "Too many requests; slow down.", retry_after=verdict.retry_after_s
            )
    except Refused as exc:
        return _error(
            exc, site_id=site.pk if site else None, cors_origin=cors_origin, endpoint="visitor_token"
        )
    if request.headers.get("Sec-GPC", "").strip() == "1" or user_agent_is_bot(user_agent):
        body = {"token": None}  # nosec B105  # a visitor token's absence, not a password
    else:
        visitor = visitor_hash_compute(site_id=site.pk, ip=ip, user_agent=user_agent)
        body = {
            "token": visitor_token_make(site_id=site.pk, visitor_hash=visitor),
            "expires_in_s": VISITOR_TOKEN_TTL_S,
        }
    response = JsonResponse(body, status=200)
    response["Cache-Control"] = "no-store"
    return _cors(response, cors_origin)


@csrf_exempt
def server_events(request: HttpRequest) -> JsonResponse:
    """`POST /api/v1/server/events`: signed purchases, refunds, cancels and catalog upserts.

    The signature is checked before anything else in the body; every failure up to and
    including verification is 401 `bad_signature`. A 2xx is sent only after the commit; if the
    database is unavailable the answer is 503 with Retry-After, never a 2xx. Under the ASGI
    server, POSTs are answered by the beacon's route (notifications/beacon.py), which runs the
    same checks and recording in batches; this view serves Django's test client and other
    methods.
    """
    try:
        try:
            if request.method != "POST":
                raise Refused(405, "method_not_allowed", "Use POST.")
            body = request.read(SERVER_MAX_BODY_BYTES + 1)
            site, payload = server_event_verify(body=body, header=request.headers.get("Candor-Signature", ""))
            status, response = server_event_answer(site=site, payload=payload, body=body)
        except Refused as exc:
            return _error(exc, site_id=exc.site_id, endpoint="server_events")
    except DatabaseError:
        exc = Refused(503, "unavailable", "The ledger is unavailable; retry.", retry_after=DB_RETRY_AFTER_S)
        return _error(exc, site_id=None, endpoint="server_events")
    return JsonResponse(response, status=status)


WOOCOMMERCE_PING = re.compile(rb"webhook_id=\d+")
PLATFORMS = {
    # platform: (signature header, topic header, delivery id headers, reader, secret field)
    "shopify": (
        "X-Shopify-Hmac-Sha256",
        "X-Shopify-Topic",
        ("X-Shopify-Webhook-Id", "X-Shopify-Event-Id"),
        shopify_news,
        "shopify_secret",
    ),
    "woocommerce": (
        "X-WC-Webhook-Signature",
        "X-WC-Webhook-Topic",
        ("X-WC-Webhook-Delivery-ID",),
        woocommerce_news,
        "woocommerce_secret",
    ),
}


def platform_webhook(request: HttpRequest, *, platform: str, key: str) -> JsonResponse:
    """`POST /api/v1/webhooks/<platform>/<pk_key>`: a verified order delivery, answered 200 once it
    is committed (SPEC 5). Unused topics and WooCommerce's ping answer 200 and record nothing."""
    signature_header, topic_header, delivery_headers, reader, secret_field = PLATFORMS[platform]
    endpoint = f"{platform}_webhook"
    site = None
    try:
        try:
            if request.method != "POST":
                raise Refused(405, "method_not_allowed", "Use POST.")
            site = site_active_by_key(key=key, platform_secrets=True)
            if site is None:
                raise Refused(404, "unknown_site", "No active site has this key.")
            body = request.read(WEBHOOK_MAX_BODY_BYTES + 1)
            if len(body) > WEBHOOK_MAX_BODY_BYTES:
                raise Refused(413, "too_large", f"The body may be at most {WEBHOOK_MAX_BODY_BYTES} bytes.")
            if platform == "woocommerce" and WOOCOMMERCE_PING.fullmatch(body.strip()):
                return JsonResponse({"accepted": True, "ping": True}, status=200)
            secret = getattr(site, secret_field)
            if not secret:
                raise Refused(401, "bad_signature", f"This site has no {platform} webhook secret set.")
            if not platform_signature_valid(
                secret=secret, body=body, header=request.headers.get(signature_header, "")
            ):
                raise Refused(401, "bad_signature", f"{signature_header} does not match the body.")
            payload = json_object_parse(body, nul_allowed=False, max_integer=PLATFORM_MAX_INTEGER)
            topic = request.headers.get(topic_header, "")
            try:
                news = reader(topic, payload)
                if news is None:
                    return JsonResponse({"accepted": True, "ignored": True, "topic": topic[:100]}, status=200)
                delivery_id = next(
                    (request.headers[h] for h in delivery_headers if request.headers.get(h)),
                    hashlib.sha256(body).hexdigest(),
                )
                response = order_news_record(
                    site=site, platform=platform, delivery_id=delivery_id, body=body, news=news
                )
            except Unacceptable as exc:
                raise Refused(exc.status, exc.code, exc.message, field=exc.field) from None
        except Refused as exc:
            return _error(exc, site_id=site.pk if site else None, endpoint=endpoint)
    except DatabaseError:
        exc = Refused(503, "unavailable", "The ledger is unavailable; retry.", retry_after=DB_RETRY_AFTER_S)
        return _error(exc, site_id=None, endpoint=endpoint)
    return JsonResponse(response, status=200)


@csrf_exempt
def shopify_webhook(request: HttpRequest, key: str) -> JsonResponse:
    return platform_webhook(request, platform="shopify", key=key)


@csrf_exempt
def woocommerce_webhook(request: HttpRequest, key: str) -> JsonResponse:
    return platform_webhook(request, platform="woocommerce", key=key)

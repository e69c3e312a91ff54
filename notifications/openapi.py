"""The public HTTP API under `/api/v1/`, routed by django-ninja so that `/api/v1/schema` is an
OpenAPI document generated from these declarations (SPEC 5).

The handlers are the plain views in `api.py`: they run SPEC 5's checks in their stated order
(415 before 413 before 400 …), which a schema-validating framework would reorder, so the request
bodies are declared here for the document and validated there.
"""

from datetime import datetime
from typing import Literal

from django.http import HttpRequest
from ninja import NinjaAPI, Schema
from pydantic import ConfigDict, Field

from . import api as views

# --- Bodies ---------------------------------------------------------------------------------


class ErrorDetail(Schema):
    code: str = Field(examples=["unknown_product"])
    message: str
    field: str | None = Field(None, description="The request field at fault, when there is one.")


class Error(Schema):
    """Every error: the HTTP status says the class, `code` the reason."""

    error: ErrorDetail


class BrowserEvent(Schema):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, description="The site's public key (pk_…).")
    type: Literal["view", "add_to_cart"]
    product: str = Field(min_length=1, description="A SKU in the site's catalog.")
    context: dict[str, str | bool] | None = Field(
        None,
        description="Segment hints: locale, country, device, referrer, campaign, returning, hint_*. "
        "Short labels only; anything else is dropped.",
    )


class Accepted(Schema):
    accepted: Literal[True]


class OrderItem(Schema):
    product: str = Field(min_length=1, description="The SKU.")
    quantity: int = Field(1, ge=1, le=100_000)


class OrderEvent(Schema):
    """A verified purchase, or a refund/cancel withdrawing one (the whole order without `items`)."""

    key: str
    type: Literal["purchase", "refund", "cancel"]
    event_id: str = Field(min_length=1, max_length=200, description="Idempotency key, per site.")
    occurred_at: datetime = Field(description="ISO 8601 with offset; not >60 s ahead, not past retention.")
    order_id: str = Field(
        min_length=1, max_length=200, description="Idempotency key for purchases, per site."
    )
    items: list[OrderItem] | None = Field(None, description="Required and non-empty for a purchase.")
    test: bool = Field(False, description="A test order: stored, flagged, never counted.")
    visitor_token: str | None = Field(None, description="From `Candor.visitorToken()` on the checkout page.")


class CatalogItem(Schema):
    sku: str = Field(min_length=1, max_length=128)
    name: str = Field(min_length=1)
    url: str = ""
    category: str = ""
    category_kind: Literal["self_expression", "utilitarian", "other"] = "other"


class CatalogEvent(Schema):
    key: str
    type: Literal["catalog"]
    event_id: str = Field(min_length=1, max_length=200)
    items: list[CatalogItem]


class ServerAccepted(Schema):
    accepted: Literal[True]
    duplicate: bool
    refused_items: list[str] | None = Field(None, description="SKUs not in the catalog (refused).")
    created: int | None = None
    updated: int | None = None
    attribution: Literal["recorded", "refused"] | None = Field(
        None,
        description="Only when a purchase carried `visitor_token`: recorded for the experiment, or "
        "refused (not a token of this site, or older than 24 h; the purchase still counts).",
    )


class WebhookAccepted(Schema):
    accepted: Literal[True]
    duplicate: bool | None = None
    order_id: str | None = None
    state: Literal["unpaid", "paid", "withdrawn"] | None = None
    test: bool | None = None
    refused_items: list[str] | None = None
    ignored: bool | None = Field(None, description="A topic Candor does not use: nothing recorded.")
    ping: bool | None = Field(None, description="WooCommerce's `webhook_id=…` ping: nothing recorded.")
    attribution: Literal["recorded", "refused"] | None = Field(
        None, description="When the paid order carried a `candor_visitor_token` attribute."
    )


class VisitorTokenRequest(Schema):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, description="The site's public key (pk_…).")


class VisitorToken(Schema):
    token: str | None = Field(
        description="Opaque; pass it with the order as `visitor_token`. null under Global Privacy "
        "Control (`Sec-GPC: 1`) or for a bot."
    )
    expires_in_s: int | None = Field(None, examples=[86400])


# --- The document ---------------------------------------------------------------------------

COMPONENTS = {
    model.__name__: model
    for model in (BrowserEvent, OrderEvent, OrderItem, CatalogEvent, CatalogItem, VisitorTokenRequest)
}


def _component_schemas() -> dict:
    schemas = {}
    for model in COMPONENTS.values():
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def _json_body(*names: str) -> dict:
    refs = [{"$ref": f"#/components/schemas/{name}"} for name in names]
    schema = refs[0] if len(refs) == 1 else {"oneOf": refs, "discriminator": {"propertyName": "type"}}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _header(name: str, description: str, *, required: bool = True) -> dict:
    return {
        "name": name,
        "in": "header",
        "required": required,
        "schema": {"type": "string"},
        "description": description,
    }


class CandorAPI(NinjaAPI):
    def get_openapi_schema(self, *args, **kwargs):
        schema = super().get_openapi_schema(*args, **kwargs)
        schema.setdefault("components", {}).setdefault("schemas", {}).update(_component_schemas())
        return schema


api = CandorAPI(
    title="Candor",
    version="1",
    description=(
        'Truthful live social proof. Errors are `{"error": {"code", "message"[, "field"]}}` with '
        "400 malformed, 401 bad signature, 403 origin/key/forbidden type, 404 unknown site, 409 conflict, "
        "413 too large, 415 wrong content type, 422 valid JSON but unacceptable, 429 rate limited and "
        "503 unavailable; 429 and 503 carry `Retry-After`."
    ),
    openapi_url="/schema",
    docs_url="/docs",
    urls_namespace="api-v1",
)

ERRORS = {code: Error for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 503)}
RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait."}}


def _responses(ok: dict, *codes: int) -> dict:
    return {**ok, **{code: ERRORS[code] for code in codes}}


def _retry_after_documented(*codes: int) -> dict:
    return {"responses": {code: {"headers": RETRY_AFTER} for code in codes}}


def _merge(*parts: dict) -> dict:
    merged: dict = {}
    for part in parts:
        for key, value in part.items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = _merge(merged[key], value)
            elif isinstance(value, list) and isinstance(merged.get(key), list):
                merged[key] = merged[key] + value
            else:
                merged[key] = value
    return merged


@api.post(
    "/events",
    response=_responses({202: Accepted}, 400, 403, 404, 413, 415, 422, 429, 503),
    summary="A browser event: view or add_to_cart",
    description="Allowed origins only (CORS). Checks run in order: 415, 413, 400 (`error.field`), 404 "
    "`unknown_site`, 403 `forbidden_origin`, 403 `forbidden_type`, 422 `unknown_product`, 429. A repeated "
    "view within the de-duplication interval and a flagged bot are 202 too.",
    openapi_extra=_merge(
        {"requestBody": _json_body("BrowserEvent"), "parameters": [_header("Origin", "The page's origin.")]},
        _retry_after_documented(429, 503),
    ),
)
def events(request: HttpRequest):
    return views.events(request)


@api.api_operation(["OPTIONS", "GET", "PUT", "PATCH", "DELETE"], "/events", include_in_schema=False)
def events_other(request: HttpRequest):
    return views.events(request)


@api.post(
    "/visitor-token",
    response=_responses({200: VisitorToken}, 400, 403, 404, 413, 415, 429, 503),
    summary="A visitor token for experiment attribution (what `Candor.visitorToken()` fetches)",
    description="Allowed origins only (CORS). A signed, encrypted, 24-hour reference to the shopper's "
    "daily visitor hash, different on every call: a store can pass it with an order "
    "(`visitor_token`) but cannot read it or match two of them.",
    openapi_extra=_merge(
        {
            "requestBody": _json_body("VisitorTokenRequest"),
            "parameters": [_header("Origin", "The page's origin.")],
        },
        _retry_after_documented(429, 503),
    ),
)
def visitor_token(request: HttpRequest):
    return views.visitor_token(request)


@api.api_operation(["OPTIONS", "GET", "PUT", "PATCH", "DELETE"], "/visitor-token", include_in_schema=False)
def visitor_token_other(request: HttpRequest):
    return views.visitor_token(request)


@api.post(
    "/server/events",
    response=_responses({200: ServerAccepted, 202: ServerAccepted}, 400, 401, 409, 413, 422, 503),
    summary="A signed server event: purchase, refund, cancel or catalog upsert",
    description='`Candor-Signature: t=<unix s>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` with an active '
    "secret of the site named by the body's `key`; ±300 s. 202 on first receipt, 200 with `duplicate: true` "
    "for a repeat of `event_id` (or of a purchase's `order_id`), 409 for the same key with another body.",
    openapi_extra=_merge(
        {
            "requestBody": _json_body("OrderEvent", "CatalogEvent"),
            "parameters": [_header("Candor-Signature", "t=<unix seconds>,v1=<hex>[,v1=<hex>]")],
        },
        _retry_after_documented(503),
    ),
)
def server_events(request: HttpRequest):
    return views.server_events(request)


@api.api_operation(["GET", "PUT", "PATCH", "DELETE"], "/server/events", include_in_schema=False)
def server_events_other(request: HttpRequest):
    return views.server_events(request)


WEBHOOK_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"type": "object", "description": "The platform's order"}}},
}


def _webhook_extra(platform: str) -> dict:
    """The request of a platform's webhook, from the same header names the view reads."""
    signature_header, topic_header, delivery_headers, *_ = views.PLATFORMS[platform]
    return _merge(
        {
            "requestBody": WEBHOOK_BODY,
            "parameters": [
                _header(signature_header, "base64 HMAC-SHA256 of the body"),
                _header(topic_header, "the topic"),
                _header(delivery_headers[0], "the delivery id", required=False),
            ],
        },
        _retry_after_documented(503),
    )


@api.post(
    "/webhooks/shopify/{key}",
    response=_responses({200: WebhookAccepted}, 400, 401, 404, 413, 422, 503),
    summary="Shopify order webhooks",
    description="Topics `orders/create`, `orders/paid`, `orders/updated`, `orders/cancelled`, "
    "`refunds/create`; `X-Shopify-Hmac-Sha256` = base64 HMAC-SHA256 of the raw body with the "
    "site's Shopify secret; "
    "`X-Shopify-Webhook-Id` de-duplicates deliveries. Other topics answer 200 and record nothing.",
    openapi_extra=_webhook_extra("shopify"),
)
def shopify_webhook(request: HttpRequest, key: str):
    return views.shopify_webhook(request, key)


@api.post(
    "/webhooks/woocommerce/{key}",
    response=_responses({200: WebhookAccepted}, 400, 401, 404, 413, 422, 503),
    summary="WooCommerce order webhooks",
    description="Topics `order.created`, `order.updated`, `order.deleted`; `X-WC-Webhook-Signature` = base64 "
    "HMAC-SHA256 of the raw body with the webhook's secret; `X-WC-Webhook-Delivery-ID` de-duplicates. "
    "The unsigned `webhook_id=…` ping answers 200 and records nothing.",
    openapi_extra=_webhook_extra("woocommerce"),
)
def woocommerce_webhook(request: HttpRequest, key: str):
    return views.woocommerce_webhook(request, key)


@api.api_operation(["GET", "PUT", "PATCH", "DELETE"], "/webhooks/shopify/{key}", include_in_schema=False)
def shopify_webhook_other(request: HttpRequest, key: str):
    return views.shopify_webhook(request, key)


@api.api_operation(["GET", "PUT", "PATCH", "DELETE"], "/webhooks/woocommerce/{key}", include_in_schema=False)
def woocommerce_webhook_other(request: HttpRequest, key: str):
    return views.woocommerce_webhook(request, key)

"""The demo shop's pages. Each product page embeds the Candor snippet exactly as a store would;
the checkout stores the order in the shop's own tables and its backend reports it to Candor
server-to-server with a signature (candor_client.py)."""

import json
import secrets

from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.templatetags.static import static
from django.views.decorators.http import require_POST

from .candor_client import candor_base_url, purchase_report, refund_report
from .models import DemoOrder, DemoOrderLine, DemoProduct, DemoStore

CART_KEY = "cart"  # the shop's own session cart: {sku: quantity}


def _csp(response: HttpResponse, request) -> HttpResponse:
    """A strict policy, as a careful store would send: no inline script or style anywhere. The
    widget needs only its own origin for the script and the socket (docs/integrating.md,
    "Content-Security-Policy")."""
    host = request.get_host()
    socket = ("wss://" if request.is_secure() else "ws://") + host
    response["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {socket}; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    )
    return response


def _cart(request) -> dict[str, int]:
    cart = request.session.get(CART_KEY) or {}
    return {sku: int(qty) for sku, qty in cart.items() if isinstance(qty, int) and qty > 0}


def _page(request, template: str, context: dict) -> HttpResponse:
    context.setdefault("cart_count", sum(_cart(request).values()))
    return _csp(render(request, template, context), request)


def index(request):
    return _page(request, "storefront_demo/index.html", {"products": DemoProduct.objects.all()})


def product(request, sku: str):
    item = get_object_or_404(DemoProduct, sku=sku)
    store = DemoStore.objects.first()
    json_ld = {
        "@context": "https://schema.org",
        "@type": "Product",
        "sku": item.sku,
        "name": item.name,
        "category": item.category,
        "description": item.description,
        "offers": {"@type": "Offer", "priceCurrency": "EUR", "price": item.price},
    }
    return _page(
        request,
        "storefront_demo/product.html",
        {
            "product": item,
            "candor_key": store.candor_key if store else "",
            # The snippet's src is absolute, as a store would paste it; the widget derives the
            # API and socket addresses from it.
            "widget_src": request.build_absolute_uri(static("candor/widget.js")),
            # Escaped so no catalog text can close the <script> element it sits in.
            "json_ld": json.dumps(json_ld).replace("<", "\\u003c"),
        },
    )


@require_POST
def cart_add(request, sku: str):
    item = get_object_or_404(DemoProduct, sku=sku)
    cart = _cart(request)
    cart[item.sku] = min(cart.get(item.sku, 0) + 1, 20)
    request.session[CART_KEY] = cart
    return redirect("shop-cart")


def cart(request):
    items = _cart(request)
    products = {p.sku: p for p in DemoProduct.objects.filter(sku__in=items)}
    lines = [(products[sku], qty) for sku, qty in items.items() if sku in products]
    total = sum(p.price_cents * qty for p, qty in lines) / 100
    store = DemoStore.objects.first()
    return _page(
        request,
        "storefront_demo/cart.html",
        {
            "lines": lines,
            "total": f"{total:.2f}",
            # The snippet without a product: no socket here, but the page can ask the widget for
            # the shopper's visitor token and send it with the order (experiment attribution).
            "candor_key": store.candor_key if store else "",
            "widget_src": request.build_absolute_uri(static("candor/widget.js")),
        },
    )


@require_POST
def checkout(request):
    items = _cart(request)
    products = {p.sku: p for p in DemoProduct.objects.filter(sku__in=items)}
    if not products:
        return redirect("shop-cart")
    with transaction.atomic():
        order = DemoOrder.objects.create(number=f"D-{secrets.token_hex(4).upper()}")
        for sku, qty in items.items():
            if sku in products:
                DemoOrderLine.objects.create(order=order, product=products[sku], quantity=qty)
    request.session[CART_KEY] = {}
    # After the shop's own commit, as a store's backend would: one signed request to Candor,
    # with the visitor token the checkout page got from Candor.visitorToken() (if any).
    token = request.POST.get("visitor_token", "").strip()
    purchase_report(order=order, base_url=candor_base_url(request), visitor_token=token[:512])
    return redirect("shop-order", number=order.number)


def order(request, number: str):
    placed = get_object_or_404(DemoOrder.objects.prefetch_related("lines__product"), number=number)
    return _page(request, "storefront_demo/order.html", {"order": placed})


@require_POST
def refund(request, number: str):
    placed = get_object_or_404(DemoOrder, number=number)
    if placed.status == DemoOrder.Status.PAID:
        placed.status = DemoOrder.Status.REFUNDED
        placed.save(update_fields=["status"])
        refund_report(order=placed, base_url=candor_base_url(request))
    return redirect("shop-order", number=placed.number)

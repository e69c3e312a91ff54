"""The demo shop's pages. Each product page embeds the Candor snippet exactly as a store would."""

import json

from django.shortcuts import get_object_or_404, render
from django.templatetags.static import static

from .models import DemoProduct, DemoStore


def index(request):
    products = DemoProduct.objects.all()
    return render(request, "storefront_demo/index.html", {"products": products})


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
    return render(
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

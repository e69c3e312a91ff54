from django.urls import path

from . import api, views

urlpatterns = [
    path("api/v1/events", api.events, name="api-events"),
    path("api/v1/server/events", api.server_events, name="api-server-events"),
    path("api/v1/webhooks/shopify/<str:key>", api.shopify_webhook, name="api-webhook-shopify"),
    path("api/v1/webhooks/woocommerce/<str:key>", api.woocommerce_webhook, name="api-webhook-woocommerce"),
    path("why/<int:notification_id>", views.why, name="why"),
]

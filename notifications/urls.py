from django.urls import path

from . import api, views

urlpatterns = [
    path("api/v1/events", api.events, name="api-events"),
    path("api/v1/server/events", api.server_events, name="api-server-events"),
    path("why/<int:notification_id>", views.why, name="why"),
]

from django.urls import path, re_path

from . import views
from .openapi import api

urlpatterns = [
    path("api/v1/", api.urls),
    # Only a public id's shape resolves (Notification.public_id): an integer /why/17 is a 404.
    re_path(r"^why/(?P<public_id>[A-Za-z0-9_-]{22,32})$", views.why, name="why"),
]

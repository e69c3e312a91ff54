from django.urls import path

from . import views
from .openapi import api

urlpatterns = [
    path("api/v1/", api.urls),
    path("why/<int:notification_id>", views.why, name="why"),
]

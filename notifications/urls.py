from django.urls import path

from . import views

urlpatterns = [
    path("why/<int:notification_id>", views.why, name="why"),
]

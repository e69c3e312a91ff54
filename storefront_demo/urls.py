from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="shop-index"),
    path("product/<str:sku>/", views.product, name="shop-product"),
]

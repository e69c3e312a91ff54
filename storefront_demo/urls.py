from django.urls import path

from . import views

urlpatterns = [
    path("", views.index, name="shop-index"),
    path("product/<str:sku>/", views.product, name="shop-product"),
    path("cart/", views.cart, name="shop-cart"),
    path("cart/add/<str:sku>/", views.cart_add, name="shop-cart-add"),
    path("checkout/", views.checkout, name="shop-checkout"),
    path("orders/<str:number>/", views.order, name="shop-order"),
    path("orders/<str:number>/refund/", views.refund, name="shop-refund"),
]

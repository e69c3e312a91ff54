from django.apps import AppConfig


class StorefrontDemoConfig(AppConfig):
    name = "storefront_demo"
    verbose_name = "Demo storefront"

from django.apps import AppConfig


class NotificationsConfig(AppConfig):
    name = "notifications"
    verbose_name = "Candor"

    def ready(self) -> None:
        from .signals import signals_connect

        signals_connect()

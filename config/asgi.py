"""HTTP goes to Django, except `POST /api/v1/events`, which the beacon takes in front of it
(notifications/beacon.py: the hot path every product page calls); `/ws/v1/widget` goes to the
widget consumer.

No `AllowedHostsOriginValidator`: it checks *our* hosts, which is wrong for a widget embedded in
stores' pages. The consumer checks the Origin against the site's own allowlist before accept.
"""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from notifications.beacon import EventBeacon  # noqa: E402
from notifications.consumers import WidgetConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": EventBeacon(django_asgi_app),
        "websocket": URLRouter([path("ws/v1/widget", WidgetConsumer.as_asgi())]),
    }
)

# Everything loaded by now lives as long as the process: move it out of the collector's full
# passes, which with thousands of open sockets otherwise stall fan-out rounds (bench/README.md).
gc.freeze()

"""Issue 9, the widget socket under attack and fault, in the default suite (through
config.asgi.application, on the in-process layer and the real Redis)."""

import pytest

from notifications.presence import presence_store
from notifications.streaming import hub_get
from tests.test_widget_socket import (  # noqa: F401 (fixtures)
    open_visible,
    product,
    settle,
    target,
    visitor,
)

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_refreshed_socket_leaves_presence_the_moment_it_closes(realtime_mode, target):  # noqa: F811
    """The refresher re-enters a socket under the very member it joined with (its country
    included); otherwise the refreshed copy outlived the socket by a TTL: a ghost viewer."""
    comm = await open_visible(target, visitor(1))
    await comm.send_json_to(
        {"type": "page", "product": target["sku"], "visible": True, "context": {"country": "de"}}
    )
    await settle(comm, timeout=0.5)
    await hub_get().refresh_now()
    assert len(await presence_store().visitors(target["product_id"])) == 1
    await comm.disconnect()
    assert await presence_store().visitors(target["product_id"]) == {}

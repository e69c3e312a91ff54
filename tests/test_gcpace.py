"""The garbage-collector pacer (notifications/gcpace.py): frozen as sockets come, one full
collection per interval that does reclaim the cycles frozen meanwhile."""

import gc
import weakref

import pytest

from notifications.gcpace import GcPacer


@pytest.fixture(autouse=True)
def _unfrozen():
    yield
    gc.unfreeze()


class Cycle:
    def __init__(self):
        self.me = self


def test_it_freezes_when_the_socket_count_moves_by_more_than_the_margin():
    pacer = GcPacer(check_s=1, full_s=3600, grow=0.1, min_change=100)
    now = pacer.last_full
    assert pacer.step(50, now + 1) == ""  # under min_change
    assert pacer.step(1000, now + 2) == "freeze" and gc.get_freeze_count() > 0
    assert pacer.step(1090, now + 3) == ""  # within 10%
    assert pacer.step(1300, now + 4) == "freeze"
    assert pacer.step(200, now + 5) == "freeze"  # sockets leaving count too
    assert pacer.freezes == 3 and pacer.fulls == 0


def test_a_full_collection_per_interval_reclaims_frozen_cycles():
    pacer = GcPacer(check_s=1, full_s=60, min_change=0)
    cycle = Cycle()
    gone = weakref.ref(cycle)
    assert pacer.step(1000, pacer.last_full + 1) == "freeze"  # the cycle is frozen while alive
    del cycle
    gc.collect()
    assert gone() is not None  # frozen: the collector does not see it
    assert pacer.step(1000, pacer.last_full + 61) == "full"
    assert gone() is None and pacer.fulls == 1
    assert gc.get_freeze_count() > 0  # and what lives is frozen again

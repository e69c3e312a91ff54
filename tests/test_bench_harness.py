"""The benchmark harness's copies of Candor's constants (bench/harness/product.py) still equal
the product's: the bench coordinator does not set Django up, so it cannot import them."""

from django.conf import settings

from bench.harness import product
from notifications import presence, streaming
from notifications.policy.decision import Policy


def test_channel_and_key_names_match_the_product():
    assert product.CHANGES_CHANNEL == streaming.CHANGES_CHANNEL
    assert product.LEDGER_ORIGIN == streaming.LEDGER_ORIGIN
    assert product.PRESENCE_PREFIX == presence.KEY_PREFIX


def test_limits_match_the_product_defaults():
    policy = Policy(version="bench")
    assert product.MIN_COUNT == policy.min_count == settings.CANDOR_MIN_COUNT
    assert product.VIEWING_CAP == policy.display_caps["viewing_now"]
    assert product.PURCHASES_CAP == policy.display_caps["purchases_in_window"]
    assert product.UPDATE_INTERVAL_MS == settings.CANDOR_UPDATE_INTERVAL_MS

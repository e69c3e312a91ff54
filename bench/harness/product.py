"""Candor's own constants that the benchmarks rely on, in one place.

The benchmark's coordinator does not set Django up, so these are not imported from the product
at run time; each names where it comes from, and tests/test_bench_harness.py checks that they
still equal the product's.
"""

# notifications/streaming.py: the Redis channel every change is PUBLISHed on, and the origin of
# a change caused by the ledger (a message is "<origin>:<product id>").
CHANGES_CHANNEL = "candor:v1:changes"
LEDGER_ORIGIN = "ledger"
# notifications/presence.py: a product's presence set is `candor:v1:presence:<product id>`.
PRESENCE_PREFIX = "candor:v1:presence:"
# config/settings.py CANDOR_UPDATE_INTERVAL_MS: updates per product are coalesced on the
# leading edge, at most one a second (SPEC 5). The bench servers run with it set to this.
UPDATE_INTERVAL_MS = 1000
# config/settings.py CANDOR_MIN_COUNT, and notifications/policy/decision.py Policy.display_caps:
# below the minimum nothing is shown; above a cap the text is "20+" (viewers) or "50+"
# (purchases) and stops changing.
MIN_COUNT = 3
VIEWING_CAP = 20
PURCHASES_CAP = 50

import datetime as dt

import pytest

from notifications.identity import client_ip_resolve, user_agent_is_bot, visitor_hash_compute
from notifications.maintenance import salts_rotate
from notifications.models import DailySalt

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/131.0 Safari/537.36"
)


@pytest.mark.parametrize(
    ("ua", "bot"),
    [
        (CHROME, False),
        ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", False),
        ("SomeNewBrowser/1.0", False),  # a deny-list, never an allow-list
        ("", True),
        ("   ", True),
        ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/131.0 Safari/537.36", True),
        ("Googlebot/2.1 (+http://www.google.com/bot.html)", True),
        ("Mozilla/5.0 (compatible; bingbot/2.0)", True),
        ("Baiduspider", True),
        ("curl/8.5.0", True),
        ("python-requests/2.32", True),
    ],
)
def test_bot_deny_list(ua, bot):
    assert user_agent_is_bot(ua) is bot


def test_untrusted_forwarded_for_is_ignored(settings):
    settings.CANDOR_TRUSTED_PROXIES = []
    assert client_ip_resolve(peer="203.0.113.9", forwarded_for="1.2.3.4") == "203.0.113.9"


def test_trusted_proxy_gives_the_rightmost_untrusted_hop(settings):
    settings.CANDOR_TRUSTED_PROXIES = ["10.0.0.0/8", "192.0.2.1"]
    # A client may prepend anything; only the hop our proxy appended is believed.
    assert (
        client_ip_resolve(peer="10.1.2.3", forwarded_for="6.6.6.6, 198.51.100.7, 192.0.2.1") == "198.51.100.7"
    )
    assert client_ip_resolve(peer="10.1.2.3", forwarded_for="garbage") == "10.1.2.3"
    assert client_ip_resolve(peer="203.0.113.9", forwarded_for="6.6.6.6") == "203.0.113.9"


@pytest.mark.django_db
def test_visitor_hash_is_per_site_per_day_and_made_on_first_use():
    day1 = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
    assert DailySalt.objects.count() == 0
    a = visitor_hash_compute(site_id=1, ip="203.0.113.9", user_agent=CHROME, now=day1)
    assert DailySalt.objects.filter(day=day1.date()).exists()
    assert a == visitor_hash_compute(
        site_id=1, ip="203.0.113.9", user_agent=CHROME, now=day1.replace(hour=23)
    )
    assert a != visitor_hash_compute(site_id=2, ip="203.0.113.9", user_agent=CHROME, now=day1)
    assert a != visitor_hash_compute(site_id=1, ip="203.0.113.10", user_agent=CHROME, now=day1)
    assert a != visitor_hash_compute(site_id=1, ip="203.0.113.9", user_agent=CHROME + "x", now=day1)
    assert a != visitor_hash_compute(
        site_id=1, ip="203.0.113.9", user_agent=CHROME, now=day1 + dt.timedelta(days=1)
    )
    assert "203.0.113.9" not in a and len(a) == 32


@pytest.mark.django_db
def test_salts_rotate_keeps_48_hours_and_is_safe_twice():
    now = dt.datetime(2026, 3, 10, 1, tzinfo=dt.UTC)
    for days_ago in range(5):
        visitor_hash_compute(site_id=1, ip="x", user_agent=CHROME, now=now - dt.timedelta(days=days_ago))
    deleted = salts_rotate(now=now)
    assert deleted == 2
    assert salts_rotate(now=now) == 0
    kept = set(DailySalt.objects.values_list("day", flat=True))
    assert kept == {dt.date(2026, 3, d) for d in (8, 9, 10, 11)}

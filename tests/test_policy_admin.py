"""The store owner edits segments, policies and templates in the admin, with clear errors; every
policy save is a new version; the preview shows what would be shown and why not."""

import datetime as dt
import html
import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.utils import timezone

from notifications.models import (
    Event,
    MessageTemplate,
    Notification,
    PolicyConfig,
    PolicySnapshot,
    RefusalCount,
    SegmentConfig,
)
from notifications.selectors import policy_catalog_build
from notifications.services import refusal_counts_add
from tests.factories import ProductFactory, SiteFactory, site_policy_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin(client):
    user = get_user_model().objects.create_superuser("owner", "owner@example.invalid", "pw-123456789")
    client.force_login(user)
    return client


def policy_form(site, **over):
    data = {
        "site": site.pk,
        "name": "Launch week",
        "allowed_kinds": "viewing_now, recent_purchase",
        "tier": 1,
        "min_count": 3,
        "cap_viewing_now": 10,
        "cap_purchases_in_window": 20,
        "cap_add_to_cart_in_window": 10,
        "rounding_step": 1,
        "max_share_pct": 0,
        "per_page_view": 1,
        "per_session": 4,
        "min_gap_s": 30,
        "dismiss_silence_s": 600,
        "recent_purchase_window_s": 1800,
        "count_window_max_s": 86400,
        "allowed_groups": "category, everyone",
        "excluded_groups": "",
        "holdout_pct": 5,
        "snapshots-TOTAL_FORMS": 0,
        "snapshots-INITIAL_FORMS": 0,
    }
    data.update(over)
    return data


def test_every_policy_save_is_a_new_version_with_a_snapshot(admin):
    site = SiteFactory()
    response = admin.post("/admin/notifications/policyconfig/add/", policy_form(site))
    assert response.status_code == 302, response.content[:2000]
    policy = PolicyConfig.objects.get()
    assert policy.version == 1
    response = admin.post(
        f"/admin/notifications/policyconfig/{policy.pk}/change/", policy_form(site, cap_viewing_now=8)
    )
    assert response.status_code == 302
    policy.refresh_from_db()
    assert (policy.version, policy.cap_viewing_now) == (2, 8)
    snapshots = {s.version: s.settings["cap_viewing_now"] for s in PolicySnapshot.objects.all()}
    assert snapshots == {1: 10, 2: 8}, "earlier versions are kept as they were"


@pytest.mark.parametrize(
    ("over", "field", "message"),
    [
        ({"min_count": 2}, "min_count", "At least 3"),
        ({"allowed_kinds": "viewing_now, fake_news"}, "allowed_kinds", "unknown value"),
        ({"allowed_groups": "everyone, celebrities"}, "allowed_groups", "unknown value"),
        ({"holdout_pct": 140}, "holdout_pct", "0 to 100"),
    ],
)
def test_a_bad_policy_is_refused_with_a_clear_error(admin, over, field, message):
    site = SiteFactory()
    response = admin.post("/admin/notifications/policyconfig/add/", policy_form(site, **over))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not PolicyConfig.objects.exists()


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Hurry, only {count} left!", "SCARCITY"),
        ("12 people are viewing this", "DIGIT"),
        ("Michael from Boston is viewing this", "NAME_OR_PLACE"),
        ("Everyone is viewing this", "SUPERLATIVE"),
        ("Bought {minutes} minutes ago", "PLACEHOLDER_KIND"),
    ],
)
def test_a_rejected_template_shows_the_reason_in_the_admin(admin, text, code):
    site = SiteFactory()
    response = admin.post(
        "/admin/notifications/messagetemplate/add/",
        {
            "site": site.pk,
            "kind": "viewing_now",
            "group": "everyone",
            "tier": 1,
            "locale": "en",
            "text": text,
        },
    )
    assert response.status_code == 200
    assert f"Rejected ({code})" in response.content.decode()
    assert not MessageTemplate.objects.exists()


def _template_post(admin, site, **over):
    data = {
        "site": site.pk,
        "kind": "viewing_now",
        "group": "everyone",
        "tier": 1,
        "locale": "en",
        "text": "{count} other person is viewing this",
        "text_plural": "{count} other people are viewing this",
    }
    return admin.post("/admin/notifications/messagetemplate/add/", {**data, **over})


def _field_errors(page: str, field: str) -> str:
    """The error list Django's admin renders inside the row of `field` (the text beside it)."""
    row = re.search(rf'<div class="form-row[^"]*field-{field}\b.*?</div>\s*</div>', page, re.S)
    assert row is not None, f"no row for {field}"
    errors = re.search(r'<ul class="errorlist[^"]*"[^>]*>(.*?)</ul>', row.group(0), re.S)
    return errors.group(1) if errors else ""


@pytest.mark.parametrize(
    ("field", "text", "code"),
    [
        ("text", "Hurry, only {count} left!", "SCARCITY"),
        ("text", "12 people are viewing this", "DIGIT"),
        ("text_plural", "{count} people are viewing this, don't wait", "SCARCITY"),
        ("text_plural", "{count} people viewed this in the last hour", "TIME_WORD"),
    ],
)
def test_a_refused_template_shows_its_code_and_reason_beside_the_refused_field(admin, field, text, code):
    from notifications.policy.lint import template_lint

    problem = template_lint(text, kind="viewing_now", tier=1, locale="en")
    assert problem is not None and problem.code == code
    response = _template_post(admin, SiteFactory(), **{field: text})
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors[field] == [f"Rejected ({problem.code}): {problem.reason}"]
    assert form.errors.as_data()[field][0].code == problem.code
    other = "text_plural" if field == "text" else "text"
    assert other not in form.errors, "the accepted field carries no error"
    assert "__all__" not in form.errors, "the reason is beside the field, not only at the top"
    page = response.content.decode()
    beside = html.unescape(_field_errors(page, field))
    assert f"Rejected ({problem.code})" in beside and problem.reason in beside
    assert _field_errors(page, other) == ""
    assert not MessageTemplate.objects.exists()


def test_both_refused_fields_show_their_own_reason(admin):
    response = _template_post(
        admin, SiteFactory(), text="Hurry, only {count} left!", text_plural="12 people are viewing this"
    )
    form = response.context["adminform"].form
    assert [e.code for e in form.errors.as_data()["text"]] == ["SCARCITY"]
    assert [e.code for e in form.errors.as_data()["text_plural"]] == ["DIGIT"]


def test_the_shipped_wording_is_listed_read_only_beside_the_stores_own(admin):
    from notifications.policy.decision import builtin_templates

    site = SiteFactory()
    assert _template_post(admin, site).status_code == 302
    shipped = builtin_templates()
    kinds = {(row.kind, row.group) for row in shipped}
    assert ("viewing_now", "category") in kinds and ("add_to_cart_in_window", "category") in kinds
    assert {row.kind for row in shipped} == {
        "viewing_now",
        "recent_purchase",
        "purchases_in_window",
        "add_to_cart_in_window",
    }
    assert ("{count} other person is viewing this", "{count} other people are viewing this") in {
        (row.singular, row.plural) for row in shipped
    }
    assert "Someone bought this just now" in {row.singular for row in shipped}
    for url in (
        "/admin/notifications/messagetemplate/",
        "/admin/notifications/messagetemplate/add/",
        f"/admin/notifications/messagetemplate/{MessageTemplate.objects.get().pk}/change/",
    ):
        page = html.unescape(admin.get(url).content.decode())
        table = page[page.index('id="shipped-templates"') :]
        table = table[: table.index("</table>")]
        assert "<input" not in table and "<textarea" not in table, "read-only"
        for row in shipped:
            assert row.singular in table and row.plural in table, (url, row)
        if url.endswith("/messagetemplate/"):
            # The store's own template is on the same page, in the list above the shipped ones.
            assert page.index("{count} other person is viewing this") < page.index('id="shipped-templates"')


def test_an_accepted_template_is_used_by_the_catalog(admin):
    site = SiteFactory()
    response = admin.post(
        "/admin/notifications/messagetemplate/add/",
        {
            "site": site.pk,
            "kind": "viewing_now",
            "group": "everyone",
            "tier": 1,
            "locale": "en",
            "text": "{count} other person is looking at this",
            "text_plural": "{count} other people are looking at this",
        },
    )
    assert response.status_code == 302
    templates = policy_catalog_build(site.pk).templates_for("en-gb")
    assert [t.plural for t in templates] == ["{count} other people are looking at this"]
    assert policy_catalog_build(site.pk).templates_for("de") == ()


def test_segments_are_ordered_and_a_default_always_exists():
    site = SiteFactory()
    catalog = policy_catalog_build(site.pk)
    assert catalog.segments[-1].name == "Everyone else", "the shipped defaults"
    policy = site_policy_set(site, segment_name="Everyone")
    SegmentConfig.objects.create(site=site, name="Mobile", order=1, policy=policy, devices="mobile")
    names = [s.name for s in policy_catalog_build(site.pk).segments]
    assert names == ["Mobile", "Everyone"]


def test_the_preview_shows_what_would_be_shown_and_why_not(admin):
    product = ProductFactory(category="Coffee", category_kind="utilitarian")
    now = timezone.now()
    for n in range(6):
        Event.objects.create(
            site=product.site,
            product=product,
            kind="purchase",
            source="server",
            occurred_at=now - dt.timedelta(minutes=10 + n),
            order_id=f"o{n}",
            verified=True,
        )
    response = admin.get(
        "/admin/notifications/policyconfig/preview/", {"product": product.pk, "locale": "ja"}
    )
    page = response.content.decode()
    assert response.status_code == 200
    assert "Utilitarian products" in page and "default-utilitarian-1" in page
    assert "Someone bought this 10 minutes ago" in page
    assert "Ordered 5+ times in the last 24 hours" in page, "rounded down to steps of 5"
    assert "BELOW_MIN_COUNT" in page, "nobody is viewing"
    english = admin.get(
        "/admin/notifications/policyconfig/preview/", {"product": product.pk, "locale": "en-us"}
    )
    assert "Individualist locales" in english.content.decode()


def test_refusals_are_counted_and_the_latest_listed(admin):
    site = SiteFactory()
    refusal_counts_add({(site.pk, "viewing_now", "BELOW_MIN_COUNT", "default-1"): 4})
    refusal_counts_add({(site.pk, "viewing_now", "BELOW_MIN_COUNT", "default-1"): 2})
    assert RefusalCount.objects.get().count == 6
    page = admin.get("/admin/notifications/refusalcount/").content.decode()
    assert "BELOW_MIN_COUNT" in page


def test_why_states_the_rules_of_the_policy_version_the_claim_was_decided_under(client):
    product = ProductFactory()
    policy = site_policy_set(product.site, min_count=4, per_page_view=1, cap_viewing_now=8)
    site_policy_set(product.site, segment_name="Later", min_count=9)  # a newer edit: not this claim's
    notification = Notification.objects.create(
        site=product.site,
        product=product,
        kind="viewing_now",
        text="5 other people are viewing this",
        claim={"metric": "viewing_now", "window_s": 30, "displayed": "5"},
        true_value=5,
        window_s=30,
        evidence={"distinct_visitors": 6},
        policy_version=policy.version_label,
    )
    page = html.unescape(client.get(f"/why/{notification.public_id}").content.decode())
    assert "Nothing is shown below a true count of 4" in page
    assert "Above 8 the number is shown as “8+”" in page
    assert "At most 1 new message per page" in page
    # Plain words only: no version label, no policy (arm) name, no internal kind name.
    assert policy.version_label not in page and policy.name not in page
    assert "Policy version" not in page and "viewing_now" not in page


def test_the_linter_command_prints_a_verdict_per_line(tmp_path, capsys):
    candidates = tmp_path / "candidates.txt"
    candidates.write_text("{count} other people are viewing this\nHurry, only {count} left!\n")
    with pytest.raises(SystemExit) as exited:
        call_command("candor_lint_templates", str(candidates))
    assert exited.value.code == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "line 1: ACCEPT"
    assert out[1].startswith("line 2: REJECT SCARCITY: ")
    assert "Hurry, only" not in out[1], "the text is not echoed"
    assert out[2] == "2 lines: 1 accepted, 1 rejected"
    candidates.write_text("{count} other people are viewing this\n")
    call_command("candor_lint_templates", str(candidates))  # exit 0: no SystemExit

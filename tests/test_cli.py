import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from notifications.models import Product, Site, SiteSecret

pytestmark = pytest.mark.django_db


def run(*args):
    out = StringIO()
    call_command("candor_site", *args, stdout=out)
    return json.loads(out.getvalue())


def test_create_prints_key_and_secret_once():
    result = run(
        "create",
        "--name",
        "Shop",
        "--origin",
        "https://shop.example",
        "--origin",
        "https://www.shop.example",
        "--shopify-secret",
        "shpss_x",
        "--woocommerce-secret",
        "wc_y",
    )
    assert set(result) == {"key", "secret"}
    site = Site.objects.get(public_key=result["key"])
    assert site.origins == ["https://shop.example", "https://www.shop.example"]
    assert site.shopify_secret == "shpss_x" and site.woocommerce_secret == "wc_y"
    assert SiteSecret.objects.get(site=site).secret == result["secret"]


def test_rotate_then_retire():
    created = run("create", "--name", "Shop", "--origin", "https://shop.example")
    rotated = run("rotate", "--key", created["key"])
    assert rotated["secret"] != created["secret"]
    assert SiteSecret.objects.filter(retired_at__isnull=True).count() == 2
    with pytest.raises(CommandError, match="two active"):
        run("rotate", "--key", created["key"])
    run("retire", "--key", created["key"])
    assert list(SiteSecret.objects.filter(retired_at__isnull=True).values_list("secret", flat=True)) == [
        rotated["secret"]
    ]


def test_products_upserts_a_catalog(tmp_path):
    created = run("create", "--name", "Shop", "--origin", "https://shop.example")
    catalog = tmp_path / "catalog.json"
    catalog.write_text(
        json.dumps(
            [
                {
                    "sku": "a",
                    "name": "A",
                    "url": "https://shop.example/a",
                    "category": "Music",
                    "category_kind": "self_expression",
                },
                {"sku": "b", "name": "B", "category": "Tools", "category_kind": "utilitarian"},
            ]
        )
    )
    assert run("products", "--key", created["key"], str(catalog))["created"] == 2
    catalog.write_text(json.dumps([{"sku": "a", "name": "A2", "category_kind": "other"}]))
    assert run("products", "--key", created["key"], str(catalog)) == {
        "key": created["key"],
        "created": 0,
        "updated": 1,
    }
    assert Product.objects.get(sku="a").name == "A2"


@pytest.mark.parametrize(
    "items",
    [
        [{"sku": "", "name": "x"}],
        [{"sku": "a", "name": "x", "category_kind": "luxury"}],
        [{"sku": "a", "name": "x", "price": 3}],
        {"sku": "a"},
        [{"sku": "ok", "name": "fine"}, "nope"],
    ],
)
def test_a_bad_catalog_changes_nothing(tmp_path, items):
    created = run("create", "--name", "Shop", "--origin", "https://shop.example")
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(items))
    with pytest.raises(CommandError):
        run("products", "--key", created["key"], str(catalog))
    assert Product.objects.count() == 0


def test_unknown_key_and_bad_origin_are_clear_errors():
    with pytest.raises(CommandError, match="no site"):
        run("rotate", "--key", "pk_missing")
    with pytest.raises(CommandError, match="origin"):
        run("create", "--name", "Shop", "--origin", "shop.example")


# --- policy and experiment: what seed_demo --experiment (and a store's own script) sets up ------


def _site(name="Shop"):
    return run("create", "--name", name, "--origin", "https://shop.example")["key"]


def test_policy_creates_a_version_and_puts_it_on_a_segment():
    from notifications.models import PolicyConfig, PolicySnapshot, SegmentConfig

    key = _site()
    result = run(
        "policy", "--key", key, "--name", "cap 10", "--segment", "Everyone", "--default",
        "--cap-viewing-now", "10", "--min-count", "4", "--allowed-kinds", "viewing_now, recent_purchase",
    )  # fmt: skip
    policy = PolicyConfig.objects.get(site__public_key=key, name="cap 10")
    assert result == {
        "key": key,
        "policy": "cap 10",
        "version": policy.version_label,
        "segment": "Everyone",
        "default": True,
    }
    assert (policy.version, policy.cap_viewing_now, policy.min_count) == (1, 10, 4)
    assert policy.cap_purchases_in_window == PolicyConfig._meta.get_field("cap_purchases_in_window").default
    segment = SegmentConfig.objects.get(site__public_key=key)
    assert (segment.name, segment.is_default, segment.policy_id) == ("Everyone", True, policy.pk)

    # Again: a new version of the same row, options not given keep their value.
    again = run("policy", "--key", key, "--name", "cap 10", "--cap-viewing-now", "12")
    policy.refresh_from_db()
    assert "segment" not in again and (policy.version, policy.cap_viewing_now, policy.min_count) == (2, 12, 4)
    assert PolicySnapshot.objects.filter(policy=policy).count() == 2


def test_experiment_sets_the_holdout_and_variants():
    from notifications.models import PolicyVariant, Site

    key = _site()
    run("policy", "--key", key, "--name", "cap 10", "--segment", "Everyone", "--default")
    run("policy", "--key", key, "--name", "cap 50", "--cap-viewing-now", "50")
    result = run("experiment", "--key", key, "--holdout-pct", "20", "--variant", "Everyone:cap 50:50")
    assert result == {
        "key": key,
        "holdout_pct": 20.0,
        "variants": [{"segment": "Everyone", "policy": "cap 50", "share_pct": 50.0}],
    }
    assert Site.objects.get(public_key=key).holdout_pct == 20
    variant = PolicyVariant.objects.get(segment__site__public_key=key)
    assert (variant.segment.name, variant.policy.name, variant.share_pct) == ("Everyone", "cap 50", 50)
    run("experiment", "--key", key, "--variant", "Everyone:cap 50:30")  # the same arm, a new share
    assert list(PolicyVariant.objects.values_list("share_pct", flat=True)) == [30]
    assert Site.objects.get(public_key=key).holdout_pct == 20  # not given: unchanged


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("policy", "--key", "pk_missing", "--name", "p"), "no site"),
        (("experiment", "--key", "pk_missing", "--holdout-pct", "5"), "no site"),
        (("policy", "--key", "{key}", "--name", "p", "--min-count", "2"), "min_count"),
        (("policy", "--key", "{key}", "--name", "p", "--allowed-kinds", "everything"), "allowed_kinds"),
        (("policy", "--key", "{key}", "--name", "p", "--default"), "--default needs --segment"),
        (
            ("policy", "--key", "{key}", "--name", "p", "--segment", "Other", "--default"),
            "already the site's default",
        ),
        (("experiment", "--key", "{key}"), "nothing to set"),
        (("experiment", "--key", "{key}", "--holdout-pct", "101"), "holdout_pct"),
        (("experiment", "--key", "{key}", "--holdout-pct", "-1"), "holdout_pct"),
        (("experiment", "--key", "{key}", "--variant", "Everyone:cap 50:0"), "share_pct"),
        (("experiment", "--key", "{key}", "--variant", "Everyone:cap 50:120"), "share_pct"),
        (("experiment", "--key", "{key}", "--variant", "Everyone:cap 50"), "SEGMENT:POLICY:SHARE"),
        (("experiment", "--key", "{key}", "--variant", "Nobody:cap 50:10"), "no segment named 'Nobody'"),
        (("experiment", "--key", "{key}", "--variant", "Everyone:cap 10:10"), "segment's own policy"),
        # A policy of another site is not this site's, whatever its name.
        (("experiment", "--key", "{key}", "--variant", "Everyone:theirs:10"), "no policy named 'theirs'"),
    ],
)
def test_policy_and_experiment_refuse_bad_input_and_change_nothing(args, message):
    from notifications.models import PolicyConfig, PolicyVariant, SegmentConfig, Site

    key = _site()
    run("policy", "--key", key, "--name", "cap 10", "--segment", "Everyone", "--default")
    run("policy", "--key", key, "--name", "cap 50")
    run("policy", "--key", _site("Theirs"), "--name", "theirs", "--segment", "Everyone", "--default")
    before = (
        list(PolicyConfig.objects.values_list("name", "version")),
        list(SegmentConfig.objects.values_list("name", "is_default", "policy_id")),
        list(PolicyVariant.objects.values_list("segment_id", "policy_id", "share_pct")),
        list(Site.objects.values_list("holdout_pct", flat=True)),
    )
    with pytest.raises(CommandError, match=message):
        run(*(arg.format(key=key) for arg in args))
    assert before == (
        list(PolicyConfig.objects.values_list("name", "version")),
        list(SegmentConfig.objects.values_list("name", "is_default", "policy_id")),
        list(PolicyVariant.objects.values_list("segment_id", "policy_id", "share_pct")),
        list(Site.objects.values_list("holdout_pct", flat=True)),
    )


def test_variants_of_a_segment_share_at_most_100_pct():
    key = _site()
    run("policy", "--key", key, "--name", "base", "--segment", "Everyone", "--default")
    for name in ("a", "b"):
        run("policy", "--key", key, "--name", name)
    run("experiment", "--key", key, "--variant", "Everyone:a:60")
    with pytest.raises(CommandError, match="100%"):
        run("experiment", "--key", key, "--variant", "Everyone:b:50")

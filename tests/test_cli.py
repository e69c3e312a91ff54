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

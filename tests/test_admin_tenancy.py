"""Stores are tenants (SPEC 7, issue 20), tried as a staff user would, on every admin URL of the
app. The URLs come from the admin's registry, so a model registered later is tried too (and fails
here until it has a builder below).

Two stores, A and B, each with one object of every registered model. `viewer` is a viewer of A
and `owner` an owner of A; both hold every Django permission of the app, so what stops them is
the membership and the role, not a missing permission (the worst case: a staff account given
too much)."""

import datetime as dt
import json

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse

from notifications import tenancy
from notifications.admin import TenantAdminMixin
from notifications.models import (
    AuditAlarm,
    DailySalt,
    Event,
    Exposure,
    HourlyRollup,
    IngestRefusal,
    MemberRole,
    MessageTemplate,
    Notification,
    PolicyConfig,
    PolicySnapshot,
    PolicyVariant,
    Product,
    RefusalCount,
    SegmentConfig,
    ServerDelivery,
    Site,
    SiteMembership,
    SiteSecret,
)
from notifications.services import membership_grant, policy_save
from tests.factories import ProductFactory, SiteFactory

pytestmark = pytest.mark.django_db

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
APP = "notifications"
REGISTERED = sorted(
    (model for model in admin.site._registry if model._meta.app_label == APP), key=lambda m: m.__name__
)


def _store(label: str) -> dict:
    """A store with one object of every registered model; returns {model: object}."""
    site = SiteFactory(name=f"Store {label}")
    product = ProductFactory(site=site, name=f"Gadget {label}", sku=f"sku-{label}")
    policy = policy_save(policy=PolicyConfig(site=site, name=f"Policy {label}"))
    other_policy = policy_save(policy=PolicyConfig(site=site, name=f"Bold {label}", cap_viewing_now=50))
    segment = SegmentConfig.objects.create(site=site, name=f"Segment {label}", is_default=True, policy=policy)
    event = Event.objects.create(
        site=site, product=product, kind="purchase", source="server", verified=True, occurred_at=NOW
    )
    notification = Notification.objects.create(
        site=site,
        product=product,
        kind="viewing_now",
        text="3 other people are viewing this",
        claim={"metric": "viewing_now", "window_s": 30, "displayed": "3"},
        true_value=3,
        window_s=30,
        evidence={"distinct_visitors": 4},
        policy_version=policy.version_label,
        recipient_count=4,
    )
    return {
        Site: site,
        SiteSecret: site.secrets.first(),
        Product: product,
        Event: event,
        Notification: notification,
        AuditAlarm: AuditAlarm.objects.create(
            notification=notification, reason=f"test alarm {label}", claimed="3", recomputed="2"
        ),
        HourlyRollup: HourlyRollup.objects.create(
            site=site, product=product, hour=NOW.replace(minute=0), kind="view", events=5, visitors=4
        ),
        ServerDelivery: ServerDelivery.objects.create(
            site=site, idempotency_key=f"order-{label}", body_sha256="0" * 64, response={"accepted": 1}
        ),
        IngestRefusal: IngestRefusal.objects.create(
            day=NOW.date(), site=site, endpoint="events", code="bad_json", count=2
        ),
        PolicyConfig: policy,
        PolicySnapshot: policy.snapshots.first(),
        SegmentConfig: segment,
        PolicyVariant: PolicyVariant.objects.create(segment=segment, policy=other_policy, share_pct=50),
        MessageTemplate: MessageTemplate.objects.create(
            site=site, kind="viewing_now", text="{count} other people are viewing this"
        ),
        RefusalCount: RefusalCount.objects.create(
            day=NOW.date(),
            site=site,
            kind="viewing_now",
            reason="BELOW_MIN_COUNT",
            policy_version="v",
            count=1,
        ),
        Exposure: Exposure.objects.create(
            site=site,
            product=product,
            visitor_hash="a" * 64,
            segment=f"segment-{label}",
            arm="control",
            started_at=NOW,
            ended_at=NOW,
            outcome="shown",
        ),
        SiteMembership: None,  # filled in by the `world` fixture (it needs the users)
        DailySalt: None,  # belongs to no store
    }


@pytest.fixture
def world(db):
    users = get_user_model().objects
    everything = Permission.objects.filter(content_type__app_label=APP)
    viewer = users.create_user("alice", is_staff=True)
    owner = users.create_user("olivia", is_staff=True)
    rival = users.create_user("bob", is_staff=True)
    for user in (viewer, owner, rival):
        user.user_permissions.set(everything)
    a, b = _store("A"), _store("B")
    membership_grant(site=a[Site], username="alice", role=MemberRole.VIEWER)
    a[SiteMembership] = membership_grant(site=a[Site], username="olivia", role=MemberRole.OWNER)
    b[SiteMembership] = membership_grant(site=b[Site], username="bob", role=MemberRole.OWNER)
    salt = DailySalt.objects.create(day=NOW.date(), salt="s" * 64)
    a[DailySalt] = b[DailySalt] = salt
    root = users.create_superuser("root", "root@example.invalid", None)
    return {"a": a, "b": b, "viewer": viewer, "owner": owner, "rival": rival, "root": root}


def _login(client, user):
    client.force_login(user)
    return client


def _url(model, name, *args):
    return reverse(f"admin:{APP}_{model._meta.model_name}_{name}", args=args)


def test_every_registered_admin_and_inline_is_filtered_by_membership():
    """One mixin, not per page: every ModelAdmin and inline of the app carries it."""
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label != APP:
            continue
        assert isinstance(model_admin, TenantAdminMixin), model
        for inline in model_admin.inlines:
            assert issubclass(inline, TenantAdminMixin), inline


def test_every_registered_model_has_a_builder_here():
    built = _store("X")
    missing = [model.__name__ for model in REGISTERED if model not in built]
    assert not missing, f"add these models to _store() so the tenancy tests try them: {missing}"


def test_every_model_reaches_a_store_or_is_for_superusers_only():
    for model in REGISTERED:
        if model is DailySalt:
            assert tenancy.site_paths(model) == ()
        else:
            assert tenancy.site_paths(model), model


@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m.__name__)
@pytest.mark.parametrize("who", ["viewer", "owner"])
def test_changelist_lists_only_the_members_stores(client, world, model, who):
    response = _login(client, world[who]).get(_url(model, "changelist"))
    if model is DailySalt:  # no store: superusers only
        assert response.status_code == 403
        return
    assert response.status_code == 200
    shown = {obj.pk for obj in response.context["cl"].result_list}
    assert world["a"][model].pk in shown
    assert world["b"][model].pk not in shown
    # Nothing on the page names store B (list filters offer only the user's own values).
    for name in (b"Store B", b"Gadget B", b"Policy B", b"Segment B", b"segment-B", b"test alarm B"):
        assert name not in response.content


@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m.__name__)
@pytest.mark.parametrize("who", ["viewer", "owner"])
@pytest.mark.parametrize("page", ["change", "history", "delete"])
def test_another_stores_object_is_not_found(client, world, model, who, page):
    target = world["b"][model]
    before = model.objects.filter(pk=target.pk).count()
    client = _login(client, world[who])
    url = _url(model, page, target.pk)
    assert client.get(url).status_code in (403, 404)
    assert client.post(url, {"post": "yes", "name": "taken over"}).status_code in (403, 404)
    assert model.objects.filter(pk=target.pk).count() == before
    if model is Site:
        assert Site.objects.get(pk=target.pk).name == "Store B"


@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m.__name__)
def test_a_viewer_changes_nothing(client, world, model):
    """Every Django permission of the app, and still read-only in the store she views."""
    own = world["a"][model]
    client = _login(client, world["viewer"])
    if model is not DailySalt:
        page = client.get(_url(model, "change", own.pk))
        assert page.status_code == 200
        assert b'name="_save"' not in page.content
    assert client.get(_url(model, "add")).status_code == 403
    assert client.post(_url(model, "change", own.pk), {"name": "renamed"}).status_code in (403, 404)
    assert client.post(_url(model, "delete", own.pk), {"post": "yes"}).status_code in (403, 404)
    assert model.objects.filter(pk=own.pk).exists()
    if model is Product:
        assert Product.objects.get(pk=own.pk).name == "Gadget A"


@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m.__name__)
@pytest.mark.parametrize("who", ["viewer", "owner"])
def test_bulk_actions_never_reach_another_store(client, world, model, who):
    """Every action of every admin, posted with another store's object selected: nothing
    happens to it (the list's queryset does not hold it)."""
    model_admin = admin.site._registry[model]
    target = world["b"][model]
    secrets_before = list(SiteSecret.objects.filter(site=world["b"][Site]).values_list("pk", "retired_at"))
    client = _login(client, world[who])
    for name in model_admin.actions or ():
        client.post(
            _url(model, "changelist"), {"action": name, "_selected_action": [target.pk], "post": "yes"}
        )
    client.post(
        _url(model, "changelist"),
        {"action": "delete_selected", "_selected_action": [target.pk], "post": "yes"},
    )
    assert model.objects.filter(pk=target.pk).exists()
    assert (
        list(SiteSecret.objects.filter(site=world["b"][Site]).values_list("pk", "retired_at"))
        == secrets_before
    )


def test_every_action_declares_its_permissions():
    for model, model_admin in admin.site._registry.items():
        if model._meta.app_label != APP:
            continue
        for func, name, _ in model_admin._get_base_actions():
            assert getattr(func, "allowed_permissions", None), f"{model.__name__}.{name}"


def _rotate(client, site, action="rotate_secret"):
    return client.post(
        _url(Site, "changelist"), {"action": action, "_selected_action": [site.pk]}, follow=True
    )


def test_secret_actions_need_the_owner_role(client, world):
    a = world["a"][Site]
    before = SiteSecret.objects.filter(site=a).count()
    response = _rotate(_login(client, world["viewer"]), a)
    assert SiteSecret.objects.filter(site=a).count() == before
    assert b"sk_" not in response.content
    # The owner may: one new secret, shown once, and the rotation is in the admin log by name.
    client.logout()
    response = _rotate(_login(client, world["owner"]), a)
    assert SiteSecret.objects.filter(site=a).count() == before + 1
    assert b"copy it now" in response.content
    assert LogEntry.objects.filter(user=world["owner"], object_id=str(a.pk)).exists()


def test_an_owner_of_one_store_cannot_rotate_another_alongside_it(client, world):
    """Selecting her own store and, by a crafted post, the rival's: all or nothing."""
    a, b = world["a"][Site], world["b"][Site]
    # Olivia is also a viewer of B: she sees it, but owns only A.
    SiteMembership.objects.create(user=world["owner"], site=b, role=MemberRole.VIEWER)
    counts = {s.pk: s.secrets.count() for s in (a, b)}
    client = _login(client, world["owner"])
    client.post(_url(Site, "changelist"), {"action": "rotate_secret", "_selected_action": [a.pk, b.pk]})
    client.post(_url(Site, "changelist"), {"action": "retire_old_secrets", "_selected_action": [b.pk]})
    assert {s.pk: s.secrets.count() for s in (a, b)} == counts
    assert not SiteSecret.objects.filter(site=b, retired_at__isnull=False).exists()


@pytest.mark.parametrize("model", REGISTERED, ids=lambda m: m.__name__)
def test_foreign_key_choices_offer_only_the_owners_stores(client, world, model):
    """The add form and every inline of it: no choice belongs to store B."""
    response = _login(client, world["owner"]).get(_url(model, "add"))
    if response.status_code == 403:  # the ledger, logs and salts: nobody adds those here
        return
    assert response.status_code == 200
    forms = [response.context["adminform"].form]
    for formset in response.context["inline_admin_formsets"]:
        forms.extend(formset.formset.forms)
        forms.append(formset.formset.empty_form)
    b_site = world["b"][Site].pk
    for form in forms:
        for name, field in form.fields.items():
            queryset = getattr(field, "queryset", None)
            # `id`: a formset row's own hidden key, looked up among the parent's rows only.
            if name == "id" or queryset is None or not tenancy.site_paths(queryset.model):
                continue
            offered = tenancy.tenant_filter(queryset, {b_site})
            assert not offered.exists(), f"{model.__name__}.{name} offers store B's {queryset.model.__name__}"


def test_an_owner_cannot_attach_a_policy_or_template_to_another_store(client, world):
    b = world["b"][Site]
    client = _login(client, world["owner"])
    response = client.post(
        _url(MessageTemplate, "add"),
        {
            "site": b.pk,
            "kind": "viewing_now",
            "group": "everyone",
            "tier": 1,
            "locale": "de",
            "text": "{count} hier",
        },
    )
    assert response.status_code == 200  # the form again, with an error
    assert not MessageTemplate.objects.filter(site=b, locale="de").exists()
    response = client.post(_url(PolicyConfig, "add"), {"site": b.pk, "name": "sneaky"})
    assert not PolicyConfig.objects.filter(name="sneaky").exists()


@pytest.mark.parametrize("who", ["viewer", "owner"])
def test_dashboard_and_csv_of_another_store_are_not_found(client, world, who):
    client = _login(client, world[who])
    for name in ("candor_experiment", "candor_experiment_csv"):
        assert client.get(reverse(f"admin:{name}", args=[world["a"][Site].pk])).status_code == 200
        assert client.get(reverse(f"admin:{name}", args=[world["b"][Site].pk])).status_code == 404


def test_preview_offers_and_accepts_only_the_members_products(client, world):
    client = _login(client, world["viewer"])
    page = client.get(reverse("admin:candor_preview"))
    assert b"Gadget A" in page.content and b"Gadget B" not in page.content
    page = client.get(reverse("admin:candor_preview"), {"product": world["b"][Product].pk})
    assert page.context["preview"] is None
    assert "product" in page.context["form"].errors


def test_alarm_warning_counts_only_the_members_alarms(client, world):
    page = _login(client, world["viewer"]).get(_url(Notification, "changelist"), follow=True)
    assert b"raised 1 alarm" in page.content


def test_a_superuser_sees_every_store(client, world):
    client = _login(client, world["root"])
    for model in REGISTERED:
        shown = {obj.pk for obj in client.get(_url(model, "changelist")).context["cl"].result_list}
        assert {world["a"][model].pk, world["b"][model].pk} <= shown, model


def test_a_staff_user_with_no_membership_sees_nothing(client, world):
    nobody = get_user_model().objects.create_user("nemo", is_staff=True)
    nobody.user_permissions.set(Permission.objects.filter(content_type__app_label=APP))
    client = _login(client, nobody)
    for model in REGISTERED:
        assert client.get(_url(model, "changelist")).status_code == 403, model


def test_only_superusers_make_stores(client, world):
    """A store's owner, with every permission of the app, still cannot add a store: stores
    are made by the operator (`candor_site create`) or a superuser."""
    client = _login(client, world["owner"])
    response = client.post(
        _url(Site, "add"), {"name": "Second store", "allowed_origins": "https://x.example"}
    )
    assert response.status_code == 403
    assert not Site.objects.filter(name="Second store").exists()


# --- candor_site grant / revoke ---------------------------------------------------------------


def _cli(*args) -> dict:
    from io import StringIO

    out = StringIO()
    call_command("candor_site", *args, stdout=out)
    return json.loads(out.getvalue())


def test_grant_and_revoke_from_the_cli(client):
    site = SiteFactory(name="Store C")
    ProductFactory(site=site, name="Gadget C")
    user = get_user_model().objects.create_user("carol")
    assert _cli("grant", "--key", site.public_key, "--user", "carol") == {
        "key": site.public_key,
        "user": "carol",
        "role": "viewer",
    }
    user.refresh_from_db()
    assert user.is_staff
    client.force_login(user)
    # A viewer straight from the CLI can read the store's products, not change them.
    assert client.get(_url(Product, "changelist")).status_code == 200
    product = Product.objects.get(site=site)
    assert b'name="_save"' not in client.get(_url(Product, "change", product.pk)).content
    assert _cli("grant", "--key", site.public_key, "--user", "carol", "--role", "owner")["role"] == "owner"
    assert b'name="_save"' in client.get(_url(Product, "change", product.pk)).content
    assert _cli("revoke", "--key", site.public_key, "--user", "carol")["revoked"] is True
    assert client.get(_url(Product, "changelist")).status_code == 403
    assert _cli("revoke", "--key", site.public_key, "--user", "carol")["revoked"] is False
    assert not user.groups.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--user", "nobody-here"], "no user"),
        (["--user", "carol", "--role", "admin"], "invalid choice"),
    ],
)
def test_grant_refuses_unknown_users_and_roles(args, message):
    site = SiteFactory()
    get_user_model().objects.create_user("carol")
    with pytest.raises(CommandError, match=message):
        call_command("candor_site", "grant", "--key", site.public_key, *args)
    assert not SiteMembership.objects.exists()


def test_grant_refuses_an_unknown_key():
    get_user_model().objects.create_user("carol")
    with pytest.raises(CommandError, match="no site"):
        call_command("candor_site", "grant", "--key", "pk_nope", "--user", "carol")


def test_roles_are_read_once_per_request(client, world, django_assert_max_num_queries):
    client = _login(client, world["viewer"])
    client.get(_url(Product, "changelist"))  # warm up sessions and content types
    with django_assert_max_num_queries(15):
        assert client.get(_url(Product, "changelist")).status_code == 200


@pytest.mark.parametrize("who", ["viewer", "owner"])
def test_autocomplete_offers_only_the_members_stores(client, world, who):
    response = _login(client, world[who]).get(
        reverse("admin:autocomplete"),
        {"app_label": APP, "model_name": "product", "field_name": "site", "term": "Store"},
    )
    assert response.status_code == 200
    assert [row["text"] for row in response.json()["results"]] == ["Store A"]


@pytest.mark.parametrize("model", [Product, PolicyConfig, SegmentConfig, MessageTemplate])
def test_an_owner_cannot_move_an_object_to_another_store_she_owns(client, world, model):
    """Even between two stores she owns: an object stays in the store it was made in."""
    SiteMembership.objects.create(user=world["owner"], site=world["b"][Site], role=MemberRole.OWNER)
    own = world["a"][model]
    page = _login(client, world["owner"]).get(_url(model, "change", own.pk))
    assert "site" not in page.context["adminform"].form.fields


def test_a_viewers_read_only_site_page_shows_no_secret(client, world):
    """A read-only page renders every field's value: not the secrets."""
    site = world["a"][Site]
    site.shopify_secret, site.woocommerce_secret = "shpss_viewer_must_not_read", "wc_viewer_must_not_read"
    site.save()
    signing = SiteSecret.objects.get(site=site)
    page = _login(client, world["viewer"]).get(_url(Site, "change", site.pk))
    assert page.status_code == 200
    body = page.content.decode()
    for secret in ("shpss_viewer_must_not_read", "wc_viewer_must_not_read", signing.secret):
        assert secret not in body
    assert body.count("Set") >= 2

"""The store owner's console. The ledger and the notification log are read-only for everyone,
superusers included: no admin form can create, alter or remove activity (SPEC 2.5)."""

import datetime as dt

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import get_fields_from_path
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from . import tenancy
from .models import (
    AuditAlarm,
    DailySalt,
    Event,
    Exposure,
    HourlyRollup,
    IngestRefusal,
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
from .services import (
    SiteError,
    policy_save,
    public_key_new,
    secret_key_new,
    site_secret_retire,
    site_secret_rotate,
)


class ReadOnlyAdminMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class TenantAdminMixin:
    """Stores are tenants (SPEC 7), on every admin page of the app: this one mixin, on every
    ModelAdmin and inline here (a test walks the admin's registry to hold that).

    - Lists, change forms, history, delete pages, date drill-downs, list filters, actions (they
      act on the list's queryset) and autocomplete (it asks the related admin's queryset) see
      only the stores the user is a member of; another store's object is a 404, not a redirect
      that would confirm it exists.
    - Changing, adding and deleting need Django's model permission AND the `owner` role in the
      object's store; viewers change nothing.
    - A foreign-key choice (a product's store, a segment's policy, a variant's policy) lists only
      the stores the user owns, so nothing can be attached to another store.
    Superusers see and change everything (`tenancy.site_roles` is None for them)."""

    def get_queryset(self, request):
        return tenancy.tenant_filter(super().get_queryset(request), tenancy.sites_visible(request.user))

    def _tenant_allows(self, request, obj, site_ids) -> bool:
        if site_ids is None:
            return True
        if obj is None:  # the page or form as a whole: the user needs some store, the model a path
            return bool(site_ids) and bool(tenancy.site_paths(self.model))
        sites = tenancy.sites_of(obj)  # for an inline, `obj` is the parent object
        return bool(sites) and sites <= site_ids

    def has_view_permission(self, request, obj=None):
        return super().has_view_permission(request, obj) and self._tenant_allows(
            request, obj, tenancy.sites_visible(request.user)
        )

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self._tenant_allows(
            request, obj, tenancy.sites_owned(request.user)
        )

    def has_delete_permission(self, request, obj=None):
        return super().has_delete_permission(request, obj) and self._tenant_allows(
            request, obj, tenancy.sites_owned(request.user)
        )

    def has_add_permission(self, request, *args):  # ModelAdmin: (request); inline: (request, obj)
        if not super().has_add_permission(request, *args):
            return False
        if self.model is Site:  # new stores are made by superusers (or `candor_site create`)
            return request.user.is_superuser
        return self._tenant_allows(request, args[0] if args else None, tenancy.sites_owned(request.user))

    def has_owner_permission(self, request) -> bool:
        """For actions' `allowed_permissions`: the user owns a store (each object is checked
        again in the action)."""
        owned = tenancy.sites_owned(request.user)
        return owned is None or bool(owned)

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        related = db_field.related_model
        if "queryset" not in kwargs and tenancy.site_paths(related):
            queryset = self.get_field_queryset(None, db_field, request)
            if queryset is None:
                queryset = related._default_manager.all()
            kwargs["queryset"] = tenancy.tenant_filter(queryset, tenancy.sites_owned(request.user))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_readonly_fields(self, request, obj=None):
        """An object stays in the store it was made in: a policy, segment, template or product
        moved to another store would carry its history (and a store's evidence) with it."""
        fields = list(super().get_readonly_fields(request, obj))
        if obj is not None and tenancy.site_paths(self.model) == ("site",) and "site" not in fields:
            fields.append("site")
        return fields

    def get_list_filter(self, request):
        """A filter on a foreign key offers only the values in the user's own rows (Django's
        plain related filter would list every store and product)."""
        filters = []
        for item in super().get_list_filter(request):
            if isinstance(item, str) and get_fields_from_path(self.model, item)[-1].is_relation:
                item = (item, admin.RelatedOnlyFieldListFilter)
            filters.append(item)
        return filters

    def _get_obj_does_not_exist_redirect(self, request, opts, object_id):
        # Django redirects with "… doesn't exist"; another store's object is simply not found.
        raise Http404(f"No {opts.verbose_name} with this id.")


class SiteSecretInline(ReadOnlyAdminMixin, TenantAdminMixin, admin.TabularInline):
    model = SiteSecret
    extra = 0
    fields = ("masked", "created_at", "retired_at")
    readonly_fields = fields
    verbose_name = "signing secret"

    @admin.display(description="secret")
    def masked(self, obj):
        # The whole secret is shown once, when it is made; afterwards only its stored hint (the
        # secret itself is not even decrypted for this page).
        return f"{obj.hint}…"


class ProductInlineForm(forms.ModelForm):
    """A new row sets its SKU; an existing row's SKU is shown but disabled, so a posted value
    is ignored (Django keeps a disabled field's initial value). A tabular inline's
    `get_readonly_fields` is per inline, not per row, hence the form."""

    class Meta:
        model = Product
        fields = ("sku", "name", "category", "category_kind", "url")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is not None and "sku" in self.fields:
            self.fields["sku"].disabled = True
            self.fields["sku"].help_text = "Fixed once the product exists."


class ProductInline(TenantAdminMixin, admin.TabularInline):
    model = Product
    form = ProductInlineForm
    extra = 0
    fields = ("sku", "name", "category", "category_kind", "url")


# Field names and their labels (what the admin log names), not secrets.
PLATFORM_SECRETS = {
    "shopify_secret": "Shopify webhook secret",  # nosec B105  # a label
    "woocommerce_secret": "WooCommerce webhook secret",  # nosec B105  # a label
}


def _platform_secret_field(label: str) -> forms.CharField:
    # Write-only: the page never holds the stored value (nor its ciphertext), not even in a hidden
    # input; a blank box keeps what is stored.
    return forms.CharField(
        label=label,
        required=False,
        max_length=200,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )


class SiteForm(forms.ModelForm):
    """The experiment settings may be left out of a posted form: they then keep their value.

    The platform secrets are write-only: a blank box keeps the stored secret, a value replaces it,
    the checkbox beside it removes it; the help text says only whether one is set."""

    shopify_secret = _platform_secret_field(PLATFORM_SECRETS["shopify_secret"])
    shopify_secret_clear = forms.BooleanField(required=False, label="Remove the Shopify webhook secret")
    woocommerce_secret = _platform_secret_field(PLATFORM_SECRETS["woocommerce_secret"])
    woocommerce_secret_clear = forms.BooleanField(
        required=False, label="Remove the WooCommerce webhook secret"
    )

    class Meta:
        model = Site
        fields = (
            "name",
            "allowed_origins",
            "shopify_secret",
            "woocommerce_secret",
            "purchases_from",
            "is_demo",
            "is_active",
            "holdout_pct",
            "attribution_window_h",
        )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name in (*SiteAdmin.EXPERIMENT_FIELDS, "purchases_from"):
            if name in self.fields:
                self.fields[name].required = False
        # What the admin log records about each platform secret on save ("set", "changed",
        # "removed"), filled by clean(); never the value.
        self.secret_changes: dict[str, str] = {}
        for name in PLATFORM_SECRETS:
            # The stored value must not be the form's initial either: it would be compared with
            # the blank box (a false "changed") and could reach a template.
            self.initial[name] = ""
            if name in self.fields:
                stored = bool(self.instance.pk and getattr(self.instance, name))
                self.fields[name].help_text = (
                    "Set. Leave blank to keep it; type a new one to replace it."
                    if stored
                    else "Not set. Webhooks from this platform are refused until it is."
                )

    def clean(self):
        cleaned = super().clean()
        for name in PLATFORM_SECRETS:
            if name not in self.fields or name in self.errors:
                continue
            stored = getattr(self.instance, name) if self.instance.pk else ""
            if cleaned.get(f"{name}_clear"):
                cleaned[name] = ""
            elif not cleaned.get(name):
                cleaned[name] = stored  # a blank box keeps the stored secret
            if cleaned[name] != stored:
                self.secret_changes[name] = "removed" if not cleaned[name] else "changed" if stored else "set"
        return cleaned

    def _kept(self, name: str):
        value = self.cleaned_data.get(name)
        return getattr(self.instance, name) if value is None else value

    def clean_holdout_pct(self):
        return self._kept("holdout_pct")

    def clean_attribution_window_h(self):
        return self._kept("attribution_window_h")

    def clean_purchases_from(self):
        return self.cleaned_data.get("purchases_from") or self.instance.purchases_from


@admin.register(Site)
class SiteAdmin(TenantAdminMixin, admin.ModelAdmin):
    form = SiteForm
    list_display = ("name", "public_key", "origin_list", "active_secrets", "is_demo", "is_active")
    search_fields = ("name", "public_key")
    ordering = ("name", "pk")
    readonly_fields = ("public_key", "created_at")
    fields = (
        "name",
        "public_key",
        "allowed_origins",
        "shopify_secret",
        "shopify_secret_clear",
        "woocommerce_secret",
        "woocommerce_secret_clear",
        "purchases_from",
        "is_demo",
        "is_active",
        "holdout_pct",
        "attribution_window_h",
        "created_at",
    )
    inlines = (SiteSecretInline, ProductInline)
    actions = ("rotate_secret", "retire_old_secrets")
    change_form_template = "admin/notifications/site/change_form.html"
    EXPERIMENT_FIELDS = ("holdout_pct", "attribution_window_h")
    SECRET_CLEAR_FIELDS = ("shopify_secret_clear", "woocommerce_secret_clear")

    def get_fields(self, request, obj=None):
        # A new site starts with no experiment (the defaults); its page then offers one. It has
        # no platform secret to remove yet either.
        fields = super().get_fields(request, obj)
        new_only = (*self.EXPERIMENT_FIELDS, *self.SECRET_CLEAR_FIELDS)
        if obj is None:
            return [f for f in fields if f not in new_only]
        if not self.has_change_permission(request, obj):
            # A read-only page renders each field's value: the secrets become "Set"/"Not set".
            state = {name: f"{name}_state" for name in PLATFORM_SECRETS}
            return [state.get(f, f) for f in fields if f not in self.SECRET_CLEAR_FIELDS]
        return fields

    def get_readonly_fields(self, request, obj=None):
        fields = list(super().get_readonly_fields(request, obj))
        return [*fields, *(f"{name}_state" for name in PLATFORM_SECRETS if f"{name}_state" not in fields)]

    @admin.display(description="Shopify webhook secret")
    def shopify_secret_state(self, obj) -> str:
        return "Set" if obj.shopify_secret else "Not set"

    @admin.display(description="WooCommerce webhook secret")
    def woocommerce_secret_state(self, obj) -> str:
        return "Set" if obj.woocommerce_secret else "Not set"

    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<int:site_id>/experiment/", view(self.experiment_view), name="candor_experiment"),
            path("<int:site_id>/experiment.csv", view(self.experiment_csv), name="candor_experiment_csv"),
            *super().get_urls(),
        ]

    @staticmethod
    def _period(request) -> tuple[int, float]:
        from .dashboard import PERIODS_DAYS

        try:
            days = int(request.GET.get("days", 28))
        except ValueError:
            days = 28
        try:
            lift = float(request.GET.get("lift", 10))
        except ValueError:
            lift = 10.0
        return (days if days in PERIODS_DAYS else 28), (lift if 1 <= lift <= 100 else 10.0)

    def _site_visible(self, request, site_id: int) -> Site:
        """The store, if this user may see it (another store's is a 404, like a missing one)."""
        site = self.get_object(request, str(site_id))
        if site is None:
            raise Http404("No such site.")
        if not self.has_view_permission(request, site):
            raise PermissionDenied
        return site

    def experiment_view(self, request, site_id: int):
        """The experiment dashboard (SPEC 4): arms, lifts with intervals, the reactance curve."""
        from .dashboard import dashboard_context

        site = self._site_visible(request, site_id)
        days, lift = self._period(request)
        context = {
            **self.admin_site.each_context(request),
            **dashboard_context(site=site, days=days, minimum_lift_pct=lift),
            "title": f"Experiments — {site.name}",
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/notifications/experiment.html", context)

    def experiment_csv(self, request, site_id: int):
        from .dashboard import results_csv
        from .experiments import experiment_results

        site = self._site_visible(request, site_id)
        days, lift = self._period(request)
        until = timezone.now()
        results = experiment_results(
            site=site, since=until - dt.timedelta(days=days), until=until, minimum_lift_pct=lift
        )
        response = HttpResponse(results_csv(results), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = (
            f'attachment; filename="candor-experiment-site{site.pk}-{days}d.csv"'
        )
        return response

    def change_view(self, request, object_id, form_url="", extra_context=None):
        from .dashboard import headline
        from .experiments import experiment_results

        site = self.get_object(request, object_id)
        extra_context = extra_context or {}
        if site is not None:
            extra_context["experiment_headline"] = headline(experiment_results(site=site))
            extra_context["experiment_url"] = reverse("admin:candor_experiment", args=[site.pk])
            extra_context["shoppers_now"] = self._shoppers_now(site)
            extra_context["visitors_per_address"] = settings.CANDOR_VISITORS_PER_ADDRESS
        return super().change_view(request, object_id, form_url, extra_context)

    @staticmethod
    def _shoppers_now(site: Site) -> int | None:
        """`shoppers_on_site_now` (SPEC 7): the same capped count a toast would use, or None when
        presence cannot be read (Redis down must not take the Site page with it)."""
        import redis

        from .metrics import shoppers_on_site_now
        from .presence import site_visitors_now

        try:
            visitors = site_visitors_now(site.pk)
        except redis.exceptions.RedisError:
            return None
        metric = shoppers_on_site_now(
            visitors=visitors, ttl_s=settings.CANDOR_PRESENCE_TTL_S, at=timezone.now()
        )
        return metric.true_value

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_active=Count("secrets", filter=Q(secrets__retired_at__isnull=True)))
        )

    @admin.display(description="allowed origins")
    def origin_list(self, obj):
        return ", ".join(obj.origins)

    @admin.display(description="active secrets", ordering="_active")
    def active_secrets(self, obj):
        return obj._active

    def save_model(self, request, obj, form, change):
        if not change:
            obj.public_key = public_key_new()
        super().save_model(request, obj, form, change)
        # Who set, replaced or removed a secret goes to the admin log by name, with the signing
        # secret's hint at most; Django's own change message lists changed fields' labels only.
        for name, what in form.secret_changes.items():
            self.log_change(request, obj, f"{what.capitalize()} the {PLATFORM_SECRETS[name]}")
        if not change:
            secret = SiteSecret.objects.create(site=obj, secret=secret_key_new())
            self.log_change(request, obj, f"Made the first signing secret ({secret.hint}…)")
            self._show_once(request, obj, secret.secret)

    def _owned_only(self, request, queryset) -> list[Site] | None:
        """The selected stores, or None (and an error) if the user does not own every one of
        them: a secret action is all or nothing."""
        sites = list(queryset)
        refused = [site for site in sites if not self.has_change_permission(request, site)]
        if refused:
            self.message_user(
                request,
                "Only an owner of a store may change its secrets; nothing was done for "
                + ", ".join(str(site) for site in refused),
                messages.ERROR,
            )
            return None
        return sites

    @admin.action(
        description="Rotate the signing secret (the old one keeps working until retired)",
        permissions=("change", "owner"),
    )
    def rotate_secret(self, request, queryset):
        for site in self._owned_only(request, queryset) or ():
            try:
                secret = site_secret_rotate(site=site)
            except SiteError as exc:
                self.message_user(request, f"{site}: {exc}", messages.ERROR)
                continue
            hint = secret[: SiteSecret.HINT_CHARS]
            self.log_change(request, site, f"Rotated the signing secret (new secret {hint}…)")
            self._show_once(request, site, secret)

    @admin.action(
        description="Retire old signing secrets (keep only the newest)", permissions=("change", "owner")
    )
    def retire_old_secrets(self, request, queryset):
        for site in self._owned_only(request, queryset) or ():
            retired = site_secret_retire(site=site)
            if retired:
                self.log_change(request, site, f"Retired {retired} signing secret(s)")
            self.message_user(request, f"{site}: retired {retired} secret(s).")

    def _show_once(self, request, site, secret):
        self.message_user(
            request,
            format_html(
                "New signing secret for {}: <code>{}</code> — copy it now, it is not shown again.",
                site,
                secret,
            ),
            messages.WARNING,
        )


@admin.register(Product)
class ProductAdmin(TenantAdminMixin, admin.ModelAdmin):
    list_display = ("name", "sku", "site", "category", "category_kind")
    list_filter = ("site", "category_kind")
    search_fields = ("name", "sku")

    def get_readonly_fields(self, request, obj=None):
        # Site and SKU are fixed once the product exists (Product.save refuses a change too): its
        # orders and notifications must not follow it to another store or SKU (issue 20).
        fields = tuple(super().get_readonly_fields(request, obj))
        if obj is None:
            return fields
        return fields + tuple(name for name in Product.FIXED_FIELDS if name not in fields)


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    list_display = ("id", "kind", "site", "product", "source", "occurred_at", "verified", "is_bot", "is_test")
    list_filter = ("kind", "source", "verified", "is_bot", "is_test", "site")
    date_hierarchy = "occurred_at"
    list_select_related = ("site", "product")


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "text",
        "product_name",
        "kind",
        "true_value",
        "window_s",
        "recipient_count",
        "policy_version",
        "created_at",
        "audit",
        "why_page",
    )
    list_filter = ("kind", "site", "policy_version")
    # A shopper or auditor quotes the public id from a /why/ address: find the row by it.
    search_fields = ("public_id",)
    readonly_fields = ("why_page",)
    date_hierarchy = "created_at"

    @admin.display(description="Why page")
    def why_page(self, obj: Notification) -> str:
        return format_html('<a href="{}">{}</a>', reverse("why", args=[obj.public_id]), obj.public_id)

    @admin.display(description="Audit")
    def audit(self, obj: Notification) -> str:
        if obj.audited_at is None:
            return "not yet"
        return "ALARM" if hasattr(obj, "alarm") else "backed by the ledger"

    def changelist_view(self, request, extra_context=None):
        _alarms_warn(request)
        return super().changelist_view(request, extra_context)


def _alarms_warn(request) -> None:
    count = tenancy.tenant_filter(AuditAlarm.objects.all(), tenancy.sites_visible(request.user)).count()
    if count:
        messages.error(
            request,
            f"The audit raised {count} alarm(s): claims the ledger does not back, or signed purchases "
            "of products nobody viewed. See Audit alarms.",
        )


@admin.register(AuditAlarm)
class AuditAlarmAdmin(ReadOnlyAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    list_display = ("notification", "event", "reason", "claimed", "recomputed", "found_at")
    list_select_related = ("notification", "event")

    def changelist_view(self, request, extra_context=None):
        _alarms_warn(request)
        return super().changelist_view(request, extra_context)


@admin.register(HourlyRollup)
class HourlyRollupAdmin(ReadOnlyAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    list_display = ("hour", "site", "product", "kind", "events", "visitors", "orders")
    list_filter = ("kind", "site")
    date_hierarchy = "hour"
    list_select_related = ("site", "product")


@admin.register(ServerDelivery)
class ServerDeliveryAdmin(ReadOnlyAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    """Accepted signed requests and platform deliveries, by idempotency key (unpaid orders too)."""

    list_display = ("idempotency_key", "site", "received_at", "response")
    list_filter = ("site",)
    search_fields = ("idempotency_key",)


@admin.register(DailySalt)
class DailySaltAdmin(ReadOnlyAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    list_display = ("day", "created_at")
    exclude = ("salt",)


@admin.register(IngestRefusal)
class IngestRefusalAdmin(ReadOnlyAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    list_display = ("day", "site", "endpoint", "code", "count")
    list_filter = ("endpoint", "code", "site")


# --- The policy layer (SPEC 3) ---------------------------------------------------------------


class PolicySnapshotInline(ReadOnlyAdminMixin, TenantAdminMixin, admin.TabularInline):
    model = PolicySnapshot
    fields = ("version", "label", "created_at", "settings")
    readonly_fields = fields
    extra = 0


@admin.register(PolicyConfig)
class PolicyConfigAdmin(TenantAdminMixin, admin.ModelAdmin):
    """Every save is a new version; earlier versions stay as snapshots (notifications name them)."""

    list_display = (
        "name",
        "site",
        "version",
        "tier",
        "min_count",
        "cap_viewing_now",
        "holdout_pct",
        "updated_at",
    )
    list_filter = ("site",)
    readonly_fields = ("version", "updated_at")
    inlines = (PolicySnapshotInline,)
    fieldsets = (
        (None, {"fields": ("site", "name", "version", "updated_at", "allowed_kinds", "tier")}),
        (
            "Counts",
            {
                "fields": (
                    "min_count",
                    "cap_viewing_now",
                    "cap_purchases_in_window",
                    "cap_add_to_cart_in_window",
                    "rounding_step",
                    "max_share_pct",
                )
            },
        ),
        ("Frequency", {"fields": ("per_page_view", "per_session", "min_gap_s", "dismiss_silence_s")}),
        ("Windows", {"fields": ("recent_purchase_window_s", "count_window_max_s")}),
        ("Reference groups and holdout", {"fields": ("allowed_groups", "excluded_groups", "holdout_pct")}),
    )

    def save_model(self, request, obj, form, change):
        policy_save(policy=obj)
        self.message_user(request, f"Saved as version {obj.version} ({obj.version_label}).")

    def get_urls(self):
        preview = self.admin_site.admin_view(self.preview_view)
        return [path("preview/", preview, name="candor_preview"), *super().get_urls()]

    def preview_view(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        from .preview import PreviewForm, preview_build

        form = PreviewForm(request.GET or None)
        products = form.fields["product"]
        products.queryset = tenancy.tenant_filter(products.queryset, tenancy.sites_visible(request.user))
        preview = preview_build(form.cleaned_data) if form.is_valid() else None
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "preview": preview,
            "title": "Preview",
        }
        return TemplateResponse(request, "admin/notifications/preview.html", context)

    def changelist_view(self, request, extra_context=None):
        self.message_user(
            request,
            format_html(
                '<a href="{}">Preview what a shopper would be shown now →</a>',
                reverse("admin:candor_preview"),
            ),
            messages.INFO,
        )
        return super().changelist_view(request, extra_context)


class PolicyVariantFormSet(BaseInlineFormSet):
    def clean(self):
        super().clean()
        total = sum(
            form.cleaned_data.get("share_pct") or 0
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE")
        )
        if total > 100:
            raise ValidationError(f"The variants share {total:g}% of the segment; at most 100% in all.")


class PolicyVariantInline(TenantAdminMixin, admin.TabularInline):
    """Experiment arms (SPEC 4): shares of the segment's visitors who get another policy."""

    model = PolicyVariant
    formset = PolicyVariantFormSet
    extra = 0
    fields = ("policy", "share_pct", "created_at")
    readonly_fields = ("created_at",)
    verbose_name = "policy variant (experiment arm)"


@admin.register(SegmentConfig)
class SegmentConfigAdmin(TenantAdminMixin, admin.ModelAdmin):
    list_display = (
        "name",
        "site",
        "order",
        "is_default",
        "policy",
        "variant_list",
        "category_kinds",
        "locales",
        "countries",
    )
    list_filter = ("site", "is_default")
    list_editable = ("order",)
    inlines = (PolicyVariantInline,)

    @admin.display(description="variants")
    def variant_list(self, obj):
        return ", ".join(f"{v.policy.name} {v.share_pct:g}%" for v in obj.variants.all()) or "—"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("variants__policy")


@admin.register(Exposure)
class ExposureAdmin(ReadOnlyAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    """Page views and what they were shown (SPEC 4). The visitor hash is not displayed."""

    list_display = (
        "started_at",
        "site",
        "product",
        "segment",
        "arm",
        "outcome",
        "reason",
        "toasts",
        "intensity",
    )
    list_filter = ("outcome", "arm", "segment", "site")
    date_hierarchy = "started_at"
    exclude = ("visitor_hash",)
    list_select_related = ("site", "product")


@admin.register(MessageTemplate)
class MessageTemplateAdmin(TenantAdminMixin, admin.ModelAdmin):
    """Templates are checked by the linter on save; a refused one shows its code and reason
    beside the refused field. The shipped default wording is listed, read-only, on the list and
    on the form, so an owner reads today's wording before writing their own."""

    list_display = ("text", "kind", "group", "tier", "locale", "site")
    list_filter = ("site", "kind", "tier", "locale")

    @staticmethod
    def _shipped(extra_context):
        from .policy.decision import builtin_templates

        return {**(extra_context or {}), "shipped_templates": builtin_templates()}

    def changelist_view(self, request, extra_context=None):
        return super().changelist_view(request, self._shipped(extra_context))

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        return super().changeform_view(request, object_id, form_url, self._shipped(extra_context))


@admin.register(RefusalCount)
class RefusalCountAdmin(ReadOnlyAdminMixin, TenantAdminMixin, admin.ModelAdmin):
    """Why something was not shown: per day, site, kind, reason and policy version; latest first."""

    list_display = ("last_at", "site", "kind", "reason", "policy_version", "count", "day")
    list_filter = ("reason", "kind", "site")
    ordering = ("-last_at",)


@admin.register(SiteMembership)
class SiteMembershipAdmin(TenantAdminMixin, admin.ModelAdmin):
    """Who may see and change each store. A store's members see its list; only superusers grant
    and revoke (here or with `candor_site grant` / `revoke`)."""

    list_display = ("user", "site", "role", "created_at")
    list_filter = ("role", "site")

    def has_add_permission(self, request, *args):
        return request.user.is_superuser

    def has_change_permission(self, request, obj=None):
        return request.user.is_superuser

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser

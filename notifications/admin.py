"""The store owner's console. The ledger and the notification log are read-only for everyone,
superusers included: no admin form can create, alter or remove activity (SPEC 2.5)."""

import datetime as dt

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Q
from django.forms.models import BaseInlineFormSet
from django.http import HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

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


class SiteSecretInline(ReadOnlyAdminMixin, admin.TabularInline):
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


class ProductInline(admin.TabularInline):
    model = Product
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
class SiteAdmin(admin.ModelAdmin):
    form = SiteForm
    list_display = ("name", "public_key", "origin_list", "active_secrets", "is_demo", "is_active")
    search_fields = ("name", "public_key")
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
        return fields if obj is not None else [f for f in fields if f not in new_only]

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

    def experiment_view(self, request, site_id: int):
        """The experiment dashboard (SPEC 4): arms, lifts with intervals, the reactance curve."""
        from .dashboard import dashboard_context

        site = get_object_or_404(Site, pk=site_id)
        if not self.has_view_permission(request, site):
            raise PermissionDenied
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

        site = get_object_or_404(Site, pk=site_id)
        if not self.has_view_permission(request, site):
            raise PermissionDenied
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
        return super().change_view(request, object_id, form_url, extra_context)

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

    @admin.action(description="Rotate the signing secret (the old one keeps working until retired)")
    def rotate_secret(self, request, queryset):
        for site in queryset:
            try:
                secret = site_secret_rotate(site=site)
            except SiteError as exc:
                self.message_user(request, f"{site}: {exc}", messages.ERROR)
                continue
            hint = secret[: SiteSecret.HINT_CHARS]
            self.log_change(request, site, f"Rotated the signing secret (new secret {hint}…)")
            self._show_once(request, site, secret)

    @admin.action(description="Retire old signing secrets (keep only the newest)")
    def retire_old_secrets(self, request, queryset):
        for site in queryset:
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
class ProductAdmin(admin.ModelAdmin):
    list_display = ("name", "sku", "site", "category", "category_kind")
    list_filter = ("site", "category_kind")
    search_fields = ("name", "sku")


@admin.register(Event)
class EventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("id", "kind", "site", "product", "source", "occurred_at", "verified", "is_bot", "is_test")
    list_filter = ("kind", "source", "verified", "is_bot", "is_test", "site")
    date_hierarchy = "occurred_at"
    list_select_related = ("site", "product")


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "text",
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
    count = AuditAlarm.objects.count()
    if count:
        messages.error(
            request,
            f"The audit raised {count} alarm(s): claims the ledger does not back, or signed purchases "
            "of products nobody viewed. See Audit alarms.",
        )


@admin.register(AuditAlarm)
class AuditAlarmAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("notification", "event", "reason", "claimed", "recomputed", "found_at")
    list_select_related = ("notification", "event")

    def changelist_view(self, request, extra_context=None):
        _alarms_warn(request)
        return super().changelist_view(request, extra_context)


@admin.register(HourlyRollup)
class HourlyRollupAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("hour", "site", "product", "kind", "events", "visitors", "orders")
    list_filter = ("kind", "site")
    date_hierarchy = "hour"
    list_select_related = ("site", "product")


@admin.register(ServerDelivery)
class ServerDeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Accepted signed requests and platform deliveries, by idempotency key (unpaid orders too)."""

    list_display = ("idempotency_key", "site", "received_at", "response")
    list_filter = ("site",)
    search_fields = ("idempotency_key",)


@admin.register(DailySalt)
class DailySaltAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("day", "created_at")
    exclude = ("salt",)


@admin.register(IngestRefusal)
class IngestRefusalAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ("day", "site", "endpoint", "code", "count")
    list_filter = ("endpoint", "code", "site")


# --- The policy layer (SPEC 3) ---------------------------------------------------------------


class PolicySnapshotInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = PolicySnapshot
    fields = ("version", "label", "created_at", "settings")
    readonly_fields = fields
    extra = 0


@admin.register(PolicyConfig)
class PolicyConfigAdmin(admin.ModelAdmin):
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
        from .preview import PreviewForm, preview_build

        form = PreviewForm(request.GET or None)
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


def _catalog_changed(*_args, **_kwargs) -> None:
    from .selectors import policy_catalogs_forget

    policy_catalogs_forget()


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


class PolicyVariantInline(admin.TabularInline):
    """Experiment arms (SPEC 4): shares of the segment's visitors who get another policy."""

    model = PolicyVariant
    formset = PolicyVariantFormSet
    extra = 0
    fields = ("policy", "share_pct", "created_at")
    readonly_fields = ("created_at",)
    verbose_name = "policy variant (experiment arm)"


@admin.register(SegmentConfig)
class SegmentConfigAdmin(admin.ModelAdmin):
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

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        _catalog_changed()

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        _catalog_changed()


@admin.register(Exposure)
class ExposureAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
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
class MessageTemplateAdmin(admin.ModelAdmin):
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

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        _catalog_changed()


@admin.register(RefusalCount)
class RefusalCountAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Why something was not shown: per day, site, kind, reason and policy version; latest first."""

    list_display = ("last_at", "site", "kind", "reason", "policy_version", "count", "day")
    list_filter = ("reason", "kind", "site")
    ordering = ("-last_at",)

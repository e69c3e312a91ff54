"""Writes: sites, keys, catalog, and the notification log (HackSoft-style services)."""

import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, TextField
from django.db.models.functions import Cast, Least
from django.utils import timezone

from .fields import secret_is_current
from .models import (
    CategoryKind,
    Exposure,
    IngestRefusal,
    MemberRole,
    Notification,
    PolicyConfig,
    PolicySnapshot,
    PolicyVariant,
    Product,
    RefusalCount,
    SegmentConfig,
    Site,
    SiteMembership,
    SiteSecret,
    label_clean,
)

MAX_ACTIVE_SECRETS = 2


class SiteError(Exception):
    """A request an operator made that cannot be carried out; the message says why, and `field`
    (when set) names the offending field, e.g. `items[3].name`."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def public_key_new() -> str:
    return "pk_" + secrets.token_urlsafe(24)


def secret_key_new() -> str:
    return "sk_" + secrets.token_urlsafe(32)


@transaction.atomic
def site_create(
    *,
    name: str,
    origins: list[str],
    shopify_secret: str = "",
    woocommerce_secret: str = "",
    is_demo: bool = False,
) -> tuple[Site, str]:
    """Create a site and its first secret. The secret is returned here and never shown again."""
    site = Site(
        name=name,
        public_key=public_key_new(),
        allowed_origins="\n".join(origins),
        shopify_secret=shopify_secret,
        woocommerce_secret=woocommerce_secret,
        is_demo=is_demo,
    )
    _site_validate(site)
    site.save()
    secret = SiteSecret.objects.create(site=site, secret=secret_key_new())
    return site, secret.secret


def site_origins_set(*, site: Site, origins: list[str]) -> Site:
    site.allowed_origins = "\n".join(origins)
    _site_validate(site)
    site.save(update_fields=["allowed_origins"])
    return site


def _site_validate(site: Site) -> None:
    try:
        site.full_clean(exclude=["public_key"])
    except ValidationError as exc:
        raise SiteError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())) from exc


@transaction.atomic
def site_secret_rotate(*, site: Site) -> str:
    """Add a new secret beside the current one; both verify until `site_secret_retire`."""
    active = SiteSecret.objects.select_for_update().filter(site=site, retired_at__isnull=True)
    if active.count() >= MAX_ACTIVE_SECRETS:
        raise SiteError("This site already has two active secrets; retire the old one before rotating again.")
    return SiteSecret.objects.create(site=site, secret=secret_key_new()).secret


@transaction.atomic
def site_secret_retire(*, site: Site) -> int:
    """Retire every active secret but the newest. Returns how many were retired."""
    active = list(
        SiteSecret.objects.select_for_update()
        .filter(site=site, retired_at__isnull=True)
        .order_by("-created_at", "-id")
    )
    for old in active[1:]:
        old.retired_at = timezone.now()
        old.save(update_fields=["retired_at"])
    return len(active[1:])


# --- Memberships: stores are tenants (SPEC 7) -------------------------------------------------

# The Django permissions a role's group carries. They are needed as well as the membership: a
# store's page shows a user only what both allow. Owners change the store's settings and catalog
# and run its secret actions; nobody changes the ledger or the logs (the admin refuses that to
# superusers too). Creating stores and granting access stay with superusers (this CLI).
_ROLE_GROUPS = {
    MemberRole.VIEWER: "Candor store viewers",
    MemberRole.OWNER: "Candor store owners",
}
_OWNER_CHANGES = {
    "site": ("change",),
    "product": ("add", "change", "delete"),
    "policyconfig": ("add", "change", "delete"),
    "segmentconfig": ("add", "change", "delete"),
    "policyvariant": ("add", "change", "delete"),
    "messagetemplate": ("add", "change", "delete"),
}


def _role_group(role: str) -> Group:
    group, _ = Group.objects.get_or_create(name=_ROLE_GROUPS[role])
    app = Site._meta.app_label
    codenames = {f"view_{model._meta.model_name}" for model in apps.get_app_config(app).get_models()}
    codenames.discard("view_dailysalt")
    if role == MemberRole.OWNER:
        codenames |= {f"{action}_{model}" for model, actions in _OWNER_CHANGES.items() for action in actions}
    group.permissions.set(Permission.objects.filter(content_type__app_label=app, codename__in=codenames))
    return group


@transaction.atomic
def membership_grant(*, site: Site, username: str, role: str = MemberRole.VIEWER) -> SiteMembership:
    """Give a staff user access to one store (or change their role there). The user becomes
    staff, so they can sign in to the admin, and joins the role's group."""
    if role not in MemberRole.values:
        raise SiteError(f"unknown role {role!r}; one of: {', '.join(MemberRole.values)}", field="role")
    user = _user_by_name(username)
    membership, _ = SiteMembership.objects.update_or_create(user=user, site=site, defaults={"role": role})
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    _groups_sync(user)
    return membership


@transaction.atomic
def membership_revoke(*, site: Site, username: str) -> bool:
    """Take a user's access to one store away; False if they had none. Their role groups follow
    the memberships they still have."""
    user = _user_by_name(username)
    deleted, _ = SiteMembership.objects.filter(user=user, site=site).delete()
    _groups_sync(user)
    return bool(deleted)


def _user_by_name(username: str):
    model = get_user_model()
    try:
        return model.objects.get(**{model.USERNAME_FIELD: username})
    except model.DoesNotExist:
        raise SiteError(
            f"no user {username!r}; create it first (manage.py createsuperuser, or the admin's Users page)",
            field="user",
        ) from None


def _groups_sync(user) -> None:
    roles = set(SiteMembership.objects.filter(user=user).values_list("role", flat=True))
    for role in MemberRole.values:
        group = _role_group(role)
        if role in roles:
            user.groups.add(group)
        else:
            user.groups.remove(group)


@dataclass(frozen=True)
class ReencryptResult:
    reencrypted: int  # stored values moved to the current SECRET_KEY
    current: int  # already under it (blank platform secrets are not counted)


@transaction.atomic
def secrets_reencrypt() -> ReencryptResult:
    """Encrypt every stored secret under the current SECRET_KEY (after a rotation that put the old
    key in SECRET_KEY_FALLBACKS), so the old key can then be dropped. Idempotent: a value already
    under the current key is left alone. A value no configured key decrypts raises
    SecretUnreadable and nothing is changed."""
    moved = kept = 0
    # Cast to a plain text field reads the column as stored (the token), not decrypted.
    for row in SiteSecret.objects.select_for_update().annotate(stored=Cast("secret", TextField())):
        if secret_is_current(stored=row.stored):
            kept += 1
        else:
            row.save(update_fields=["secret"])  # decrypted on read (a fallback key), encrypted anew
            moved += 1
    names = ("shopify_secret", "woocommerce_secret")
    casts = {f"stored_{name}": Cast(name, TextField()) for name in names}
    for site in Site.objects.select_for_update().annotate(**casts):
        stale = [
            name
            for name in names
            if getattr(site, f"stored_{name}")
            and not secret_is_current(stored=getattr(site, f"stored_{name}"))
        ]
        kept += sum(1 for name in names if getattr(site, f"stored_{name}")) - len(stale)
        if stale:
            site.save(update_fields=stale)
            moved += len(stale)
    return ReencryptResult(reencrypted=moved, current=kept)


@dataclass(frozen=True)
class CatalogResult:
    created: int
    updated: int


PRODUCT_FIELDS = ("sku", "name", "url", "category", "category_kind")
NAME_MAX = Product._meta.get_field("name").max_length
CATEGORY_MAX = Product._meta.get_field("category").max_length


def products_upsert(*, site: Site, items: list[dict]) -> CatalogResult:
    """Upsert a catalog: `[{"sku", "name", "url", "category", "category_kind"}]`.

    Validates every item before writing any, so a bad file changes nothing.
    """
    if not isinstance(items, list):
        raise SiteError("The catalog must be a JSON list of products.", field="items")
    cleaned = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise SiteError(f"item {index}: must be an object", field=f"items[{index}]")
        unknown = set(item) - set(PRODUCT_FIELDS)
        if unknown:
            raise SiteError(
                f"item {index}: unknown field(s) {', '.join(sorted(unknown))}",
                field=f"items[{index}].{sorted(unknown)[0]}",
            )
        sku = item.get("sku")
        name = item.get("name")
        category = item.get("category") or ""
        if not isinstance(sku, str) or not sku.strip() or len(sku) > 128:
            raise SiteError(
                f"item {index}: 'sku' must be a non-empty string of at most 128 characters",
                field=f"items[{index}].sku",
            )
        if not isinstance(name, str) or not label_clean(name):
            raise SiteError(f"item {index}: 'name' must be a non-empty string", field=f"items[{index}].name")
        # Over-long labels are refused, never cut: a truncated name could read as another
        # product's, and the store should know its catalog did not load as sent.
        name = label_clean(name)
        if len(name) > NAME_MAX:
            raise SiteError(
                f"item {index}: 'name' may be at most {NAME_MAX} characters (it has {len(name)})",
                field=f"items[{index}].name",
            )
        if not isinstance(category, str) or len(label_clean(category)) > CATEGORY_MAX:
            raise SiteError(
                f"item {index}: 'category' must be a string of at most {CATEGORY_MAX} characters",
                field=f"items[{index}].category",
            )
        kind = item.get("category_kind", CategoryKind.OTHER)
        if kind not in CategoryKind.values:
            raise SiteError(
                f"item {index}: 'category_kind' must be one of {', '.join(CategoryKind.values)}",
                field=f"items[{index}].category_kind",
            )
        product = Product(
            site=site,
            sku=sku.strip(),
            name=name,
            url=item.get("url") or "",
            category=label_clean(category),
            category_kind=kind,
        )
        try:
            product.full_clean(exclude=["site"], validate_unique=False, validate_constraints=False)
        except ValidationError as exc:
            field, messages = next(iter(exc.message_dict.items()))
            message = f"item {index}: '{field}': {' '.join(messages)}"
            raise SiteError(message, field=f"items[{index}].{field}") from exc
        cleaned.append(product)
    created = updated = 0
    with transaction.atomic():
        for product in cleaned:
            _, was_created = Product.objects.update_or_create(
                site=site,
                sku=product.sku,
                defaults={
                    "name": product.name,
                    "url": product.url,
                    "category": product.category,
                    "category_kind": product.category_kind,
                },
            )
            created += was_created
            updated += not was_created
    return CatalogResult(created=created, updated=updated)


# A claim emitted again within this span (a late joiner, another round with the same text)
# is the same claim: it shares the log row and its id, and the row's recipient count grows.
CLAIM_REUSE_S = 60


@transaction.atomic
def notification_log_record(
    *,
    site_id: int,
    product_id: int,
    product_name: str,
    kind: str,
    text: str,
    claim: dict,
    true_value: int,
    evidence: dict,
    policy_version: str,
    template_text: str,
    locale: str,
    recipient_count: int,
) -> str:
    """Log a claim emitted to `recipient_count` sockets; returns the public id they all receive.

    One row per distinct emitted claim (same text, claim and policy version, SPEC 2.6). The row
    keeps the lowest true value any recipient had and the evidence, template and locale of its
    first emission (a later emission of the same text and claim renders the same text).
    `product_name` is the product's name when the claim was decided: /why/ shows it, whatever
    the product is called later.
    """
    now = timezone.now()
    row = (
        Notification.objects.select_for_update()
        .filter(
            product_id=product_id,
            # A rename within the reuse span starts a new row: that claim is shown under another name.
            product_name=product_name,
            kind=kind,
            text=text,
            policy_version=policy_version,
            window_s=claim["window_s"],
            last_emitted_at__gte=now - timedelta(seconds=CLAIM_REUSE_S),
        )
        .order_by("-id")
        .first()
    )
    if row is not None and row.claim == claim:
        Notification.objects.filter(pk=row.pk).update(
            recipient_count=F("recipient_count") + recipient_count,
            true_value=Least("true_value", true_value),
            last_emitted_at=now,
        )
        return row.public_id
    row = Notification.objects.create(
        site_id=site_id,
        product_id=product_id,
        product_name=product_name,
        kind=kind,
        text=text,
        claim=claim,
        true_value=true_value,
        window_s=claim["window_s"],
        evidence=evidence,
        policy_version=policy_version,
        template_text=template_text,
        locale=locale,
        recipient_count=recipient_count,
        created_at=now,
        last_emitted_at=now,
    )
    return row.public_id


def ingest_refusal_count(*, site_id: int | None, endpoint: str, code: str) -> None:
    """Count one refused request. Runs outside any request transaction: the refusal changes
    nothing else, but it is always counted."""
    bucket = {"day": timezone.now().date(), "site_id": site_id, "endpoint": endpoint, "code": code}
    updated = IngestRefusal.objects.filter(**bucket).update(count=F("count") + 1)
    if not updated:
        try:
            with transaction.atomic():
                IngestRefusal.objects.create(**bucket, count=1)
        except IntegrityError:  # made by a concurrent request meanwhile
            IngestRefusal.objects.filter(**bucket).update(count=F("count") + 1)


def exposures_record(rows: list[dict]) -> int:
    """Write ended page views' exposures (SPEC 4) in one statement. Rows of a site or product
    deleted meanwhile are dropped (their experiment is gone)."""
    if not rows:
        return 0
    wanted = {row["product_id"] for row in rows}
    products = set(Product.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    kept = [Exposure(**row) for row in rows if row["product_id"] in products]
    Exposure.objects.bulk_create(kept, batch_size=1000)
    return len(kept)


def refusal_counts_add(counts: dict[tuple[int, str, str, str], int]) -> None:
    """Add policy refusals, keyed (site id, kind, reason, policy version), to today's counts."""
    now = timezone.now()
    for (site_id, kind, reason, policy_version), count in counts.items():
        bucket = {
            "day": now.date(),
            "site_id": site_id,
            "kind": kind,
            "reason": reason,
            "policy_version": policy_version[:200],
        }
        updated = RefusalCount.objects.filter(**bucket).update(count=F("count") + count, last_at=now)
        if not updated:
            try:
                with transaction.atomic():
                    RefusalCount.objects.create(**bucket, count=count, last_at=now)
            except IntegrityError:
                RefusalCount.objects.filter(**bucket).update(count=F("count") + count, last_at=now)


@transaction.atomic
def policy_save(*, policy: PolicyConfig) -> PolicyConfig:
    """Save a policy as a new version: the row moves on, and an immutable snapshot of this
    version is kept, so every notification's `policy_version` can be looked up (SPEC 3)."""
    policy.full_clean()
    if policy.pk:
        current = PolicyConfig.objects.select_for_update().get(pk=policy.pk)
        policy.version = current.version + 1
    else:
        policy.version = 1
    policy.updated_at = timezone.now()
    policy.save()
    PolicySnapshot.objects.create(
        policy=policy, version=policy.version, label=policy.version_label, settings=policy.settings_dict()
    )
    return policy


# --- Scripted policy set-up (the operator CLI; the admin does the same by hand) -------------

# The policy fields an operator may set: the settings a snapshot keeps, which are every editable
# field but the site, the name and the version bookkeeping.
POLICY_SETTING_FIELDS = tuple(
    f.name for f in PolicyConfig._meta.fields if f.name not in ("id", "site", "name", "version", "updated_at")
)


def _invalid(exc: ValidationError) -> SiteError:
    if hasattr(exc, "message_dict"):
        return SiteError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items()))
    return SiteError(" ".join(exc.messages))


@transaction.atomic
def policy_upsert(*, site: Site, name: str, values: dict) -> PolicyConfig:
    """Create the site's policy `name`, or change it, with `values` (POLICY_SETTING_FIELDS); either
    way a new version, through `policy_save`."""
    unknown = sorted(set(values) - set(POLICY_SETTING_FIELDS))
    if unknown:
        raise SiteError(f"unknown policy setting(s): {', '.join(unknown)}")
    policy = PolicyConfig.objects.filter(site=site, name=name).first() or PolicyConfig(site=site, name=name)
    for field_name, value in values.items():
        setattr(policy, field_name, value)
    try:
        return policy_save(policy=policy)
    except ValidationError as exc:
        raise _invalid(exc) from exc


@transaction.atomic
def segment_policy_set(
    *, site: Site, name: str, policy: PolicyConfig, is_default: bool = False
) -> SegmentConfig:
    """Put `policy` on the site's segment `name`, creating the segment if need be. `is_default`
    makes it the segment for everyone no other rule matches; an existing default stays one."""
    if policy.site_id != site.pk:
        raise SiteError(f"policy {policy.name!r} belongs to another site")
    segment = SegmentConfig.objects.filter(site=site, name=name).first() or SegmentConfig(
        site=site, name=name
    )
    segment.policy = policy
    segment.is_default = segment.is_default or is_default
    if segment.is_default:
        # The catalog takes the first default it finds: two would make one of them dead config.
        other = SegmentConfig.objects.filter(site=site, is_default=True).exclude(name=name).first()
        if other is not None:
            raise SiteError(f"segment {other.name!r} is already the site's default segment")
    try:
        segment.full_clean()
    except ValidationError as exc:
        raise _invalid(exc) from exc
    segment.save()
    return segment


@dataclass(frozen=True)
class VariantSpec:
    segment: str
    policy: str
    share_pct: float


@transaction.atomic
def experiment_set(*, site: Site, holdout_pct: float | None = None, variants: list[VariantSpec] = ()) -> Site:
    """Set the site's holdout share and put policy variants (experiment arms, SPEC 4) on its
    segments: each (segment, policy) pair is created or gets the new share. All or nothing."""
    if holdout_pct is not None:
        site.holdout_pct = holdout_pct
        _site_validate(site)
        site.save(update_fields=["holdout_pct"])
    for spec in variants:
        segment = SegmentConfig.objects.filter(site=site, name=spec.segment).first()
        if segment is None:
            raise SiteError(f"no segment named {spec.segment!r} on this site")
        policy = PolicyConfig.objects.filter(site=site, name=spec.policy).first()
        if policy is None:
            raise SiteError(f"no policy named {spec.policy!r} on this site")
        variant = PolicyVariant.objects.filter(segment=segment, policy=policy).first() or PolicyVariant(
            segment=segment, policy=policy
        )
        variant.share_pct = spec.share_pct
        try:
            variant.full_clean()
        except ValidationError as exc:
            raise _invalid(exc) from exc
        variant.save()
    return site

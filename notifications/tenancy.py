"""Stores are tenants (SPEC 7): which stores a staff user may see and change.

A user's access is their `SiteMembership` rows: `viewer` reads, `owner` also changes, and either
needs Django's model permission as well. Superusers see and change every store. The admin applies
this through one mixin (`admin.TenantAdminMixin`); the functions here are what it asks.

Every model of the app reaches its store through foreign keys (`Event.site`,
`PolicyVariant.segment.site`, `AuditAlarm.notification.site` or `.event.site`, …). `site_paths`
finds those paths from the model's fields, so a new model is filtered without anyone listing it,
and a model with no path to a store (the daily salts) is for superusers only.
"""

from functools import reduce

from django.db import models

from .models import MemberRole, Site, SiteMembership

_CACHE_ATTR = "_candor_site_roles"


def site_roles(user) -> dict[int, str] | None:
    """{site id: role} of the user's memberships; None for a superuser (every store). Kept on
    the user object for the request, so one admin page asks the database once."""
    if not getattr(user, "is_active", False) or not getattr(user, "is_staff", False):
        return {}
    if user.is_superuser:
        return None
    cached = getattr(user, _CACHE_ATTR, None)
    if cached is None:
        cached = dict(SiteMembership.objects.filter(user=user).values_list("site_id", "role"))
        setattr(user, _CACHE_ATTR, cached)
    return cached


def roles_forget(user) -> None:
    if hasattr(user, _CACHE_ATTR):
        delattr(user, _CACHE_ATTR)


def sites_visible(user) -> set[int] | None:
    """The stores the user may see (None: all)."""
    roles = site_roles(user)
    return None if roles is None else set(roles)


def sites_owned(user) -> set[int] | None:
    """The stores the user may change (None: all)."""
    roles = site_roles(user)
    return None if roles is None else {site for site, role in roles.items() if role == MemberRole.OWNER}


def site_paths(model) -> tuple[str, ...]:
    """The lookups from `model` to the store it belongs to: `pk` for a Site; the model's own
    `site` foreign key when it has one; otherwise every foreign key to a model that has a path
    (an object belongs to a store when all of its non-empty paths lead there). Empty when the
    model has no store."""
    return _site_paths(model, frozenset())


def _site_paths(model, seen: frozenset) -> tuple[str, ...]:
    if model is Site:
        return ("pk",)
    relations = [
        field
        for field in model._meta.concrete_fields
        if field.is_relation and (field.many_to_one or field.one_to_one)
    ]
    for field in relations:
        if field.related_model is Site:
            return (field.name,)
    paths: list[str] = []
    for field in relations:
        target = field.related_model
        if target in seen or target._meta.app_label != Site._meta.app_label:
            continue
        for sub in _site_paths(target, seen | {model}):
            paths.append(field.name if sub == "pk" else f"{field.name}__{sub}")
    return tuple(paths)


def tenant_q(model, site_ids: set[int]) -> models.Q:
    """Rows of `model` that belong to the stores `site_ids` only: every non-empty path leads to
    one of them, and at least one path is not empty. A model with no path matches nothing."""
    paths = site_paths(model)
    if not paths:
        return models.Q(pk__in=[])
    each = [models.Q(**{f"{p}__in": site_ids}) | models.Q(**{f"{p}__isnull": True}) for p in paths]
    some = reduce(lambda a, b: a | b, (models.Q(**{f"{p}__isnull": False}) for p in paths))
    return reduce(lambda a, b: a & b, each) & some


def tenant_filter(queryset: models.QuerySet, site_ids: set[int] | None) -> models.QuerySet:
    """`queryset` narrowed to the stores `site_ids` (None: unchanged)."""
    if site_ids is None:
        return queryset
    # Every path follows forward foreign keys, so the joins add no duplicate rows (and a
    # `distinct()` would break the admin's bulk delete).
    return queryset.filter(tenant_q(queryset.model, site_ids))


def sites_of(obj) -> set[int] | None:
    """The store ids an object belongs to, following `site_paths`; None when it has no store."""
    found: set[int] = set()
    paths = site_paths(type(obj))
    if not paths:
        return None
    for path in paths:
        steps = path.split("__")
        value = obj
        for position, step in enumerate(steps):
            if value is None:
                break
            if step == "pk":
                value = value.pk
            elif position == len(steps) - 1:
                value = getattr(value, f"{step}_id")  # the last step is the key to the store
            else:
                value = getattr(value, step)
        if value is not None:
            found.add(value)
    return found

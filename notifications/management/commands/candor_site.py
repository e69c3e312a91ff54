"""Operator CLI (SPEC 5): scripted set-up of sites, secrets and catalogs.

  candor_site create --name NAME --origin URL [--origin URL …] [--shopify-secret S] [--woocommerce-secret S]
  candor_site rotate --key pk_…
  candor_site retire --key pk_…
  candor_site products --key pk_… FILE.json
  candor_site origins --key pk_… --origin URL [--origin URL …]
  candor_site grant --key pk_… --user NAME [--role owner|viewer]
  candor_site revoke --key pk_… --user NAME
  candor_site policy --key pk_… --name NAME [--segment NAME [--default]] [--cap-viewing-now N] […]
  candor_site experiment --key pk_… [--holdout-pct P] [--variant SEGMENT:POLICY:SHARE …]

`policy` creates or changes the site's policy NAME (each run is a new version) with any of its
settings as options (`--min-count`, `--cap-purchases-in-window`, `--holdout-pct`,
`--allowed-kinds "viewing_now, recent_purchase"`, … : `candor_site policy --help` lists them),
and with `--segment` puts it on that segment (created if need be; `--default` makes it the
segment for everyone no other rule matches). `experiment` sets the site's holdout share and
gives SHARE percent of a segment's visitors the site's policy POLICY instead of the segment's own.

Every subcommand prints one JSON object on stdout.
"""

import json

from django.core.management.base import BaseCommand, CommandError
from django.db import models, transaction

from notifications.models import MemberRole, PolicyConfig
from notifications.selectors import site_by_key
from notifications.services import (
    POLICY_SETTING_FIELDS,
    SiteError,
    VariantSpec,
    experiment_set,
    membership_grant,
    membership_revoke,
    policy_upsert,
    products_upsert,
    segment_policy_set,
    site_create,
    site_origins_set,
    site_secret_retire,
    site_secret_rotate,
)


class Command(BaseCommand):
    help = "Create and manage Candor sites, their signing secrets and catalogs."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Create a site; prints its public key and secret.")
        create.add_argument("--name", required=True)
        create.add_argument("--origin", action="append", required=True, dest="origins")
        create.add_argument("--shopify-secret", default="")
        create.add_argument("--woocommerce-secret", default="")
        create.add_argument(
            "--demo", action="store_true", help="Mark the site as demo data (the demo storefront's)."
        )
        for name, text in (
            ("rotate", "Make a new secret; the old one works until `retire`."),
            ("retire", "Retire every active secret but the newest."),
        ):
            sub.add_parser(name, help=text).add_argument("--key", required=True)
        products = sub.add_parser("products", help="Upsert a catalog from a JSON file.")
        products.add_argument("--key", required=True)
        products.add_argument("file")
        origins = sub.add_parser("origins", help="Replace a site's allowed origins.")
        origins.add_argument("--key", required=True)
        origins.add_argument("--origin", action="append", required=True, dest="origins")
        grant = sub.add_parser(
            "grant", help="Give a user access to the site in the admin (viewer by default; owner changes it)."
        )
        grant.add_argument("--key", required=True)
        grant.add_argument("--user", required=True)
        grant.add_argument("--role", choices=MemberRole.values, default=MemberRole.VIEWER)
        revoke = sub.add_parser("revoke", help="Take a user's access to the site away.")
        revoke.add_argument("--key", required=True)
        revoke.add_argument("--user", required=True)
        policy = sub.add_parser(
            "policy", help="Create or change a policy (a new version) and optionally put it on a segment."
        )
        policy.add_argument("--key", required=True)
        policy.add_argument("--name", required=True)
        policy.add_argument(
            "--segment", default="", help="Put the policy on this segment (created if need be)."
        )
        policy.add_argument(
            "--default", action="store_true", help="With --segment: the segment no other rule matches."
        )
        for name in POLICY_SETTING_FIELDS:
            field = PolicyConfig._meta.get_field(name)
            if isinstance(field, models.FloatField):
                kind, metavar = float, "P"
            elif isinstance(field, models.IntegerField):
                kind, metavar = int, "N"
            else:
                kind, metavar = str, "TEXT"
            policy.add_argument(
                "--" + name.replace("_", "-"),
                dest=f"set_{name}",
                type=kind,
                default=None,
                metavar=metavar,
                help=str(field.help_text).replace("%", "%%"),
            )
        experiment = sub.add_parser("experiment", help="Set the holdout share and policy variants.")
        experiment.add_argument("--key", required=True)
        experiment.add_argument(
            "--holdout-pct", type=float, default=None, metavar="P", help="The site's holdout share (0-100)."
        )
        experiment.add_argument(
            "--variant",
            action="append",
            default=[],
            dest="variants",
            metavar="SEGMENT:POLICY:SHARE",
            help="SHARE percent of SEGMENT's visitors get the site's policy POLICY (repeatable).",
        )

    def handle(self, *args, **options):
        action = options["action"]
        try:
            with transaction.atomic():  # a subcommand changes everything it says, or nothing
                result = getattr(self, f"_{action}")(options)
        except SiteError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(result))

    def _site(self, options):
        site = site_by_key(key=options["key"])
        if site is None:
            raise CommandError(f"no site with key {options['key']!r}")
        return site

    def _create(self, options):
        site, secret = site_create(
            name=options["name"],
            origins=options["origins"],
            shopify_secret=options["shopify_secret"],
            woocommerce_secret=options["woocommerce_secret"],
            is_demo=options["demo"],
        )
        return {"key": site.public_key, "secret": secret}

    def _rotate(self, options):
        site = self._site(options)
        return {"key": site.public_key, "secret": site_secret_rotate(site=site)}

    def _retire(self, options):
        site = self._site(options)
        return {"key": site.public_key, "retired": site_secret_retire(site=site)}

    def _products(self, options):
        site = self._site(options)
        try:
            with open(options["file"], encoding="utf-8") as fh:
                items = json.load(fh)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read {options['file']}: {exc}") from exc
        result = products_upsert(site=site, items=items)
        return {"key": site.public_key, "created": result.created, "updated": result.updated}

    def _origins(self, options):
        site = site_origins_set(site=self._site(options), origins=options["origins"])
        return {"key": site.public_key, "origins": site.origins}

    def _grant(self, options):
        site = self._site(options)
        membership = membership_grant(site=site, username=options["user"], role=options["role"])
        return {"key": site.public_key, "user": options["user"], "role": membership.role}

    def _revoke(self, options):
        site = self._site(options)
        return {
            "key": site.public_key,
            "user": options["user"],
            "revoked": membership_revoke(site=site, username=options["user"]),
        }

    def _policy(self, options):
        site = self._site(options)
        if options["default"] and not options["segment"]:
            raise CommandError("--default needs --segment")
        values = {
            name: options[f"set_{name}"]
            for name in POLICY_SETTING_FIELDS
            if options[f"set_{name}"] is not None
        }
        policy = policy_upsert(site=site, name=options["name"], values=values)
        result = {"key": site.public_key, "policy": policy.name, "version": policy.version_label}
        if options["segment"]:
            segment = segment_policy_set(
                site=site, name=options["segment"], policy=policy, is_default=options["default"]
            )
            result.update(segment=segment.name, default=segment.is_default)
        return result

    def _experiment(self, options):
        site = self._site(options)
        if options["holdout_pct"] is None and not options["variants"]:
            raise CommandError("nothing to set: give --holdout-pct and/or --variant")
        specs = [_variant_parse(text) for text in options["variants"]]
        site = experiment_set(site=site, holdout_pct=options["holdout_pct"], variants=specs)
        return {
            "key": site.public_key,
            "holdout_pct": site.holdout_pct,
            "variants": [{"segment": s.segment, "policy": s.policy, "share_pct": s.share_pct} for s in specs],
        }


def _variant_parse(text: str) -> VariantSpec:
    """SEGMENT:POLICY:SHARE; the share is after the last colon, the segment before the first."""
    head, _, share = text.rpartition(":")
    segment, _, policy = head.partition(":")
    try:
        share_pct = float(share)
    except ValueError:
        share_pct = None
    if not (segment and policy) or share_pct is None:
        raise CommandError(f"--variant {text!r}: expected SEGMENT:POLICY:SHARE, e.g. Everyone:cap 50:50")
    return VariantSpec(segment=segment, policy=policy, share_pct=share_pct)

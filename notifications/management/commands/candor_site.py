"""Operator CLI (SPEC 5): scripted set-up of sites, secrets and catalogs.

  candor_site create --name NAME --origin URL [--origin URL …] [--shopify-secret S] [--woocommerce-secret S]
  candor_site rotate --key pk_…
  candor_site retire --key pk_…
  candor_site products --key pk_… FILE.json
  candor_site origins --key pk_… --origin URL [--origin URL …]
  candor_site grant --key pk_… --user NAME [--role owner|viewer]
  candor_site revoke --key pk_… --user NAME

Every subcommand prints one JSON object on stdout.
"""

import json

from django.core.management.base import BaseCommand, CommandError

from notifications.models import MemberRole
from notifications.selectors import site_by_key
from notifications.services import (
    SiteError,
    membership_grant,
    membership_revoke,
    products_upsert,
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

    def handle(self, *args, **options):
        action = options["action"]
        try:
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

"""Operator CLI for one order's data (a shopper's access or erasure request, via the store):

  candor_order export --key pk_… --order-id ID   # prints everything Candor holds for the order
  candor_order erase --key pk_… --order-id ID    # unlinks it: counts and audits stay true

Both print one JSON object on stdout. What erasure does, and why it deletes no ledger row, is
explained in notifications/orders.py and docs/security.md.
"""

import json

from django.core.management.base import BaseCommand, CommandError

from notifications.orders import order_erase, order_export
from notifications.selectors import site_by_key


class Command(BaseCommand):
    help = "Export or erase what Candor holds for one order."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        for name, text in (
            ("export", "Print everything Candor holds for the order, as JSON."),
            ("erase", "Replace the order's id and keys by an irreversible tombstone; drop stored bodies."),
        ):
            action = sub.add_parser(name, help=text)
            action.add_argument("--key", required=True, help="The site's public key (pk_…).")
            action.add_argument("--order-id", required=True, help="The store's order id.")

    def handle(self, *args, **options):
        site = site_by_key(key=options["key"])
        if site is None:
            raise CommandError(f"no site with key {options['key']!r}")
        if not options["order_id"].strip():
            raise CommandError("--order-id must not be empty")
        if options["action"] == "export":
            result = order_export(site=site, order_id=options["order_id"])
        else:
            result = order_erase(site=site, order_id=options["order_id"])
        self.stdout.write(json.dumps(result, indent=2))

"""Create the demo shop and its Candor site, idempotently.

The shop talks to Candor only through the operator CLI, as a store's own scripts would. The
demo site's allowed origins come from CANDOR_DEMO_ORIGINS (default http://127.0.0.1:8000 and
http://localhost:8000). It creates no activity: that comes from real or simulated shoppers.
"""

import json
import tempfile
from io import StringIO
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from storefront_demo.models import DemoProduct, DemoStore

CATALOG = Path(__file__).resolve().parents[2] / "catalog.json"


def _candor(*args: str) -> dict:
    out = StringIO()
    call_command("candor_site", *args, stdout=out)
    return json.loads(out.getvalue())


class Command(BaseCommand):
    help = "Create (or bring up to date) the demo storefront and its Candor site."

    def add_arguments(self, parser):
        parser.add_argument(
            "--admin-password",
            default="",
            help="Also create or update the superuser 'admin' with this password.",
        )
        parser.add_argument(
            "--experiment",
            action="store_true",
            help="Configure an experiment on the demo site, as a store owner would in the admin: a 20%% "
            "holdout, and one segment whose policy caps numbers at 10 with a 50%% variant capping them at "
            "50. Off by default: a first look at the demo should show toasts to everyone.",
        )

    @transaction.atomic
    def handle(self, *args, **options):
        items = json.loads(CATALOG.read_text(encoding="utf-8"))
        for item in items:
            DemoProduct.objects.update_or_create(sku=item["sku"], defaults=item)

        origins = [arg for origin in settings.CANDOR_DEMO_ORIGINS for arg in ("--origin", origin)]
        store = DemoStore.objects.first()
        if store is not None:
            try:
                _candor("origins", "--key", store.candor_key, *origins)
            except CommandError as exc:
                if "no site with key" not in str(exc):
                    raise
                store = None  # its site is gone (a reset Candor database): make a new one
        if store is None:
            created = _candor("create", "--name", "Candor demo store", "--demo", *origins)
            DemoStore.objects.all().delete()
            store = DemoStore.objects.create(candor_key=created["key"], candor_secret=created["secret"])

        catalog = [
            {
                "sku": item["sku"],
                "name": item["name"],
                "url": f"{settings.CANDOR_DEMO_ORIGINS[0].rstrip('/')}/product/{item['sku']}/",
                "category": item["category"],
                "category_kind": item["category_kind"],
            }
            for item in items
        ]
        with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as fh:
            json.dump(catalog, fh)
            fh.flush()
            result = _candor("products", "--key", store.candor_key, fh.name)

        if options["experiment"]:
            self._experiment(store.candor_key)

        if options["admin_password"]:
            user, _ = get_user_model().objects.get_or_create(
                username="admin", defaults={"is_staff": True, "is_superuser": True}
            )
            user.is_staff = user.is_superuser = True
            user.set_password(options["admin_password"])
            user.save()

        self.stdout.write(
            f"Demo store ready: site key {store.candor_key}, "
            f"{len(items)} products ({result['created']} new), "
            f"origins {', '.join(settings.CANDOR_DEMO_ORIGINS)}"
        )

    def _experiment(self, key: str) -> None:
        """Configuration only (SPEC 2.5): what the experiment measures comes from shoppers."""
        caps = ("--cap-viewing-now", "--cap-purchases-in-window", "--cap-add-to-cart-in-window")
        _candor(
            "policy", "--key", key, "--name", "cap 10", "--segment", "Everyone", "--default",
            *(arg for cap in caps for arg in (cap, "10")),
        )  # fmt: skip
        _candor("policy", "--key", key, "--name", "cap 50", *(arg for cap in caps for arg in (cap, "50")))
        _candor("experiment", "--key", key, "--holdout-pct", "20", "--variant", "Everyone:cap 50:50")
        self.stdout.write("Experiment: 20% holdout; segment Everyone: cap 10, and cap 50 for half the rest.")

"""Re-encrypt every stored secret under the current DJANGO_SECRET_KEY.

Run it after rotating DJANGO_SECRET_KEY (the old key in DJANGO_SECRET_KEY_FALLBACKS); afterwards the
old key is no longer needed to read the sites' secrets (docs/integrating.md, "Secrets"). Safe to run again.
Prints one JSON object: {"reencrypted": N, "current": M}.
"""

import json
from dataclasses import asdict

from django.core.management.base import BaseCommand, CommandError

from notifications.fields import SecretUnreadable
from notifications.services import secrets_reencrypt


class Command(BaseCommand):
    help = "Re-encrypt the sites' signing and platform secrets under the current DJANGO_SECRET_KEY."

    def handle(self, *args, **options):
        try:
            result = secrets_reencrypt()
        except SecretUnreadable as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(json.dumps(asdict(result)))

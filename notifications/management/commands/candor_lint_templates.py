"""`python manage.py candor_lint_templates FILE`: one candidate template per line (SPEC 3).

Prints `line <n>: ACCEPT` or `line <n>: REJECT <code>: <reason>` per line (never the text
itself), then one summary line; exits 1 if any line was rejected."""

import sys

from django.core.management.base import BaseCommand, CommandError

from notifications.policy.lint import KIND_PLACEHOLDERS, template_lint


class Command(BaseCommand):
    help = "Check candidate notification templates, one per line."

    def add_arguments(self, parser):
        parser.add_argument("file", help="a UTF-8 text file, one candidate per line ('-' for stdin)")
        parser.add_argument(
            "--kind",
            choices=sorted(KIND_PLACEHOLDERS),
            help="check the rules of this kind (recent_purchase_just_now: the under-a-minute wording)",
        )
        parser.add_argument(
            "--locale", help="the template's language (only relaxes the capitals rule for German nouns)"
        )
        parser.add_argument(
            "--tier", type=int, choices=(1, 2, 3), default=3, help="intensity tier (default 3)"
        )

    def handle(self, *args, **options):
        path = options["file"]
        try:
            if path == "-":
                lines = sys.stdin.read().splitlines()
            else:
                with open(path, encoding="utf-8") as handle:
                    lines = handle.read().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"cannot read {path}: {exc}") from exc
        rejected = 0
        for number, line in enumerate(lines, start=1):
            problem = template_lint(
                line, kind=options["kind"], tier=options["tier"], locale=options["locale"]
            )
            if problem is None:
                self.stdout.write(f"line {number}: ACCEPT")
            else:
                rejected += 1
                self.stdout.write(f"line {number}: REJECT {problem.code}: {problem.reason}")
        accepted = len(lines) - rejected
        self.stdout.write(f"{len(lines)} lines: {accepted} accepted, {rejected} rejected")
        if rejected:
            sys.exit(1)

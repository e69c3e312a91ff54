"""Shipped translations (issue 19 item 2, SPEC 3): the default templates in en, de, fr, es, it and
nl from locale/<lang>/LC_MESSAGES/django.po, chosen by the shopper's locale, each passing its own
locale's linter, and re-rendered unchanged by the claims audit."""

import re
import string
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone, translation
from django.utils.translation import trans_real

from config.asgi import application
from notifications import audit, metrics
from notifications.models import AuditAlarm, Notification
from notifications.policy import Decision, Policy, decide
from notifications.policy import decision as decision_module
from notifications.policy.decision import _BUILTIN, VisitorContext, _window_words_in, shopper_language
from notifications.policy.lint import JUST_NOW, LOCALES, template_lint
from notifications.policy.metric import Metric
from tests.factories import DEMO_ORIGIN, ProductFactory, site_policy_set
from tests.test_audit_text import purchases
from tests.test_tasks import _log
from tests.test_widget_socket import BROWSER, address_of, settle

LOCALE_DIR = Path(settings.BASE_DIR) / "locale"
TRANSLATED = [locale for locale in LOCALES if locale != "en"]
VALUES = [0, 1, 2, 7, 20]
WINDOWS = [300, 3600, 86_400, 7 * 86_400]


def _caches_clear():
    trans_real._translations = {}
    trans_real._default = None
    decision_module._builtin_in.cache_clear()
    decision_module._window_words_in.cache_clear()
    decision_module.shopper_language.cache_clear()


@pytest.fixture(scope="module", autouse=True)
def compiled_catalogs():
    """bin/test runs compilemessages; a bare pytest compiles here when a .mo is missing or older
    than its .po (the .mo files are build output, not committed)."""
    stale = [
        po
        for po in LOCALE_DIR.glob("*/LC_MESSAGES/django.po")
        if not po.with_suffix(".mo").exists() or po.with_suffix(".mo").stat().st_mtime < po.stat().st_mtime
    ]
    if stale:
        call_command("compilemessages", locale=[po.parts[-3] for po in stale], verbosity=0)
        _caches_clear()
    yield


def _fields(text: str) -> list[str]:
    return sorted(field for _, field, _, _ in string.Formatter().parse(text) if field)


def test_every_shipped_locale_has_a_catalog_and_settings_name_them():
    assert [code for code, _ in settings.LANGUAGES] == list(LOCALES)
    assert [Path(p) for p in settings.LOCALE_PATHS] == [LOCALE_DIR]
    for locale in TRANSLATED:
        po = (LOCALE_DIR / locale / "LC_MESSAGES" / "django.po").read_text("utf-8")
        assert f'"Language: {locale}\\n"' in po
        assert "#, fuzzy" not in po
        entries = _po_entries(po)
        assert len(entries) == len(_BUILTIN) + 5  # every template (one just-now) and 4 window words
        for entry in entries:
            assert all(entry[key] for key in entry if key.startswith("msgstr")), f"{locale}: {entry}"


def _po_entries(po: str) -> list[dict[str, str]]:
    """The entries after the header, each {keyword: its string, continuation lines joined}."""
    entries = []
    for block in po.strip().split("\n\n")[1:]:
        entry: dict[str, str] = {}
        keyword = ""
        for line in block.splitlines():
            if line.startswith("#"):
                continue
            if line.startswith('"'):
                entry[keyword] += line[1:-1]
            else:
                keyword, _, rest = line.partition(" ")
                entry[keyword] = rest[1:-1]
        entries.append(entry)
    return entries


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize(("kind", "group"), sorted(_BUILTIN))
@pytest.mark.parametrize("value", VALUES)
def test_every_shipped_default_passes_its_own_locales_linter(locale, kind, group, value):
    """tests/test_policy_lint.py::test_every_shipped_default_passes_its_own_kind, in each locale."""
    english = _BUILTIN[(kind, group)](value)
    with translation.override(locale):
        text = _BUILTIN[(kind, group)](value)
    lint_kind = JUST_NOW if kind == "recent_purchase" and value < 1 else kind
    assert template_lint(text, kind=lint_kind, tier=1, locale=locale) is None, text
    # Every placeholder exactly as in the source, none lost, none added.
    assert _fields(text) == _fields(english), text
    if locale != "en":
        assert text != english, f"{locale} has no translation of {english!r} (compilemessages?)"


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("window_s", WINDOWS)
def test_window_words_name_the_window_and_no_other_number(locale, window_s):
    words = _window_words_in(locale, window_s)
    expected = {300: ["5"], 3600: [], 86_400: ["24"], 7 * 86_400: ["7"]}[window_s]
    assert re.findall(r"\d+", words) == expected, words
    if locale != "en":
        assert words != _window_words_in("en", window_s)


@pytest.mark.parametrize(
    ("locale", "language"),
    [
        ("de-de", "de"),
        ("de", "de"),
        ("de_AT", "de"),
        ("fr-ca", "fr"),
        ("es-mx", "es"),
        ("it", "it"),
        ("nl-be", "nl"),
        ("en-gb", "en"),
        ("pt-br", "en"),
        ("ja", "en"),
        ("", "en"),
    ],
)
def test_the_shoppers_locale_picks_a_shipped_language(locale, language):
    assert shopper_language(locale) == language


def _metric(kind, value, window_s=0):
    return Metric(metric=kind, true_value=value, window_s=window_s, evidence={"ids": [1]})


EXPECTED = {
    "de": (
        "12 Bestellungen in den letzten 24 Stunden",
        "Jemand hat diesen Artikel vor 5 Minuten gekauft",
        "5 weitere Personen sehen sich diesen Artikel an",
    ),
    "fr": (
        "Commandé 12 fois au cours des 24 dernières heures",
        "Quelqu'un a acheté cet article il y a 5 minutes",
        "5 autres personnes regardent cet article",
    ),
    "es": (
        "12 pedidos en las últimas 24 horas",
        "Alguien compró este artículo hace 5 minutos",
        "5 personas más están viendo este artículo",
    ),
    "it": (
        "12 ordini nelle ultime 24 ore",
        "Qualcuno ha acquistato questo articolo 5 minuti fa",
        "Altre 5 persone stanno guardando questo articolo",
    ),
    "nl": (
        "12 bestellingen in de afgelopen 24 uur",
        "Iemand heeft dit artikel 5 minuten geleden gekocht",
        "5 andere mensen bekijken dit artikel",
    ),
}


@pytest.mark.parametrize("locale", ["de-de", "de", "fr", "es-es", "it-it", "nl"])
def test_a_shopper_gets_their_language_through_decide(locale):
    language = locale[:2]
    policy = Policy(version="i18n")
    metrics_ = (
        _metric("purchases_in_window", 12, 86_400),
        _metric("recent_purchase", 5 * 60 + 30),
        _metric("viewing_now", 5),
    )
    # Whatever language is active (an admin's, a worker's): the shopper's locale decides.
    with translation.override("en" if language != "en" else "de"):
        by_context = [
            decide(metric=m, policy=policy, context=VisitorContext(locale=locale)) for m in metrics_
        ]
        # The streaming round passes the language once per locale; the same text.
        by_argument = [decide(metric=m, policy=policy, language=shopper_language(locale)) for m in metrics_]
    for decision in by_context + by_argument:
        assert isinstance(decision, Decision) and decision.language == language
    assert tuple(d.text for d in by_context) == EXPECTED[language]
    assert tuple(d.text for d in by_argument) == EXPECTED[language]


def test_a_shopper_in_a_locale_not_shipped_reads_english():
    decision = decide(
        metric=_metric("viewing_now", 5),
        policy=Policy(version="i18n"),
        context=VisitorContext(locale="pt-br"),
    )
    assert (decision.text, decision.language) == ("5 other people are viewing this", "en")


# --- The claims audit renders a translated toast back unchanged ----------------------------------


def _log_german(product):
    """Decide for a German shopper and log as the streaming round does."""
    metric = metrics.purchases_in_window(product_id=product.pk, at=timezone.now())[0]
    return _log(product, metric, context=VisitorContext(locale="de-de"))


@pytest.mark.django_db
def test_the_audit_passes_a_german_toast_and_alarms_when_it_is_changed():
    honest_product = ProductFactory()
    tampered_product = ProductFactory(site=honest_product.site)
    purchases(honest_product, 4)
    purchases(tampered_product, 4)
    honest, tampered = _log_german(honest_product), _log_german(tampered_product)
    assert honest.text == "4 Bestellungen in den letzten 24 Stunden"
    assert (honest.template_text, honest.locale) == ("{count} Bestellungen {window}", "de")
    # The audit runs in whatever language its process has: the row's locale decides.
    with translation.override("fr"):
        assert audit.text_check(honest) is None
    # The number is still true and the ledger backs it: only the text tells.
    Notification.objects.filter(pk=tampered.pk).update(text="Nur noch 4 auf Lager")
    assert audit.claims_audit() == audit.AuditResult(checked=2, alarms=1)
    alarm = AuditAlarm.objects.get()
    assert alarm.notification_id == tampered.pk and alarm.reason == audit.TEXT_DIFFERS
    assert alarm.recomputed == "4 Bestellungen in den letzten 24 Stunden"


# --- End to end over the socket ---------------------------------------------------------------------


def _communicator(target, ua, headers=()):
    path = f"/ws/v1/widget?key={target['key']}&product={target['sku']}"
    comm = WebsocketCommunicator(
        application,
        path,
        headers=[(b"user-agent", ua.encode()), (b"origin", DEMO_ORIGIN.encode()), *headers],
    )
    comm.scope["client"] = (address_of(ua), 50000)
    return comm


@pytest.mark.django_db(transaction=True)
async def test_german_and_french_shoppers_get_their_toasts_over_the_socket(realtime_mode):
    """A German browser (Accept-Language: de-DE) and a page that says its locale is fr read the
    same claim in their language; the English shoppers beside them in English; each logged row
    renders back in its own language."""
    product = await sync_to_async(ProductFactory)()
    await sync_to_async(site_policy_set)(product.site, min_gap_s=0, per_page_view=10, per_session=100)
    target = {"key": product.site.public_key, "sku": product.sku}
    # No Accept-Language: the site's default, English.
    shoppers = [(f"{BROWSER} en/{i}", [], None) for i in range(3)]
    shoppers.append((f"{BROWSER} de", [(b"accept-language", b"de-DE,de;q=0.9,en;q=0.8")], None))
    shoppers.append((f"{BROWSER} fr", [(b"accept-language", b"en-US")], {"locale": "fr"}))
    comms = []
    for ua, headers, context in shoppers:
        comm = _communicator(target, ua, headers)
        connected, _ = await comm.connect()
        assert connected
        page = {"type": "page", "product": target["sku"], "visible": True}
        if context:
            page["context"] = context
        await comm.send_json_to(page)
        comms.append(comm)
    texts = []
    for comm in comms:
        messages = await settle(comm)
        assert messages
        texts.append(messages[-1]["text"])
    assert texts[:3] == ["4 other people are viewing this"] * 3
    assert texts[3] == "4 weitere Personen sehen sich diesen Artikel an"
    assert texts[4] == "4 autres personnes regardent cet article"
    for comm in comms:
        await comm.disconnect()

    def rows():
        found = {(row.locale, row.text) for row in Notification.objects.filter(product=product)}
        result = audit.claims_audit()
        return found, result

    found, result = await sync_to_async(rows)()
    assert ("de", "4 weitere Personen sehen sich diesen Artikel an") in found
    assert ("fr", "4 autres personnes regardent cet article") in found
    assert result.alarms == 0

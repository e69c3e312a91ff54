"""The template linter (SPEC 3, 7 "A template cannot change what the number means"): a corpus per
shipped locale, the shipped defaults, the rendered-number property, and the command."""

import re
from pathlib import Path

import pytest
from django.core.management import call_command
from hypothesis import given, settings
from hypothesis import strategies as st

from notifications.models import MessageTemplate
from notifications.policy import Decision, Policy, decide
from notifications.policy.decision import _BUILTIN, Template, _window_words_in
from notifications.policy.lint import JUST_NOW, LOCALES, template_lint, template_normalise, wordlists
from notifications.policy.metric import Metric

CORPUS = Path(__file__).with_name("lint_corpus")


def corpus_lines(locale: str):
    for number, line in enumerate((CORPUS / f"{locale}.txt").read_text("utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        verdict, rest = line.split(" ", 1)
        if verdict == "ACCEPT":
            kind, text = rest.split(" ", 1)
            yield pytest.param(locale, kind, None, text, id=f"{locale}:{number}")
        else:
            kind, code, text = rest.split(" ", 2)
            yield pytest.param(locale, kind, code, text, id=f"{locale}:{number}:{code}")


@pytest.mark.parametrize(
    ("locale", "kind", "code", "text"), [p for locale in LOCALES for p in corpus_lines(locale)]
)
def test_the_corpus_of_each_locale(locale, kind, code, text):
    problem = template_lint(text, kind=kind, locale=locale)
    if code is None:
        assert problem is None, f"an honest line was refused: {problem}"
    else:
        assert problem is not None and problem.code == code, problem


def test_every_locale_ships_a_word_list_with_sources():
    import tomllib

    sections = None
    for locale in LOCALES:
        data = tomllib.loads(
            (CORPUS.parent.parent / "notifications/policy/wordlists" / f"{locale}.toml").read_text()
        )
        assert data["sources"], locale
        assert sections is None or set(data["words"]) == sections, f"{locale} lacks a section"
        sections = set(data["words"])
    assert {"number_words", "scarcity_words", "time_words", "minute_words", "just_now_words"} <= sections
    assert wordlists()["scarcity_words"].search("depechez-vous")


@pytest.mark.parametrize(("kind", "group"), sorted(_BUILTIN))
@pytest.mark.parametrize("value", [0, 1, 2, 7])
def test_every_shipped_default_passes_its_own_kind(kind, group, value):
    text = _BUILTIN[(kind, group)](value)
    lint_kind = JUST_NOW if kind == "recent_purchase" and value < 1 else kind
    assert template_lint(text, kind=lint_kind, tier=1, locale="en") is None, text


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("{count} other people\u200b are viewing\u202e this", "{count} other people are viewing this"),
        ("\uff5bcount\uff5d  other people\u00a0are viewing this ", "{count} other people are viewing this"),
    ],
)
def test_the_normalised_text_is_what_is_linted_and_stored(raw, stored):
    assert template_normalise(raw) == stored
    template = MessageTemplate(kind="viewing_now", tier=1, locale="en", text=raw)
    template.clean()
    assert template.text == stored


# --- Property: an accepted template shows exactly the displayed value as its only number ---------

HONEST = ["other", "people", "shoppers", "are", "viewing", "this", "ordered", "times", "bought", "in"]
HOSTILE = ["3", "12", "Ⅻ", "²", "three", "dozens", "thousand", "only", "left", "hurry", "last", "%", "+"]
GLUED = ["{count}{count}", "{count}0", "{count}k", "{count}+", "#{count}", "{count}%"]
VALUES = {"3": 3, "20+": 25, "50+": 60}


def _render(kind: str, text: str, true_value: int, window_s: int, cap: int) -> Decision:
    policy = Policy(
        version="prop",
        min_count=1,
        tier=3,
        display_caps={kind: cap},
        recency_s={},
        allowed_groups=("everyone",),
    )
    metric = Metric(metric=kind, true_value=true_value, window_s=window_s, evidence={"ids": [1]})
    template = Template(kind=kind, tier=1, group="everyone", singular=text)
    decision = decide(metric=metric, policy=policy, templates=(template,), language="en")
    assert isinstance(decision, Decision), decision
    return decision


@settings(deadline=None, max_examples=300)
@given(
    kind=st.sampled_from(["viewing_now", "purchases_in_window", "add_to_cart_in_window", "recent_purchase"]),
    words=st.lists(st.sampled_from(HONEST + HOSTILE + GLUED + ["{window}", "{group}"]), max_size=8),
    position=st.integers(min_value=0, max_value=8),
    displayed=st.sampled_from(sorted(VALUES)),
    window_s=st.sampled_from([3600, 86_400, 7 * 86_400]),
)
def test_an_accepted_template_shows_only_the_displayed_value(kind, words, position, displayed, window_s):
    value = "{minutes} minutes" if kind == "recent_purchase" else "{count}"
    words = [*words[:position], value, *words[position:]]
    if kind in ("purchases_in_window", "add_to_cart_in_window") and "{window}" not in words:
        words.append("{window}")
    text = " ".join(words)
    if template_lint(text, kind=kind) is not None:
        return
    if kind == "recent_purchase":
        true_value, displayed = 180, "3"  # 3 minutes: a purchase's age is never capped
    else:
        true_value = VALUES[displayed]
    cap = int(displayed.rstrip("+")) if displayed.endswith("+") else 1000
    shown = _render(kind, text, true_value, window_s, cap)
    assert shown.displayed == displayed
    rest = shown.text
    if "{window}" in text:
        # The window's own words ("in the last 24 hours") come from the claim, not the template.
        words_of_window = _window_words_in("en", window_s)
        assert rest.count(words_of_window) == 1
        rest = rest.replace(words_of_window, " ")
    assert re.findall(r"\d+\+?", rest) == [displayed], (text, shown.text)
    assert not any(ch.isnumeric() for ch in rest.replace(displayed, " ", 1))


def test_the_property_generator_reaches_accepted_templates():
    """The property above would pass vacuously if nothing were accepted."""
    assert template_lint("ordered {count} times {window}", kind="purchases_in_window") is None
    assert template_lint("other {count} people viewing this", kind="viewing_now") is None


# --- The command --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "lines", "expected"),
    [
        (
            "purchases_in_window",
            [
                "Ordered {count} times {window}",
                "Only {count} left in stock",
                "Ordered {count} times in the last hour",
            ],
            ["ACCEPT", "REJECT SCARCITY", "REJECT TIME_WORD"],
        ),
        (
            "recent_purchase",
            ["Someone bought this {minutes} minutes ago", "Someone just bought this", "Someone bought this"],
            ["ACCEPT", "REJECT TIME_WORD", "REJECT MISSING_MINUTES"],
        ),
        (
            "viewing_now",
            ["{count} other people are viewing this", "{count}{count} other people are viewing this"],
            ["ACCEPT", "REJECT PLACEHOLDER_GLUED"],
        ),
    ],
)
def test_the_command_prints_a_verdict_per_line_and_fails_on_a_rejection(
    tmp_path, capsys, kind, lines, expected
):
    candidates = tmp_path / "candidates.txt"
    candidates.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(SystemExit) as exited:
        call_command("candor_lint_templates", str(candidates), "--kind", kind)
    assert exited.value.code == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(lines) + 1
    for number, (line, verdict) in enumerate(zip(out, expected, strict=False), 1):
        assert (
            line == f"line {number}: ACCEPT"
            if verdict == "ACCEPT"
            else line.startswith(f"line {number}: {verdict}: ")
        )
    assert not any(text in "\n".join(out) for text in lines), "the text is never echoed"
    rejected = expected.count("ACCEPT")
    assert out[-1] == f"{len(lines)} lines: {rejected} accepted, {len(lines) - rejected} rejected"


def test_the_command_exits_0_when_every_line_passes_for_its_locale(tmp_path, capsys):
    candidates = tmp_path / "de.txt"
    candidates.write_text("Jemand hat das vor {minutes} Minuten gekauft\n", encoding="utf-8")
    call_command("candor_lint_templates", str(candidates), "--kind", "recent_purchase", "--locale", "de")
    assert capsys.readouterr().out.splitlines() == ["line 1: ACCEPT", "1 lines: 1 accepted, 0 rejected"]
    candidates.write_text("Jemand hat das gerade eben gekauft\n", encoding="utf-8")
    call_command("candor_lint_templates", str(candidates), "--kind", JUST_NOW, "--locale", "de")

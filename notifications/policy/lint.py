"""The template linter (SPEC 2.5, 3): a template binds numbers and labels only through placeholders,
names nobody, and says nothing its data cannot back.

`template_lint(text, kind=None, tier=3)` returns the first problem or None; the admin runs it when a
template is saved and `manage.py candor_lint_templates FILE` runs it over a file.
"""

import re
import string
from dataclasses import dataclass

PLACEHOLDERS = frozenset({"count", "minutes", "window", "group", "share", "product"})
# Which placeholders each kind's data can fill.
KIND_PLACEHOLDERS = {
    "viewing_now": frozenset({"count", "group", "product"}),
    "recent_purchase": frozenset({"minutes", "group", "product"}),
    "purchases_in_window": frozenset({"count", "window", "group", "share", "product"}),
    "add_to_cart_in_window": frozenset({"count", "window", "group", "share", "product"}),
}
MAX_LENGTH = 160

# Urgency and scarcity: Candor has no stock or deadline data, so nothing can back these.
PRESSURE = re.compile(
    r"\b(hurry|rush|quick(ly)?|act (now|fast)|don'?t miss|last chance|limited (time|stock|offer)|"
    r"only \S+ (left|remaining)|(almost|nearly) (sold out|gone)|sold out|selling (fast|out)|"
    r"running out|going fast|before it'?s gone|ends? (soon|today|tonight)|low stock|in demand|"
    r"while (stocks?|supplies) last|now or never|grab (it|yours)|countdown|expires?)\b",
    re.IGNORECASE,
)
# Superlative consensus: never backed by a count of some shoppers (SPEC 3).
SUPERLATIVE = re.compile(
    r"\b(every(one|body)|all (shoppers|customers|people|visitors)|(almost|nearly) (every|all)\w*|"
    r"most (popular|loved|wanted|bought|viewed)|best[- ]?sell\w*|number one|top[- ]?sell\w*|"
    r"no\.? ?1|record|ever|nobody|the whole|viral|sensation|must[- ]have|can'?t stop)\b",
    re.IGNORECASE,
)
# Wording a gentle tier may not use; a moderate tier may say "popular", a strong one "trending".
TIER_WORDS = {
    1: re.compile(r"(!|\b(popular|trending|hot|fans?|love[sd]?|favou?rite|crowd|buzz)\b)", re.IGNORECASE),
    2: re.compile(r"(!!|\b(trending|hot|buzz|crowd)\b)", re.IGNORECASE),
    3: re.compile(r"(!!)"),
}
# Common first names seen in fabricated "X from Y just bought" toasts.
NAMES = frozenset(
    """michael john david james robert william mary jennifer linda sarah emma olivia sophia ava mia
    isabella jessica ashley emily anna maria laura lisa daniel chris christopher matthew andrew
    joshua thomas peter paul mark anthony kevin brian steven jason jeff ryan eric jacob noah liam
    lucas ben alex sam max tom tim jack lily grace chloe""".split()
)
LOWER_OK = frozenset({"I"})


@dataclass(frozen=True)
class LintProblem:
    code: str
    reason: str


def _placeholders(text: str) -> list[str] | LintProblem:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        return LintProblem("malformed", f"braces do not form placeholders ({exc})")
    names = []
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            return LintProblem("unknown_placeholder", f"{{{field}}} is not a placeholder Candor can fill")
        names.append(field)
    return names


def template_lint(text: str, *, kind: str | None = None, tier: int = 3) -> LintProblem | None:
    """The first reason `text` may not be used as a notification template, or None."""
    stripped = text.strip()
    if not stripped:
        return LintProblem("empty", "the template is empty")
    if len(stripped) > MAX_LENGTH:
        return LintProblem("too_long", f"a toast is at most {MAX_LENGTH} characters")
    names = _placeholders(stripped)
    if isinstance(names, LintProblem):
        return names
    literal = re.sub(r"\{[a-z]+\}", " ", stripped)
    if any(ch.isdigit() for ch in literal):
        return LintProblem("digit", "numbers may enter only through placeholders such as {count}")
    if PRESSURE.search(literal):
        word = PRESSURE.search(literal).group(0)
        return LintProblem("pressure", f"'{word}' is urgency or scarcity that Candor's data cannot back")
    if SUPERLATIVE.search(literal):
        word = SUPERLATIVE.search(literal).group(0)
        return LintProblem("superlative", f"'{word}' claims a consensus no count of some shoppers backs")
    for match in re.finditer(r"[A-Za-z][A-Za-z'’-]*", literal):
        word = match.group(0)
        if word.lower() in NAMES:
            return LintProblem("name_or_place", f"'{word}' names a person; shoppers are never named")
        before = literal[: match.start()].rstrip()
        starts_sentence = not before or before[-1] in ".!?"
        if word[0].isupper() and not starts_sentence and word not in LOWER_OK:
            return LintProblem(
                "name_or_place", f"'{word}' looks like a name or a place; labels enter only through {{group}}"
            )
    if kind is not None:
        allowed = KIND_PLACEHOLDERS.get(kind)
        if allowed is None:
            return LintProblem("unknown_kind", f"'{kind}' is not a notification kind")
        stray = [name for name in names if name not in allowed]
        if stray:
            return LintProblem("unbacked_placeholder", f"{{{stray[0]}}} has no data in a {kind} notification")
        needed = "minutes" if kind == "recent_purchase" else "count"
        if needed not in names and not (kind == "recent_purchase"):
            return LintProblem(
                "missing_placeholder", f"a {kind} template shows its number through {{{needed}}}"
            )
    tier_words = TIER_WORDS.get(max(1, min(3, tier)))
    found = tier_words.search(literal) if tier_words else None
    if found:
        return LintProblem(
            "tier", f"'{found.group(0)}' is stronger wording than intensity tier {tier} allows"
        )
    return None

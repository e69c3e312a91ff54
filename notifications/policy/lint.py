"""The template linter (SPEC 2.5, 3, 7): a template binds numbers and labels only through
placeholders, names nobody, and says nothing its data cannot back.

By construction first, word lists second:
- the text is normalised (NFKC, invisible and bidi characters removed, whitespace collapsed) and
  the normalised text is what is stored, so what was linted is what is shown;
- exactly one value placeholder (`{count}` or `{minutes}`), once, standing as a word of its own,
  so the only number in the rendered text is the displayed value;
- no digit of any script, no number sign, no word mixing scripts (homoglyphs);
- the kind's own placeholder is required (`{window}`, `{minutes}` + the minute word) and no other
  time words are allowed, so the text names the claim's window and nothing else;
- then the word lists of every shipped locale (`wordlists/<locale>.toml`, with their sources):
  number and quantity words, scarcity and urgency, superlative consensus, names and places.

`template_lint(text, kind=None, tier=3, locale=None)` returns the first problem or None; the
admin runs it when a template is saved (storing `template_normalise(text)`) and
`manage.py candor_lint_templates FILE` runs it over a file.
"""

import re
import string
import tomllib
import unicodedata
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PLACEHOLDERS = frozenset({"count", "minutes", "window", "group", "share", "product"})
VALUE_PLACEHOLDERS = frozenset({"count", "minutes"})
JUST_NOW = "recent_purchase_just_now"
# Which placeholders each kind's data can fill. `recent_purchase_just_now` is the wording used
# when a purchase is less than a minute old (`{minutes}` < 1): it carries no number at all.
KIND_PLACEHOLDERS = {
    "viewing_now": frozenset({"count", "group", "product"}),
    "recent_purchase": frozenset({"minutes", "group", "product"}),
    JUST_NOW: frozenset({"group", "product"}),
    # `{share}` only where it was allowed before; the decision skips such a template unless the
    # policy allows share claims (decision._template_text).
    "purchases_in_window": frozenset({"count", "window", "group", "share", "product"}),
    "add_to_cart_in_window": frozenset({"count", "window", "group", "share", "product"}),
}
WINDOWED_KINDS = frozenset({"purchases_in_window", "add_to_cart_in_window"})
MAX_LENGTH = 160
LOCALES = ("en", "de", "fr", "es", "it", "nl")
WORDLISTS = Path(__file__).with_name("wordlists")

# Unicode's Default_Ignorable_Code_Point ranges (DerivedCoreProperties.txt) beside category Cf:
# invisible fillers (U+3164 Hangul filler, U+2800 braille blank) would otherwise split a word
# unseen ("hur\u200bry").
_IGNORABLE = (
    (0x00AD, 0x00AD), (0x034F, 0x034F), (0x061C, 0x061C), (0x115F, 0x1160), (0x17B4, 0x17B5),
    (0x180B, 0x180F), (0x200B, 0x200F), (0x202A, 0x202E), (0x2060, 0x206F), (0x2800, 0x2800),
    (0x3164, 0x3164), (0xFE00, 0xFE0F), (0xFEFF, 0xFEFF), (0xFFA0, 0xFFA0), (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0000, 0xE0FFF),
)  # fmt: skip
# A value placeholder may sit between opening and closing punctuation, nothing else: "{count}%",
# "{count}k", "#{count}", "{count}+" and "{count}{count}" change the number a shopper reads.
_OPENING = "([\"'“„«‹¡¿"
_CLOSING = ".,;:!?)]\"'”»›"
_PLACEHOLDER_TOKEN = re.compile(rf"^[{re.escape(_OPENING)}]*\{{[a-z]+\}}[{re.escape(_CLOSING)}]*$")
_PLACEHOLDER = re.compile(r"\{([a-z]+)\}")
# Signs that turn a number into another claim: a share, a multiple, a rank, "more than".
_NUMBER_SIGNS = frozenset("%‰‱×+#№°")
_ROMAN = re.compile(
    r"(?<!\w)(?=[MDCLXVI]{2,}(?!\w))M{0,4}(CM|CD|D?C{0,3})(XC|XL|L?X{0,3})(IX|IV|V?I{0,3})(?!\w)"
)
_WORD = re.compile(r"[^\W\d_][\w'’-]*")
LOWER_OK = frozenset({"I"})
# German capitalises every noun: the capital-letter heuristic for names cannot apply to it.
_CAPITALISED_NOUNS = frozenset({"de"})


@dataclass(frozen=True)
class LintProblem:
    code: str
    reason: str


def template_normalise(text: str) -> str:
    """NFKC, invisible and bidi characters removed, whitespace collapsed: the text to store."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if not _invisible(ch))
    # Removing a joiner can leave a sequence NFKC would compose differently: normalise again.
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _invisible(ch: str) -> bool:
    if ch.isspace():
        return False
    category = unicodedata.category(ch)
    if category in ("Cf", "Cc", "Co", "Cs", "Cn"):
        return True
    point = ord(ch)
    return any(low <= point <= high for low, high in _IGNORABLE)


def fold(text: str) -> str:
    """Case-folded, accents removed, apostrophes unified: how words are matched."""
    text = text.replace("’", "'").replace("‘", "'").replace("ʼ", "'").replace("`", "'")
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _phrase_pattern(entry: str) -> str:
    entry = fold(entry.strip())
    prefix = entry.endswith("*")
    words = [w for w in re.split(r"[\s\-]+", entry.rstrip("*")) if w]
    parts = [re.escape(w).replace("'", "'?") for w in words]
    return r"[\s\-]+".join(parts) + (r"\w*" if prefix else "")


@dataclass(frozen=True)
class WordList:
    """One section's entries of every shipped locale, compiled to one whole-word pattern."""

    name: str
    pattern: re.Pattern[str] | None

    def search(self, folded: str) -> re.Match[str] | None:
        return self.pattern.search(folded) if self.pattern else None


@cache
def wordlists() -> dict[str, WordList]:
    """The union of every shipped locale's sections (a store may write German in an English
    segment)."""
    entries: dict[str, set[str]] = {}
    for locale in LOCALES:
        with (WORDLISTS / f"{locale}.toml").open("rb") as handle:
            data = tomllib.load(handle)
        for section, words in data["words"].items():
            entries.setdefault(section, set()).update(words)
    compiled = {}
    for section, words in entries.items():
        patterns = sorted({_phrase_pattern(w) for w in words if w.strip()}, key=len, reverse=True)
        pattern = re.compile(r"(?<!\w)(?:" + "|".join(patterns) + r")(?!\w)") if patterns else None
        compiled[section] = WordList(section, pattern)
    return compiled


def _words(section: str) -> WordList:
    return wordlists()[section]


# Superlative consensus and intensity wording in English, kept from the first linter.
TIER_WORDS = {
    1: re.compile(r"(!|\b(popular|trending|hot|fans?|love[sd]?|favou?rite|crowd|buzz)\b)", re.IGNORECASE),
    2: re.compile(r"(!!|\b(trending|hot|buzz|crowd)\b)", re.IGNORECASE),
    3: re.compile(r"(!!)"),
}


def _placeholders(text: str) -> list[str] | LintProblem:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        return LintProblem("MALFORMED", f"braces do not form placeholders ({exc})")
    names = []
    for literal, field, spec, conversion in parsed:
        if "{" in literal or "}" in literal:
            return LintProblem("MALFORMED", "a brace outside a placeholder")
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            return LintProblem("PLACEHOLDER_UNKNOWN", f"{{{field}}} is not a placeholder Candor can fill")
        names.append(field)
    return names


def _found(match: re.Match[str]) -> str:
    return match.group(0)


def template_lint(
    text: str, *, kind: str | None = None, tier: int = 3, locale: str | None = None
) -> LintProblem | None:
    """The first reason `text` may not be used as a notification template, or None. `kind` is
    one of KIND_PLACEHOLDERS (None: the rules every kind shares); `locale` only relaxes the
    capital-letter name heuristic for German."""
    cleaned = template_normalise(text)
    if not cleaned:
        return LintProblem("EMPTY", "the template is empty")
    if len(cleaned) > MAX_LENGTH:
        return LintProblem("TOO_LONG", f"a toast is at most {MAX_LENGTH} characters")
    if kind is not None and kind not in KIND_PLACEHOLDERS:
        return LintProblem("UNKNOWN_KIND", f"'{kind}' is not a notification kind")
    names = _placeholders(cleaned)
    if isinstance(names, LintProblem):
        return names
    for token in cleaned.split():
        if "{" in token and not _PLACEHOLDER_TOKEN.match(token):
            return LintProblem(
                "PLACEHOLDER_GLUED",
                "a placeholder stands as a word of its own: nothing glued to it may change the number",
            )
    values = [name for name in names if name in VALUE_PLACEHOLDERS]
    if len(values) > 1 or len(set(names)) < len(names):
        return LintProblem(
            "PLACEHOLDER_COUNT", "one value placeholder ({count} or {minutes}), each placeholder once"
        )
    if kind is not None:
        stray = [name for name in names if name not in KIND_PLACEHOLDERS[kind]]
        if stray:
            return LintProblem("PLACEHOLDER_KIND", f"{{{stray[0]}}} has no data in a {kind} notification")
    problem = _digits(text, cleaned)
    if problem:
        return problem
    literal = _PLACEHOLDER.sub(" | ", cleaned)
    folded = fold(literal)
    problem = _time_words(cleaned, folded, kind)
    if problem:
        return problem
    problem = _vocabulary(literal, folded, locale)
    if problem:
        return problem
    problem = _required(names, folded, kind)
    if problem:
        return problem
    found = TIER_WORDS[max(1, min(3, tier))].search(literal)
    if found:
        return LintProblem("TIER", f"'{_found(found)}' is stronger wording than intensity tier {tier} allows")
    return None


def _digits(raw: str, cleaned: str) -> LintProblem | None:
    # The raw text too: NFKC turns "Ⅻ" into the letters "XII" and "²" into "2".
    for ch in raw + cleaned:
        if unicodedata.category(ch).startswith("N") or unicodedata.numeric(ch, None) is not None:
            return LintProblem("DIGIT", "numbers may enter only through the value placeholder")
    if _ROMAN.search(_PLACEHOLDER.sub(" ", cleaned)):
        return LintProblem("DIGIT", "a Roman numeral is a number: numbers enter only through placeholders")
    signs = sorted(_NUMBER_SIGNS.intersection(cleaned))
    if signs:
        return LintProblem("NUMBER_SIGN", f"'{signs[0]}' turns the number into another claim")
    for word in _WORD.findall(cleaned):
        scripts = {unicodedata.name(ch, "?").split(" ")[0] for ch in word if ch.isalpha()}
        if len(scripts) > 1:
            return LintProblem("CONFUSABLE", "a word mixes scripts (look-alike letters hide words)")
    return None


def _time_words(cleaned: str, folded: str, kind: str | None) -> LintProblem | None:
    """The claim's time is said only by its placeholder: `{window}`, or `{minutes}` and the
    minute word; a viewing count may say "now", the just-now variant only "just now"."""
    scan = folded
    if "{minutes}" in cleaned:
        after = re.search(r"\{minutes\}\s+([^\s.,;:!?]+)", fold(cleaned))
        if after is None or not _whole(_words("minute_words"), after.group(1)):
            return LintProblem("MINUTES_WORD", "{minutes} is followed by the word for minutes")
        scan = re.sub(r"\|\s+" + re.escape(after.group(1)), "| ", folded, count=1)
    if kind == JUST_NOW:
        just = _words("just_now_words")
        if just.search(scan) is None:
            return LintProblem("JUST_NOW_WORDING", "the just-now wording says only 'just now'")
        scan = just.pattern.sub(" | ", scan) if just.pattern else scan
    sections = ["time_words", "minute_words"]
    if kind != JUST_NOW:
        sections.append("just_now_words")
    if kind not in (None, "viewing_now"):
        sections.append("now_words")
    for section in sections:
        found = _words(section).search(scan)
        if found:
            return LintProblem(
                "TIME_WORD",
                f"'{_found(found)}' is a time the claim does not state; its time is said only by "
                + (
                    "{window}"
                    if kind in WINDOWED_KINDS
                    else "{minutes}"
                    if kind == "recent_purchase"
                    else "its placeholder"
                ),
            )
    return None


def _whole(wordlist: WordList, word: str) -> bool:
    return bool(wordlist.pattern and wordlist.pattern.fullmatch(word))


def _vocabulary(literal: str, folded: str, locale: str | None) -> LintProblem | None:
    for section, code, why in (
        ("number_words", "NUMBER_WORD", "is a number: numbers enter only through the value placeholder"),
        ("quantity_words", "NUMBER_WORD", "is a quantity or multiplier no count backs"),
        ("scarcity_words", "SCARCITY", "is stock, scarcity or urgency that Candor's data cannot back"),
        ("superlative_words", "SUPERLATIVE", "claims a consensus no count of some shoppers backs"),
        ("person_names", "NAME_OR_PLACE", "names a person; shoppers are never named"),
        ("places", "NAME_OR_PLACE", "names a place; labels enter only through {group}"),
    ):
        found = _words(section).search(folded)
        if found:
            return LintProblem(code, f"'{_found(found)}' {why}")
    prepositions = _words("place_prepositions")
    if prepositions.pattern:
        for match in prepositions.pattern.finditer(folded):
            follower = re.match(r"\s+(\w+)", folded[match.end() :])
            if follower and not _whole(_words("place_preposition_ok"), follower.group(1)):
                return LintProblem(
                    "NAME_OR_PLACE",
                    f"'{_found(match)} {follower.group(1)}' names a place; labels enter only as {{group}}",
                )
    if locale not in _CAPITALISED_NOUNS:
        for match in _WORD.finditer(literal):
            word = match.group(0)
            before = literal[: match.start()].rstrip()
            starts_sentence = not before or before[-1] in '.!?¡¿:"“„«'
            if word[0].isupper() and not starts_sentence and word not in LOWER_OK:
                return LintProblem(
                    "NAME_OR_PLACE",
                    f"'{word}' looks like a name or a place; labels enter only through {{group}}",
                )
    return None


def _required(names: list[str], folded: str, kind: str | None) -> LintProblem | None:
    values = [name for name in names if name in VALUE_PLACEHOLDERS]
    if kind is None:
        if not values:
            return LintProblem(
                "PLACEHOLDER_COUNT", "a template shows its number through {count} or {minutes}"
            )
        return None
    if kind == "recent_purchase" and "minutes" not in names:
        return LintProblem(
            "MISSING_MINUTES", "a recent purchase shows its age only through {minutes} minutes"
        )
    if kind in WINDOWED_KINDS or kind == "viewing_now":
        if "count" not in names:
            return LintProblem("MISSING_COUNT", f"a {kind} template shows its number through {{count}}")
    if kind in WINDOWED_KINDS and "window" not in names:
        return LintProblem("MISSING_WINDOW", f"a {kind} count names its window only through {{window}}")
    return None

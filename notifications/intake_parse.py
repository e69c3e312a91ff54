"""The one parsing core of every intake path (SPEC 7, "Malformed input fails alone").

Every body and frame Candor reads — `/api/v1/events` and `/api/v1/visitor-token` (browser),
`/api/v1/server/events` (signed), both platform webhooks, and the widget socket's frames — is
parsed here, by the ASGI beacon (beacon.py) and by the Django views (api.py) alike, so each limit
is written once:

- the body's size (browser 8 KB, signed 256 KB, webhooks 1 MB; the socket's 4 KB frame is
  checked before parsing, in consumers.py, because it closes with 1009 rather than answering);
- nesting at most `MAX_DEPTH` deep, checked by a linear scan of the brackets outside strings
  BEFORE `json.loads` runs: Python's parser recurses once per level, so a 6 KB `[[[[…` would
  raise RecursionError (a 500, and a failed batch) instead of a ValueError;
- numbers at most 2^53 in magnitude (beyond it JavaScript, and so every store's frontend, cannot
  hold the value exactly), and no NaN or Infinity (not JSON; Python accepts them by default);
  platform webhooks alone accept 64-bit integer ids (`PLATFORM_MAX_INTEGER`).

A body that breaks a limit is `Refused(400, "malformed", field=…)`, `field` naming the top-level
member it broke in, or "body". The same scan finds the top-level members without parsing them,
which is how the signed route reads its site `key` before verifying the signature (SPEC 5: only
that key is read before verification), whatever the rest of the body holds.
"""

import json
import math
import re
from dataclasses import dataclass
from typing import Any

BROWSER_MAX_BODY_BYTES = 8 * 1024
SERVER_MAX_BODY_BYTES = 256 * 1024
WEBHOOK_MAX_BODY_BYTES = 1024 * 1024
MAX_DEPTH = 32
MAX_SAFE_INTEGER = 2**53
# Shopify and WooCommerce send their ids as 64-bit JSON integers (Shopify's documented samples
# carry 18-digit ids such as 820982911946154508): refusing them would lose honest orders. They
# are only ever read as text (an order id, a product id), so the webhooks accept integers up to
# 2^63 - 1; every other number there, and every number anywhere else, keeps the 2^53 limit.
PLATFORM_MAX_INTEGER = 2**63 - 1
BODY = "body"


class Refused(Exception):
    """A request answered with an error: `{"error": {"code", "message"[, "field"]}}`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        retry_after=None,
        site_id: int | None = None,
    ):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field, self.retry_after, self.site_id = field, retry_after, site_id


def malformed(message: str, *, field: str = BODY) -> Refused:
    return Refused(400, "malformed", message, field=field)


# A JSON string (escapes included) or one structural character. Anything else (numbers,
# literals, whitespace) is skipped: the depth only changes at brackets outside strings.
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}:,]', re.DOTALL)


@dataclass(frozen=True)
class Member:
    name: str
    start: int  # the value's span in the text
    end: int


@dataclass(frozen=True)
class Scan:
    is_object: bool
    members: tuple[Member, ...]  # the top-level object's members, in order (a repeat: last wins)
    too_deep: str | None  # where the nesting first went past MAX_DEPTH: a member's name, or "body"

    def member_at(self, position: int) -> str:
        for member in self.members:
            if member.start <= position <= member.end:
                return member.name
        return BODY


def _name(token: str) -> str | None:
    try:
        name = json.loads(token)
    except ValueError:
        return None
    return name if isinstance(name, str) else None


def json_scan(text: str) -> Scan:
    """One pass over the text, no recursion: its nesting depth and its top-level members.
    Garbage in gives a harmless Scan: `json.loads` still has the last word on validity."""
    depth = 0
    is_object = False
    members: list[Member] = []
    too_deep: str | None = None
    expect_name = False
    name: str | None = None
    start: int | None = None
    for match in _TOKENS.finditer(text):
        token = match.group()
        head = token[0]
        if head in "[{":
            depth += 1
            if depth == 1:
                is_object = head == "{"
                expect_name = is_object
            elif depth > MAX_DEPTH and too_deep is None:
                too_deep = name if depth > 1 and start is not None and name else BODY
        elif head in "]}":
            if depth == 1 and start is not None and name is not None:
                members.append(Member(name, start, match.start()))
                name = start = None
            depth -= 1
        elif depth != 1 or not is_object:
            continue
        elif head == '"':
            if expect_name:
                name, expect_name = _name(token) or "", False
        elif head == ":":
            start = match.end()
        elif head == ",":
            if start is not None and name is not None:
                members.append(Member(name, start, match.start()))
            name = start = None
            expect_name = True
    return Scan(is_object, tuple(members), too_deep)


class _OutOfRange(Exception):
    pass


def _loads(text: str, max_integer: int) -> Any:
    def integer(digits: str) -> int:
        # The length first: int() of a 5,000-digit string is itself refused (ValueError) and slow.
        if len(digits.lstrip("-")) > len(str(max_integer)) or abs(value := int(digits)) > max_integer:
            raise _OutOfRange
        return value

    def real(digits: str) -> float:
        value = float(digits)
        if not math.isfinite(value) or abs(value) > MAX_SAFE_INTEGER:
            raise _OutOfRange
        return value

    def constant(_name: str):
        raise _OutOfRange  # NaN, Infinity, -Infinity: not JSON

    return json.loads(text, parse_int=integer, parse_float=real, parse_constant=constant)


def _text(body: bytes | str) -> str:
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed("The body is not UTF-8 JSON.") from None


def json_parse(body: bytes | str, *, max_integer: int = MAX_SAFE_INTEGER) -> Any:
    """Any JSON value within the limits, or Refused(400, "malformed", field=…). Only platform
    webhooks pass a wider `max_integer` (`PLATFORM_MAX_INTEGER`)."""
    text = _text(body)
    scan = json_scan(text)
    if scan.too_deep is not None:
        raise malformed(f"JSON may be nested at most {MAX_DEPTH} deep.", field=scan.too_deep)
    try:
        return _loads(text, max_integer)
    except _OutOfRange:
        field = next(
            (m.name for m in scan.members if _out_of_range(text[m.start : m.end], max_integer)), BODY
        )
        raise malformed(
            f"Numbers must be finite and at most {max_integer} in magnitude.", field=field
        ) from None
    except json.JSONDecodeError as exc:
        raise malformed("The body is not valid JSON.", field=scan.member_at(exc.pos)) from None
    except ValueError:
        raise malformed("The body is not valid JSON.") from None


def _out_of_range(value: str, max_integer: int) -> bool:
    try:
        _loads(value, max_integer)
    except _OutOfRange:
        return True
    except ValueError:
        return False
    return False


def json_object_parse(
    body: bytes | str, *, nul_allowed: bool = True, max_integer: int = MAX_SAFE_INTEGER
) -> dict:
    """A JSON object within the limits. `nul_allowed=False` refuses NUL in any string (PostgreSQL
    text and jsonb cannot hold one) for what is stored as sent: signed events and webhooks."""
    data = json_parse(body, max_integer=max_integer)
    if not isinstance(data, dict):
        raise malformed("The body must be a JSON object.")
    if not nul_allowed:
        for name, value in data.items():
            if contains_nul(name) or contains_nul(value):
                raise malformed("Strings may not contain NUL characters.", field=name)
    return data


def contains_nul(value) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def top_level_string(body: bytes, name: str) -> str | None:
    """The top-level member `name` of a JSON object body if it is a string, else None, read
    without parsing the rest (however deep or odd): what the signed route reads before
    verification."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    scan = json_scan(text)
    if not scan.is_object:
        return None
    found = [m for m in scan.members if m.name == name]
    if not found:
        return None
    value = text[found[-1].start : found[-1].end].strip()
    if not value.startswith('"'):
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    return parsed if isinstance(parsed, str) else None


def browser_body_parse(*, content_type: str, content_length: str | None, body: bytes) -> dict:
    """415, 413, then 400: the checks every browser-facing JSON endpoint runs first (SPEC 5)."""
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise Refused(415, "unsupported_media_type", "Content-Type must be application/json.")
    length = content_length or "0"
    if not length.isdigit() or int(length) > BROWSER_MAX_BODY_BYTES or len(body) > BROWSER_MAX_BODY_BYTES:
        raise Refused(
            413, "too_large", f"The body may be at most {BROWSER_MAX_BODY_BYTES} bytes.", field=BODY
        )
    return json_object_parse(body)

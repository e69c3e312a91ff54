"""Server-to-server signatures (SPEC 5): `Candor-Signature: t=<unix s>,v1=<hex>[,v1=<hex>…]`,
HMAC-SHA256 of "<t>.<raw body>" with one of the site's active secrets (Stripe's scheme)."""

import hashlib
import hmac
import time

from .intake_parse import top_level_string
from .models import Site, SiteSecret
from .selectors import site_active_by_key

TOLERANCE_S = 300
MAX_HEADER_CHARS = 2048


class BadSignature(Exception):
    pass


def signature_header_make(*, secret: str, body: bytes, t: int | None = None) -> str:
    """What a store's backend sends; used by the demo checkout and the tests."""
    t = int(time.time()) if t is None else t
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def _header_parse(header: str) -> tuple[int, list[str]]:
    if not header or len(header) > MAX_HEADER_CHARS:
        raise BadSignature("missing or oversized Candor-Signature header")
    t = None
    signatures = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and t is None:
            t = int(value)
        elif name == "v1" and value:
            signatures.append(value.lower())
    if t is None or not signatures:
        raise BadSignature("Candor-Signature needs t=<unix seconds> and at least one v1=<hex>")
    return t, signatures


def signed_site_verify(
    *, body: bytes, header: str, now: float | None = None, memo: dict | None = None
) -> Site:
    """The site whose active secret signed `body`, or BadSignature.

    Only the top-level `key` is read before verification, to pick the site's secrets. `memo`, if
    given, keeps each key's site and active secrets for the caller's batch (one transaction's
    worth of signed requests: bench/README.md, "Ingestion"), so a batch reads them once.
    """
    t, signatures = _header_parse(header)
    now = time.time() if now is None else now
    if abs(now - t) > TOLERANCE_S:
        raise BadSignature("the signature's timestamp is more than 300 s from server time")
    # Read without parsing the rest of the body: whatever it holds (a nesting 10,000 deep), the
    # signature is checked before it is parsed, and a body no site signed is a 401, never a 400.
    key = top_level_string(body, "key")
    if key is None:
        raise BadSignature("the body is not a JSON object naming the site's key")
    found = memo.get(key) if memo is not None else None
    if found is None:
        site = site_active_by_key(key=key)
        secrets = (
            ()
            if site is None
            else tuple(
                SiteSecret.objects.filter(site=site, retired_at__isnull=True).values_list("secret", flat=True)
            )
        )
        found = (site, secrets)
        if memo is not None:
            memo[key] = found
    site, secrets = found
    if site is None:
        raise BadSignature("unknown site key")
    signed = f"{t}.".encode() + body
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, candidate) for candidate in signatures):
            return site
    raise BadSignature("no v1 signature matches an active secret")

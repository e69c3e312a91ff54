"""Cookieless visitor identity, as Plausible does it (SPEC 2.7).

visitor hash = HMAC-SHA256(daily salt, site | client IP | User-Agent). The raw IP and
User-Agent live only in memory for the length of this computation; they are never stored or
logged. Two shoppers behind one address with the same browser count once (an undercount,
which invariant 1 allows).
"""

import base64
import datetime as dt
import hashlib
import hmac
import ipaddress
import re
import secrets
from functools import lru_cache

from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone

from .models import DailySalt

# Deny-list, never an allow-list of browsers: everything else is a visitor (SPEC 2.7).
BOT_PATTERN = re.compile(
    r"bot|crawl|spider|slurp|headlesschrome|phantomjs|puppeteer|playwright|selenium|"
    r"lighthouse|pagespeed|preview|facebookexternalhit|python-requests|python-httpx|"
    r"aiohttp|curl/|wget/|go-http-client|java/|okhttp|httpclient|scrapy|monitor|uptime",
    re.IGNORECASE,
)


def user_agent_is_bot(user_agent: str) -> bool:
    return not user_agent.strip() or bool(BOT_PATTERN.search(user_agent))


def device_class(user_agent: str) -> str:
    """mobile, tablet or desktop: the only thing a segment may learn from the User-Agent."""
    ua = user_agent.lower()
    if "ipad" in ua or "tablet" in ua or ("android" in ua and "mobile" not in ua):
        return "tablet"
    if "mobi" in ua or "iphone" in ua or "android" in ua:
        return "mobile"
    return "desktop"


def locale_from_accept_language(header: str) -> str:
    """The first language tag of Accept-Language, lower-cased ("en-us"), or ""."""
    first = header.split(",", 1)[0].split(";", 1)[0].strip().lower()
    return first if first and first != "*" and len(first) <= 20 else ""


@lru_cache(maxsize=16)
def _networks(proxies: tuple[str, ...]) -> tuple:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _is_trusted_proxy(ip: str) -> bool:
    proxies = tuple(settings.CANDOR_TRUSTED_PROXIES)
    if not proxies or not ip:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in net for net in _networks(proxies))


def client_ip_resolve(*, peer: str | None, forwarded_for: str | None) -> str:
    """The socket peer, or — only when the peer is a trusted proxy — the right-most
    X-Forwarded-For hop that is not itself a trusted proxy. An untrusted peer's
    X-Forwarded-For is ignored: anyone can send one."""
    peer = peer or ""
    if not forwarded_for or not _is_trusted_proxy(peer):
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
        if not _is_trusted_proxy(hop):
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer
    return peer


def scope_client_ip(scope: dict) -> str:
    client = scope.get("client") or (None, None)
    forwarded = None
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-for":
            forwarded = value.decode("latin-1")
    return client_ip_resolve(peer=client[0], forwarded_for=forwarded)


_salt_cache: dict[dt.date, bytes] = {}


def salt_for_day(day: dt.date) -> bytes:
    """The salt for a UTC day, made on first use so the embedded mode needs no scheduler."""
    cached = _salt_cache.get(day)
    if cached is not None:
        return cached
    row = DailySalt.objects.filter(day=day).first()
    if row is None:
        try:
            row = DailySalt.objects.create(day=day, salt=secrets.token_hex(32))
        except IntegrityError:  # another process made it first
            row = DailySalt.objects.get(day=day)
    if len(_salt_cache) > 4:
        _salt_cache.clear()
    _salt_cache[day] = bytes.fromhex(row.salt)
    return _salt_cache[day]


def visitor_hash_compute(*, site_id: int, ip: str, user_agent: str, now: dt.datetime | None = None) -> str:
    day = (now or timezone.now()).astimezone(dt.UTC).date()
    message = f"{site_id}|{ip}|{user_agent}".encode()
    return hmac.new(salt_for_day(day), message, hashlib.sha256).hexdigest()[:32]


def visitor_hash_if_salted(*, site_id: int, ip: str, user_agent: str) -> str | None:
    """The visitor hash when today's salt is already in memory (no query), else None."""
    day = timezone.now().astimezone(dt.UTC).date()
    salt = _salt_cache.get(day)
    if salt is None:
        return None
    return hmac.new(salt, f"{site_id}|{ip}|{user_agent}".encode(), hashlib.sha256).hexdigest()[:32]


def address_network(ip: str) -> str:
    """The client address as SPEC 7 counts it: an IPv4 address, or the /64 of an IPv6 one (a
    single IPv6 host usually holds a whole /64, so one machine could otherwise pose as 2^64
    addresses). An IPv4-mapped IPv6 address is its IPv4 address. "" when there is none."""
    try:
        address = ipaddress.ip_address(ip.strip().strip("[]")) if ip else None
    except ValueError:
        return ip[:64]  # not an IP (a test client's name): itself, as one address
    if address is None:
        return ""
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _address_message(site_id: int, ip: str) -> bytes:
    # A prefix that no visitor-hash message can start with, so the two never collide.
    return f"address|{site_id}|{address_network(ip)}".encode()


def address_hash_compute(*, site_id: int, ip: str, now: dt.datetime | None = None) -> str:
    """The keyed, daily-salted hash of the client address (SPEC 7), kept beside the visitor hash
    so counts can take at most CANDOR_VISITORS_PER_ADDRESS visitors of one address. The address
    itself is never stored; like the visitor hash, this one changes with the salt every day and
    differs from site to site."""
    day = (now or timezone.now()).astimezone(dt.UTC).date()
    return hmac.new(salt_for_day(day), _address_message(site_id, ip), hashlib.sha256).hexdigest()[:16]


def address_hash_if_salted(*, site_id: int, ip: str) -> str | None:
    """The address hash when today's salt is already in memory (no query), else None."""
    salt = _salt_cache.get(timezone.now().astimezone(dt.UTC).date())
    if salt is None:
        return None
    return hmac.new(salt, _address_message(site_id, ip), hashlib.sha256).hexdigest()[:16]


def salt_cache_clear() -> None:
    _salt_cache.clear()


def salt_cache_drop_before(day: dt.date) -> None:
    for cached_day in [d for d in _salt_cache if d < day]:
        del _salt_cache[cached_day]


# --- Visitor tokens (SPEC 5, `Candor.visitorToken()`) ------------------------------------------
# A store's checkout page asks the widget for a token and passes it along with the order, so
# Candor can attribute the purchase to the shopper's experiment arm (SPEC 4). The token is the
# visitor hash encrypted (Fernet: AES-CBC + HMAC, a random IV each time) under a key derived
# from SECRET_KEY: the store learns nothing from it, and two tokens of one shopper do not match,
# so it cannot serve as an identifier either. It expires after 24 h, and the hash inside it is
# only good for the salt's day anyway.
VISITOR_TOKEN_TTL_S = 24 * 3600


@lru_cache(maxsize=4)
def _token_cipher(secret_key: str):
    from cryptography.fernet import Fernet
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"candor visitor token v1").derive(
        secret_key.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def visitor_token_make(*, site_id: int, visitor_hash: str) -> str:
    return _token_cipher(settings.SECRET_KEY).encrypt(f"{site_id}:{visitor_hash}".encode()).decode()


def visitor_token_read(token: str, *, site_id: int, now: dt.datetime | None = None) -> str | None:
    """The visitor hash inside a token this server issued for `site_id` in the last 24 h, else None."""
    from cryptography.fernet import InvalidToken

    if not isinstance(token, str) or not 0 < len(token) <= 512:
        return None
    cipher = _token_cipher(settings.SECRET_KEY)
    try:
        if now is None:
            plain = cipher.decrypt(token.encode(), ttl=VISITOR_TOKEN_TTL_S)
        else:
            plain = cipher.decrypt_at_time(
                token.encode(), ttl=VISITOR_TOKEN_TTL_S, current_time=int(now.timestamp())
            )
    except (InvalidToken, ValueError):
        return None
    token_site, _, visitor = plain.decode("ascii", "replace").partition(":")
    if token_site != str(site_id) or not re.fullmatch(r"[0-9a-f]{32}", visitor):
        return None
    return visitor

"""`POST /api/v1/events` (SPEC 5) as a thin ASGI route beside Django, with group commit.

Django's request path costs milliseconds of CPU per request under ASGI (a thread per request,
sync middleware, a Redis client per request: `bench/profiles/ingest-browser-events.txt`), for
an endpoint every product page calls. So the ASGI application sends this one path here
(`config/asgi.py`), and everything else to Django:

- the checks run in SPEC 5's order (415, 413, 400, 404, 403 origin, 403 type, 422, 429) in this
  module's `browser_event_handle`, which the Django view (`api.events`, used by Django's test
  client) runs too, so both answer alike; every body is parsed by `intake_parse` (its limits:
  depth, numbers, size), as on every other intake route;
- site, product and origins come from in-process caches (a few seconds, as for the socket; a
  miss asks the database), the visitor hash from the in-memory daily salt;
- accepted events wait for the next batch: the rate limits and view de-duplication of a whole
  batch are one Redis round trip, its rows one INSERT, and each request is answered once its
  batch has committed. A 202 still means "the row is in the ledger"; a batch is whatever arrived
  while the previous one was being written (group commit), so under load the database sees a
  few large INSERTs instead of one per request.

Refusals are counted as before, in batches.
"""

import asyncio
import contextvars
import json
import logging
from collections import Counter
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import DatabaseError, IntegrityError, close_old_connections, transaction
from django.http.request import split_domain_port, validate_host

from .identity import (
    address_hash_if_salted,
    client_ip_resolve,
    user_agent_is_bot,
    visitor_hash_compute,
    visitor_hash_if_salted,
)
from .ingest import (
    BROWSER_KINDS,
    BatchFallback,
    BrowserEvent,
    BrowserOutcome,
    Unacceptable,
    browser_events_record,
    context_clean,
    purchases_record,
    server_event_record,
)
from .intake_parse import (
    BROWSER_MAX_BODY_BYTES,
    SERVER_MAX_BODY_BYTES,
    Refused,
    browser_body_parse,
    json_object_parse,
)
from .models import origin_normalize
from .selectors import (
    MISSING,
    active_origins_cached,
    active_origins_get,
    product_id_cached,
    product_id_get,
    site_keyed_cached,
    site_keyed_get,
)
from .services import ingest_refusal_count
from .signing import BadSignature, signed_site_verify

log = logging.getLogger(__name__)

PATH = "/api/v1/events"
SERVER_PATH = "/api/v1/server/events"
MAX_BODY_BYTES = BROWSER_MAX_BODY_BYTES
DB_RETRY_AFTER_S = 5
EVENT_FIELDS = frozenset({"key", "type", "product", "context"})


@dataclass(frozen=True)
class RawRequest:
    method: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: str | None


@dataclass
class RawResponse:
    status: int
    body: dict
    headers: dict[str, str]


# --- The checks, in SPEC 5's order ------------------------------------------------------------


def event_fields_check(data: dict) -> dict:
    for name in ("key", "type", "product"):
        if not isinstance(data.get(name), str) or not data[name]:
            raise Refused(400, "malformed", f"'{name}' must be a non-empty string.", field=name)
        if "\x00" in data[name]:
            raise Refused(400, "malformed", f"'{name}' may not contain NUL characters.", field=name)
    if "context" in data and not isinstance(data["context"], dict):
        raise Refused(400, "malformed", "'context' must be an object.", field="context")
    unknown = sorted(set(data) - EVENT_FIELDS)
    if unknown:
        raise Refused(400, "malformed", f"Unknown field '{unknown[0]}'.", field=unknown[0])
    return data


def _origin(headers: dict[str, str]) -> str | None:
    try:
        return origin_normalize(headers.get("origin", ""))
    except ValueError:
        return None


def _cors(headers: dict[str, str], origin: str | None) -> dict[str, str]:
    if origin:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
    return headers


def _error(exc: Refused, *, cors_origin: str | None) -> RawResponse:
    body = {"code": exc.code, "message": exc.message}
    if exc.field:
        body["field"] = exc.field
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, int(exc.retry_after + 0.999)))
    return RawResponse(exc.status, {"error": body}, _cors(headers, cors_origin))


async def _cached(peek, load, *args, **kwargs):
    found = peek(*args)
    if found is not MISSING:
        return found
    return await sync_to_async(load)(**kwargs)


async def browser_event_handle(request: RawRequest, *, record, count) -> RawResponse:
    """One browser event: every check in order, then `record(event)` (awaitable, returns a
    `BrowserOutcome`). `count(site_id, code)` counts a refusal. Raises DatabaseError when the
    ledger is unavailable (the caller answers 503)."""
    if request.method == "OPTIONS":
        return await _preflight(request, count=count)
    origin = _origin(request.headers)
    site = None
    cors_origin = None
    try:
        if request.method != "POST":
            raise Refused(405, "method_not_allowed", "Use POST.")
        data = event_fields_check(
            browser_body_parse(
                content_type=request.headers.get("content-type", ""),
                content_length=request.headers.get("content-length"),
                body=request.body,
            )
        )
        site = await _cached(site_keyed_cached, site_keyed_get, data["key"], key=data["key"])
        if site is None:
            raise Refused(404, "unknown_site", "No active site has this key.", field="key")
        if origin is None or origin not in site.origins:
            raise Refused(403, "forbidden_origin", "This origin is not allowed for this site.")
        cors_origin = origin
        if data["type"] not in BROWSER_KINDS:
            raise Refused(
                403, "forbidden_type", "A browser may only send 'view' or 'add_to_cart'.", field="type"
            )
        product_id = await _cached(
            product_id_cached,
            product_id_get,
            site.site_id,
            data["product"],
            site_id=site.site_id,
            sku=data["product"],
        )
        if product_id is None:
            raise Refused(
                422, "unknown_product", "No product with this SKU in the site's catalog.", field="product"
            )
        ip = client_ip_resolve(peer=request.peer, forwarded_for=request.headers.get("x-forwarded-for"))
        user_agent = request.headers.get("user-agent", "")
        visitor = visitor_hash_if_salted(site_id=site.site_id, ip=ip, user_agent=user_agent)
        if visitor is None:  # the day's first request in this process: its salt is read (or made)
            visitor = await sync_to_async(visitor_hash_compute)(
                site_id=site.site_id, ip=ip, user_agent=user_agent
            )
        # Salted now (the visitor hash above made sure): the address's hash for this site (kept
        # with the event, SPEC 7) and across sites (the rate limit's key; an IPv6 /64 is one).
        address_hash = address_hash_if_salted(site_id=site.site_id, ip=ip) or ""
        address_key = address_hash_if_salted(site_id=0, ip=ip) or ""
        outcome: BrowserOutcome = await record(
            BrowserEvent(
                site_id=site.site_id,
                product_id=product_id,
                kind=data["type"],
                visitor_hash=visitor,
                address_key=address_key,
                address_hash=address_hash,
                is_bot=user_agent_is_bot(user_agent),
                context=context_clean(data.get("context") or {}),
            )
        )
        if outcome.status == 429:
            raise Refused(
                429, "rate_limited", "Too many events; slow down.", retry_after=outcome.retry_after_s
            )
    except Refused as exc:
        await count(site.site_id if site else None, exc.code)
        return _error(exc, cors_origin=cors_origin)
    return RawResponse(202, {"accepted": True}, _cors({}, cors_origin))


async def _preflight(request: RawRequest, *, count) -> RawResponse:
    origin = _origin(request.headers)
    # A preflight has no body and so no key: any active site's origin may ask.
    allowed = False
    if origin:
        origins = active_origins_cached()
        allowed = origins is not MISSING and origin in origins
        if not allowed:
            allowed = origin in await sync_to_async(active_origins_get)()
    if not allowed:
        await count(None, "forbidden_origin")
        return _error(
            Refused(403, "forbidden_origin", "This origin is not allowed by any site."), cors_origin=None
        )
    headers = {
        "Access-Control-Allow-Methods": "POST",
        "Access-Control-Allow-Headers": "Content-Type",
        "Access-Control-Max-Age": "600",
    }
    return RawResponse(204, {}, _cors(headers, origin))


# --- Signed server events ---------------------------------------------------------------------


def server_event_verify(*, body: bytes, header: str, memo: dict | None = None):
    """The checks of `POST /api/v1/server/events` up to recording, in SPEC 5's order: 413, then
    401 `bad_signature` for every failure up to and including verification, then 400. Returns
    (site, payload); raises Refused (its `site_id` set once the site is known)."""
    if len(body) > SERVER_MAX_BODY_BYTES:
        raise Refused(413, "too_large", f"The body may be at most {SERVER_MAX_BODY_BYTES} bytes.")
    try:
        site = signed_site_verify(body=body, header=header, memo=memo)
    except BadSignature as exc:
        raise Refused(401, "bad_signature", str(exc)) from None
    try:
        payload = json_object_parse(body, nul_allowed=False)
    except Refused as exc:
        exc.site_id = site.pk
        raise
    return site, payload


def _refused(exc: Unacceptable, site) -> Refused:
    return Refused(exc.status, exc.code, exc.message, field=exc.field, site_id=site.pk)


def server_event_answer(*, site, payload: dict, body: bytes) -> tuple[int, dict]:
    """Record a verified server event (its own savepoint: `server_event_record` is atomic).
    Returns (status, body); raises Refused for a 409 or 422, DatabaseError if the ledger fails."""
    try:
        return server_event_record(site=site, payload=payload, body=body)
    except Unacceptable as exc:
        raise _refused(exc, site) from None


def _server_batch_write(items: list[tuple[bytes, str]]) -> list[RawResponse]:
    """In a worker thread: a batch of signed server events, verified (each site's secrets read
    once per batch) and then recorded in ONE transaction, each event in a savepoint of its own,
    so one event's 409 or 422 leaves the others alone. A 2xx is answered only after the batch's
    commit (group commit); if the commit fails, every 2xx of the batch becomes a 503."""
    close_old_connections()
    answers: list[RawResponse | None] = [None] * len(items)
    refusals: list[tuple[int | None, str]] = []
    verified: list[tuple[int, object, dict, bytes]] = []
    memo: dict = {}

    def refused(index: int, exc: Refused) -> None:
        refusals.append((exc.site_id, exc.code))
        answers[index] = _error(exc, cors_origin=None)

    def unavailable(index: int) -> RawResponse:
        refusals.append((None, "unavailable"))
        answers[index] = _unavailable()
        return answers[index]

    try:
        for index, (body, header) in enumerate(items):
            try:
                site, payload = server_event_verify(body=body, header=header, memo=memo)
                verified.append((index, site, payload, body))
            except Refused as exc:
                refused(index, exc)
            except DatabaseError as exc:
                log.warning("a server event not verified (%s): answering 503", exc)
                unavailable(index)
        if verified:
            recorded: list[tuple[int, RawResponse]] = []
            try:
                with _batch_transaction():
                    if not _purchases_record(verified, recorded, refused):
                        for index, site, payload, body in verified:
                            try:
                                status, response = server_event_answer(site=site, payload=payload, body=body)
                                recorded.append((index, RawResponse(status, response, {})))
                            except Refused as exc:
                                refused(index, exc)
                            except DatabaseError as exc:  # its savepoint is rolled back; the rest go on
                                log.warning("a server event not recorded (%s): answering 503", exc)
                                unavailable(index)
            except DatabaseError as exc:
                log.warning("%d server events not committed (%s): answering 503", len(recorded), exc)
                recorded = [(index, unavailable(index)) for index, _ in recorded]
            for index, response in recorded:
                answers[index] = response
        for site_id, code in refusals:
            try:
                ingest_refusal_count(site_id=site_id, endpoint="server_events", code=code)
            except DatabaseError:  # the answer must not depend on the counter
                break
        return [answer or _unavailable() for answer in answers]
    finally:
        close_old_connections()


def _purchases_record(verified: list, recorded: list, refused) -> bool:
    """A batch of purchases only (the hot case) set-based, in a savepoint
    (`ingest.purchases_record`). False if the batch is not that, or must go one by one."""
    if any(payload.get("type") != "purchase" for _, _, payload, _ in verified):
        return False
    try:
        with transaction.atomic():
            results = purchases_record([(site, payload, body) for _, site, payload, body in verified])
    except (IntegrityError, BatchFallback):  # rolled back to the savepoint
        return False
    for (index, site, _, _), result in zip(verified, results, strict=True):
        if isinstance(result, Unacceptable):
            refused(index, _refused(result, site))
        else:
            recorded.append((index, RawResponse(result[0], result[1], {})))
    return True


def _batch_transaction():
    return transaction.atomic()


def _unavailable() -> RawResponse:
    return _error(
        Refused(503, "unavailable", "The ledger is unavailable; retry.", retry_after=DB_RETRY_AFTER_S),
        cors_origin=None,
    )


# --- The ASGI route and its batches -----------------------------------------------------------


def _batch_write(events: list[BrowserEvent], refusals: dict) -> list[BrowserOutcome] | None:
    """In a worker thread: the batch's limits and rows (one Redis round trip, one INSERT), then
    the refusal counts gathered since the last batch. Returns None if the ledger is down."""
    close_old_connections()
    try:
        outcomes = None
        if events:
            try:
                outcomes = browser_events_record(events)
            except DatabaseError as exc:
                log.warning("browser events not recorded (%s): answering 503", exc)
        for (site_id, code), n in refusals.items():
            for _ in range(n):
                try:
                    ingest_refusal_count(site_id=site_id, endpoint="events", code=code)
                except DatabaseError:
                    break
        return outcomes
    finally:
        close_old_connections()


class EventBatcher:
    """Group commit, per process: requests wait while the batches before theirs are written,
    then go together. A few batches may be in flight at once, so the database can commit them
    together too (its own group commit): with one at a time, the rate is one batch per WAL flush."""

    IN_FLIGHT = 2

    def __init__(self) -> None:
        self.pending: list[tuple[BrowserEvent, asyncio.Future]] = []
        self.refusals: Counter = Counter()
        self.running = 0

    async def record(self, event: BrowserEvent) -> BrowserOutcome:
        future = asyncio.get_running_loop().create_future()
        self.pending.append((event, future))
        self._kick()
        return await future

    async def count(self, site_id: int | None, code: str) -> None:
        self.refusals[(site_id, code)] += 1
        self._kick()

    def _kick(self) -> None:
        if self.running < self.IN_FLIGHT and (self.pending or self.refusals):
            batch, self.pending = self.pending, []
            refusals, self.refusals = dict(self.refusals), Counter()
            self.running += 1
            # A fresh context: the batch must not run on one request's thread executor.
            asyncio.get_running_loop().create_task(
                self._write(batch, refusals), context=contextvars.Context()
            )

    async def _write(self, batch: list, refusals: dict) -> None:
        events = [event for event, _ in batch]
        error: Exception | None = None
        try:
            outcomes = await sync_to_async(_batch_write, thread_sensitive=False)(events, refusals)
        except Exception as exc:  # never leave a request waiting
            log.exception("browser event batch failed")
            outcomes, error = None, exc
        finally:
            self.running -= 1
        for index, (_, future) in enumerate(batch):
            if future.done():
                continue
            if outcomes is None:
                future.set_exception(
                    error if isinstance(error, DatabaseError) else DatabaseError("unavailable")
                )
            else:
                future.set_result(outcomes[index])
        self._kick()


class ServerBatcher:
    """Group commit for signed server events, per process: what arrives while a batch is being
    written goes in the next one (at most BATCH_MAX), and a few batches may be in flight."""

    IN_FLIGHT = 2
    BATCH_MAX = 100

    def __init__(self) -> None:
        self.pending: list[tuple[tuple[bytes, str], asyncio.Future]] = []
        self.running = 0

    async def answer(self, body: bytes, header: str) -> RawResponse:
        future = asyncio.get_running_loop().create_future()
        self.pending.append(((body, header), future))
        self._kick()
        return await future

    def _kick(self) -> None:
        if self.running < self.IN_FLIGHT and self.pending:
            batch, self.pending = self.pending[: self.BATCH_MAX], self.pending[self.BATCH_MAX :]
            self.running += 1
            asyncio.get_running_loop().create_task(self._write(batch), context=contextvars.Context())

    async def _write(self, batch: list) -> None:
        try:
            answers = await sync_to_async(_server_batch_write, thread_sensitive=False)(
                [item for item, _ in batch]
            )
        except Exception:  # never leave a request waiting
            log.exception("server event batch failed")
            answers = [_unavailable() for _ in batch]
        finally:
            self.running -= 1
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():
                future.set_result(answer)
        self._kick()


_batchers: dict[int, tuple[EventBatcher, ServerBatcher]] = {}


def _batchers_get() -> tuple[EventBatcher, ServerBatcher]:
    loop = asyncio.get_running_loop()
    found = _batchers.get(id(loop))
    if found is None:
        _batchers.clear()  # one loop per process; a new loop (tests) starts afresh
        found = _batchers[id(loop)] = (EventBatcher(), ServerBatcher())
    return found


def _host_allowed(host: str) -> bool:
    domain, _port = split_domain_port(host)
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


def _needs_https(scope, headers: dict[str, str]) -> bool:
    if not settings.SECURE_SSL_REDIRECT or scope.get("scheme") == "https":
        return False
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy:
        name, value = proxy
        header = name.lower().removeprefix("http_").replace("_", "-")
        if headers.get(header, "").split(",")[0].strip() == value:
            return False
    return True


class EventBeacon:
    """ASGI middleware: `POST /api/v1/events` and `POST /api/v1/server/events` here, everything
    else (other methods included: Django answers them 405) to `app` (Django)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        path = scope["path"] if scope["type"] == "http" else None
        server = path == SERVER_PATH and scope["method"] == "POST"
        if path != PATH and not server:
            await self.app(scope, receive, send)
            return
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]
        }
        if not _host_allowed(headers.get("host", "")) or _needs_https(scope, headers):
            # Django answers a bad Host, and redirects plain HTTP under SECURE_SSL_REDIRECT, as
            # it always does.
            await self.app(scope, receive, send)
            return
        body = await _body_read(receive, SERVER_MAX_BODY_BYTES if server else MAX_BODY_BYTES)
        if body is None:
            return  # the client went away
        events, servers = _batchers_get()
        if server:
            response = await servers.answer(body, headers.get("candor-signature", ""))
            await _send(send, response)
            return
        client = scope.get("client") or (None, None)
        request = RawRequest(scope["method"], headers, body, client[0])
        try:
            response = await browser_event_handle(request, record=events.record, count=events.count)
        except DatabaseError:
            response = _unavailable()
        await _send(send, response)


async def _body_read(receive, limit: int) -> bytes | None:
    """The request body, or its first `limit` + 1 bytes and more (enough to answer 413)."""
    body = bytearray()
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        more = message.get("more_body", False)
        if len(body) > limit:
            break
    return bytes(body)


async def _send(send, response: RawResponse) -> None:
    body = b"" if response.status == 204 else json.dumps(response.body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"same-origin"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]
    headers += [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.headers.items()
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

"""The widget socket `/ws/v1/widget?key=pk_…&product=<sku>` (SPEC 5).

A thin adapter: it checks the site and Origin before `accept()`, turns client messages into
presence and ledger calls, and sends what the hub's round decided. It computes no metric.
"""

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, TypedDict
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError

from .experiments import Arm, PageExposure, arm_assign
from .identity import (
    address_hash_compute,
    address_network,
    device_class,
    locale_from_accept_language,
    scope_client_ip,
    user_agent_is_bot,
    visitor_hash_compute,
)
from .ingest import browser_event_record, context_clean
from .intake_parse import Refused, json_parse
from .models import origin_normalize
from .policy import Decision
from .policy.decision import VisitorContext
from .policy.segments import Segment, segment_for
from .presence import Entry, presence_store
from .selectors import PolicyCatalog, WidgetTarget, widget_target_get
from .streaming import hub_get

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 4096
# A widget sends a handful of messages a page view (its page, visibility changes, a dismiss, a
# pause, an add to cart); a client that sends more is not a widget. A token bucket per socket:
# MESSAGE_BURST at once, then MESSAGES_PER_S; past it the socket is closed with 1008, so a flood
# costs the server one frame's parsing per token, never a presence write or a ledger row each.
MESSAGE_BURST = 20
MESSAGES_PER_S = 5.0
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
CLOSE_TRY_AGAIN = 1013
TOAST_TTL_MS = 12_000
# Toasts of one kind a page view may open; later changes arrive as updates of that toast.
TOASTS_PER_KIND_PER_PAGE = 1


class Claim(TypedDict):
    metric: str
    window_s: int
    displayed: str


class NotificationMessage(TypedDict):
    type: Literal["notification"]
    # The notification's public id (Notification.public_id), never the row's integer id.
    id: str
    kind: str
    text: str
    claim: Claim
    why_url: str
    ttl_ms: int


class UpdateMessage(TypedDict):
    type: Literal["update"]
    id: str
    text: str
    claim: Claim


class WithdrawMessage(TypedDict):
    type: Literal["withdraw"]
    id: str


ServerMessage = NotificationMessage | UpdateMessage | WithdrawMessage


class SocketSlots:
    """Open widget sockets per client address in this process (SPEC 7, "Sockets cost
    something"): at most CANDOR_SOCKETS_PER_ADDRESS, so one machine cannot hold thousands of
    sockets (each costs memory and a share of every fan-out round). Keyed by a hash under a key
    that lives only in this process's memory: the address is never kept, even here."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._open: dict[bytes, int] = {}

    def key_of(self, ip: str) -> bytes:
        return hmac.new(self._key, address_network(ip).encode(), hashlib.sha256).digest()[:16]

    def take(self, key: bytes) -> bool:
        held = self._open.get(key, 0)
        if held >= settings.CANDOR_SOCKETS_PER_ADDRESS:
            return False
        self._open[key] = held + 1
        return True

    def give_back(self, key: bytes) -> None:
        held = self._open.get(key, 0) - 1
        if held > 0:
            self._open[key] = held
        else:
            self._open.pop(key, None)

    def held(self, key: bytes) -> int:
        return self._open.get(key, 0)


socket_slots = SocketSlots()
SOCKETS_RETRY_AFTER_S = 30


@dataclass
class _Shown:
    id: str
    text: str


def _identity_compute(*, site_id: int, ip: str, user_agent: str) -> tuple[str, str]:
    """(visitor hash, address hash) under one salt read."""
    now = timezone.now()
    return (
        visitor_hash_compute(site_id=site_id, ip=ip, user_agent=user_agent, now=now),
        address_hash_compute(site_id=site_id, ip=ip, now=now),
    )


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return ""


class WidgetConsumer(AsyncWebsocketConsumer):
    # Fan-out goes through the process's hub (streaming.py), not the channel layer: a layer
    # channel per socket would cost a Redis round trip per viewer per update.
    channel_layer_alias = "candor-widget-uses-the-hub"

    # --- handshake ---------------------------------------------------------------------
    async def connect(self) -> None:
        params = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        key = (params.get("key") or [""])[0]
        sku = (params.get("product") or [""])[0]
        target = await database_sync_to_async(widget_target_get)(key=key, sku=sku) if key and sku else None
        if target is None or not self._origin_ok(target):
            await self.close()  # before accept: the client sees HTTP 403
            return
        ip = scope_client_ip(self.scope)
        slot = socket_slots.key_of(ip)
        if not socket_slots.take(slot):
            await self._refuse_busy()
            return
        self._slot: bytes | None = slot
        user_agent = _header(self.scope, b"user-agent")
        self.is_bot = user_agent_is_bot(user_agent)
        self.visitor, self.address = await database_sync_to_async(_identity_compute)(
            site_id=target.site_id, ip=ip, user_agent=user_agent
        )
        del ip
        self.device = device_class(user_agent)
        del user_agent  # never kept beyond the hash and the device class (SPEC 2.7)
        self.header_locale = locale_from_accept_language(_header(self.scope, b"accept-language"))
        country_header = settings.CANDOR_COUNTRY_HEADER.lower().encode()
        self.header_country = (
            _header(self.scope, country_header).strip().lower()[:2] if country_header else ""
        )
        self.target: WidgetTarget = target
        self.key = key
        self.socket_id = uuid.uuid4().hex
        self.visible = False
        self.paused = False
        self.force_snapshot = False
        self.shown: dict[str, _Shown] = {}
        self.opened: dict[str, int] = {}
        self.suspended: set[str] = set()  # kinds taken down by an outage, restored on recovery
        self.last_toast_s: float | None = None
        self.outbox: asyncio.Queue | None = None
        self._outbox_task: asyncio.Task | None = None
        self.exposure: PageExposure | None = None
        self.dismissed: set[str] = set()
        self.context: dict[str, str] = {}
        self.visitor_context = self._visitor_context()
        self._segment: tuple[PolicyCatalog, Segment, Arm] | None = None
        self._tokens, self._tokens_at = float(MESSAGE_BURST), time.monotonic()
        self.hub = hub_get()
        self.paused = self.hub.session_paused(self.visitor)
        self.page_seen = False
        await self.accept()
        await self.hub.join(self)
        self._page_timer = asyncio.get_running_loop().call_later(
            settings.CANDOR_PAGE_TIMEOUT_S, self._page_timeout
        )

    async def _refuse_busy(self) -> None:
        """HTTP 429 before `accept` (the ASGI websocket denial response, which uvicorn and daphne
        support); a server without it gets a plain refusal (403)."""
        if "websocket.http.response" not in self.scope.get("extensions", {}):
            await self.close()
            return
        body = json.dumps(
            {"error": {"code": "rate_limited", "message": "Too many open sockets from this address."}}
        ).encode()
        await self.base_send(
            {
                "type": "websocket.http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(SOCKETS_RETRY_AFTER_S).encode()),
                ],
            }
        )
        await self.base_send({"type": "websocket.http.response.body", "body": body})

    def _page_timeout(self) -> None:
        """A socket that has not said which page it is on within CANDOR_PAGE_TIMEOUT_S is not a
        widget (SPEC 7): closed with 1008, so held-open sockets cost their holder a reconnect."""
        if not self.page_seen:
            asyncio.get_running_loop().create_task(self.close(code=CLOSE_POLICY_VIOLATION))

    def _origin_ok(self, target: WidgetTarget) -> bool:
        origin = _header(self.scope, b"origin")
        try:
            return bool(origin) and origin_normalize(origin) in target.site_origins
        except ValueError:
            return False

    async def __call__(self, scope, receive, send) -> None:
        # The slot is given back however the socket's life ends: a disconnect, an exception in a
        # handler, or the task cancelled (a server shutting down never sends `disconnect`).
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot_release()

    def _slot_release(self) -> None:
        slot = getattr(self, "_slot", None)
        if slot is not None:
            self._slot = None
            socket_slots.give_back(slot)
        timer = getattr(self, "_page_timer", None)
        if timer is not None:
            timer.cancel()

    async def disconnect(self, code: int) -> None:
        self._slot_release()
        if not hasattr(self, "hub"):
            return
        if self._outbox_task is not None:
            self._outbox_task.cancel()
        self.exposure_end()
        await self.hub.leave(self, self.product_id)
        if self.visible:
            self.visible = False
            await self._presence(show=False)

    # --- state the hub reads -----------------------------------------------------------
    @property
    def site_id(self) -> int:
        return self.target.site_id

    @property
    def product_id(self) -> int:
        return self.target.product_id

    def _visitor_context(self) -> VisitorContext:
        """What segments and reference groups may know: the product, headers the browser sends
        anyway, and what the page told us (store hints). Nothing that identifies the shopper."""
        c = self.context
        return VisitorContext(
            visitor=self.visitor,
            category=self.target.category,
            category_kind=self.target.category_kind,
            locale=(c.get("locale") or self.header_locale).lower(),
            country=(c.get("country") or self.header_country).lower()[:2],
            device=c.get("device") or self.device,
            returning=c.get("returning", ""),
            referrer=c.get("referrer", "").lower(),
            campaign=c.get("campaign", "").lower(),
            hints={k[5:]: v for k, v in c.items() if k.startswith("hint_")},
        )

    def _placed(self, catalog: PolicyCatalog) -> tuple[PolicyCatalog, Segment, Arm]:
        """Segment and experiment arm, recomputed only when the catalog or the context changes."""
        if self._segment is None or self._segment[0] is not catalog:
            segment = segment_for(catalog.segments, self.visitor_context)
            arm = arm_assign(visitor=self.visitor, segment=segment, site_holdout_pct=catalog.holdout_pct)
            self._segment = (catalog, segment, arm)
        return self._segment

    def segment_in(self, catalog: PolicyCatalog) -> Segment:
        return self._placed(catalog)[1]

    def arm_in(self, catalog: PolicyCatalog) -> Arm:
        return self._placed(catalog)[2]

    def exposure_in(self, catalog: PolicyCatalog, now) -> PageExposure:
        """This page view's exposure record, begun at its first round (SPEC 4)."""
        if self.exposure is None:
            _, segment, arm = self._placed(catalog)
            self.exposure = PageExposure(
                site_id=self.site_id,
                product_id=self.product_id,
                visitor=self.visitor,
                segment=segment.name,
                arm=arm.name,
                policy_version=(arm.policy or segment.policy).version,
                started_at=now,
            )
        return self.exposure

    def exposure_end(self) -> None:
        """The page view ended (closed, or moved to another product): log what it was shown.
        Bots are never part of an experiment."""
        exposure, self.exposure = self.exposure, None
        if exposure is not None and not self.is_bot:
            self.hub.exposure_add(exposure.row(ended_at=timezone.now()))

    def presence_entry(self) -> Entry:
        ctx = self.visitor_context
        return Entry(
            self.product_id,
            self.visitor,
            self.socket_id,
            self.site_id,
            ctx.country,
            ctx.returning,
            address=self.address,
        )

    @property
    def listening(self) -> bool:
        """A hidden page receives nothing; a paused shopper gets nothing more this session."""
        return self.visible and not self.paused

    @property
    def counted(self) -> bool:
        return self.visible and not self.is_bot

    def needs(self, decision: Decision) -> bool:
        shown = self.shown.get(decision.kind)
        if shown is None:
            if decision.kind in self.suspended:
                return True
            return (
                decision.kind not in self.dismissed
                and self.opened.get(decision.kind, 0) < TOASTS_PER_KIND_PER_PAGE
            )
        return self.force_snapshot or shown.text != decision.text

    def claim_message(self, decision: Decision, public_id: str) -> ServerMessage:
        claim: Claim = decision.claim  # type: ignore[assignment]
        previous = self.shown.get(decision.kind)
        self.shown[decision.kind] = _Shown(public_id, decision.text)
        if previous is not None:
            return UpdateMessage(type="update", id=public_id, text=decision.text, claim=claim)
        if decision.kind in self.suspended:
            self.suspended.discard(decision.kind)
        else:
            self.opened[decision.kind] = self.opened.get(decision.kind, 0) + 1
        return NotificationMessage(
            type="notification",
            id=public_id,
            kind=decision.kind,
            text=decision.text,
            claim=claim,
            why_url=self._why_url(public_id),
            ttl_ms=TOAST_TTL_MS,
        )

    def withdraw_message(self, kind: str) -> WithdrawMessage | None:
        shown = self.shown.pop(kind, None)
        return WithdrawMessage(type="withdraw", id=shown.id) if shown else None

    def withdraw_all_messages(self) -> list[WithdrawMessage]:
        shown, self.shown = self.shown, {}
        self.suspended.update(shown)
        return [WithdrawMessage(type="withdraw", id=item.id) for item in shown.values()]

    # A socket whose client stopped reading gets its own queue and writer, so the shared loop of
    # sends never waits for it; past OUTBOX_MAX queued messages it is closed (it can reconnect).
    OUTBOX_MAX = 50

    def outbox_start(self) -> None:
        if self.outbox is None:
            self.outbox = asyncio.Queue()
            self._outbox_task = asyncio.get_running_loop().create_task(self._outbox_drain())

    def outbox_put(self, event: dict) -> None:
        if self.outbox.qsize() >= self.OUTBOX_MAX:
            self._outbox_task.cancel()
            asyncio.get_running_loop().create_task(self.close(code=CLOSE_TRY_AGAIN))
            return
        self.outbox.put_nowait(event)

    async def _outbox_drain(self) -> None:
        while True:
            event = await self.outbox.get()
            try:
                await self.base_send(event)
            except Exception as exc:  # closed: nothing more to send
                log.debug("outbox send failed: %s", exc)
                return

    def _why_url(self, public_id: str) -> str:
        host = _header(self.scope, b"host") or "localhost"
        scheme = "https" if self.scope.get("scheme") == "wss" else "http"
        return f"{scheme}://{host}/why/{public_id}"

    # --- client messages ---------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # A str never has more characters than its UTF-8 bytes: a long one is refused unencoded.
        if text_data is not None:
            size = len(text_data) if len(text_data) > MAX_FRAME_BYTES else len(text_data.encode())
        else:
            size = len(bytes_data or b"")
        if size > MAX_FRAME_BYTES:
            await self.close(code=CLOSE_TOO_BIG)
            return
        if not self._token_take():
            await self.close(code=CLOSE_POLICY_VIOLATION)
            return
        try:
            # The HTTP routes' parse and limits (nesting, numbers): a frame that breaks them is
            # refused like any unusable message, with 1008, and raises nothing.
            message = json_parse(text_data) if text_data is not None else None
        except Refused:
            message = None
        handler = None
        if isinstance(message, dict) and isinstance(message.get("type"), str):
            handler = self._handlers.get(message["type"])
        if handler is None or not await handler(self, message):
            await self.close(code=CLOSE_POLICY_VIOLATION)

    def _token_take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(float(MESSAGE_BURST), self._tokens + (now - self._tokens_at) * MESSAGES_PER_S)
        self._tokens_at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    async def _on_page(self, message: dict[str, Any]) -> bool:
        visible = message.get("visible")
        sku = message.get("product", self.target.sku)
        if not isinstance(visible, bool) or not isinstance(sku, str):
            return False
        self.page_seen = True
        if isinstance(message.get("context"), dict):
            before = self.presence_entry()
            self.context = context_clean(message["context"])
            self.visitor_context = self._visitor_context()
            self._segment = None
            if self.visible and self.presence_entry() != before and not self.is_bot:
                await self._presence_swap(before)
        if sku != self.target.sku:  # a single-page app moved to another product
            target = await database_sync_to_async(widget_target_get)(key=self.key, sku=sku)
            if target is None or target.site_id != self.target.site_id:
                return False
            self.exposure_end()
            await self._leave_product()
            self.target = target
            self.visitor_context = self._visitor_context()
            self._segment = None
            self.shown.clear()
            self.opened.clear()
            self.dismissed.clear()
            await self.hub.join(self)
        if visible and not self.visible:
            self.visible = True
            self.force_snapshot = True  # a page that becomes visible gets a fresh snapshot
            await self._presence(show=True)
        elif not visible and self.visible:
            self.visible = False
            await self._presence(show=False)
        elif visible:
            self.force_snapshot = True
            self.hub.on_change(self.product_id)
        return True

    async def _on_dismiss(self, message: dict[str, Any]) -> bool:
        for kind, shown in list(self.shown.items()):
            if shown.id == message.get("id"):
                del self.shown[kind]
                self.dismissed.add(kind)  # never again on this page view
                self.hub.session(self.visitor).dismissed[kind] = time.monotonic()  # silence
        return True

    async def _on_pause(self, message: dict[str, Any]) -> bool:
        # Nothing more this session: this page, and the shopper's next pages for the visit (the
        # widget stores nothing on the device, so the server remembers it, by visitor hash).
        self.paused = True
        self.shown.clear()
        self.hub.session(self.visitor).paused = True
        return True

    async def _on_event(self, message: dict[str, Any]) -> bool:
        sku = message.get("product", self.target.sku)
        kind = message.get("event_type")
        if kind != "add_to_cart" or not isinstance(sku, str):
            return False  # a browser can never report a purchase (SPEC 2.4)
        target = self.target
        if sku != target.sku:
            target = await database_sync_to_async(widget_target_get)(key=self.key, sku=sku)
            if target is None or target.site_id != self.target.site_id:
                return False
        await database_sync_to_async(browser_event_record)(
            site_id=target.site_id,
            product_id=target.product_id,
            kind=kind,
            visitor_hash=self.visitor,
            address_hash=self.address,
            is_bot=self.is_bot,
            context=self.context,
        )
        return True

    _handlers = {
        "page": _on_page,
        "dismiss": _on_dismiss,
        "pause": _on_pause,
        "event": _on_event,
    }

    # --- helpers -----------------------------------------------------------------------
    async def _leave_product(self) -> None:
        was_visible = self.visible
        await self.hub.leave(self, self.product_id)
        if was_visible:
            self.visible = False
            await self._presence(show=False)

    async def _presence(self, *, show: bool) -> None:
        """Enter or leave presence, then tell every process the product changed."""
        if not self.is_bot:
            entry = self.presence_entry()
            try:
                if show:
                    await presence_store().show(entry, ttl_s=self._ttl_s())
                else:
                    await presence_store().hide(entry)
            except RedisError as exc:
                # The refresher re-enters open sockets once Redis is back.
                log.warning("presence write failed: %s", exc)
        await self.hub.changed(self.product_id)

    async def _presence_swap(self, before: Entry) -> None:
        """The page's context changed (country, returning hint): replace the presence member."""
        try:
            await presence_store().hide(before)
            await presence_store().show(self.presence_entry(), ttl_s=self._ttl_s())
        except RedisError as exc:
            log.warning("presence write failed: %s", exc)
        await self.hub.changed(self.product_id)

    @staticmethod
    def _ttl_s() -> int:
        return settings.CANDOR_PRESENCE_TTL_S

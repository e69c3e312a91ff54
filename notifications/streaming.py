"""Streaming: from a product's change to every viewer's socket, fanned out in-process.

Each server process keeps its own sockets in a registry (product id → consumers) and learns of
changes through one Redis subscription (or, in the embedded default, directly). A change costs
one `PUBLISH`, one presence read per process, and then a local loop of `send`s — not one Redis
round trip per viewer, which is what the channel layer's `group_send` costs (3.6–5.8× slower
here; docs/conventions.md, "Measured on this kind of machine").

Updates per product are coalesced on the leading edge: the first change is sent at once, later
ones within the interval become one send at its end, recomputed then (SPEC 5).
"""

import asyncio
import contextvars
import json
import logging
import os
import time
import uuid
import weakref
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from . import metrics
from .gcpace import GcPacer
from .policy import Decision, RefusalReason, decide
from .policy.decision import LIVE_KINDS, SessionState, recipient_refusal, shopper_language
from .presence import presence_store
from .selectors import policy_catalog_get, product_name_get
from .services import exposures_record, notification_log_record, refusal_counts_add

if TYPE_CHECKING:
    from .consumers import WidgetConsumer

log = logging.getLogger(__name__)

CHANGES_CHANNEL = "candor:v1:changes"
_MISSING = object()
LEDGER_ORIGIN = "ledger"  # a change message from ingestion: the ledger changed, not presence
LEDGER_KINDS = tuple(sorted(LIVE_KINDS - {"viewing_now"}))

# Policy refusals by (site, kind, reason, policy version), flushed to `RefusalCount` rows on
# every refresh so the admin shows them (SPEC 3).
refusals: Counter[tuple] = Counter()
# Ended page views' exposure rows (SPEC 4), written in batches: on every refresh, when the
# buffer fills, and when the process's last socket closes. A crash loses at most one refresh's
# worth (TTL/3), which widens the experiment's intervals a little and biases no arm.
exposures: list[dict] = []
EXPOSURES_BATCH = 500
EXPOSURES_MAX = 100_000
# A visit, for the per-session frequency cap: cookieless, so "the same visitor hash seen within
# the last 30 minutes", kept by the process that holds the visitor's sockets.
SESSION_S = 30 * 60
GC_CHECK_S = 5.0  # how often the GC pacer looks at the socket count (gcpace.py)


@dataclass
class Session:
    seen_s: float
    toasts: int = 0
    paused: bool = False  # the shopper chose "pause notifications"
    last_toast_s: float | None = None
    dismissed: dict[str, float] = field(default_factory=dict)


def _hub_context() -> contextvars.Context:
    """The hub's own work runs in a fresh context. A task inherits the context it was created in,
    and asgiref keeps a connection's (or a request's) thread executor there: a round started by
    one socket would otherwise send its database calls to that socket's executor, which is gone
    once the socket closes ("CurrentThreadExecutor already quit")."""
    return contextvars.Context()


class Hub:
    """One per event loop (that is, per server process in production)."""

    def __init__(self) -> None:
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.sockets: dict[int, set[WidgetConsumer]] = defaultdict(set)
        self._last_round: dict[int, float] = {}
        self._scheduled: dict[int, asyncio.Task] = {}
        self._tasks: list[asyncio.Task] = []
        self._started = False
        self._start_lock = asyncio.Lock()
        self._degraded = False
        self._redis_url = settings.CANDOR_REDIS_URL
        self._sessions: dict[str, Session] = {}
        self._presence_seen: dict[int, tuple[float, dict]] = {}
        self._retries: dict[int, asyncio.TimerHandle] = {}

    # --- membership --------------------------------------------------------------------
    def socket_count(self) -> int:
        return sum(len(members) for members in self.sockets.values())

    async def join(self, consumer: "WidgetConsumer") -> None:
        await self._ensure_started()
        self.sockets[consumer.product_id].add(consumer)

    async def leave(self, consumer: "WidgetConsumer", product_id: int) -> None:
        members = self.sockets.get(product_id)
        if members is not None:
            members.discard(consumer)
            if not members:
                del self.sockets[product_id]
        if not any(self.sockets.values()):
            await self.exposures_flush()
            await self._stop()

    def exposure_add(self, row: dict) -> None:
        exposures.append(row)
        if len(exposures) >= EXPOSURES_BATCH and self._started:
            asyncio.get_running_loop().create_task(self.exposures_flush(), context=_hub_context())

    async def exposures_flush(self) -> None:
        if not exposures:
            return
        rows = exposures[:]
        del exposures[:]
        try:
            await database_sync_to_async(exposures_record)(rows)
        except Exception:  # kept for the next flush; the oldest go first if the database stays down
            log.exception("could not record %d exposures; keeping them for the next flush", len(rows))
            exposures[:0] = rows
            del exposures[: max(0, len(exposures) - EXPOSURES_MAX)]

    # --- changes -----------------------------------------------------------------------
    async def changed(self, product_id: int) -> None:
        """Tell every process that `product_id`'s presence changed."""
        self._presence_seen.pop(product_id, None)
        self.on_change(product_id)
        if self._redis_url:
            try:
                await presence_store().redis.publish(CHANGES_CHANNEL, f"{self.origin}:{product_id}")
            except RedisError:
                log.warning("could not publish a change; other processes catch up on refresh")

    def on_change(self, product_id: int) -> None:
        if product_id not in self.sockets or product_id in self._scheduled:
            return
        interval_s = settings.CANDOR_UPDATE_INTERVAL_MS / 1000
        wait_s = max(0.0, self._last_round.get(product_id, 0.0) + interval_s - time.monotonic())
        self._scheduled[product_id] = asyncio.get_running_loop().create_task(
            self._round_after(product_id, wait_s), context=_hub_context()
        )

    async def _round_after(self, product_id: int, wait_s: float) -> None:
        try:
            if wait_s:
                await asyncio.sleep(wait_s)
        finally:
            if self._scheduled.get(product_id) is asyncio.current_task():
                del self._scheduled[product_id]
        started = time.monotonic()
        previous = self._last_round.get(product_id)
        self._last_round[product_id] = started  # changes arriving during the round wait their turn
        try:
            sent = await self.round(product_id)
        except Exception:  # one product's failure must not kill the loop for the others
            log.exception("update round failed for product %s", product_id)
            sent = 1
        # The interval runs from the last round that sent something: a round that changed
        # nothing on any screen (a clock tick, a viewer joining above the cap) holds nothing back.
        if not sent and self._last_round.get(product_id) == started:
            if previous is None:
                self._last_round.pop(product_id, None)
            else:
                self._last_round[product_id] = previous
            # A change that arrived during this round was told to wait for the interval from
            # *its* start; now that it counts for nothing, the change waits only for the last
            # round that sent something (bench/e2e.py found purchases held ≈1 s by a clock tick).
            waiting = self._scheduled.pop(product_id, None)
            if waiting is not None:
                waiting.cancel()
                self.on_change(product_id)

    async def round(self, product_id: int) -> int:
        """Recompute and send: one presence read and one database hop (policy catalog, ledger
        metrics, the product's name) for the product, then one decision per distinct (policy
        version, locale, kind, value), shared by every recipient it applies to; the holdout and
        the frequency caps are then checked per recipient (new toasts only: updates are not
        capped), counting the new toasts this round already granted to that socket and that
        visitor. Returns how many messages were sent."""
        recipients = [c for c in self.sockets.get(product_id, ()) if c.listening]
        if not recipients:
            return 0
        ttl_s = settings.CANDOR_PRESENCE_TTL_S
        now = timezone.now()
        first = recipients[0]
        inputs = database_sync_to_async(_round_inputs)(first.site_id, product_id, now, first.target.category)
        try:
            visitors, (catalog, ledger, product_name) = await asyncio.gather(
                self._visitors(product_id), inputs
            )
        except RedisError:
            # Never a stale number presented as live: take down what is shown.
            self._degrade()
            return await _send_all([(c, _event(m)) for c in recipients for m in c.withdraw_all_messages()])
        presence = metrics.PresenceSnapshot.of(visitors)
        now_s = time.monotonic()
        by_kind: dict[str, list[metrics.Metric]] = defaultdict(list)
        for metric in ledger:
            by_kind[metric.metric].append(metric)  # narrowest window first
        ledger_decisions: dict[tuple, list] = {}
        templates_by_locale: dict[str, tuple] = {}
        shared: dict[tuple, tuple] = {}  # viewing_now (decision, refusal) by (version, locale, value)
        per_claim: dict[int, list[tuple[WidgetConsumer, Decision]]] = defaultdict(list)
        # New toasts granted so far this round, per socket: `consumer.opened` counts a toast only
        # when its message is built, after every kind has been decided, so without this the later
        # kinds of one round would not see the earlier ones under `per_page_view` (issue 19).
        granted: Counter[WidgetConsumer] = Counter()
        outgoing: list[tuple[WidgetConsumer, dict]] = []
        retry_in_s: float | None = None
        for consumer in recipients:
            arm = consumer.arm_in(catalog)
            exposure = consumer.exposure_in(catalog, now)
            if arm.policy is None:
                version = consumer.segment_in(catalog).policy.version
                self._refused(consumer.site_id, "*", RefusalReason.HELD_OUT, version)
                exposure.held_out = True
                continue
            policy = arm.policy
            ctx = consumer.visitor_context
            # The shopper's locale picks the language of the shipped wording (and of `{window}`);
            # decisions are shared per locale below, so each is rendered in its own language.
            language = shopper_language(ctx.locale)
            templates = templates_by_locale.get(ctx.locale)
            if templates is None:
                templates = templates_by_locale[ctx.locale] = catalog.templates_for(ctx.locale)
            viewing_key = (
                policy.version,
                ctx.locale,
                metrics.viewing_now_key(presence=presence, recipient=consumer.visitor, context=ctx),
            )
            viewing = shared.get(viewing_key, _MISSING)
            if viewing is _MISSING:
                metric = metrics.viewing_now(
                    presence=presence,
                    recipient=consumer.visitor,
                    ttl_s=ttl_s,
                    at=now,
                    category=ctx.category,
                    country=ctx.country,
                    returning=ctx.returning,
                )
                viewing = self._decide_first((metric,), policy, templates, consumer.site_id, language)
                shared[viewing_key] = viewing
            # Ledger claims are the same for everyone under one policy version and locale.
            ledger_key = (policy.version, ctx.locale)
            decided = ledger_decisions.get(ledger_key)
            if decided is None:
                decided = ledger_decisions[ledger_key] = [
                    (
                        kind,
                        self._decide_first(
                            by_kind.get(kind, ()), policy, templates, consumer.site_id, language
                        ),
                    )
                    for kind in LEDGER_KINDS
                ]
            for kind, (decision, reason) in (("viewing_now", viewing), *decided):
                shown = consumer.shown.get(kind)
                if decision is None:
                    exposure.refused(reason)
                    if shown is not None:
                        outgoing.append((consumer, _event(consumer.withdraw_message(kind))))
                    continue
                # Decisions are shared objects: one per distinct claim this round.
                claim_key = id(decision)
                if shown is not None:
                    # The toast on screen gets the new value: an update, never capped.
                    if consumer.force_snapshot or shown.text != decision.text:
                        per_claim[claim_key].append((consumer, decision))
                        exposure.displayed(kind, decision.claim["displayed"], new=False)
                    continue
                if not consumer.needs(decision):
                    continue  # dismissed on this page, or this page's toast of that kind was used
                if kind in consumer.suspended:
                    # Taken down by an outage and true again: the fresh snapshot is the same toast
                    # restored, not a new one, so the frequency caps do not hold it back.
                    per_claim[claim_key].append((consumer, decision))
                    exposure.displayed(kind, decision.claim["displayed"], new=False)
                    continue
                session = self.session(consumer.visitor)
                last = max(filter(None, (session.last_toast_s, consumer.last_toast_s)), default=None)
                state = SessionState(
                    now_s=now_s,
                    page_toasts=sum(consumer.opened.values()) + granted[consumer],
                    session_toasts=session.toasts,
                    last_toast_s=last,
                    dismissed_s=session.dismissed.get(kind),
                )
                refusal = recipient_refusal(
                    policy=policy, visitor=consumer.visitor, session=state, is_new=True
                )
                if refusal is not None:
                    self._refused(consumer.site_id, kind, refusal, policy.version)
                    exposure.refused(refusal)
                    if refusal in (RefusalReason.MIN_GAP, RefusalReason.DISMISSED):
                        wait = (
                            policy.min_gap_s if refusal == RefusalReason.MIN_GAP else policy.dismiss_silence_s
                        )
                        since = state.last_toast_s if refusal == RefusalReason.MIN_GAP else state.dismissed_s
                        remaining = max(0.1, wait - (now_s - (since or now_s)))
                        retry_in_s = remaining if retry_in_s is None else min(retry_in_s, remaining)
                    continue
                # Counted at the grant, not when sent: the visit's count and the gap hold for
                # the kinds still to be decided this round, on this socket and the visitor's others.
                granted[consumer] += 1
                session.toasts += 1
                session.last_toast_s = consumer.last_toast_s = now_s
                per_claim[claim_key].append((consumer, decision))
                exposure.displayed(kind, decision.claim["displayed"], new=True)
        for group in per_claim.values():
            lowest = min(group, key=lambda pair: pair[1].true_value)[1]
            public_id = await database_sync_to_async(notification_log_record)(
                site_id=group[0][0].site_id,
                product_id=product_id,
                product_name=product_name,
                kind=lowest.kind,
                text=lowest.text,
                claim=lowest.claim,
                true_value=lowest.true_value,
                evidence=lowest.evidence,
                policy_version=lowest.policy_version,
                template_text=lowest.template,
                locale=lowest.language,
                recipient_count=len(group),
            )
            # Every recipient of a claim gets the same bytes (a new toast's differ only by the
            # host in why_url): serialise once per distinct message, not once per socket.
            texts: dict[tuple, dict] = {}
            for consumer, decision in group:
                message = consumer.claim_message(decision, public_id)
                text_key = (message["type"], message.get("why_url"))
                event = texts.get(text_key)
                if event is None:
                    event = texts[text_key] = _event(message)
                outgoing.append((consumer, event))
        for consumer in recipients:
            consumer.force_snapshot = False
            consumer.suspended.clear()  # what this round did not restore is no longer true
        if retry_in_s is not None:
            self._retry_later(product_id, retry_in_s)
        return await _send_all(outgoing)

    def _degrade(self) -> None:
        self._degraded = True
        self._presence_seen.clear()

    async def _visitors(self, product_id: int) -> dict[str, tuple[str, str]]:
        """The product's presence. A round caused only by a ledger change (a purchase) reuses the
        last read while no presence change has been announced since: every change to presence is
        announced (joins, leaves, context changes, and expiries found by the refresh that runs
        every TTL/3 in each process holding the product's sockets), so the read is still current.
        Reused for at most TTL/3, and never while the subscription that carries those
        announcements is down (then presence is read, fails, and the toasts are withdrawn)."""
        seen = self._presence_seen.get(product_id)
        now_s = time.monotonic()
        if seen is not None and not self._degraded and now_s - seen[0] < settings.CANDOR_PRESENCE_TTL_S / 3:
            return seen[1]
        visitors = await presence_store().visitors(product_id)
        self._presence_seen[product_id] = (now_s, visitors)
        return visitors

    def _decide_first(self, found, policy, templates, site_id: int, language) -> tuple[Decision | None, str]:
        """The first of a kind's metrics (narrowest window first) the policy lets through, or
        None and the reason the last one was refused (NO_EVIDENCE: the ledger had nothing)."""
        refusal = None
        for metric in found:
            result = decide(metric=metric, policy=policy, templates=templates, language=language)
            if isinstance(result, Decision):
                return result, ""
            refusal = result
        if refusal is None:
            return None, RefusalReason.NO_EVIDENCE
        self._refused(site_id, refusal.kind, refusal.reason, refusal.policy_version)
        return None, refusal.reason

    def _refused(self, site_id: int, kind: str, reason: str, policy_version: str) -> None:
        refusals[(site_id, kind, str(reason), policy_version)] += 1

    def _retry_later(self, product_id: int, delay_s: float) -> None:
        """A toast held back by a gap or a silence gets another chance when it ends."""
        if product_id in self._retries:
            return
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._retries.pop(product_id, None)
            self.on_change(product_id)

        self._retries[product_id] = loop.call_later(delay_s, fire, context=_hub_context())

    def session_paused(self, visitor: str) -> bool:
        session = self._sessions.get(visitor)
        return session is not None and session.paused and time.monotonic() - session.seen_s <= SESSION_S

    def session(self, visitor: str) -> "Session":
        """This visitor's visit (30 minutes since last seen) in this process."""
        now_s = time.monotonic()
        session = self._sessions.get(visitor)
        if session is None or now_s - session.seen_s > SESSION_S:
            if len(self._sessions) > 100_000:
                self._sessions = {v: s for v, s in self._sessions.items() if now_s - s.seen_s <= SESSION_S}
            session = self._sessions[visitor] = Session(seen_s=now_s)
        session.seen_s = now_s
        return session

    # --- background: subscription and presence refresh ---------------------------------
    async def _ensure_started(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            loop = asyncio.get_running_loop()
            if self._redis_url:
                ready = loop.create_future()
                self._tasks.append(loop.create_task(self._subscribe(ready), context=_hub_context()))
                try:
                    await asyncio.wait_for(asyncio.shield(ready), timeout=5)
                except (TimeoutError, RedisError):
                    log.warning("change subscription not ready; retrying in the background")
            self._tasks.append(loop.create_task(self._refresh_forever(), context=_hub_context()))
            if settings.CANDOR_GC_FULL_S > 0:
                pacer = GcPacer(check_s=GC_CHECK_S, full_s=settings.CANDOR_GC_FULL_S)
                self._tasks.append(loop.create_task(pacer.run(self.socket_count), context=_hub_context()))
            self._started = True

    async def _stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        self._started = False
        for task in tasks:
            task.cancel()
        # Background tasks end by cancellation; anything else they raised was already logged.
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _subscribe(self, ready: asyncio.Future) -> None:
        backoff_s = 0.1
        while True:
            pubsub = presence_store().redis.pubsub()
            try:
                await pubsub.subscribe(CHANGES_CHANNEL)
                # Wait for the confirmation so a change published right after join is heard.
                while True:
                    confirmation = await pubsub.get_message(timeout=1.0)
                    if confirmation and confirmation["type"] == "subscribe":
                        break
                if not ready.done():
                    ready.set_result(True)
                if self._degraded or backoff_s > 0.1:
                    await self._recovered()
                backoff_s = 0.1
                async for message in pubsub.listen():
                    if message["type"] != "message":
                        continue
                    origin, _, product = message["data"].decode().partition(":")
                    if origin != self.origin and product.isdigit():
                        if origin != LEDGER_ORIGIN:
                            self._presence_seen.pop(int(product), None)
                        self.on_change(int(product))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("change subscription lost (%s); reconnecting", exc)
                self._degrade()
                await asyncio.sleep(backoff_s)
                backoff_s = min(backoff_s * 2, 2.0)
            finally:
                try:
                    await pubsub.aclose()
                except (RedisError, OSError):
                    pass

    async def _recovered(self) -> None:
        """After Redis comes back: re-enter presence and give every socket a fresh snapshot."""
        self._degraded = False
        self._presence_seen.clear()
        await self.refresh_now()
        for product_id, members in list(self.sockets.items()):
            for consumer in members:
                consumer.force_snapshot = True
            self.on_change(product_id)

    async def refresh_now(self) -> None:
        ttl_s = settings.CANDOR_PRESENCE_TTL_S
        store = presence_store()
        # The very member the socket entered with (its country and returning hint included): a
        # refresh under another member would outlive the socket's `hide()` by up to one TTL, a
        # viewer counted after they left.
        entries = [c.presence_entry() for members in self.sockets.values() for c in members if c.counted]
        await store.refresh(entries, ttl_s=ttl_s)
        site_ids = {c.site_id for members in self.sockets.values() for c in members}
        for product_id in await store.prune(list(self.sockets), site_ids):
            await self.changed(product_id)

    async def _refusals_flush(self) -> None:
        if not refusals:
            return
        counts = dict(refusals)
        refusals.clear()
        try:
            await database_sync_to_async(refusal_counts_add)(counts)
        except Exception:  # the counts are for the admin; losing one flush must not stop refreshes
            log.exception("could not record policy refusals")

    def _tick_ledger_claims(self) -> None:
        """Ledger claims age with the clock ("bought 8 minutes ago", windows rolling on): every
        refresh, products showing one get a round, so minutes advance and expired claims go."""
        for product_id, members in list(self.sockets.items()):
            if any(kind in LEDGER_KINDS for c in members for kind in c.shown):
                self.on_change(product_id)

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(settings.CANDOR_PRESENCE_TTL_S / 3)
            try:
                was_degraded = self._degraded
                self._tick_ledger_claims()
                await self._refusals_flush()
                await self.exposures_flush()
                await self.refresh_now()
                if was_degraded and not self._redis_url:
                    await self._recovered()
            except RedisError as exc:
                log.warning("presence refresh failed (%s)", exc)
                self._degrade()
                for members in list(self.sockets.values()):
                    await _send_all([(c, _event(m)) for c in members for m in c.withdraw_all_messages()])


# --- ledger changes, after commit --------------------------------------------------------


def ledger_changed_on_commit(product_ids) -> None:
    """After the current transaction commits, tell every process these products' ledger
    metrics changed (a purchase, refund or cancel landed)."""
    ids = sorted({int(pid) for pid in product_ids if pid})
    if ids:
        transaction.on_commit(lambda: ledger_changed_now(ids))


_sync_redis = None


def ledger_changed_now(product_ids: list[int], *, origin: str = LEDGER_ORIGIN) -> None:
    """Called from sync code (views, tasks). With Redis: one PUBLISH per product, heard by every
    process's hub. Embedded: straight to this process's hubs, on their own loops."""
    global _sync_redis
    url = settings.CANDOR_REDIS_URL
    if url:
        import redis

        try:
            if _sync_redis is None:
                _sync_redis = redis.Redis.from_url(url)
            with _sync_redis.pipeline(transaction=False) as pipe:
                for product_id in product_ids:
                    pipe.publish(CHANGES_CHANNEL, f"{origin}:{product_id}")
                pipe.execute()
        except RedisError as exc:
            # The purchase is committed; viewers see it on the next round (a refresh tick or
            # a presence change). It is the claim that is late, never the ledger.
            log.warning("could not publish a ledger change: %s", exc)
        return
    for loop, hub in list(_hubs.items()):
        for product_id in product_ids:
            try:
                loop.call_soon_threadsafe(hub.on_change, product_id, context=_hub_context())
            except RuntimeError:  # that loop is closed
                pass


def _event(message) -> dict:
    """The ASGI event that sends `message`: built once, shared by every socket that gets it."""
    return {"type": "websocket.send", "text": json.dumps(message, separators=(",", ":"))}


def _round_inputs(site_id: int, product_id: int, at, category: str):
    """One database hop per round: the site's policy catalog (cached), the ledger metrics and the
    product's name. The name is read each round, not kept from the socket's handshake: a socket
    open for an hour would otherwise log a name the product no longer had (issue 20)."""
    return (
        policy_catalog_get(site_id),
        metrics.product_ledger_metrics(product_id=product_id, at=at, category=category),
        product_name_get(product_id=product_id),
    )


# A send to a healthy socket only copies bytes into its buffer (tens of µs). One timer guards a
# chunk of sends: if it fires, the send in flight is the stalled one (its client is not reading),
# and that socket is moved to its own outbox so the shared loop never waits for it again. The
# frame it was sending is already in its buffer: cancelling the wait for the drain loses nothing.
SEND_STALL_S = 0.05
SENDS_PER_TIMER = 128


async def _send_all(outgoing: list[tuple["WidgetConsumer", dict]]) -> int:
    """Send each message in turn: a plain loop of sends is the fastest fan-out (the raw ceiling in
    bench/fanout.py); a socket that stalls is moved off it, so one slow client does not hold up
    the rest. Returns how many messages went out."""
    pending = [(consumer, event) for consumer, event in outgoing if event]
    index = 0
    while index < len(pending):
        stop = min(len(pending), index + SENDS_PER_TIMER)
        current = None
        try:
            async with asyncio.timeout(SEND_STALL_S):
                while index < stop:
                    current, event = pending[index]
                    index += 1
                    if current.outbox is not None:
                        current.outbox_put(event)
                        continue
                    try:
                        await current.base_send(event)
                    except Exception as exc:  # closing under us: the rest still get theirs
                        log.debug("send failed: %s", exc)
        except TimeoutError:
            log.info("a socket stalled; its messages now go through its own outbox")
            if current is not None:
                current.outbox_start()
        if index < len(pending):
            # A send to a healthy socket never suspends: without this, a round to thousands of
            # sockets would hold the event loop, and every request this process serves meanwhile
            # (a purchase's ingest included), for its whole length (bench/e2e.py).
            await asyncio.sleep(0)
    return len(pending)


_hubs: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def hub_get() -> Hub:
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub

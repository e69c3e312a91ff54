"""`python manage.py simulate_shoppers --shoppers N --minutes M`: real traffic for the demo.

Each simulated shopper is a distinct visitor (its own User-Agent, as identity is IP + UA) that goes
through the public interfaces only, like a browser: it loads product pages over HTTP, opens the
widget's socket with the page's Origin and reports the page visible, dwells, sometimes adds to the
cart (the browser event and the shop's own cart form) and sometimes checks out through the demo
checkout, whose backend reports the purchase to Candor with a signature. Nothing is written to
any table directly, so every toast the demo shows is true. It prints what it does.

Each shopper also has an address of its own when the demo is served on this machine: Candor
counts at most two visitors per client address (SPEC 7), and Linux routes all of 127.0.0.0/8 to
the loopback interface, so each simulated shopper connects from its own 127.x.y.z, as shoppers at
home each come from their own. Served elsewhere, the shoppers share this machine's address, and
Candor (rightly) counts at most two of them.

Each time a shopper steps away, another one (a new visitor) takes its place, so a run yields
many visitor-days for the experiment dashboard. At checkout the shopper does what the cart page's
script does: asks Candor for its visitor token and sends it with the order.

How a simulated shopper reacts to what it sees is a model, there to exercise the experiment
dashboard (SPEC 4), not a claim about real people: seeing a toast multiplies its chance to buy
by 1 + --toast-effect, and seeing a number above --reactance-at multiplies it by
1 + --reactance-effect instead (negative: reactance).
"""

import asyncio
import functools
import http.client
import http.cookiejar
import ipaddress
import json
import random
import re
import socket
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

import websockets
from django.core.management.base import BaseCommand, CommandError

from storefront_demo.models import DemoProduct

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


def loopback_served(base: str) -> bool:
    """True when `base` is served on this machine's loopback (so any 127.x.y.z can reach it)."""
    host = urllib.parse.urlsplit(base).hostname or ""
    try:
        return all(
            ipaddress.ip_address(info[4][0]).is_loopback and info[0] == socket.AF_INET
            for info in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        )
    except (OSError, ValueError):
        return False


def shopper_address(n: int, visit: int) -> str:
    """A loopback address of this shopper's own: 127.<n>.<visit>. Never 127.0.0.x, which a test
    or a deployment may treat as a trusted proxy."""
    return f"127.{1 + (n - 1) % 254}.{(visit - 1) // 254 % 256}.{1 + (visit - 1) % 254}"


class _SourceHTTPHandler(urllib.request.HTTPHandler):
    """Plain HTTP from a given source address."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    def http_open(self, req):
        connection = functools.partial(http.client.HTTPConnection, source_address=(self.source, 0))
        return self.do_open(connection, req)


@dataclass
class Tally:
    pages: int = 0
    carts: int = 0
    orders: int = 0
    toasts: int = 0
    errors: int = 0
    texts: dict[str, int] = field(default_factory=dict)


class Shopper:
    def __init__(self, n: int, *, base: str, options: dict, tally: Tally, log) -> None:
        self.n, self.base, self.options, self.tally, self.log = n, base.rstrip("/"), options, tally, log
        self.origin = "{0.scheme}://{0.netloc}".format(urllib.parse.urlsplit(self.base))
        # A simulation's dice, seeded for repeatable runs: nothing here is a secret.
        self.rng = random.Random(options["seed"] * 1000 + n)  # noqa: S311  # nosec B311  # not a secret
        self.visit = 0
        self.bind = loopback_served(self.base)
        self.arrive()

    def arrive(self) -> None:
        """A new shopper at this place: its own browser (User-Agent), cookies and impressions."""
        self.visit += 1
        self.user_agent = f"{UA} demo-shopper/{self.n}.{self.visit}"
        self.jar = http.cookiejar.CookieJar()
        self.address = shopper_address(self.n, self.visit) if self.bind else None
        handlers = [urllib.request.HTTPCookieProcessor(self.jar)]
        if self.address:
            handlers.append(_SourceHTTPHandler(self.address))
        self.opener = urllib.request.build_opener(*handlers)
        self.seen_max = -1  # the highest number seen on a toast this visit; -1: no toast yet

    # --- HTTP, as a browser would send it ---------------------------------------------------
    def _http(self, path: str, *, data: dict | None = None, json_body: dict | None = None) -> tuple[int, str]:
        headers = {"User-Agent": self.user_agent}
        body = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.update({"Content-Type": "application/json", "Origin": self.origin})
        elif data is not None:
            body = urllib.parse.urlencode(data).encode()
            headers.update({"Content-Type": "application/x-www-form-urlencoded", "Referer": self.base + "/"})
        request = urllib.request.Request(self.base + path, data=body, headers=headers)  # noqa: S310
        try:
            with self.opener.open(request, timeout=15) as response:
                return response.status, response.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            return exc.code, ""

    async def http(self, path: str, **kwargs) -> tuple[int, str]:
        return await asyncio.to_thread(self._http, path, **kwargs)

    def say(self, message: str) -> None:
        self.log(f"shopper {self.n:>3} {message}")

    # --- a visit ------------------------------------------------------------------------------
    async def run(self, deadline: float, skus: list[str], weights: list[float]) -> None:
        while time.monotonic() < deadline:
            sku = self.rng.choices(skus, weights)[0]
            await self.view(sku, deadline)
            if self.rng.random() < self.options["leave"]:
                await asyncio.sleep(self.rng.uniform(*self.options["dwell"]))  # away for a while
                self.arrive()  # and someone else comes in
            else:
                await asyncio.sleep(self.rng.uniform(0.5, 2.0))

    async def view(self, sku: str, deadline: float) -> None:
        status, html = await self.http(f"/product/{sku}/")
        if status != 200:
            self.tally.errors += 1
            self.say(f"could not load {sku} ({status})")
            await asyncio.sleep(self.rng.uniform(2, 5))
            return
        self.tally.pages += 1
        key = re.search(r'data-key="([^"]+)"', html)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
        if key is None:
            self.say(f"views {sku} (no widget on the page)")
            return
        url = self.base.replace("http", "ws", 1) + f"/ws/v1/widget?key={key.group(1)}&product={sku}"
        self.say(f"views {sku}")
        try:
            source = {"local_addr": (self.address, 0)} if self.address else {}
            async with websockets.connect(
                url, origin=self.origin, user_agent_header=self.user_agent, open_timeout=10, **source
            ) as ws:
                await ws.send(json.dumps({"type": "page", "product": sku, "visible": True}))
                dwell = self.rng.uniform(*self.options["dwell"])
                end = min(deadline, time.monotonic() + dwell)
                carted = False
                while time.monotonic() < end:
                    try:
                        raw = await asyncio.wait_for(ws.recv(), timeout=max(0.05, end - time.monotonic()))
                    except TimeoutError:
                        break
                    message = json.loads(raw)
                    if message.get("type") in ("notification", "update"):
                        self.seen_max = max(self.seen_max, self.intensity(message))
                    if message.get("type") == "notification":
                        self.tally.toasts += 1
                        self.tally.texts[message["text"]] = self.tally.texts.get(message["text"], 0) + 1
                        self.say(f"sees “{message['text']}” on {sku}")
                if self.rng.random() < self.options["cart"] and token is not None:
                    carted = await self.add_to_cart(sku, key.group(1), token.group(1))
                if carted and self.rng.random() < self.buy_chance():
                    await self.checkout(token.group(1), key.group(1))
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            self.tally.errors += 1
            self.say(f"socket to {sku} failed: {exc}")
            await asyncio.sleep(self.rng.uniform(2, 5))  # as a browser's reconnect backoff would

    async def add_to_cart(self, sku: str, key: str, token: str) -> bool:
        # What the page does: tell Candor (the browser event), then submit the shop's form.
        await self.http("/api/v1/events", json_body={"key": key, "type": "add_to_cart", "product": sku})
        status, _ = await self.http(f"/cart/add/{sku}/", data={"csrfmiddlewaretoken": token})
        if status != 200:
            self.tally.errors += 1
            self.say(f"could not add {sku} to the cart ({status})")
            return False
        self.tally.carts += 1
        self.say(f"adds {sku} to the cart")
        return True

    @staticmethod
    def intensity(message: dict) -> int:
        claim = message.get("claim") or {}
        if claim.get("metric") == "recent_purchase":
            return 1
        digits = str(claim.get("displayed", "")).rstrip("+")
        return int(digits) if digits.isdigit() else 0

    def buy_chance(self) -> float:
        """The simulation's model of a shopper's reaction (see the module docstring)."""
        chance = self.options["buy"]
        if self.seen_max > self.options["reactance_at"]:
            chance *= 1 + self.options["reactance_effect"]
        elif self.seen_max >= 0:
            chance *= 1 + self.options["toast_effect"]
        return min(1.0, max(0.0, chance))

    async def checkout(self, token: str, key: str) -> None:
        # What the cart page's script does: Candor.visitorToken(), sent along with the order.
        form = {"csrfmiddlewaretoken": token}
        status, body = await self.http("/api/v1/visitor-token", json_body={"key": key})
        if status == 200 and isinstance(json.loads(body).get("token"), str):
            form["visitor_token"] = json.loads(body)["token"]
        status, html = await self.http("/checkout/", data=form)
        number = re.search(r"<h1>Order ([A-Z0-9-]+)</h1>", html)
        if status != 200 or number is None:
            self.tally.errors += 1
            self.say(f"checkout failed ({status})")
            return
        self.tally.orders += 1
        self.say(f"places order {number.group(1)}")


class Command(BaseCommand):
    help = "Simulate shoppers browsing, carting and buying in the demo store through its public interfaces."

    def add_arguments(self, parser):
        parser.add_argument("--shoppers", type=int, default=8)
        parser.add_argument("--minutes", type=float, default=5.0)
        parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="where the demo is served")
        parser.add_argument("--dwell", type=float, nargs=2, default=(8.0, 40.0), metavar=("MIN_S", "MAX_S"))
        parser.add_argument("--cart-rate", type=float, default=0.25, help="chance a page view adds to cart")
        parser.add_argument("--buy-rate", type=float, default=0.4, help="chance an add to cart is bought")
        parser.add_argument("--leave-rate", type=float, default=0.15, help="chance a shopper steps away")
        parser.add_argument("--toast-effect", type=float, default=0.3, help="buy chance change after a toast")
        parser.add_argument("--reactance-at", type=int, default=15, help="numbers above this backfire")
        parser.add_argument(
            "--reactance-effect", type=float, default=-0.4, help="buy chance change after a number above it"
        )
        parser.add_argument("--seed", type=int, default=1)

    def handle(self, *args, **options):
        if options["shoppers"] < 1 or options["minutes"] <= 0:
            raise CommandError("--shoppers must be at least 1 and --minutes above 0")
        skus = list(DemoProduct.objects.values_list("sku", flat=True))
        if not skus:
            raise CommandError("No demo products: run `python manage.py seed_demo` (bin/demo does) first.")
        # A few products are popular, most are not: weights fall off like a real catalog's.
        weights = [1 / (rank + 1) for rank in range(len(skus))]
        settings = {
            "dwell": tuple(options["dwell"]),
            "cart": options["cart_rate"],
            "buy": options["buy_rate"],
            "leave": options["leave_rate"],
            "seed": options["seed"],
            "toast_effect": options["toast_effect"],
            "reactance_at": options["reactance_at"],
            "reactance_effect": options["reactance_effect"],
        }
        tally = Tally()
        started = time.monotonic()

        def log(line: str) -> None:
            self.stdout.write(f"[{time.monotonic() - started:7.1f}s] {line}")

        async def main() -> None:
            deadline = time.monotonic() + options["minutes"] * 60
            shoppers = [
                Shopper(n, base=options["base_url"], options=settings, tally=tally, log=log)
                for n in range(1, options["shoppers"] + 1)
            ]
            await asyncio.gather(*(s.run(deadline, skus, weights) for s in shoppers))

        self.stdout.write(
            f"Simulating {options['shoppers']} shoppers for {options['minutes']:g} minutes "
            f"at {options['base_url']}"
        )
        asyncio.run(main())
        self.stdout.write(
            f"Done: {tally.pages} page views, {tally.carts} adds to cart, {tally.orders} orders, "
            f"{tally.toasts} toasts seen, {tally.errors} errors."
        )
        for text, count in sorted(tally.texts.items(), key=lambda item: -item[1])[:10]:
            self.stdout.write(f"  {count:>4} × “{text}”")

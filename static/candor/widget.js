/*! Candor widget — truthful live social proof. https://github.com/ (see README) */
(function () {
  "use strict";
  if (window.Candor) return;

  var script = document.currentScript ||
    document.querySelector('script[data-key][src*="candor/widget.js"]');
  if (!script || !script.getAttribute("data-key")) return;

  var src = new URL(script.src, location.href);
  var wsBase = src.origin.replace(/^http/, "ws");
  var key = script.getAttribute("data-key");
  var product = script.getAttribute("data-product") || productFromJsonLd();
  var socket = null;
  var backoffMs = 500;
  var paused = false;
  var toasts = {}; // metric -> {id, el, text, timer, remaining, started}
  var root, region;

  function productFromJsonLd() {
    var nodes = document.querySelectorAll('script[type="application/ld+json"]');
    for (var i = 0; i < nodes.length; i++) {
      try {
        var data = JSON.parse(nodes[i].textContent);
        var items = [].concat(data["@graph"] || data);
        for (var j = 0; j < items.length; j++) {
          if (items[j] && items[j]["@type"] === "Product" && (items[j].sku || items[j].productID)) {
            return String(items[j].sku || items[j].productID);
          }
        }
      } catch (e) { /* not our JSON-LD */ }
    }
    return null;
  }

  function hints() {
    var context = { locale: navigator.language || "" };
    var attrs = script.attributes;
    for (var i = 0; i < attrs.length; i++) {
      var name = attrs[i].name;
      if (name.indexOf("data-hint-") === 0) context["hint_" + name.slice(10)] = attrs[i].value;
    }
    return context;
  }

  var CSS =
    ":host{all:initial}" +
    ".stack{position:fixed;left:16px;bottom:16px;z-index:2147483000;display:flex;flex-direction:column;gap:8px;max-width:min(360px,calc(100vw - 32px));font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif}" +
    ".toast{background:#fff;color:#1d232b;border:1px solid #d8dde3;border-radius:10px;box-shadow:0 6px 24px rgba(0,0,0,.12);padding:10px 36px 10px 12px;position:relative;animation:in .25s ease-out}" +
    ".why{color:#2f5d50;font-size:12px;margin-left:6px}" +
    ".close{position:absolute;top:4px;right:4px;border:0;background:transparent;font-size:18px;line-height:1;padding:6px;cursor:pointer;color:#5b6672}" +
    ".pause{border:0;background:transparent;color:#5b6672;font-size:11px;padding:2px 0;cursor:pointer;text-decoration:underline;display:block;margin-top:4px}" +
    ".close:focus-visible,.pause:focus-visible,.why:focus-visible{outline:2px solid #2f5d50;outline-offset:2px}" +
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}" +
    "@keyframes in{from{opacity:0;transform:translateY(8px)}to{opacity:1;transform:none}}" +
    "@media (prefers-reduced-motion:reduce){.toast{animation:none}}";

  function mount() {
    if (root) return;
    var host = document.createElement("div");
    host.setAttribute("data-candor", "");
    var shadow = host.attachShadow({ mode: "open" });
    // A constructed stylesheet needs no 'unsafe-inline' under a strict CSP.
    if (shadow.adoptedStyleSheets !== undefined && window.CSSStyleSheet && CSSStyleSheet.prototype.replaceSync) {
      var sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      shadow.adoptedStyleSheets = [sheet];
    } else {
      var style = document.createElement("style");
      style.textContent = CSS;
      shadow.appendChild(style);
    }
    // The live region exists before the first toast, so screen readers announce it.
    region = document.createElement("div");
    region.className = "stack";
    region.setAttribute("role", "status");
    region.setAttribute("aria-live", "polite");
    shadow.appendChild(region);
    (document.body || document.documentElement).appendChild(host);
    root = shadow;
  }

  function send(message) {
    if (socket && socket.readyState === 1) socket.send(JSON.stringify(message));
  }

  function sendPage() {
    if (!product) return;
    send({ type: "page", product: product, visible: document.visibilityState === "visible", context: hints() });
  }

  function startTimer(t) {
    clearTimeout(t.timer);
    t.started = Date.now();
    t.timer = setTimeout(function () { remove(t); }, t.remaining);
  }

  function holdTimer(t) {
    clearTimeout(t.timer);
    t.remaining = Math.max(1000, t.remaining - (Date.now() - t.started));
  }

  function remove(t) {
    clearTimeout(t.timer);
    if (t.el.parentNode) t.el.parentNode.removeChild(t.el);
    if (toasts[t.metric] === t) delete toasts[t.metric];
  }

  function show(message) {
    mount();
    var metric = message.claim && message.claim.metric || message.kind;
    if (toasts[metric]) remove(toasts[metric]);
    var el = document.createElement("div");
    el.className = "toast";
    var text = document.createElement("span");
    text.textContent = message.text;
    var why = document.createElement("a");
    why.className = "why";
    why.textContent = "Why?";
    why.href = message.why_url;
    why.target = "_blank";
    why.rel = "noopener";
    why.setAttribute("aria-label", "Why am I seeing this?");
    var close = document.createElement("button");
    close.className = "close";
    close.type = "button";
    close.textContent = "\u00d7";
    close.setAttribute("aria-label", "Dismiss notification");
    var stop = document.createElement("button");
    stop.className = "pause";
    stop.type = "button";
    stop.textContent = "Pause notifications";
    el.appendChild(text);
    el.appendChild(why);
    el.appendChild(close);
    el.appendChild(stop);
    var t = { id: message.id, metric: metric, el: el, textEl: text, whyEl: why, remaining: Math.max(5000, message.ttl_ms || 0) };
    toasts[metric] = t;
    close.addEventListener("click", function () { dismiss(t); });
    stop.addEventListener("click", pauseAll);
    el.addEventListener("keydown", function (e) { if (e.key === "Escape") dismiss(t); });
    el.addEventListener("mouseenter", function () { holdTimer(t); });
    el.addEventListener("mouseleave", function () { startTimer(t); });
    el.addEventListener("focusin", function () { holdTimer(t); });
    el.addEventListener("focusout", function () { startTimer(t); });
    region.appendChild(el);
    startTimer(t);
  }

  function update(message) {
    var t = toasts[message.claim && message.claim.metric];
    if (!t) return; // a toast that has gone stays gone: an update never re-opens one
    t.id = message.id;
    t.textEl.textContent = message.text;
    t.whyEl.href = t.whyEl.href.replace(/\/why\/\d+$/, "/why/" + message.id);
  }

  function withdraw(message) {
    for (var metric in toasts) {
      if (toasts[metric].id === message.id) remove(toasts[metric]);
    }
  }

  function dismiss(t) {
    send({ type: "dismiss", id: t.id });
    remove(t);
  }

  function pauseAll() {
    paused = true;
    send({ type: "pause" });
    for (var metric in toasts) remove(toasts[metric]);
  }

  function connect() {
    if (!product || paused) return;
    var url = wsBase + "/ws/v1/widget?key=" + encodeURIComponent(key) + "&product=" + encodeURIComponent(product);
    var ws = new WebSocket(url);
    socket = ws;
    ws.onopen = function () { backoffMs = 500; sendPage(); };
    ws.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (paused) return;
      if (message.type === "notification") show(message);
      else if (message.type === "update") update(message);
      else if (message.type === "withdraw") withdraw(message);
    };
    ws.onclose = function (event) {
      if (socket !== ws) return;
      socket = null;
      // What was shown can no longer be kept true: take it down.
      for (var metric in toasts) remove(toasts[metric]);
      if (paused || event.code === 1008 || event.code === 1009) return;
      // Exponential backoff with full jitter, so a restart is not met by a thundering herd.
      var delay = Math.random() * backoffMs;
      backoffMs = Math.min(backoffMs * 2, 60000);
      setTimeout(connect, delay);
    };
  }

  document.addEventListener("visibilitychange", sendPage);

  window.Candor = {
    // The page reports an add-to-cart (SPEC 5, browser events). keepalive: it survives the
    // navigation a cart form usually triggers.
    addToCart: function (sku) {
      sku = sku ? String(sku) : product;
      if (!sku || paused) return;
      try {
        fetch(src.origin + "/api/v1/events", {
          method: "POST",
          keepalive: true,
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ key: key, type: "add_to_cart", product: sku, context: hints() })
        });
      } catch (e) { /* never break the store's page */ }
    },
    setProduct: function (sku) {
      product = sku ? String(sku) : null;
      for (var metric in toasts) remove(toasts[metric]);
      if (socket) sendPage(); else connect();
    }
  };

  connect();
})();

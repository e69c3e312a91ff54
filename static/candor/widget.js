/*! Candor widget — truthful live social proof. Integrating it: docs/integrating.md */
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
  // Global Privacy Control is "do not count me": no socket, no event, nothing sent, and so no
  // toasts (a page is told only what it is counted for). Consent cannot override it.
  var gpc = navigator.globalPrivacyControl === true;
  // data-consent="required": nothing is sent until Candor.consent().
  var consented = script.getAttribute("data-consent") !== "required";
  var socket = null;
  var backoffMs = 500;
  var paused = false;
  var toasts = {}; // metric -> toast state
  var host, stack, region;

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

  function allowed() {
    return !gpc && consented;
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
    ".toast{background:#fff;color:#1d232b;border:1px solid #d8dde3;border-radius:10px;box-shadow:0 6px 24px rgba(0,0,0,.12);padding:10px 40px 6px 12px;position:relative;animation:in .25s ease-out}" +
    ".row{display:flex;gap:16px;margin-top:2px}" +
    ".why,.pause{display:inline-flex;align-items:center;min-height:24px;font:inherit;font-size:12px;color:#2f5d50}" +
    ".pause{border:0;background:none;padding:0;cursor:pointer;text-decoration:underline;color:#4f5a66}" +
    ".close{position:absolute;top:4px;right:4px;border:0;background:none;font:inherit;font-size:20px;line-height:1;width:32px;height:32px;cursor:pointer;color:#4f5a66}" +
    "a:focus-visible,button:focus-visible{outline:2px solid #2f5d50;outline-offset:2px}" +
    ".sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}" +
    "@keyframes in{from{opacity:0;transform:translateY(8px)}to{opacity:1;transform:none}}" +
    "@media (prefers-reduced-motion:reduce){.toast{animation:none}}";

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text) node.textContent = text;
    return node;
  }

  function mount() {
    if (host || !document.body) return;
    host = el("div");
    host.setAttribute("data-candor", "");
    var shadow = host.attachShadow({ mode: "open" });
    // A constructed stylesheet needs no 'unsafe-inline' under a strict CSP.
    if (shadow.adoptedStyleSheets && window.CSSStyleSheet && CSSStyleSheet.prototype.replaceSync) {
      var sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      shadow.adoptedStyleSheets = [sheet];
    } else {
      shadow.appendChild(el("style", "", CSS));
    }
    // The live region exists before the first toast, so its text is announced; it holds only
    // the message, never the controls. Focus is never moved to a toast.
    region = el("div", "sr");
    region.setAttribute("role", "status");
    region.setAttribute("aria-live", "polite");
    stack = el("div", "stack");
    stack.setAttribute("role", "region");
    stack.setAttribute("aria-label", "Notifications");
    shadow.appendChild(region);
    shadow.appendChild(stack);
    document.body.appendChild(host);
  }

  function send(message) {
    if (socket && socket.readyState === 1) socket.send(JSON.stringify(message));
  }

  function sendPage() {
    if (product) send({ type: "page", product: product, visible: document.visibilityState === "visible", context: hints() });
  }

  // A toast shows for ttl_ms (at least 5 s) of time not hovered and not focused.
  function tick(t) {
    var held = t.hover || t.focus;
    if (held && t.timer) {
      clearTimeout(t.timer);
      t.timer = 0;
      t.remaining = Math.max(1000, t.remaining - (Date.now() - t.started));
    } else if (!held && !t.timer) {
      t.started = Date.now();
      t.timer = setTimeout(function () { remove(t); }, t.remaining);
    }
  }

  function remove(t) {
    clearTimeout(t.timer);
    if (t.el.parentNode) t.el.parentNode.removeChild(t.el);
    if (toasts[t.metric] === t) delete toasts[t.metric];
    if (region && region.textContent === t.text.textContent) region.textContent = "";
  }

  function clear() {
    for (var metric in toasts) remove(toasts[metric]);
  }

  function on(node, type, fn) {
    node.addEventListener(type, fn);
  }

  function show(message) {
    mount();
    if (!stack) return;
    var metric = message.claim && message.claim.metric || message.kind;
    if (toasts[metric]) remove(toasts[metric]);
    var box = el("div", "toast");
    var text = el("span", "", message.text);
    var why = el("a", "why", "Why?");
    if (/^https?:/.test(message.why_url)) why.href = message.why_url;
    why.target = "_blank";
    why.rel = "noopener";
    why.setAttribute("aria-label", "Why am I seeing this? (opens a new tab)");
    var close = el("button", "close", "\u00d7");
    close.type = "button";
    close.setAttribute("aria-label", "Dismiss notification");
    var stop = el("button", "pause", "Pause notifications");
    stop.type = "button";
    var row = el("div", "row");
    row.appendChild(why);
    row.appendChild(stop);
    box.appendChild(text);
    box.appendChild(row);
    box.appendChild(close);
    var t = { id: message.id, metric: metric, el: box, text: text, why: why, remaining: Math.max(5000, message.ttl_ms || 0) };
    toasts[metric] = t;
    on(close, "click", function () { dismiss(t); });
    on(stop, "click", pause);
    on(box, "keydown", function (e) { if (e.key === "Escape") dismiss(t); });
    on(box, "mouseenter", function () { t.hover = true; tick(t); });
    on(box, "mouseleave", function () { t.hover = false; tick(t); });
    on(box, "focusin", function () { t.focus = true; tick(t); });
    on(box, "focusout", function (e) { t.focus = box.contains(e.relatedTarget); tick(t); });
    stack.appendChild(box);
    region.textContent = message.text;
    tick(t);
  }

  function update(message) {
    var t = toasts[message.claim && message.claim.metric];
    if (!t) return; // a toast that has gone stays gone: an update never re-opens one
    t.id = message.id;
    t.text.textContent = message.text;
    t.why.href = t.why.href.replace(/\/why\/[\w-]+$/, "/why/" + encodeURIComponent(message.id));
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

  // "Pause notifications": no more toasts on this page, and the server is told. The page is
  // still counted: pausing what you see does not hide you from others' counts.
  function pause() {
    send({ type: "pause" });
    paused = true;
    clear();
  }

  function disconnect() {
    var ws = socket;
    socket = null;
    if (ws) ws.close(1000);
    clear();
  }

  function connect() {
    if (socket || !product || !allowed()) return;
    mount();
    var url = wsBase + "/ws/v1/widget?key=" + encodeURIComponent(key) + "&product=" + encodeURIComponent(product);
    var ws = new WebSocket(url);
    var opened = 0;
    socket = ws;
    ws.onopen = function () {
      opened = Date.now();
      sendPage();
      if (paused) send({ type: "pause" });
    };
    ws.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      if (socket !== ws || paused) return;
      if (message.type === "notification") show(message);
      else if (message.type === "update") update(message);
      else if (message.type === "withdraw") withdraw(message);
    };
    ws.onclose = function (event) {
      if (socket !== ws) return;
      socket = null;
      // What was shown can no longer be kept true: take it down.
      clear();
      if (event.code === 1008 || event.code === 1009) return;
      // Exponential backoff with full jitter, so a restart is not met by a thundering herd;
      // reset only after a connection that lasted.
      if (opened && Date.now() - opened > 10000) backoffMs = 500;
      var delay = Math.random() * backoffMs;
      backoffMs = Math.min(backoffMs * 2, 60000);
      setTimeout(connect, delay);
    };
  }

  document.addEventListener("visibilitychange", sendPage);
  if (!document.body) document.addEventListener("DOMContentLoaded", function () { if (allowed()) mount(); });

  window.Candor = {
    // The page reports an add-to-cart (SPEC 5, browser events). keepalive: it survives the
    // navigation a cart form usually triggers.
    addToCart: function (sku) {
      sku = sku ? String(sku) : product;
      if (!sku || !allowed()) return;
      try {
        fetch(src.origin + "/api/v1/events", {
          method: "POST",
          keepalive: true,
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({ key: key, type: "add_to_cart", product: sku, context: hints() })
        }).catch(function () {});
      } catch (e) { /* never break the store's page */ }
    },
    setProduct: function (sku) {
      sku = sku ? String(sku) : null;
      if (sku === product) return;
      product = sku;
      clear();
      if (!product) disconnect();
      else if (socket) sendPage();
      else connect();
    },
    // A token for the store's checkout to pass with the order, so the purchase can be credited to
    // this shopper's experiment arm: a Promise of an opaque string (valid 24 h), or of null under
    // GPC or without consent. Held nowhere: ask again when needed.
    visitorToken: function () {
      if (!allowed() || !window.fetch) return Promise.resolve(null);
      return fetch(src.origin + "/api/v1/visitor-token", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ key: key })
      }).then(function (r) { return r.ok ? r.json() : {}; })
        .then(function (d) { return typeof d.token === "string" ? d.token : null; })
        .catch(function () { return null; });
    },
    // Consent mode: Candor.consent() starts the widget, Candor.consent(false) stops it and
    // removes this page from every count. Under Global Privacy Control it does nothing.
    consent: function (granted) {
      consented = granted !== false;
      if (consented) connect(); else disconnect();
    }
  };

  connect();
})();

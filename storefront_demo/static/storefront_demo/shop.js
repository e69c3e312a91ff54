/* The demo shop's only script (external: the pages allow no inline script). When a shopper adds
   to the cart, the page tells Candor, as a store would: Candor.addToCart(sku). On the cart page it
   asks the widget for the shopper's visitor token and sends it with the order, so the purchase
   can be credited to the shopper's experiment arm (null under GPC or without consent). */
(function () {
  "use strict";
  var tokenField = document.querySelector("input[data-candor-visitor-token]");
  function fillToken() {
    if (!window.Candor || !window.Candor.visitorToken) return;
    window.Candor.visitorToken().then(function (token) { if (token) tokenField.value = token; });
  }
  if (tokenField) {
    var widget = document.querySelector('script[data-key][src*="candor/widget.js"]');
    if (window.Candor) fillToken();
    else if (widget) widget.addEventListener("load", fillToken);
  }
  var forms = document.querySelectorAll("form[data-add-to-cart]");
  for (var i = 0; i < forms.length; i++) {
    forms[i].addEventListener("submit", function (event) {
      var sku = event.currentTarget.getAttribute("data-add-to-cart");
      if (window.Candor && window.Candor.addToCart) window.Candor.addToCart(sku);
    });
  }
})();

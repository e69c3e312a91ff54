/* The demo shop's only script (external: the pages allow no inline script). When a shopper adds
   to the cart, the page tells Candor, as a store would: Candor.addToCart(sku). */
(function () {
  "use strict";
  var forms = document.querySelectorAll("form[data-add-to-cart]");
  for (var i = 0; i < forms.length; i++) {
    forms[i].addEventListener("submit", function (event) {
      var sku = event.currentTarget.getAttribute("data-add-to-cart");
      if (window.Candor && window.Candor.addToCart) window.Candor.addToCart(sku);
    });
  }
})();

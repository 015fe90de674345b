// Starts ReDoc on /redoc (an external script: the CSP allows no inline script). Search is off: it
// runs in a worker made from a blob: URL, which the CSP (no worker-src blob:) blocks.
"use strict";
(() => {
  const root = document.getElementById("redoc");
  window.Redoc.init(root.dataset.openapiUrl, { disableSearch: true }, root);
})();

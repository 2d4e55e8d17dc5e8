/* killboard kill page: "Copy as EFT" puts the fitting's EFT text on the clipboard. */
"use strict";

(function () {
  const button = document.getElementById("copy-eft");
  const text = document.getElementById("eft");
  const status = document.getElementById("copy-status");
  if (!button || !text) return;
  button.hidden = false;
  button.addEventListener("click", function () {
    const eft = text.textContent;
    const done = function (ok) { status.textContent = ok ? "copied" : "select the EFT text below and copy it"; };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(eft).then(function () { done(true); }, function () { done(false); });
    } else {
      done(false);
    }
    button.dataset.copied = eft.length;
  });
})();

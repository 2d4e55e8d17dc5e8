/* killboard search box: names complete as you type (GET /api/search), arrows pick, Enter opens.
 *
 * Without JavaScript the form still works: /search?q= opens the best match.
 * Results are written with textContent only: names come from outside.
 */
"use strict";

(function () {
  const form = document.getElementById("search");
  if (!form) return;
  const input = form.querySelector("input[name=q]");
  const list = document.getElementById("search-results");
  let results = [];
  let active = -1;
  let pending = null;
  let asked = "";

  function render() {
    list.textContent = "";
    results.forEach(function (r, i) {
      const li = document.createElement("li");
      li.id = "search-result-" + i;
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", i === active ? "true" : "false");
      const a = document.createElement("a");
      a.href = r.url;
      a.textContent = r.name;
      const kind = document.createElement("span");
      kind.className = "sub";
      kind.textContent = " " + r.kind;
      a.appendChild(kind);
      li.appendChild(a);
      list.appendChild(li);
    });
    list.hidden = results.length === 0;
    input.setAttribute("aria-expanded", results.length ? "true" : "false");
    if (active >= 0) input.setAttribute("aria-activedescendant", "search-result-" + active);
    else input.removeAttribute("aria-activedescendant");
  }

  function ask() {
    pending = null;
    const q = input.value.trim();
    if (q === asked) return;
    asked = q;
    if (!q) { results = []; active = -1; render(); return; }
    const lang = (window.KB && window.KB.lang) || "en";
    fetch("/api/search?q=" + encodeURIComponent(q) + "&lang=" + lang)
      .then(function (r) { return r.ok ? r.json() : { results: [] }; })
      .then(function (data) {
        if (input.value.trim() !== q) return; // typed on meanwhile
        results = data.results || [];
        active = results.length ? 0 : -1;
        render();
      })
      .catch(function () { /* offline: the form still submits */ });
  }

  input.addEventListener("input", function () {
    clearTimeout(pending);
    pending = setTimeout(ask, 120);
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      if (!results.length) return;
      event.preventDefault();
      const step = event.key === "ArrowDown" ? 1 : -1;
      active = (active + step + results.length) % results.length;
      render();
    } else if (event.key === "Enter" && active >= 0 && results[active]) {
      event.preventDefault();
      location.assign(results[active].url);
    } else if (event.key === "Escape") {
      results = []; active = -1; render();
    }
  });
})();

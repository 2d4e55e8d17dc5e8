/* killboard entity page: feed.js keeps its kills live; this keeps its figures live.
 *
 * When a new kill row arrives, the figures are fetched again (at most once a second) and
 * written with textContent only.
 */
"use strict";

(function () {
  const page = document.getElementById("entity");
  const feed = document.getElementById("feed");
  if (!page || !feed || !window.KB) return;
  const url = page.dataset.figures;
  let timer = null;

  function number(n) { return Number(n || 0).toLocaleString("en-US"); }

  const FORMAT = {
    kills: number, losses: number, solo_kills: number,
    isk_destroyed: window.KB.isk, isk_lost: window.KB.isk,
    efficiency: function (e) { return e === null || e === undefined ? "–" : e + " %"; },
  };

  function show(figures) {
    for (const dd of page.querySelectorAll("[data-figure]")) {
      const key = dd.dataset.figure;
      if (key in figures && FORMAT[key]) dd.textContent = FORMAT[key](figures[key]);
    }
    months(figures.months || []);
    for (const m of figures.months || []) {
      const row = page.querySelector('tr[data-month="' + m.month + '"]');
      if (!row) continue;
      const cells = row.querySelectorAll("td.num");
      cells[0].textContent = String(m.kills);
      if (cells.length === 3) cells[1].textContent = String(m.losses);
      cells[cells.length - 1].textContent = window.KB.isk(m.isk_destroyed);
    }
    page.dataset.updated = String(Date.now());
  }

  // The months shown moved (a quiet entity's first kill in a year, a new month): rows for the
  // new ones, newest first as the server renders them, and the heading by the server's rule.
  function months(list) {
    const body = page.querySelector("#months tbody");
    if (!body || !list.length) return;
    const wanted = list.map(function (m) { return m.month; }).reverse();
    const shown = Array.prototype.map.call(body.querySelectorAll("tr[data-month]"), function (r) { return r.dataset.month; });
    if (shown.join() === wanted.join()) return;
    const columns = page.querySelectorAll("#months thead th").length;
    body.replaceChildren();
    for (const month of wanted) {
      const tr = document.createElement("tr");
      tr.dataset.month = month;
      const label = document.createElement("td");
      label.textContent = month;
      tr.appendChild(label);
      for (let i = 1; i < columns; i++) {
        const td = document.createElement("td");
        td.className = "num";
        tr.appendChild(td);
      }
      body.appendChild(tr);
    }
    const heading = document.getElementById("months-h");
    const last = wanted[0];
    if (last === new Date().toISOString().slice(0, 7)) {
      heading.textContent = "Last 12 months";
    } else {
      heading.textContent = "12 months to " + last + " ";
      const since = document.createElement("span");
      since.className = "sub";
      since.textContent = "nothing since";
      heading.appendChild(since);
    }
  }

  function refresh() {
    timer = null;
    fetch(url, { headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (figures) { if (figures) show(figures); })
      .catch(function () { /* the next kill tries again */ });
  }

  new MutationObserver(function (changes) {
    const added = changes.some(function (c) {
      return Array.prototype.some.call(c.addedNodes, function (n) { return n.classList && n.classList.contains("new"); });
    });
    if (added && timer === null) timer = setTimeout(refresh, 1000);
  }).observe(feed, { childList: true });
})();

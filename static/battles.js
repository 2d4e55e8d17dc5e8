/* killboard battles: keeps /battles and /battle/{id} live over the WebSocket's battle channels.
   A battle frame (or a kill of the battle) fetches the page again and swaps its #live part: the
   server renders (and escapes) every name, this script never builds HTML from data. */
(function () {
  "use strict";
  const live = document.getElementById("live");
  if (!live) return;
  const channel = live.dataset.liveChannel;
  let since = Number(live.dataset.liveSeq || 0);
  let pending = null;
  let retry = 1000;

  function refresh() {
    if (pending) return;
    // At most one fetch a second, however many frames arrive.
    pending = setTimeout(function () {
      fetch(location.pathname + location.search, { headers: { Accept: "text/html" } })
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
          const current = document.getElementById("live");
          if (fresh && current) {
            const focused = document.activeElement && document.activeElement.closest("#live") ? document.activeElement.getAttribute("href") : null;
            current.replaceWith(document.importNode(fresh, true));
            if (focused) {  // keep the keyboard where it was
              const again = document.querySelector('#live a[href="' + CSS.escape(focused) + '"]');
              if (again) again.focus();
            }
          }
        })
        .catch(function () { /* the next frame tries again */ })
        .finally(function () { pending = null; });
    }, 1000);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/ws");
    ws.onopen = function () {
      retry = 1000;
      ws.send(JSON.stringify({ action: "sub", channel: channel, since: since }));
    };
    ws.onmessage = function (event) {
      let frame;
      try { frame = JSON.parse(event.data); } catch (e) { return; }
      if (typeof frame.seq === "number" && frame.seq > since) since = frame.seq;
      if (frame.action === "battle" || frame.action === "kill") refresh();
      if (frame.action === "battle_merged" && location.pathname === "/battle/" + frame.battle_id) {
        location.replace("/battle/" + frame.into);
      }
    };
    ws.onclose = function () {
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 30000);
    };
  }
  connect();
})();

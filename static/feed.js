/* killboard live feed: keeps the server-rendered list live over the WebSocket.
 *
 * Plain script, no build step. Every name comes from outside: rows are built with
 * createElement + textContent only, never innerHTML. The row structure mirrors
 * templates/macros.html (kill_row); keep the two in step.
 */
"use strict";

(function () {
  // ---- formatting (twins of killboard/display.py; tests compare both) ----------------------
  const ISK_UNITS = [[1e12, "t", 2], [1e9, "b", 2], [1e6, "m", 1], [1e3, "k", 1]];

  // Half-up rounding with the same float operations as display.py, so both print the same text.
  function roundTo(x, digits) {
    const f = Math.pow(10, digits);
    return Math.floor(x * f + 0.5) / f;
  }

  function trim(text) {
    return text.indexOf(".") >= 0 ? text.replace(/0+$/, "").replace(/\.$/, "") : text;
  }

  function isk(value) {
    if (typeof value !== "number" || !isFinite(value)) return "0";
    const amount = Math.abs(value);
    const sign = value < 0 ? "-" : "";
    for (let i = 0; i < ISK_UNITS.length; i++) {
      const [scale, suffix, digits] = ISK_UNITS[i];
      if (amount >= scale) {
        const scaled = roundTo(amount / scale, digits);
        if (scaled >= 1000 && i > 0) {
          const [bigScale, bigSuffix, bigDigits] = ISK_UNITS[i - 1];
          return sign + trim(roundTo(amount / bigScale, bigDigits).toFixed(bigDigits)) + bigSuffix;
        }
        return sign + trim(scaled.toFixed(digits)) + suffix;
      }
    }
    const whole = Math.floor(amount + 0.5);
    return sign + (whole >= 1000 ? "1k" : String(whole));
  }

  function securityLevel(display) {
    if (typeof display !== "number") return "";
    const tenths = Math.max(0, Math.min(10, Math.floor(display * 10 + 0.5)));
    return (tenths < 10 ? "0" : "") + tenths;
  }

  function securityText(display) {
    return typeof display === "number" ? display.toFixed(1) : "?";
  }

  function ago(iso, now) {
    const when = Date.parse(iso);
    if (isNaN(when)) return "";
    const seconds = ((now === undefined ? Date.now() : now) - when) / 1000;
    if (seconds < 60) return "just now";
    const steps = [[3600, 60, "min"], [86400, 3600, "h"], [86400 * 365, 86400, "d"]];
    for (const [limit, size, unit] of steps) {
      if (seconds < limit) return Math.floor(seconds / size) + " " + unit + " ago";
    }
    return Math.floor(seconds / (86400 * 365)) + " y ago";
  }

  function utc(iso) {
    const when = new Date(iso);
    if (isNaN(when.getTime())) return iso;
    return when.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  // The reader's language: the first of the browser's that the data has names in, else English
  // (the twin of langs.reader_language, which reads the Accept-Language header made from the
  // same list). The socket asks for names in it alone (?lang=), a third of the bytes.
  const LANGUAGES = ["en", "de", "es", "fr", "ja", "ko", "ru", "zh"];
  const LANG = (function () {
    const wanted = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || "en"];
    for (const tag of wanted) {
      const code = String(tag).toLowerCase().split("-")[0];
      if (LANGUAGES.indexOf(code) >= 0) return code;
    }
    return "en";
  })();

  // A name in the reader's language, else English (names in other languages exist only where
  // the static data has them), from a translation object.
  function en(names) {
    if (typeof names === "string") return names;
    return (names && (names[LANG] || names.en)) || "";
  }

  window.KB = { isk: isk, securityLevel: securityLevel, securityText: securityText, ago: ago, utc: utc, lang: LANG };

  // Ship renders are optional: one that fails to load (offline) leaves its plain placeholder.
  function dropOnError(img) {
    img.addEventListener("error", function () { img.remove(); });
    if (img.complete && img.naturalWidth === 0 && img.getAttribute("src")) img.remove();
  }
  document.querySelectorAll("img").forEach(dropOnError);

  const feed = document.getElementById("feed");
  if (!feed) return;

  // ---- building rows (textContent only) --------------------------------------------------
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const key in attrs || {}) {
      if (attrs[key] !== null && attrs[key] !== undefined) node.setAttribute(key, String(attrs[key]));
    }
    for (const child of children || []) {
      if (child === null || child === undefined || child === "") continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  // Every name and place links to its own page (/character/ID, /system/ID ...).
  function link(kind, id) {
    return id ? "/" + kind + "/" + encodeURIComponent(String(id)) : "/";
  }

  function entity(p) {
    if (p.character_id) {
      return el("a", { class: "name", href: link("character", p.character_id) }, [p.character_name || "#" + p.character_id]);
    }
    if (p.corporation_id) {
      return el("a", { class: "name", href: link("corporation", p.corporation_id) }, [p.corporation_name || "#" + p.corporation_id]);
    }
    return el("span", { class: "name" }, [en(p.ship_name) || "Unknown"]);
  }

  function badge(kind, text) {
    return el("span", { class: "badge badge-" + kind }, [text]);
  }

  const BIG = Number(feed.dataset.big) || 10e9;

  function buildRow(k) {
    const v = k.victim || {};
    const fb = (k.attackers || []).find(function (a) { return a.final_blow; });
    const big = (k.total_value || 0) >= BIG;
    const killUrl = "/kill/" + k.killmail_id;
    const img = el("img", {
      src: "https://images.evetech.net/types/" + v.ship_id + "/render?size=64",
      alt: "", width: 48, height: 48, loading: "lazy",
    });
    img.addEventListener("error", function () { img.remove(); });
    const affiliation = (v.corporation_name || "") + (v.alliance_name ? " · " + v.alliance_name : "");
    const count = k.attacker_count || 0;
    const row = el("li", { class: "kill new" + (big ? " big" : ""), "data-id": k.killmail_id, "data-seq": k.seq }, [
      el("a", { class: "pic", href: killUrl, tabindex: "-1", "aria-hidden": "true" }, [img]),
      el("div", { class: "when" }, [el("time", { datetime: k.kill_time, title: utc(k.kill_time) }, [ago(k.kill_time)])]),
      el("div", { class: "ship" }, [
        el("a", { href: killUrl }, [en(v.ship_name) || "Unknown ship"]),
        el("span", { class: "sub" }, [en(v.ship_group_name)]),
      ]),
      el("div", { class: "victim" }, [entity(v), el("span", { class: "sub" }, [affiliation])]),
      el("div", { class: "where" }, [
        el("span", { class: "sec sec-" + securityLevel(k.system_security_display), title: k.security_class || "" },
          [securityText(k.system_security_display)]),
        " ",
        el("a", { href: link("system", k.system_id) }, [k.system_name || String(k.system_id)]),
        el("span", { class: "sub" }, [el("a", { href: link("region", k.region_id) }, [en(k.region_name)])]),
      ]),
      el("div", { class: "value" }, [
        el("span", { class: "isk", title: (k.total_value || 0).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }) + " ISK" },
          [isk(k.total_value || 0)]),
        big ? badge("big", "10b+") : null,
      ]),
      el("div", { class: "blow" }, [
        el("span", { class: "label" }, ["final blow"]), " ",
        fb ? entity(fb) : "?",
        el("span", { class: "sub" }, [count + " attacker" + (count === 1 ? "" : "s")]),
      ]),
      el("div", { class: "badges" }, [
        k.is_solo ? badge("solo", "solo") : null,
        k.is_npc ? badge("npc", "npc") : null,
        k.is_awox ? badge("awox", "awox") : null,
      ]),
    ]);
    return row;
  }

  // ---- the list ------------------------------------------------------------------------
  const maxRows = Number(feed.dataset.maxRows) || 200;
  const seen = new Set();
  for (const row of feed.querySelectorAll("li.kill")) seen.add(Number(row.dataset.id));

  function show(kill) {
    const empty = feed.querySelector("li.empty");
    if (empty) empty.remove();
    feed.insertBefore(buildRow(kill), feed.firstChild);
    // Bounded: a tab left open for days keeps the newest maxRows.
    while (feed.children.length > maxRows) {
      const last = feed.lastElementChild;
      seen.delete(Number(last.dataset.id));
      last.remove();
    }
  }

  // ---- pause -----------------------------------------------------------------------------
  const pauseButton = document.getElementById("pause");
  let paused = false;
  let buffered = [];

  function updatePause() {
    pauseButton.setAttribute("aria-pressed", paused ? "true" : "false");
    pauseButton.textContent = paused ? "Resume" + (buffered.length ? " (" + buffered.length + " new)" : "") : "Pause";
  }

  if (pauseButton) {
    pauseButton.hidden = false;
    pauseButton.addEventListener("click", function () {
      paused = !paused;
      if (!paused) {
        const waiting = buffered;
        buffered = [];
        waiting.forEach(show);
      }
      updatePause();
    });
  }

  // ---- the socket ----------------------------------------------------------------------
  const channel = feed.dataset.channel || "kills";
  let lastSeq = Number(feed.dataset.lastSeq) || 0;
  const statusEl = document.getElementById("status");
  const notice = document.getElementById("notice");
  let socket = null;
  let attempt = 0;
  let retryTimer = null;
  let replayTo = null;

  function setStatus(state, text) {
    statusEl.dataset.state = state;
    statusEl.textContent = text;
  }

  function say(text) {
    notice.textContent = text;
    notice.hidden = !text;
  }

  // Kills this page will never get live: an edge process that fell behind its stream's trim
  // says {"action":"skipped","from":F,"to":T} (F < seq <= T, counted over every channel). The
  // page the writer renders has them, so the notice counts them and offers a reload.
  let skipped = 0;

  function onSkipped(message) {
    if (typeof message.from !== "number" || typeof message.to !== "number" || message.to <= message.from) return;
    skipped += message.to - message.from;
    const count = skipped + " kill" + (skipped === 1 ? "" : "s");
    notice.replaceChildren(
      (channel === "kills" ? count : "Up to " + count + " of this feed") +
        " skipped: this server fell behind the live feed. ",
      el("a", { class: "reload", href: location.href }, ["Reload"]),
      " for the full list."
    );
    notice.hidden = false;
  }

  function onKill(message) {
    const kill = message.data;
    if (typeof message.seq === "number" && message.seq > lastSeq) lastSeq = message.seq;
    if (typeof kill.seq !== "number") kill.seq = message.seq;
    const id = Number(kill.killmail_id);
    if (seen.has(id)) return; // replayed after a reconnect, or already rendered by the server
    seen.add(id);
    if (paused) {
      buffered.push(kill);
      if (buffered.length > maxRows) buffered.shift();
      updatePause();
    } else {
      show(kill);
    }
  }

  function onMessage(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch (err) {
      return;
    }
    if (!message || typeof message !== "object") return;
    switch (message.action) {
      case "kill":
        if (message.data && typeof message.data === "object") onKill(message);
        break;
      case "subscribed":
        attempt = 0;
        setStatus("live", "live");
        break;
      case "replay":
        // {"action":"replay","recovered":bool,"from":A,"to":B}: every matching kill up to B
        // follows. The server answers a ping only after the whole replay, so on the pong the
        // next resume may start from B, even on a quiet channel where none of them matched.
        if (typeof message.to === "number") {
          replayTo = message.to;
          socket.send(JSON.stringify({ action: "ping" }));
        }
        if (message.recovered === false) {
          say("You were away too long for every missed kill to be replayed: reload the page for the full list.");
        }
        break;
      case "pong":
        if (replayTo !== null && replayTo > lastSeq) lastSeq = replayTo;
        replayTo = null;
        break;
      case "skipped":
        onSkipped(message);
        break;
      case "error":
        if (statusEl.dataset.state !== "live") setStatus("refused", "not subscribed");
        say("The server refused this feed: " + String(message.message || "unknown error"));
        break;
    }
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/ws?lang=" + LANG);
    socket = ws;
    replayTo = null;
    ws.addEventListener("open", function () {
      // Resume: the server replays the stored kills of this channel after lastSeq.
      ws.send(JSON.stringify({ action: "sub", channel: channel, since: lastSeq }));
    });
    ws.addEventListener("message", onMessage);
    ws.addEventListener("close", function () {
      if (socket !== ws) return;
      socket = null;
      scheduleReconnect();
    });
  }

  function scheduleReconnect() {
    attempt += 1;
    // Exponential backoff with jitter, so a restarted server is not hit by every tab at once.
    const ceiling = Math.min(15000, 500 * Math.pow(2, attempt - 1));
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    const offline = navigator.onLine === false || attempt > 4;
    setStatus(offline ? "offline" : "reconnecting",
      (offline ? "offline" : "reconnecting") + ", retrying in " + Math.ceil(delay / 1000) + " s");
    retryTimer = setTimeout(connect, delay);
  }

  // An older page (data-live="off": the feed's, an entity's) is history: not followed.
  const live = feed.dataset.live !== "off";
  window.addEventListener("online", function () {
    if (live && !socket) connect();
  });

  if (live) {
    setStatus("connecting", "connecting");
    connect();
  } else if (pauseButton) {
    pauseButton.hidden = true;
  }

  // Relative times: the server sends absolute ones (its rendered rows are kept, so they would go
  // stale); they are made relative here at once and age while the tab is open.
  function ageTimes() {
    for (const t of document.querySelectorAll("#feed time[datetime]")) t.textContent = ago(t.getAttribute("datetime"));
  }
  ageTimes();
  setInterval(ageTimes, 30000);

  // ---- filters: changing one reloads with the short shareable link ---------------------------
  const form = document.getElementById("filters");
  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      const data = new FormData(form);
      const query = new URLSearchParams();
      for (const name of ["min", "sec", "class", "solo", "npc"]) {
        const value = data.get(name);
        if (value) query.set(name, String(value));
      }
      const id = String(data.get("id") || "").trim();
      if (/^\d+$/.test(id)) query.set(String(data.get("kind")), id);
      const text = query.toString();
      location.assign(text ? "/?" + text : "/");
    });
    for (const control of form.querySelectorAll("select[name=min], select[name=sec], select[name=class], input[type=checkbox]")) {
      control.addEventListener("change", function () { form.requestSubmit(); });
    }
  }
})();

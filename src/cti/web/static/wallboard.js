// The supervisors' wallboard: live tiles, queues (with Erlang C), agents in their states, IVR,
// and three SVG charts. Figures come from the `stats` WebSocket message (REST snapshot on every
// (re)connection); nothing is computed here but clocks ticking between two messages.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const SVG = "http://www.w3.org/2000/svg";
  const STATE_COLORS = { available: "#27ae60", ringing: "#f39c12", acd: "#2980b9", outbound: "#8e44ad",
    wrapup: "#16a085", paused: "#7f8c8d", unavailable: "#c0392b", logged_out: "#3a4252" };
  let lang = localStorage.getItem("cti.lang") || "fr";
  let ws = null, stats = null, offset = 0, retry = 500;
  let breaches = [];                 // ticket.sla_breached messages of the last 10 minutes
  let abandoned = null, lostCount = -1;
  let sound = localStorage.getItem("cti.sound") === "1";
  let tv = new URLSearchParams(location.search).get("tv") === "1" || localStorage.getItem("cti.tv") === "1";
  const seenAlerts = new Set();
  const LONG_WAIT_S = 60, LONG_PAUSE_S = 15 * 60, SL_TARGET = 0.8;
  const t = (key) => (window.CTI_I18N[lang] || {})[key] || key;
  const text = (el, value) => { el.textContent = value == null ? "" : String(value); };
  const serverNow = () => Date.now() / 1000 + offset;
  const clock = (s) => {
    if (s == null) return "—";
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(sec).padStart(2, "0");
  };
  const pct = (r) => (r == null ? "—" : (r * 100).toFixed(1).replace(".", lang === "fr" ? "," : ".") + " %");
  const secs = (s) => (s == null ? "—" : clock(s));

  // State-changing requests are always JSON (the server refuses anything else: docs/security.md).
  async function api(method, path, body) {
    const write = method !== "GET";
    const res = await fetch(path, { method, credentials: "same-origin",
      headers: write ? { "Content-Type": "application/json" } : {}, body: write ? JSON.stringify(body || {}) : undefined });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw Object.assign(new Error(data.message || res.statusText), { status: res.status, id: data.error_id });
    return data;
  }

  function applyLang() {
    document.documentElement.lang = lang;
    $("lang").textContent = lang === "fr" ? "EN" : "FR";
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    render(); if (abandoned) renderAbandoned();
  }
  $("lang").addEventListener("click", () => { lang = lang === "fr" ? "en" : "fr"; localStorage.setItem("cti.lang", lang); applyLang(); });
  $("logout").addEventListener("click", async () => { await api("POST", "/api/logout").catch(() => {}); location.reload(); });

  // ---------------------------------------------------------------- login and role
  function show(panel) {
    ["login-panel", "refused", "board"].forEach((id) => { $(id).hidden = id !== panel; });
    $("logout").hidden = panel === "login-panel";
    $("tv").hidden = $("sound").hidden = panel !== "board";
  }
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const data = await api("POST", "/api/login", { username: $("username").value, password: $("password").value });
      begin(data.user);
    } catch (e) { text($("login-error"), e.status === 429 ? t("rate_limited") : t("bad_login")); }
  });
  function begin(user) {
    lang = localStorage.getItem("cti.lang") || user.language || lang;
    applyLang();
    if (user.role !== "supervisor" && user.role !== "admin") { show("refused"); return; }
    show("board");
    connect();
  }

  // ---------------------------------------------------------------- data
  async function snapshot() {
    try { handle(await api("GET", "/api/stats/live")); } catch (e) { /* the WebSocket will bring it */ }
  }
  function connect() {
    ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
    ws.onopen = () => {
      retry = 500; $("link").className = "badge on"; $("link").dataset.i18n = "connected"; text($("link"), t("connected"));
      snapshot();
    };
    ws.onclose = (ev) => {
      $("link").className = "badge off"; $("link").dataset.i18n = "disconnected"; text($("link"), t("disconnected"));
      if (ev.code === 4001) { ws = null; show("login-panel"); return; }   // the session ended
      setTimeout(() => api("GET", "/api/me").then(connect, (e) => { if (e.status === 401) show("login-panel"); else connect(); }), retry);
      retry = Math.min(retry * 2, 10000);
    };
    ws.onmessage = (ev) => { let m; try { m = JSON.parse(ev.data); } catch (e) { return; } handle(m); };
  }
  function handle(m) {
    if (m.type === "ticket.sla_breached") { breaches.push({ at: serverNow(), ticket: m.ticket }); renderAlerts(); return; }
    if (m.type !== "stats" || m.scope !== "all") return;
    offset = m.now - Date.now() / 1000;
    stats = m;
    render();
  }

  // ---------------------------------------------------------------- rendering
  function render() {
    if (!stats) return;
    const tot = stats.totals;
    text($("waiting"), tot.waiting);
    $("tile-waiting").className = "tile" + (tot.waiting > 0 ? " alert" : "");
    ["presented", "answered", "abandoned", "timed_out"].forEach((k) => text($(k), tot[k]));
    ["qs", "service_level", "abandon_rate"].forEach((k) => text($(k), pct(tot[k])));
    ["asa_s", "dmc_s", "dmt_s"].forEach((k) => text($(k), secs(tot[k])));
    $("tile-sl").className = "tile" + (tot.service_level == null ? "" : tot.service_level >= 0.8 ? " good" : " alert");
    renderQueues(); renderAgents(); renderIvr(); tick();
    chartCalls(); chartSl(); chartStates(); renderAlerts();
    const lost = (tot.abandoned || 0) + (tot.timed_out || 0);
    // The call record is written a moment after the figures change: read the list now and again.
    if (lost !== lostCount) { lostCount = lost; loadAbandoned(); setTimeout(loadAbandoned, 2000); }
  }
  function row(cells) {
    const tr = document.createElement("tr");
    cells.forEach((c) => { const td = document.createElement("td"); if (c instanceof Node) td.append(c); else text(td, c); tr.append(td); });
    return tr;
  }
  function renderQueues() {
    const body = $("queues").tBodies[0]; body.replaceChildren();
    stats.queues.forEach((q) => {
      const st = q.staffing || {};
      const tr = row([q.queue, q.waiting, "", q.presented, q.answered, q.abandoned, pct(q.qs), pct(q.service_level),
        secs(q.asa_s), secs(q.dmc_s), q.agents_available + " / " + q.agents_logged_in, st.agents_needed, st.breaks_possible]);
      tr.dataset.queue = q.queue; tr.dataset.oldest = q.oldest_joined_at == null ? "" : q.oldest_joined_at;
      body.append(tr);
    });
  }
  // Rows are kept and updated in place, one per agent: rebuilt at every update, a click whose
  // button went down before it and up after it hit two elements, and no click happened.
  function renderAgents() {
    const body = $("agents").tBodies[0];
    const old = new Map([...body.rows].map((tr) => [tr.dataset.interface, tr]));
    stats.agents.forEach((a, i) => {
      let tr = old.get(a.interface);
      old.delete(a.interface);
      if (!tr) {
        tr = row(["", document.createElement("span"), "", "", "", "", "", ""]);
        tr.lastChild.className = "actions-cell";
      }
      const cells = tr.children;
      text(cells[0], a.agent || a.interface);
      const badge = cells[1].firstChild;
      badge.className = "st st-" + a.state;
      text(badge, t("st_" + a.state) + (a.reason ? " (" + reasonText(a.reason) + ")" : "") + (a.queue && a.state !== "available" ? " · " + a.queue : ""));
      [a.handled, secs(a.dmc_s), pct(a.occupancy), a.paused_s ? secs(a.paused_s) : "—"].forEach((v, k) => text(cells[3 + k], v));
      // The menu is made again only when what it offers changes (the state, the language).
      const menu = [a.state, a.agent || a.interface, lang].join("|");
      if (tr.dataset.menu !== menu) { cells[7].replaceChildren(agentActions(a)); tr.dataset.menu = menu; }
      tr.dataset.since = a.since; tr.dataset.state = a.state; tr.dataset.interface = a.interface;
      if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null);
    });
    old.forEach((tr) => tr.remove());
  }
  function renderIvr() {
    const body = $("ivr").tBodies[0]; body.replaceChildren();
    stats.ivr.menus.forEach((m) => body.append(row([m.menu, m.entries || m.visits, m.choices, m.invalid, m.timeouts, m.hangups,
      m.entries ? pct(m.containment) : "—"])));
  }
  function tick() {
    if (!stats) return;
    document.querySelectorAll("#agents tbody tr").forEach((tr) => {
      tr.classList.toggle("long-pause", tr.dataset.state === "paused" && serverNow() - Number(tr.dataset.since) > LONG_PAUSE_S);
    });
    const now = serverNow();
    const tot = stats.totals;
    text($("longest"), tot.oldest_joined_at == null ? "0:00" : clock(now - tot.oldest_joined_at));
    text($("clock"), new Date(now * 1000).toLocaleTimeString(lang));
    document.querySelectorAll("#queues tbody tr").forEach((tr) => {
      text(tr.children[2], tr.dataset.oldest ? clock(now - Number(tr.dataset.oldest)) : "—");
    });
    document.querySelectorAll("#agents tbody tr").forEach((tr) => {
      text(tr.children[2], tr.dataset.state === "logged_out" ? "—" : clock(now - Number(tr.dataset.since)));
    });
  }
  setInterval(tick, 1000);

  // ---------------------------------------------------------------- floor control
  const reasonText = (r) => (t("reason_" + r) !== "reason_" + r ? t("reason_" + r) : r);
  const errorText = (e) => (t("err_" + (e.id || "")) !== "err_" + (e.id || "") ? t("err_" + e.id) : t("err_generic"));
  function tell(msg) { text($("floor-message"), msg); }
  async function floorAction(path, body, okKey) {
    try { await api("POST", path, body); tell(t(okKey)); } catch (e) { tell(errorText(e)); }
  }
  let openMenu = null;   // the agent whose actions menu is open: kept open across re-renders
  function agentActions(a) {
    const details = document.createElement("details");
    details.open = openMenu === a.interface;
    details.addEventListener("toggle", () => {
      if (details.open) openMenu = a.interface;
      else if (openMenu === a.interface && details.isConnected) openMenu = null;
    });
    const summary = document.createElement("summary");
    summary.textContent = "⋯"; summary.setAttribute("aria-label", t("wb_actions") + " " + (a.agent || a.interface));
    const menu = document.createElement("div"); menu.className = "menu";
    const item = (key, handler) => {
      const b = document.createElement("button"); b.type = "button"; b.textContent = t(key); b.dataset.action = key;
      b.onclick = () => { openMenu = null; details.open = false; handler(); }; menu.append(b);
    };
    if (a.state === "acd" || a.state === "outbound") {
      item("wb_listen", () => floorAction("/api/floor/spy", { interface: a.interface, mode: "listen" }, "wb_spy_ringing"));
      item("wb_whisper", () => floorAction("/api/floor/spy", { interface: a.interface, mode: "whisper" }, "wb_spy_ringing"));
      item("wb_barge", () => floorAction("/api/floor/spy", { interface: a.interface, mode: "barge" }, "wb_spy_ringing"));
    }
    if (a.state !== "logged_out") {
      const paused = a.state === "paused";
      item(paused ? "wb_end_pause" : "wb_force_pause", () => floorAction("/api/floor/pause", { interface: a.interface, paused: !paused }, "wb_done"));
      item("wb_logout_agent", () => floorAction("/api/floor/logout", { interface: a.interface }, "wb_done"));
    }
    details.append(summary, menu);
    return details;
  }
  // Alerts from the figures: a long wait, a service level under target, a long break, a ticket
  // past its SLA. A new one beeps when the sound is on.
  function renderAlerts() {
    if (!stats) return;
    const now = serverNow(), out = [];
    stats.queues.forEach((q) => {
      if (q.oldest_joined_at != null && now - q.oldest_joined_at > LONG_WAIT_S) out.push(["wait:" + q.queue, t("wb_alert_wait") + " " + q.queue + " " + clock(now - q.oldest_joined_at)]);
      if (q.service_level != null && q.presented >= 5 && q.service_level < SL_TARGET) out.push(["sl:" + q.queue, t("wb_alert_sl") + " " + q.queue + " " + pct(q.service_level)]);
    });
    stats.agents.forEach((a) => {
      if (a.state === "paused" && now - a.since > LONG_PAUSE_S) out.push(["pause:" + a.interface, t("wb_alert_pause") + " " + (a.agent || a.interface) + (a.reason ? " (" + reasonText(a.reason) + ")" : "") + " " + clock(now - a.since)]);
    });
    breaches = breaches.filter((b) => now - b.at < 600);
    breaches.forEach((b) => out.push(["sla:" + b.ticket.id, t("wb_alert_sla") + " #" + b.ticket.id + " (" + b.ticket.agent + ")"]));
    const list = $("alerts"); list.replaceChildren();
    let fresh = false;
    out.forEach(([key, label]) => {
      const li = document.createElement("li"); li.textContent = label; li.dataset.alert = key.split(":")[0]; list.append(li);
      if (!seenAlerts.has(key)) { seenAlerts.add(key); fresh = true; }
    });
    if (fresh && sound) beep();
  }
  let audio = null;
  function beep() {
    try {
      audio = audio || new AudioContext();
      const osc = audio.createOscillator(), gain = audio.createGain();
      osc.frequency.value = 880; gain.gain.value = 0.1; osc.connect(gain); gain.connect(audio.destination);
      osc.start(); osc.stop(audio.currentTime + 0.25);
    } catch (e) { /* no audio on this screen */ }
  }
  function setSound(on) { sound = on; localStorage.setItem("cti.sound", on ? "1" : "0"); $("sound").setAttribute("aria-pressed", String(on)); }
  function setTv(on) { tv = on; localStorage.setItem("cti.tv", on ? "1" : "0"); document.body.classList.toggle("tv", on); $("tv").setAttribute("aria-pressed", String(on)); }
  $("sound").onclick = () => { setSound(!sound); if (sound) beep(); };
  $("tv").onclick = () => setTv(!tv);
  setSound(sound); setTv(tv);

  // Today's abandoned calls, each with a one-click callback from the supervisor's phone.
  async function loadAbandoned() {
    try { abandoned = await api("GET", "/api/floor/abandoned"); renderAbandoned(); } catch (e) { /* next change */ }
  }
  const displayNumber = (n) => {
    const m = /^\+33(\d)(\d{2})(\d{2})(\d{2})(\d{2})$/.exec(n || "");
    return m ? "0" + m[1] + " " + m.slice(2).join(" ") : (n || t("withheld"));
  };
  // Read again at each new abandon and every minute: a line that did not change keeps its
  // element (lists.js), so a click on its call-back button is not lost to the reload.
  function renderAbandoned() {
    const list = $("abandoned-list");
    const calls = abandoned ? abandoned.calls : [];
    text($("abandoned-count"), calls.filter((c) => !c.called_back).length);
    if (!calls.length) { const li = document.createElement("li"); li.className = "muted"; li.textContent = t("wb_none_abandoned"); list.replaceChildren(li); return; }
    const sigOf = (c) => JSON.stringify([c.started_at, c.number, c.queue, c.wait_s, c.called_back, lang]);
    window.ctiRedraw(list, calls, (c) => c.linkedid, sigOf, (c) => {
      const li = document.createElement("li"); li.dataset.linkedid = c.linkedid;
      const at = new Date(c.started_at).toLocaleTimeString(lang, { hour: "2-digit", minute: "2-digit" });
      const span = (value, cls) => { const s = document.createElement("span"); s.textContent = value; if (cls) s.className = cls; return s; };
      li.append(span(at, "muted"), span(displayNumber(c.number)), span(t("queue") + " " + (c.queue || "—")),
        span(t("wb_waited") + " " + secs(c.wait_s), "muted"));
      if (c.called_back) li.append(span("✓ " + t("wb_called_back"), "done"));
      else if (c.number) {
        const b = document.createElement("button"); b.type = "button"; b.textContent = t("wb_call_back"); b.className = "call-back";
        b.onclick = () => floorAction("/api/agent/call", { number: c.number }, "wb_dialing"); li.append(b);
      }
      return li;
    });
  }
  setInterval(() => { if (stats) loadAbandoned(); }, 60000);

  // ---------------------------------------------------------------- SVG charts
  function el(name, attrs, content) {
    const node = document.createElementNS(SVG, name);
    Object.entries(attrs).forEach(([k, v]) => node.setAttribute(k, v));
    if (content != null) node.textContent = content;
    return node;
  }
  const W = 480, H = 160, L = 28, B = 18;
  function axes(svg, max, fmt) {
    svg.replaceChildren();
    [0, 0.5, 1].forEach((f) => {
      const y = H - B - f * (H - B - 8);
      svg.append(el("line", { x1: L, x2: W, y1: y, y2: y, stroke: "#2b3342" }));
      svg.append(el("text", { x: 2, y: y + 4 }, fmt(max * f)));
    });
  }
  function hourLabels(svg, series, x) {
    series.forEach((s, i) => {
      const d = new Date(s.interval_start);
      if (d.getMinutes() === 0 && d.getHours() % 2 === 0) svg.append(el("text", { x: x(i), y: H - 4 }, d.getHours() + "h"));
    });
  }
  function chartCalls() {
    const svg = $("chart-calls"), series = stats.series || [];
    const max = Math.max(2, ...series.map((s) => s.presented));
    axes(svg, max, (v) => Math.round(v));
    const step = (W - L) / Math.max(series.length, 1), bw = Math.max(2, step * 0.4);
    const y = (v) => H - B - (v / max) * (H - B - 8);
    series.forEach((s, i) => {
      const x0 = L + i * step;
      svg.append(el("rect", { x: x0, y: y(s.presented), width: bw, height: H - B - y(s.presented), fill: "#5b8def" }));
      svg.append(el("rect", { x: x0 + bw, y: y(s.answered), width: bw, height: H - B - y(s.answered), fill: "#5fd38d" }));
    });
    hourLabels(svg, series, (i) => L + i * step);
  }
  function chartSl() {
    const svg = $("chart-sl"), series = stats.series || [];
    axes(svg, 1, (v) => Math.round(v * 100) + "%");
    const step = (W - L) / Math.max(series.length - 1, 1);
    const y = (v) => H - B - v * (H - B - 8);
    const line = (key, color) => {
      const pts = series.map((s, i) => (s[key] == null ? null : (L + i * step) + "," + y(s[key]))).filter(Boolean);
      if (pts.length) svg.append(el("polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 2 }));
    };
    const target = y(0.8);
    svg.append(el("line", { x1: L, x2: W, y1: target, y2: target, stroke: "#c0392b", "stroke-dasharray": "4 3" }));
    line("service_level", "#f1c40f"); line("service_level_day", "#5fd38d");
    hourLabels(svg, series, (i) => L + i * step);
  }
  function chartStates() {
    const svg = $("chart-states"); svg.replaceChildren();
    const counts = stats.agent_states || {};
    const order = ["available", "ringing", "acd", "outbound", "wrapup", "paused", "unavailable", "logged_out"];
    const max = Math.max(1, ...order.map((s) => counts[s] || 0));
    const bh = (H - 10) / order.length;
    order.forEach((s, i) => {
      const n = counts[s] || 0, y0 = 4 + i * bh;
      svg.append(el("text", { x: 2, y: y0 + bh * 0.7 }, t("st_" + s)));
      svg.append(el("rect", { x: 120, y: y0 + 2, width: ((W - 150) * n) / max, height: bh - 5, fill: STATE_COLORS[s] }));
      svg.append(el("text", { x: 124 + ((W - 150) * n) / max, y: y0 + bh * 0.7, "data-state": s }, String(n)));
    });
  }

  applyLang();
  api("GET", "/api/me").then(begin).catch(() => show("login-panel"));
})();

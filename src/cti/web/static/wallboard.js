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
    if (!res.ok) throw Object.assign(new Error(data.message || res.statusText), { status: res.status });
    return data;
  }

  function applyLang() {
    document.documentElement.lang = lang;
    $("lang").textContent = lang === "fr" ? "EN" : "FR";
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    render();
  }
  $("lang").addEventListener("click", () => { lang = lang === "fr" ? "en" : "fr"; localStorage.setItem("cti.lang", lang); applyLang(); });
  $("logout").addEventListener("click", async () => { await api("POST", "/api/logout").catch(() => {}); location.reload(); });

  // ---------------------------------------------------------------- login and role
  function show(panel) {
    ["login-panel", "refused", "board"].forEach((id) => { $(id).hidden = id !== panel; });
    $("logout").hidden = panel === "login-panel";
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
    chartCalls(); chartSl(); chartStates();
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
  function renderAgents() {
    const body = $("agents").tBodies[0]; body.replaceChildren();
    stats.agents.forEach((a) => {
      const badge = document.createElement("span");
      badge.className = "st st-" + a.state;
      badge.textContent = t("st_" + a.state) + (a.reason ? " (" + a.reason + ")" : "") + (a.queue && a.state !== "available" ? " · " + a.queue : "");
      const tr = row([a.agent || a.interface, badge, "", a.handled, secs(a.dmc_s), pct(a.occupancy)]);
      tr.dataset.since = a.since; tr.dataset.state = a.state;
      body.append(tr);
    });
  }
  function renderIvr() {
    const body = $("ivr").tBodies[0]; body.replaceChildren();
    stats.ivr.menus.forEach((m) => body.append(row([m.menu, m.entries || m.visits, m.choices, m.invalid, m.timeouts, m.hangups,
      m.entries ? pct(m.containment) : "—"])));
  }
  function tick() {
    if (!stats) return;
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

// The agent desktop: login, live screen pop, ticket with its running chronometer, breaks, click-to-call.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  let lang = localStorage.getItem("cti.lang") || "fr";
  let ws = null, user = null, pop = null, ticket = null, offset = 0, paused = false, retry = 500;
  const t = (key) => (window.CTI_I18N[lang] || {})[key] || key;

  function applyLang() {
    document.documentElement.lang = lang;
    $("lang").textContent = lang === "fr" ? "EN" : "FR";
    document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
    renderPop(); renderTicket(); renderState();
  }
  const serverNow = () => Date.now() / 1000 + offset;
  const clock = (s) => {
    const sign = s < 0 ? "-" : ""; s = Math.abs(Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return sign + (h ? h + ":" : "") + String(m).padStart(2, "0") + ":" + String(sec).padStart(2, "0");
  };
  const text = (el, value) => { el.textContent = value == null ? "" : String(value); };

  // State-changing requests are always JSON (the server refuses anything else: docs/security.md).
  async function api(method, path, body) {
    const write = method !== "GET";
    const res = await fetch(path, { method, credentials: "same-origin",
      headers: write ? { "Content-Type": "application/json" } : {}, body: write ? JSON.stringify(body || {}) : undefined });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw Object.assign(new Error(data.message || res.statusText), { status: res.status, body: data });
    return data;
  }
  function say(msg) { text($("message"), msg); if (msg) setTimeout(() => text($("message"), ""), 6000); }

  // ---------------------------------------------------------------- login
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const data = await api("POST", "/api/login", { username: $("username").value, password: $("password").value });
      user = data.user; lang = user.language || lang; localStorage.setItem("cti.lang", lang);
      start();
    } catch (e) { text($("login-error"), e.status === 429 ? t("rate_limited") : t("bad_login")); }
  });
  $("logout").addEventListener("click", async () => { await api("POST", "/api/logout").catch(() => {}); location.reload(); });
  $("lang").addEventListener("click", () => { lang = lang === "fr" ? "en" : "fr"; localStorage.setItem("cti.lang", lang); applyLang(); });

  function start() {
    $("login-panel").hidden = true; $("desk").hidden = false;
    text($("who"), user.display_name || user.username);
    applyLang(); connect();
  }

  // ---------------------------------------------------------------- WebSocket
  function loggedOut() {   // the session ended (logout elsewhere, password changed, expired)
    ws = null; user = null; pop = null; ticket = null;
    $("desk").hidden = true; $("login-panel").hidden = false; applyLang();
  }
  // The session cookie authenticates the socket (never a token in the URL).
  function connect() {
    ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
    ws.onopen = () => { retry = 500; $("link").className = "badge on"; $("link").dataset.i18n = "connected"; text($("link"), t("connected")); };
    ws.onclose = (ev) => {
      $("link").className = "badge off"; $("link").dataset.i18n = "disconnected"; text($("link"), t("disconnected"));
      if (ev.code === 4001) { loggedOut(); return; }
      setTimeout(() => api("GET", "/api/me").then(connect, (e) => { if (e.status === 401) loggedOut(); else connect(); }), retry);
      retry = Math.min(retry * 2, 10000);   // then resume: the server resends pop + ticket
    };
    ws.onmessage = (ev) => { let m; try { m = JSON.parse(ev.data); } catch (e) { return; } handle(m); };
  }
  const send = (msg) => { if (ws && ws.readyState === 1) ws.send(JSON.stringify(msg)); };

  function handle(m) {
    if (m.now) offset = m.now - Date.now() / 1000;
    switch (m.type) {
      case "state":
        user = m.user || user; pop = m.pop ? m.pop.pop : null;
        ticket = (m.tickets || []).find((x) => x.status !== "resolved") || null;
        if (ticket) ticket._at = m.now;
        if (m.agent) { paused = !!m.agent.paused; }
        renderPop(); renderTicket(); renderState(); break;
      case "pop": case "pop.update": case "pop.answered":
        pop = m.pop; renderPop(); if (pop.customer && pop.customer.customers && pop.customer.customers.length === 1) loadHistory(pop.customer.customers[0].id); break;
      case "pop.withdraw": case "pop.ended": case "pop.transferred":
        if (pop && pop.linkedid === m.linkedid) { pop = null; renderPop(); } break;
      case "ticket":
        if (!ticket || ticket.id === m.ticket.id || m.ticket.status !== "resolved") { ticket = m.ticket; ticket._at = m.now || serverNow(); }
        renderTicket(); break;
      case "agent.state": paused = !!m.paused; renderState(); break;
      case "error": say(m.message); break;
      default: break;
    }
  }

  // ---------------------------------------------------------------- pop
  function renderPop() {
    const card = $("pop");
    if (!pop) { card.hidden = true; $("no-call").hidden = false; return; }
    card.hidden = false; $("no-call").hidden = true;
    const answered = pop.state === "answered";
    $("pop-state").className = "badge " + (answered ? "talk" : "ring");
    text($("pop-state"), t(answered ? "answered" : "ringing"));
    text($("pop-queue"), pop.queue ? t("queue") + " " + pop.queue : "");
    text($("pop-wait"), pop.wait_s != null ? t("wait") + " " + clock(pop.wait_s) : "");
    const c = pop.caller || {};
    text($("pop-number"), c.withheld ? t("withheld") : (c.e164 || c.raw || ""));
    text($("pop-ivr"), (pop.ivr_path || []).join(" › "));
    renderCustomer(pop.customer || { status: "pending" }, c);
  }

  function renderCustomer(lookup, caller) {
    const box = $("pop-customer"); box.replaceChildren();
    const status = lookup.status;
    const customers = lookup.customers || [];
    if (status === "found" && customers.length) {
      const cu = customers[0];
      text($("pop-caller"), cu.name + (cu.vip ? " ★" : ""));
      const p = document.createElement("p");
      p.textContent = [cu.account ? t("account") + " " + cu.account : "", cu.address || "", cu.notes || ""].filter(Boolean).join(" · ");
      box.append(p);
      if (cu.vip) { const b = document.createElement("span"); b.className = "badge vip"; b.textContent = "VIP"; box.append(b); }
      return;
    }
    text($("pop-caller"), caller.withheld ? t("withheld") : (caller.name || caller.e164 || caller.raw || ""));
    const p = document.createElement("p"); p.className = "muted"; box.append(p);
    if (status === "pending") { p.textContent = t("looking_up"); return; }
    if (status === "unavailable") { p.textContent = t("lookup_unavailable"); return; }
    if (status === "several") {
      p.textContent = t("several");
      customers.forEach((cu) => {
        const b = document.createElement("button"); b.className = "customer-choice"; b.textContent = cu.name + (cu.account ? " (" + cu.account + ")" : "");
        b.onclick = () => chooseCustomer(cu); box.append(b);
      });
      return;
    }
    if (status === "withheld" || caller.withheld) { p.textContent = t("withheld"); return; }
    // unknown caller: a "new customer" form that creates the file from the desktop
    p.textContent = t("new_customer");
    const form = document.createElement("form");
    const name = document.createElement("input"); name.placeholder = t("name"); name.required = true; name.id = "new-customer-name";
    const btn = document.createElement("button"); btn.textContent = t("create");
    form.append(name, btn); box.append(form);
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      try {
        const cu = await api("POST", "/api/customers", { name: name.value, phones: [caller.e164 || caller.raw], server: pop.server, linkedid: pop.linkedid });
        pop.customer = { status: "found", customers: [cu] }; renderPop();
      } catch (e) { say(e.message); }
    };
  }
  async function chooseCustomer(cu) {
    try {
      await api("POST", "/api/calls/" + encodeURIComponent(pop.server) + "/" + encodeURIComponent(pop.linkedid) + "/customer", { customer_id: cu.id });
      pop.customer = { status: "found", customers: [cu] }; renderPop(); loadHistory(cu.id);
    } catch (e) { say(e.message); }
  }
  async function loadHistory(id) {
    try {
      const h = await api("GET", "/api/customers/" + id + "/history");
      const list = $("history-list"); list.replaceChildren();
      (h.calls || []).slice(0, 10).forEach((c) => {
        const li = document.createElement("li");
        li.textContent = new Date(c.started_at).toLocaleString(lang) + " — " + (c.queue || "") + " " + c.outcome + (c.agent ? " (" + c.agent + ")" : "");
        list.append(li);
      });
      $("history").hidden = !list.children.length;
    } catch (e) { /* history is a nicety: the pop stands without it */ }
  }

  // ---------------------------------------------------------------- ticket + chronometer
  function renderTicket() {
    const card = $("ticket");
    if (!ticket) { card.hidden = true; return; }
    card.hidden = false;
    text($("ticket-id"), "#" + ticket.id);
    text($("ticket-status"), t(ticket.status));
    const sel = $("ticket-category");
    if (!sel.options.length) {
      (ticket.categories || ["information", "incident", "complaint", "order", "other"]).forEach((c) => {
        const o = document.createElement("option"); o.value = c; o.textContent = c; sel.append(o);
      });
    }
    if (ticket.category) sel.value = ticket.category;
    if (document.activeElement !== $("ticket-notes")) $("ticket-notes").value = ticket.notes || "";
    $("ticket-hold").dataset.i18n = ticket.status === "on_hold" ? "resume" : "hold";
    text($("ticket-hold"), t($("ticket-hold").dataset.i18n));
    $("ticket-resolve").dataset.i18n = ticket.status === "resolved" ? "reopen" : "resolve";
    text($("ticket-resolve"), t($("ticket-resolve").dataset.i18n));
    tick();
  }
  function tick() {
    if (!ticket) return;
    const running = ticket.status === "open";
    const delta = running ? Math.max(0, serverNow() - (ticket._at || serverNow())) : 0;
    text($("ticket-elapsed"), clock((ticket.elapsed_s || 0) + delta));
    if (ticket.sla_left_s != null) {
      const left = ticket.sla_left_s - delta;
      text($("ticket-sla"), clock(left)); $("ticket-sla").className = left < 0 ? "error" : "";
    }
  }
  setInterval(tick, 250);
  async function ticketAction(action, body) {
    try { const data = await api("POST", "/api/tickets/" + ticket.id + "/" + action, body || {}); ticket = data.ticket || data; ticket._at = serverNow(); renderTicket(); }
    catch (e) { say(e.message); }
  }
  $("ticket-save").onclick = () => ticketAction("qualify", { category: $("ticket-category").value, notes: $("ticket-notes").value });
  $("ticket-hold").onclick = () => ticketAction(ticket.status === "on_hold" ? "resume" : "hold");
  $("ticket-resolve").onclick = () => ticketAction(ticket.status === "resolved" ? "reopen" : "resolve",
    { category: $("ticket-category").value, notes: $("ticket-notes").value });

  // ---------------------------------------------------------------- agent state, click-to-call
  function renderState() {
    text($("agent-state"), t(paused ? "paused" : "available"));
    $("pause").dataset.i18n = paused ? "unpause" : "pause"; text($("pause"), t($("pause").dataset.i18n));
  }
  $("pause").onclick = async () => {
    try { await api("POST", "/api/agent/pause", { paused: !paused, reason: $("pause-reason").value }); paused = !paused; renderState(); }
    catch (e) { say(e.message); }
  };
  $("dial-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try { await api("POST", "/api/agent/call", { number: $("dial-number").value }); } catch (e) { say(e.message); }
  });

  // Already logged in (session cookie)? Go straight to the desk.
  api("GET", "/api/me").then((me) => { user = me; lang = me.language || lang; start(); }).catch(() => applyLang());
})();

// The agent desktop: login, the live call (pop, controls, transfer, keypad, wrap-up), the
// customer's file, the ticket with its chronometer, the agent's open tickets and own figures.
// Everything comes from the WebSocket (pops, tickets, the agent's `stats`) and the REST API; the
// page computes nothing but clocks ticking between two messages.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  let lang = localStorage.getItem("cti.lang") || "fr";
  let ws = null, user = null, pop = null, offset = 0, retry = 500;
  let paused = false, me = null, waiting = [];
  let tickets = new Map();          // my open tickets by id (and the one just resolved, shown)
  let ticketId = null;              // the ticket shown in the ticket card
  let wrapup = null;                // {since, server, linkedid} after a call, until "Prêt"
  let consult = null;               // the attended transfer's target while consulting
  let answeredAt = null;            // when the current call was answered (server time)
  let targets = null;               // colleagues and queues to transfer to
  // Only the chosen language: a missing label shows its key (the tests look for those), never
  // the other language's word.
  const t = (key) => (window.CTI_I18N[lang] || window.CTI_I18N.fr)[key] ?? key;
  const text = (el, value) => { el.textContent = value == null ? "" : String(value); };
  const serverNow = () => Date.now() / 1000 + offset;
  const clock = (s) => {
    if (s == null || Number.isNaN(s)) return "--:--";
    const sign = s < 0 ? "-" : ""; s = Math.abs(Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
    return sign + (h ? h + ":" : "") + String(m).padStart(2, "0") + ":" + String(sec).padStart(2, "0");
  };
  const pct = (r) => (r == null ? "—" : Math.round(r * 100) + " %");
  const el = (tag, props, ...children) => {
    const node = Object.assign(document.createElement(tag), props || {});
    children.forEach((c) => node.append(c));
    return node;
  };

  // ---------------------------------------------------------------- language
  function applyLang() {
    document.documentElement.lang = lang;
    $("lang").textContent = lang === "fr" ? "EN" : "FR";
    document.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n); });
    document.querySelectorAll("[data-i18n-label]").forEach((n) => n.setAttribute("aria-label", t(n.dataset.i18nLabel)));
    document.querySelectorAll("[data-i18n-placeholder]").forEach((n) => { n.placeholder = t(n.dataset.i18nPlaceholder); });
    document.title = "cti — " + t("desk_title");
    renderAll();
  }
  $("lang").addEventListener("click", () => { lang = lang === "fr" ? "en" : "fr"; localStorage.setItem("cti.lang", lang); applyLang(); });

  // ---------------------------------------------------------------- REST
  // State-changing requests are always JSON (the server refuses anything else: docs/security.md).
  async function api(method, path, body) {
    const write = method !== "GET";
    const res = await fetch(path, { method, credentials: "same-origin",
      headers: write ? { "Content-Type": "application/json" } : {}, body: write ? JSON.stringify(body || {}) : undefined });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw Object.assign(new Error(data.message || res.statusText), { status: res.status, id: data.error_id });
    return data;
  }
  // Errors in the agent's language: by the server's stable error id, never its English message.
  const errorText = (e) => t("err_" + (e.id || "")) !== "err_" + (e.id || "") ? t("err_" + e.id) : t("err_generic");
  let toastTimer = null;
  function say(msg) {
    const box = $("message"); text(box, msg); box.hidden = !msg;
    clearTimeout(toastTimer); if (msg) toastTimer = setTimeout(() => { box.hidden = true; }, 6000);
  }
  const fail = (e) => say(errorText(e));

  // ---------------------------------------------------------------- login
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const data = await api("POST", "/api/login", { username: $("username").value, password: $("password").value });
      user = data.user; lang = localStorage.getItem("cti.lang") || user.language || lang; start();
    } catch (e) { text($("login-error"), e.status === 429 ? t("rate_limited") : t("bad_login")); }
  });
  $("logout").addEventListener("click", async () => { await api("POST", "/api/logout").catch(() => {}); location.reload(); });

  function start() {
    $("login-panel").hidden = true; $("desk").hidden = false; $("logout").hidden = false; $("pause-box").hidden = false;
    text($("who"), user.display_name || user.username);
    applyLang(); connect(); loadTickets(); loadCampaigns(); loadCallbacks(); loadOutboundFigures(); loadScripts();
  }
  function loggedOut() {   // the session ended (logout elsewhere, password changed, expired)
    ws = null; user = null; pop = null; tickets = new Map(); ticketId = null; wrapup = null;
    $("desk").hidden = true; $("login-panel").hidden = false; $("logout").hidden = true; $("pause-box").hidden = true;
    applyLang();
  }

  // ---------------------------------------------------------------- WebSocket
  function linkBadge(on) {
    $("link").className = "badge " + (on ? "on" : "off"); $("link").dataset.i18n = on ? "connected" : "disconnected";
    text($("link"), t($("link").dataset.i18n));
  }
  // The session cookie authenticates the socket (never a token in the URL).
  function connect() {
    ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
    ws.onopen = () => { retry = 500; linkBadge(true); };
    ws.onclose = (ev) => {
      linkBadge(false);
      if (ev.code === 4001) { loggedOut(); return; }
      setTimeout(() => api("GET", "/api/me").then(connect, (e) => { if (e.status === 401) loggedOut(); else connect(); }), retry);
      retry = Math.min(retry * 2, 10000);   // then the server resends pop + tickets
    };
    ws.onmessage = (ev) => { let m; try { m = JSON.parse(ev.data); } catch (e) { return; } handle(m); };
  }

  function handle(m) {
    if (m.now) offset = m.now - Date.now() / 1000;
    switch (m.type) {
      case "state":
        user = m.user || user;
        setPop(m.pop ? m.pop.pop : null);
        (m.tickets || []).forEach((x) => keepTicket(x, m.now));
        if (!ticketId) ticketId = firstOpenTicket();
        renderAll(); break;
      case "pop": case "pop.update": case "pop.answered":
        setPop(m.pop); renderAll(); break;
      case "pop.withdraw":
        if (sameCall(pop, m)) { setPop(null); renderAll(); } break;
      case "pop.ended": case "pop.transferred":
        if (sameCall(pop, m)) {
          const wasAnswered = pop.state === "answered";
          setPop(null);
          if (wasAnswered) startWrapup(m);
          renderAll();
        }
        break;
      case "ticket":
        keepTicket(m.ticket, m.now);
        if (!ticketId || sameCall(pop, m.ticket)) ticketId = m.ticket.id;
        renderTicket(); renderTickets(); break;
      case "ticket.withdraw":   // handed to a colleague with the call
        tickets.delete(m.ticket_id); if (ticketId === m.ticket_id) ticketId = firstOpenTicket();
        renderTicket(); renderTickets(); break;
      case "stats":
        if (m.scope === "agent") { me = (m.me || [])[0] || null; waiting = m.queues || []; if (me) paused = me.state === "paused"; renderState(); renderFigures(); }
        break;
      case "error": say(t("err_" + m.error_id) !== "err_" + m.error_id ? t("err_" + m.error_id) : t("err_generic")); break;
      default: break;
    }
  }
  // A call is its server and its linkedid: two PBXs may name two calls alike. A frame without a
  // server (a node of an earlier version, during a rolling upgrade) is matched by linkedid.
  function sameCall(a, b) {
    return !!a && !!b && a.linkedid === b.linkedid && (a.server == null || b.server == null || a.server === b.server);
  }
  function setPop(next) {
    if (next && !sameCall(pop, next)) { consult = null; closePanels(); history = null; }
    if (next && next.state === "answered" && (!pop || pop.state !== "answered" || !sameCall(pop, next))) {
      answeredAt = serverNow(); wrapup = null;
    }
    if (next && next.state === "answered" && next.answered_at) answeredAt = next.answered_at;
    if (!next) { consult = null; answeredAt = null; }
    pop = next;
    if (pop && pop.caller && !pop.caller.withheld && !$("cb-number").value) $("cb-number").value = displayNumber(pop.caller.e164 || pop.caller.raw || "");
    if (pop && pop.customer && pop.customer.customers && pop.customer.customers.length === 1) loadHistory(pop.customer.customers[0].id);
  }

  // ---------------------------------------------------------------- the agent's state
  // What the header says is always true: the call on this desktop first, then the wrap-up, then
  // the PBX's own view of the agent (the `stats` row), then the break the agent asked for.
  function currentState() {
    if (pop && pop.state === "answered") return consult ? ["consulting", "talk"] : ["answered", "talk"];
    if (pop) return ["ringing", "ring"];
    if (wrapup) return ["wrapup", "wrap"];
    if (me) {
      const cls = { available: "on", ringing: "ring", acd: "talk", outbound: "talk", wrapup: "wrap", paused: "paused" }[me.state] || "";
      return ["st_" + me.state, cls];
    }
    return paused ? ["paused", "paused"] : ["st_unknown", ""];
  }
  function stateSince() {
    if (pop && pop.state === "answered") return answeredAt;
    if (wrapup) return wrapup.since;
    return me && me.state !== "logged_out" ? me.since : null;
  }
  function renderState() {
    const [key, cls] = currentState();
    const badge = $("agent-state");
    badge.className = "badge state " + cls; badge.dataset.state = key;
    const reason = me && me.state === "paused" && me.reason ? " (" + (t("reason_" + me.reason) !== "reason_" + me.reason ? t("reason_" + me.reason) : me.reason) + ")" : "";
    text(badge, t(key) + (key === "st_paused" ? reason : ""));
    const isPaused = me ? me.state === "paused" : paused;
    $("pause").dataset.i18n = isPaused ? "unpause" : "pause"; text($("pause"), t($("pause").dataset.i18n));
    tickState();
  }
  function tickState() {
    const since = stateSince();
    text($("agent-since"), since ? clock(serverNow() - since) : "");
  }
  $("pause").onclick = async () => {
    const want = !(me ? me.state === "paused" : paused);
    try { await api("POST", "/api/agent/pause", { paused: want, reason: $("pause-reason").value }); paused = want; if (me) me = { ...me, state: want ? "paused" : "available", reason: want ? $("pause-reason").value : null, since: serverNow() }; renderState(); }
    catch (e) { fail(e); }
  };

  // ---------------------------------------------------------------- wrap-up (post-appel)
  // After a call the agent finishes the file and the ticket: no queue call rings meanwhile (a
  // pause with the reason "wrapup", visible on the wallboard), until they press "Prêt".
  function startWrapup(call) {
    wrapup = { since: serverNow(), server: call.server, linkedid: call.linkedid };
    api("POST", "/api/agent/pause", { paused: true, reason: "wrapup" }).catch(() => {});
  }
  async function ready() {
    if (!wrapup) return;
    wrapup = null; renderCall(); renderState();
    try { await api("POST", "/api/agent/pause", { paused: false }); paused = false; } catch (e) { if (e.id !== "pause-refused" && e.id !== "no-interface") fail(e); }
  }
  $("ready").onclick = ready;

  // ---------------------------------------------------------------- the call zone
  function renderAll() { renderCall(); renderCustomer(); renderTicket(); renderTickets(); renderHistory(); renderState(); renderFigures(); renderOutbound(); renderCallbacks(); renderScript(); }
  function renderCall() {
    $("pop").hidden = !pop; $("wrapup").hidden = !(wrapup && !pop); $("idle").hidden = !!pop;
    $("no-call").hidden = !!pop || !!wrapup;
    if (!pop) { tickCall(); return; }
    const answered = pop.state === "answered";
    $("pop-state").className = "badge " + (answered ? "talk" : "ring");
    text($("pop-state"), t(answered ? (consult ? "consulting" : "answered") : "ringing"));
    text($("pop-queue"), pop.campaign ? t("campaign") + " " + pop.campaign : pop.queue ? t("queue") + " " + pop.queue : "");
    text($("pop-wait"), pop.wait_s != null && pop.direction !== "outbound" ? t("wait") + " " + clock(pop.wait_s) : "");
    const c = pop.caller || {};
    const name = callerName();
    text($("pop-caller"), name);
    const number = c.withheld ? "" : (c.e164 || c.raw || "");
    text($("pop-number"), c.withheld ? t("withheld") : displayNumber(number));
    text($("pop-ivr"), pop.ivr_path && pop.ivr_path.length ? t("ivr") + " : " + window.ctiIvrPath(pop.ivr_path, lang) : "");
    // Controls exist for a call in conversation; a ringing call is answered on the phone.
    $("controls").hidden = !answered; if (!answered) closePanels();
    $("consult").hidden = !consult; text($("consult-target"), consult ? "→ " + consult : "");
    $("transfer-open").disabled = !!consult;
    tickCall();
  }
  function callerName() {
    const c = (pop && pop.caller) || {};
    const lookup = (pop && pop.customer) || {};
    if (lookup.status === "contact") return contactName(lookup.contact) || c.e164 || c.raw || "";
    if (lookup.status === "found" && lookup.customers && lookup.customers.length) {
      const cu = lookup.customers[0]; return cu.name + (cu.vip ? " ★" : "");
    }
    if (c.withheld) return t("withheld");
    return c.name || displayNumber(c.e164 || c.raw || "");
  }
  const contactName = (contact) => {
    const f = (contact && contact.fields) || {};
    return [f.first_name || f.prenom, f.last_name || f.nom].filter(Boolean).join(" ") || f.name || f.company || "";
  };
  // A French number as agents read it: 04 78 12 34 56 (E.164 elsewhere).
  function displayNumber(n) {
    const m = /^\+33(\d)(\d{2})(\d{2})(\d{2})(\d{2})$/.exec(n || "");
    return m ? "0" + m[1] + " " + m.slice(2).join(" ") : (n || "");
  }
  function tickCall() {
    text($("call-timer"), pop && pop.state === "answered" && answeredAt ? clock(serverNow() - answeredAt) : "");
    if (wrapup) text($("wrapup-timer"), clock(serverNow() - wrapup.since));
  }

  // Call controls: each a request on the agent's own live call (the server finds the channel).
  async function control(path, body, okKey) {
    try { const r = await api("POST", "/api/agent/call/" + path, body || {}); if (okKey) say(t(okKey)); return r; }
    catch (e) { fail(e); return null; }
  }
  $("hangup").onclick = () => control("hangup");
  function closePanels() {
    ["transfer", "dtmf"].forEach((id) => { $(id).hidden = true; });
    $("transfer-open").setAttribute("aria-expanded", "false"); $("dtmf-open").setAttribute("aria-expanded", "false");
  }
  function togglePanel(id, button) {
    const open = $(id).hidden; closePanels(); $(id).hidden = !open; $(button).setAttribute("aria-expanded", String(open));
    return open;
  }
  $("transfer-open").onclick = async () => {
    if (!togglePanel("transfer", "transfer-open")) return;
    if (!targets) { try { targets = await api("GET", "/api/agent/transfer-targets"); } catch (e) { targets = { colleagues: [], queues: [] }; } }
    renderTargets(); $("target-kind").focus();
  };
  $("transfer-close").onclick = () => { closePanels(); $("transfer-open").focus(); };
  $("target-kind").onchange = renderTargets;
  function renderTargets() {
    const kind = $("target-kind").value, sel = $("target-choice");
    $("target-number").hidden = kind !== "number"; sel.hidden = kind === "number";
    sel.replaceChildren();
    const items = kind === "agent" ? (targets ? targets.colleagues : []).map((c) => [c.username, c.display_name])
      : (targets ? targets.queues : []).map((q) => [q, q]);
    items.forEach(([value, label]) => sel.append(el("option", { value, textContent: label })));
  }
  $("transfer").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const kind = $("target-kind").value;
    const value = kind === "number" ? $("target-number").value.trim() : $("target-choice").value;
    const mode = document.querySelector("#transfer input[name=mode]:checked").value;
    if (!value) { say(t("err_no-such-target")); return; }
    const label = kind === "number" ? value : $("target-choice").selectedOptions[0].textContent;
    const done = await control("transfer", { mode, target: { kind, value } }, mode === "blind" ? "transferred" : null);
    if (!done) return;
    closePanels();
    if (mode === "attended") { consult = label; renderCall(); renderState(); $("consult-complete").focus(); }
  });
  $("consult-complete").onclick = async () => { if (await control("transfer/complete", {}, "transferred")) { consult = null; renderCall(); } };
  $("consult-cancel").onclick = async () => { if (await control("transfer/cancel", {})) { consult = null; renderCall(); renderState(); } };
  $("dtmf-open").onclick = () => { if (togglePanel("dtmf", "dtmf-open")) $("keypad").querySelector("button").focus(); };
  "123456789*0#".split("").forEach((d) => {
    $("keypad").append(el("button", { type: "button", textContent: d, onclick: () => control("dtmf", { digits: d }) }));
  });

  // Click-to-call, from the dial form and from every number shown.
  async function dial(number) {
    try { const r = await api("POST", "/api/agent/call", { number }); say(t("dialing") + " " + displayNumber(r.dialing)); }
    catch (e) { fail(e); }
  }
  $("dial-form").addEventListener("submit", (ev) => { ev.preventDefault(); if ($("dial-number").value.trim()) dial($("dial-number").value.trim()); });
  const dialButton = (number) => el("button", { type: "button", className: "link dial-number", textContent: displayNumber(number),
    title: t("call"), onclick: () => dial(number) });

  // ---------------------------------------------------------------- the customer's file
  function renderCustomer() {
    const box = $("pop-customer"); box.replaceChildren();
    if (!pop) { box.append(el("p", { className: "muted", textContent: t("no_customer") })); return; }
    const lookup = pop.customer || { status: "pending" };
    const caller = pop.caller || {};
    const customers = lookup.customers || [];
    if (lookup.status === "contact") { box.append(contactFile(lookup.contact)); return; }
    if (lookup.status === "found" && customers.length) { box.append(customerFile(customers[0])); return; }
    const note = (key) => box.append(el("p", { className: "muted", textContent: t(key) }));
    if (lookup.status === "pending") return note("looking_up");
    if (lookup.status === "unavailable") return note("lookup_unavailable");
    if (lookup.status === "several") {
      note("several");
      customers.forEach((cu) => box.append(el("button", { className: "customer-choice", type: "button",
        textContent: cu.name + (cu.account ? " (" + cu.account + ")" : "") + (cu.address ? " — " + cu.address : ""),
        onclick: () => chooseCustomer(cu) })));
      return;
    }
    if (lookup.status === "withheld" || caller.withheld) return note("withheld");
    box.append(newCustomerForm(caller));
  }
  function fieldList(rows) {
    const dl = el("dl", { className: "fields" });
    rows.filter(([, v]) => v != null && v !== "").forEach(([k, v]) => dl.append(el("dt", { textContent: t(k) }), el("dd", {}, v)));
    return dl;
  }
  function customerFile(cu) {
    const wrap = el("div");
    const head = el("p", {}, el("strong", { textContent: cu.name }));
    if (cu.vip) head.append(" ", el("span", { className: "badge vip", textContent: "VIP" }));
    const phones = el("span"); (cu.phones || []).forEach((p, i) => { if (i) phones.append(", "); phones.append(dialButton(p.e164)); });
    wrap.append(head, fieldList([["account", cu.account], ["address", cu.address], ["phones", (cu.phones || []).length ? phones : null], ["customer_notes", cu.notes]]));
    if (cu.id != null) wrap.append(el("button", { type: "button", id: "customer-edit", textContent: t("edit_customer"), onclick: () => { wrap.replaceWith(editForm(cu)); } }));
    return wrap;
  }
  // The file, editable: only what changed is sent; the phones line is the whole list.
  function editForm(cu) {
    const form = el("form", { className: "edit-customer" });
    const input = (id, key, value, tag) => {
      const i = el(tag || "input", { id, value: value || "" }); form.append(el("label", {}, el("span", { textContent: t(key) }), i)); return i;
    };
    const name = input("edit-name", "name", cu.name), account = input("edit-account", "account", cu.account);
    const address = input("edit-address", "address", cu.address);
    const phones = input("edit-phones", "phones", (cu.phones || []).map((p) => displayNumber(p.e164)).join(", "));
    const notes = input("edit-notes", "customer_notes", cu.notes, "textarea");
    form.append(el("div", { className: "row" }, el("button", { type: "submit", className: "primary", textContent: t("save_customer") }),
      el("button", { type: "button", textContent: t("close"), onclick: () => renderCustomer() })));
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      try {
        const saved = await api("PATCH", "/api/customers/" + cu.id, { name: name.value, account: account.value || null,
          address: address.value || null, notes: notes.value || null, phones: phones.value.split(",").map((p) => p.trim()).filter(Boolean) });
        if (pop && pop.customer && pop.customer.customers) pop.customer = { ...pop.customer, status: "found", customers: [saved] };
        say(t("customer_saved")); renderCustomer();
      } catch (e) { fail(e); }
    };
    return form;
  }
  function contactFile(contact) {
    const fields = (contact && contact.fields) || {};
    return fieldList([["phone", contact && contact.phone ? dialButton(contact.phone) : null],
      ...Object.entries(fields).map(([k, v]) => [k, String(v)])]);
  }
  function newCustomerForm(caller) {
    const form = el("form", { className: "new-customer" });
    form.append(el("p", { className: "muted", textContent: t("new_customer") }));
    const input = (id, key, required) => {
      const i = el("input", { id, required: !!required });
      form.append(el("label", {}, el("span", { textContent: t(key) }), i)); return i;
    };
    const name = input("new-customer-name", "name", true), account = input("new-customer-account", "account");
    const address = input("new-customer-address", "address");
    form.append(el("button", { className: "primary", textContent: t("create") }));
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      try {
        const cu = await api("POST", "/api/customers", { name: name.value, account: account.value || null, address: address.value || null,
          phones: [caller.e164 || caller.raw], server: pop.server, linkedid: pop.linkedid });
        pop.customer = { status: "found", customers: [cu] }; renderAll(); loadHistory(cu.id);
      } catch (e) { fail(e); }
    };
    return form;
  }
  async function chooseCustomer(cu) {
    try {
      await api("POST", "/api/calls/" + encodeURIComponent(pop.server) + "/" + encodeURIComponent(pop.linkedid) + "/customer", { customer_id: cu.id });
      pop.customer = { status: "found", customers: [cu] }; renderAll(); loadHistory(cu.id);
    } catch (e) { fail(e); }
  }
  function outcomeText(o) {
    if (!o) return "";
    if (o.startsWith("outbound_")) return t("out_outbound") + " — " + t("out_" + o.slice(9));
    return t("out_" + o);
  }
  const when = (iso) => (iso ? new Date(iso).toLocaleString(lang === "fr" ? "fr-FR" : "en-GB", { dateStyle: "short", timeStyle: "short" }) : "");
  let history = null;   // the customer's last calls and tickets, rendered in the current language
  async function loadHistory(id) {
    try { history = await api("GET", "/api/customers/" + id + "/history"); renderHistory(); }
    catch (e) { /* history is a nicety: the pop stands without it */ }
  }
  function renderHistory() {
    const list = $("history-list"); list.replaceChildren();
    if (!history) { $("history").hidden = true; return; }
    (history.calls || []).slice(0, 10).forEach((c) => {
      const li = el("li", {}, when(c.started_at) + " — ");
      if (c.queue) li.append(t("queue") + " " + c.queue + " — ");
      li.append(outcomeText(c.outcome));
      if (c.talk_s) li.append(" — " + clock(c.talk_s));
      if (c.agent) li.append(" (" + c.agent + ")");
      list.append(li);
    });
    (history.tickets || []).slice(0, 10).forEach((k) => {
      list.append(el("li", {}, when(k.opened_at) + " — " + t("ticket") + " #" + k.id + " — " + categoryText(k.category) + " — " + t(k.status) + (k.notes ? " — " + k.notes : "")));
    });
    $("history").hidden = !list.children.length;
  }

  // ---------------------------------------------------------------- tickets
  function keepTicket(ticket, now) { ticket._at = now || serverNow(); tickets.set(ticket.id, ticket); }
  function firstOpenTicket() {
    const open = [...tickets.values()].filter((x) => x.status !== "resolved").sort((a, b) => b.opened_at - a.opened_at);
    return open.length ? open[0].id : null;
  }
  async function loadTickets() {
    try {
      const r = await api("GET", "/api/tickets");
      r.tickets.forEach((x) => keepTicket(x, r.now));
      if (!ticketId) ticketId = firstOpenTicket();
      renderTicket(); renderTickets();
    } catch (e) { /* the WebSocket's state brings them too */ }
  }
  const categoryText = (c) => (c ? (t("cat_" + c) !== "cat_" + c ? t("cat_" + c) : c) : t("cat_none"));
  // The actions a ticket's status allows: on hold → resume; resolved → reopen only.
  const ACTIONS = { open: ["save", "hold", "resolve"], on_hold: ["save", "resume", "resolve"], resolved: ["reopen"] };
  function renderTicket() {
    const ticket = ticketId != null ? tickets.get(ticketId) : null;
    const card = $("ticket");
    if (!ticket) { card.hidden = true; return; }
    card.hidden = false;
    text($("ticket-id"), "#" + ticket.id);
    text($("ticket-status"), t(ticket.status));
    $("ticket-status").className = "badge " + (ticket.status === "open" ? "talk" : ticket.status === "resolved" ? "on" : "paused");
    const sel = $("ticket-category");
    const cats = ticket.categories || window.CTI_CATEGORIES || ["information", "incident", "complaint", "order", "other"];
    window.CTI_CATEGORIES = cats;
    sel.replaceChildren(el("option", { value: "", textContent: t("cat_none") }), ...cats.map((c) => el("option", { value: c, textContent: categoryText(c) })));
    sel.value = ticket.category || "";
    if (document.activeElement !== $("ticket-notes")) $("ticket-notes").value = ticket.notes || "";
    const allowed = ACTIONS[ticket.status] || [];
    $("ticket-save").hidden = !allowed.includes("save");
    const holdKey = allowed.includes("resume") ? "resume" : "hold";
    $("ticket-hold").hidden = !(allowed.includes("hold") || allowed.includes("resume"));
    $("ticket-hold").dataset.i18n = holdKey; text($("ticket-hold"), t(holdKey));
    const resolveKey = allowed.includes("reopen") ? "reopen" : "resolve";
    $("ticket-resolve").dataset.i18n = resolveKey; text($("ticket-resolve"), t(resolveKey));
    sel.disabled = $("ticket-notes").readOnly = ticket.status === "resolved";
    tickTicket();
  }
  function ticketClock(ticket) {
    const delta = ticket.status === "open" ? Math.max(0, serverNow() - ticket._at) : 0;
    return { elapsed: (ticket.elapsed_s || 0) + delta, left: ticket.sla_left_s == null ? null : ticket.sla_left_s - delta };
  }
  function tickTicket() {
    const ticket = ticketId != null ? tickets.get(ticketId) : null;
    if (!ticket) return;
    const c = ticketClock(ticket);
    text($("ticket-elapsed"), clock(c.elapsed));
    text($("ticket-sla"), c.left == null ? "--:--" : clock(c.left));
    $("ticket-sla").className = "timer" + (c.left != null && c.left < 0 ? " breached" : "");
  }
  async function ticketAction(action, body) {
    const ticket = tickets.get(ticketId);
    if (!ticket) return;
    try {
      const data = await api("POST", "/api/tickets/" + ticket.id + "/" + action, body || {});
      keepTicket(data.ticket, data.now); renderTicket(); renderTickets(); say(t("ticket_" + action));
    } catch (e) { fail(e); }
  }
  const edits = () => ({ category: $("ticket-category").value || null, notes: $("ticket-notes").value });
  $("ticket-save").onclick = () => ticketAction("qualify", edits());
  $("ticket-hold").onclick = () => ticketAction($("ticket-hold").dataset.i18n === "resume" ? "resume" : "hold");
  $("ticket-resolve").onclick = () => ($("ticket-resolve").dataset.i18n === "reopen" ? ticketAction("reopen") : ticketAction("resolve", edits()));

  // My open tickets: all of them (the server sends only mine), newest first, searchable.
  $("tickets-search").addEventListener("input", renderTickets);
  // Drawn again every 5 s (the chronometers) and at each frame: kept items stay the same
  // elements (lists.js), only their chronometers' text changes.
  function renderTickets() {
    const list = $("tickets-list");
    const q = $("tickets-search").value.trim().toLowerCase();
    const open = [...tickets.values()].filter((x) => x.status !== "resolved").sort((a, b) => b.opened_at - a.opened_at);
    text($("tickets-count"), open.length);
    const shown = open.filter((x) => !q || ["#" + x.id, categoryText(x.category), x.queue || "", x.notes || "", t(x.status)].join(" ").toLowerCase().includes(q));
    window.ctiRedraw(list, shown, (x) => x.id, (x) => JSON.stringify([x.category, x.status, x.id === ticketId, lang]), (x) => {
      const b = el("button", { type: "button", onclick: () => { ticketId = x.id; renderTicket(); renderTickets(); $("ticket-category").focus(); } },
        el("strong", { textContent: "#" + x.id }), el("span", { textContent: categoryText(x.category) }),
        el("span", { className: "badge", textContent: t(x.status) }),
        el("span", { className: "muted ticket-clock" }));
      b.dataset.ticket = x.id;
      if (x.id === ticketId) b.setAttribute("aria-current", "true");
      return el("li", {}, b);
    });
    shown.forEach((x, i) => {
      const c = ticketClock(x);
      text(list.children[i].querySelector(".ticket-clock"), clock(c.elapsed) + (c.left != null ? " · " + t("sla_left") + " " + clock(c.left) : ""));
    });
  }

  // ---------------------------------------------------------------- outbound: preview
  // The running campaigns; "Contact suivant" shows the next contact with its campaign fields,
  // "Appeler" dials it, "Passer" puts it back in line; after a call a disposition is required
  // before the next contact (vente, RDV, argumenté, refus, rappel with its date, faux numéro,
  // répondeur).
  const DISPOSITIONS = ["sale", "appointment", "argued", "refused", "callback", "wrong_number", "no_answer"];
  let previewed = null, toQualify = null;
  async function loadCampaigns() {
    try {
      const r = await api("GET", "/api/agent/campaigns");
      const sel = $("campaign-select"), keep = sel.value;
      sel.replaceChildren(...r.campaigns.map((c) => el("option", { value: c.name, textContent: c.name + " (" + t("mode_" + c.dial_mode) + ")" })));
      if (keep) sel.value = keep;
      $("outbound").hidden = !r.campaigns.length;
    } catch (e) { $("outbound").hidden = true; }
  }
  function renderOutbound() {
    $("preview").hidden = !previewed;
    $("dispositions").hidden = !toQualify;
    $("preview-next").disabled = !!toQualify || !!previewed;
    const dl = $("preview-fields"); dl.replaceChildren();
    if (previewed) {
      dl.append(el("dt", { textContent: t("phone") }), el("dd", { textContent: displayNumber(previewed.phone) }));
      Object.entries(previewed.fields || {}).forEach(([k, v]) => dl.append(el("dt", { textContent: k }), el("dd", { textContent: String(v) })));
    }
    const box = $("dispo-buttons"); box.replaceChildren();
    DISPOSITIONS.forEach((d) => box.append(el("button", { type: "button", textContent: t("dispo_" + d), onclick: () => qualify(d) }, )));
    box.querySelectorAll("button").forEach((b, i) => { b.dataset.dispo = DISPOSITIONS[i]; });
  }
  $("preview-next").onclick = async () => {
    const name = $("campaign-select").value;
    if (!name) return;
    try {
      const r = await api("POST", "/api/dialer/campaigns/" + encodeURIComponent(name) + "/preview/next");
      previewed = r.contact;
      $("preview-empty").hidden = !!previewed; text($("preview-empty"), previewed ? "" : t("no_contact_now"));
      renderOutbound();
    } catch (e) { fail(e); }
  };
  $("preview-call").onclick = async () => {
    if (!previewed) return;
    try { await api("POST", "/api/dialer/contacts/" + previewed.id + "/dial"); toQualify = previewed; previewed = null; renderOutbound(); say(t("dialing") + " " + displayNumber(toQualify.phone)); }
    catch (e) { fail(e); }
  };
  $("preview-skip").onclick = async () => {
    if (!previewed) return;
    try { await api("POST", "/api/dialer/contacts/" + previewed.id + "/skip"); previewed = null; renderOutbound(); }
    catch (e) { fail(e); }
  };
  async function qualify(disposition) {
    if (!toQualify) return;
    const body = { disposition };
    if (disposition === "callback") {
      const at = $("dispo-callback-at").value;
      if (!at) { say(t("callback_needs_date")); $("dispo-callback-at").focus(); return; }
      body.callback_at = new Date(at).toISOString();
    }
    try { await api("POST", "/api/dialer/contacts/" + toQualify.id + "/disposition", body); toQualify = null; renderOutbound(); say(t("dispo_saved")); loadOutboundFigures(); }
    catch (e) { fail(e); }
  }
  setInterval(() => { if (user) loadCampaigns(); }, 30000);

  // ---------------------------------------------------------------- callbacks
  // Scheduled from the desktop for me or the team; the dialer dials each once due (calling-hours
  // rules apply). The list shows mine and the team's, the due ones marked.
  let callbacks = [];
  async function loadCallbacks() {
    try { callbacks = (await api("GET", "/api/agent/callbacks")).callbacks; renderCallbacks(); } catch (e) { /* next time */ }
  }
  // Read again every 15 s: unchanged callbacks keep their elements (lists.js), so a click on
  // a number's dial button is not lost to the reload.
  function renderCallbacks() {
    const list = $("callbacks-list");
    text($("callbacks-count"), callbacks.length);
    const due = (c) => Boolean(c.at && new Date(c.at).getTime() / 1000 <= serverNow());
    window.ctiRedraw(list, callbacks, (c) => c.id, (c) => JSON.stringify([c, due(c), lang]), (c) => {
      const li = el("li", {}, el("strong", { textContent: when(c.at) }), " ", dialButton(c.phone),
        " — " + (c.name ? c.name + " — " : "") + (c.note || "") + " (" + t(c.for_me ? "for_me" : "for_team") + ")"
        // Mine waits for me while I am away, then goes to the team (docs/dialer.md).
        + (c.for_me && c.team_at ? " — " + (c.waiting ? t("cb_waiting") + " " : "") + t("cb_team_at") + " " + when(c.team_at) : ""));
      li.dataset.callback = c.id; if (due(c)) li.className = "due";
      return li;
    });
  }
  $("callback-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const at = $("cb-at").value;
    try {
      await api("POST", "/api/agent/callbacks", { number: $("cb-number").value.trim(), at: new Date(at).toISOString(),
        note: $("cb-note").value, name: pop ? callerName() : "", for_me: document.querySelector("input[name=cb-for]:checked").value === "me" });
      say(t("callback_scheduled")); ev.target.reset(); loadCallbacks();
    } catch (e) { fail(e); }
  });
  setInterval(() => { if (user) loadCallbacks(); }, 15000);

  // ---------------------------------------------------------------- call script
  // During a call: the charter's phases with their prompts, and the queue's typologies, each of
  // which pre-fills the ticket's category (the agent still qualifies or resolves).
  let phase = 0, scriptCall = null, customScripts = {};
  // Scripts a supervisor set (by queue or campaign, "*" for the others) replace the charter.
  async function loadScripts() {
    try { customScripts = (await api("GET", "/api/scripts")).scripts || {}; renderScript(); } catch (e) { /* the charter stays */ }
  }
  setInterval(() => { if (user) loadScripts(); }, 120000);
  function scriptFor(call) {
    const custom = customScripts[call.queue] || customScripts[call.campaign] || customScripts["*"];
    if (custom) {
      return { phases: custom.phases.map((p) => [p.name, p.prompts]), types: custom.typologies.map((x) => [x.label, x.label, x.category]) };
    }
    const S = window.CTI_SCRIPTS;
    return { phases: S.phases[lang] || S.phases.fr, types: S.typologies[call.queue] || S.typologies[call.campaign] || S.typologies["*"] };
  }
  function renderScript() {
    const inCall = !!(pop && pop.state === "answered");
    $("script").hidden = !inCall;
    if (!inCall) return;
    const callKey = pop.server + "/" + pop.linkedid;
    if (scriptCall !== callKey) { scriptCall = callKey; phase = 0; }
    const script = scriptFor(pop), phases = script.phases;
    if (phase >= phases.length) phase = 0;
    $("script-phases").replaceChildren(...phases.map(([name], i) => {
      const b = el("button", { type: "button", textContent: (i + 1) + ". " + name, onclick: () => { phase = i; renderScript(); } });
      b.setAttribute("role", "tab"); b.setAttribute("aria-selected", String(i === phase)); return b;
    }));
    $("script-prompts").replaceChildren(...phases[phase][1].map((p) => el("li", { textContent: p })));
    $("script-next").disabled = phase >= phases.length - 1;
    const types = script.types;
    $("script-typologies").replaceChildren(...types.map(([fr, en, category]) => {
      const b = el("button", { type: "button", textContent: lang === "fr" ? fr : en, onclick: () => {
        if (!$("ticket").hidden && !$("ticket-category").disabled) { $("ticket-category").value = category; say(t("category_set") + " " + categoryText(category)); }
      } });
      b.dataset.category = category; return b;
    }));
  }
  $("script-next").onclick = () => { phase += 1; renderScript(); };

  // ---------------------------------------------------------------- my figures
  let outbound = null;   // my outbound figures today (dispositions I gave)
  async function loadOutboundFigures() {
    try { outbound = await api("GET", "/api/agent/outbound-today"); renderFigures(); } catch (e) { /* next time */ }
  }
  setInterval(() => { if (user) loadOutboundFigures(); }, 60000);
  function renderFigures() {
    text($("fig-argued"), outbound ? outbound.argued : 0);
    text($("fig-conversion"), outbound ? pct(outbound.conversion) : "—");
    text($("fig-handled"), me ? me.handled ?? 0 : 0);
    text($("fig-dmc"), me && me.dmc_s != null ? clock(me.dmc_s) : "—");
    text($("fig-paused"), me && me.paused_s != null ? clock(me.paused_s) : "—");
    text($("fig-occupancy"), me ? pct(me.occupancy) : "—");
    const busy = waiting.filter((q) => q.waiting > 0);
    text($("queues-waiting"), busy.length ? busy.map((q) => t("queue") + " " + q.queue + " : " + q.waiting + " " + t("waiting_calls")).join(" · ") : t("no_waiting"));
  }

  // ---------------------------------------------------------------- keyboard
  // Alt+R hang up, Alt+T transfer, Alt+D keypad, Alt+N notes, Alt+P ready (after a call) or break.
  document.addEventListener("keydown", (ev) => {
    if (!ev.altKey || ev.ctrlKey || ev.metaKey || $("desk").hidden) return;
    const key = ev.key.toLowerCase();
    const click = (id) => { const b = $(id); if (b && !b.hidden && !b.disabled && b.offsetParent) { b.click(); ev.preventDefault(); } };
    if (key === "r") click("hangup");
    else if (key === "t") click("transfer-open");
    else if (key === "d") click("dtmf-open");
    else if (key === "n" && !$("ticket").hidden) { $("ticket-notes").focus(); ev.preventDefault(); }
    else if (key === "p") click(wrapup ? "ready" : "pause");
  });

  setInterval(() => { tickCall(); tickTicket(); tickState(); }, 250);
  setInterval(renderTickets, 5000);

  // Already logged in (session cookie)? Go straight to the desk.
  $("logout").hidden = true; $("pause-box").hidden = true;
  api("GET", "/api/me").then((who) => { user = who; lang = localStorage.getItem("cti.lang") || who.language || lang; start(); }).catch(() => applyLang());
})();

// The campaign manager's and admin's page: campaigns (create, load contacts, start/pause/stop,
// live progress, why contacts wait) for supervisors and admins; users (add, change, disable,
// new password, remove) for admins. Every change goes through the daemon: effective at once.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  let lang = localStorage.getItem("cti.lang") || "fr";
  let me = null, current = null, campaignTimer = null;
  const t = (key) => (window.CTI_I18N[lang] || window.CTI_I18N.fr)[key] ?? key;
  const text = (el, v) => { el.textContent = v == null ? "" : String(v); };
  const el = (tag, props, ...children) => { const n = Object.assign(document.createElement(tag), props || {}); children.forEach((c) => n.append(c)); return n; };
  const pct = (r) => (r == null ? "—" : (r * 100).toFixed(1).replace(".", lang === "fr" ? "," : ".") + " %");
  const when = (iso, zone) => (iso ? new Date(iso).toLocaleString(lang === "fr" ? "fr-FR" : "en-GB",
    { dateStyle: "short", timeStyle: "short", ...(zone ? { timeZone: zone } : {}) }) : "—");

  async function api(method, path, body) {
    const write = method !== "GET";
    const res = await fetch(path, { method, credentials: "same-origin",
      headers: write ? { "Content-Type": "application/json" } : {}, body: write ? JSON.stringify(body || {}) : undefined });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw Object.assign(new Error(data.message || res.statusText), { status: res.status, id: data.error_id, body: data });
    return data;
  }
  const errorText = (e) => (t("err_" + (e.id || "")) !== "err_" + (e.id || "") ? t("err_" + e.id) : (e.body && e.body.message) || t("err_generic"));
  let toastTimer = null;
  function say(msg) { const b = $("message"); text(b, msg); b.hidden = !msg; clearTimeout(toastTimer); if (msg) toastTimer = setTimeout(() => { b.hidden = true; }, 6000); }

  function applyLang() {
    document.documentElement.lang = lang;
    $("lang").textContent = lang === "fr" ? "EN" : "FR";
    document.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n); });
    document.title = "cti — " + t("ad_title");
    if (me) { loadCampaigns(); if (me.role === "admin") loadUsers(); if (current) showCampaign(current); }
  }
  $("lang").onclick = () => { lang = lang === "fr" ? "en" : "fr"; localStorage.setItem("cti.lang", lang); applyLang(); };
  $("logout").onclick = async () => { await api("POST", "/api/logout").catch(() => {}); location.reload(); };

  // ---------------------------------------------------------------- login, role, tabs
  function show(panel) {
    ["login-panel", "refused", "campaigns", "scripts", "users"].forEach((id) => { $(id).hidden = id !== panel; });
    $("logout").hidden = $("tabs").hidden = panel === "login-panel" || panel === "refused";
    $("link").hidden = panel === "login-panel";
    ["campaigns", "scripts", "users"].forEach((id) => $("tab-" + id).setAttribute("aria-current", id === panel ? "page" : "false"));
  }
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try { const d = await api("POST", "/api/login", { username: $("username").value, password: $("password").value }); begin(d.user); }
    catch (e) { text($("login-error"), e.status === 429 ? t("rate_limited") : t("bad_login")); }
  });
  function begin(user) {
    me = user; lang = localStorage.getItem("cti.lang") || user.language || lang;
    text($("who"), user.display_name || user.username); text($("link"), t("connected"));
    applyLang();
    if (user.role !== "supervisor" && user.role !== "admin") { show("refused"); return; }
    $("tab-users").hidden = user.role !== "admin";
    show(location.hash === "#users" && user.role === "admin" ? "users" : "campaigns");
  }
  $("tab-campaigns").onclick = () => { show("campaigns"); loadCampaigns(); };
  $("tab-users").onclick = () => { show("users"); loadUsers(); };
  $("tab-scripts").onclick = () => { show("scripts"); loadScript(); };

  // ---------------------------------------------------------------- call scripts
  // Four phases (name + one prompt per line) and the typologies ("label = category" per line).
  const CHARTER = ["Accueil", "Découverte", "Proposition", "Conclusion"];
  // The latest load owns the editor: an earlier one answered late (the tab's own load, then
  // "Ouvrir" for another key) would put its key's script under the one typed, and wipe what
  // was typed meanwhile. Until it answers the editor is read-only.
  let scriptLoad = 0;
  function scriptEditable(on) {
    const form = $("script-form");
    form.querySelectorAll("#sc-phases input, #sc-phases textarea, #sc-typologies, button[type=submit], #sc-drop")
      .forEach((e) => { e.disabled = !on; });
    if (on) form.removeAttribute("aria-busy"); else form.setAttribute("aria-busy", "true");
  }
  async function loadScript() {
    const key = $("sc-key").value.trim() || "*";
    const load = ++scriptLoad;
    scriptEditable(false);
    let script = null;
    try { script = ((await api("GET", "/api/scripts")).scripts || {})[key] || null; } catch (e) { say(errorText(e)); }
    if (load !== scriptLoad) return;
    const phases = script ? script.phases : CHARTER.map((name) => ({ name, prompts: [] }));
    while (phases.length < 4) phases.push({ name: "", prompts: [] });
    $("sc-phases").replaceChildren(...phases.map((p, i) => el("div", {},
      el("label", {}, el("span", { textContent: t("ad_phase") + " " + (i + 1) }), el("input", { className: "sc-name", value: p.name })),
      el("label", {}, el("span", { textContent: t("ad_prompts") }), el("textarea", { className: "sc-prompts", rows: 4, value: p.prompts.join("\n") })))));
    $("sc-typologies").value = script ? script.typologies.map((x) => x.label + " = " + x.category).join("\n") : "";
    scriptEditable(true);
  }
  $("sc-load").onclick = loadScript;
  $("script-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const names = [...document.querySelectorAll(".sc-name")].map((i) => i.value.trim());
    const prompts = [...document.querySelectorAll(".sc-prompts")].map((a) => a.value.split("\n").map((l) => l.trim()).filter(Boolean));
    const phases = names.map((name, i) => ({ name, prompts: prompts[i] })).filter((p) => p.name);
    const typologies = $("sc-typologies").value.split("\n").map((l) => l.split("=")).filter((p) => p.length === 2 && p[0].trim() && p[1].trim())
      .map(([label, category]) => ({ label: label.trim(), category: category.trim() }));
    try {
      await api("PUT", "/api/floor/scripts/" + encodeURIComponent($("sc-key").value.trim() || "*"), { phases, typologies });
      say(t("ad_script_saved"));
    } catch (e) { say(errorText(e)); }
  });
  $("sc-drop").onclick = async () => {
    try { await api("DELETE", "/api/floor/scripts/" + encodeURIComponent($("sc-key").value.trim() || "*")); say(t("ad_done")); loadScript(); }
    catch (e) { say(errorText(e)); }
  };

  // ---------------------------------------------------------------- users
  const roleText = (r) => t("role_" + r);
  async function loadUsers() {
    if (!me || me.role !== "admin") return;
    try { renderUsers((await api("GET", "/api/admin/users")).users); } catch (e) { say(errorText(e)); }
  }
  function renderUsers(users) {
    const body = $("user-table").tBodies[0]; body.replaceChildren();
    users.forEach((u) => {
      const actions = el("div", { className: "row" });
      const button = (key, handler, cls) => actions.append(el("button", { type: "button", textContent: t(key), className: cls || "", onclick: handler }));
      button(u.active ? "ad_disable" : "ad_enable", () => userAction(u.username, u.active ? "disable" : "enable"));
      button("ad_reset_password", () => resetPassword(u.username));
      button("ad_edit", () => editUser(u));
      button("ad_remove", () => removeUser(u.username), "danger");
      const tr = el("tr", {}, el("td", { textContent: u.username }), el("td", { textContent: u.display_name }),
        el("td", { textContent: roleText(u.role) }), el("td", { textContent: [...new Set([...u.interfaces, ...u.devices])].join(", ") || "—" }),
        el("td", { textContent: u.sessions }), el("td", { textContent: t(u.active ? "ad_active" : "ad_disabled") }), el("td", {}, actions));
      tr.dataset.user = u.username; if (!u.active) tr.className = "inactive";
      body.append(tr);
    });
  }
  async function userAction(name, action) {
    try { await api("POST", "/api/admin/users/" + encodeURIComponent(name) + "/" + action); say(t("ad_done")); loadUsers(); }
    catch (e) { say(errorText(e)); }
  }
  async function resetPassword(name) {
    const password = prompt(t("ad_new_password_for") + " " + name);
    if (!password) return;
    try { await api("POST", "/api/admin/users/" + encodeURIComponent(name) + "/password", { password }); say(t("ad_done")); loadUsers(); }
    catch (e) { say(errorText(e)); }
  }
  async function removeUser(name) {
    if (!confirm(t("ad_confirm_remove") + " " + name)) return;
    try { await api("DELETE", "/api/admin/users/" + encodeURIComponent(name)); say(t("ad_done")); loadUsers(); }
    catch (e) { say(errorText(e)); }
  }
  function editUser(u) {
    $("nu-username").value = u.username; $("nu-name").value = u.display_name; $("nu-role").value = u.role;
    $("nu-interface").value = u.interfaces[0] || ""; $("nu-device").value = u.devices[0] || ""; $("nu-language").value = u.language;
    $("nu-password").value = ""; $("nu-password").focus();
  }
  $("new-user").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const list = (id) => ($(id).value.trim() ? [$(id).value.trim()] : []);
    try {
      await api("POST", "/api/admin/users", { username: $("nu-username").value.trim(), password: $("nu-password").value,
        display_name: $("nu-name").value.trim() || null, role: $("nu-role").value, language: $("nu-language").value,
        interfaces: list("nu-interface"), devices: list("nu-device") });
      say(t("ad_user_saved")); ev.target.reset(); loadUsers();
    } catch (e) { say(errorText(e)); }
  });

  // ---------------------------------------------------------------- campaigns
  async function loadCampaigns() {
    try { renderCampaigns((await api("GET", "/api/dialer/campaigns")).campaigns); } catch (e) { say(errorText(e)); }
  }
  const stateText = (s) => t("ad_state_" + s);
  function renderCampaigns(list) {
    const body = $("campaign-table").tBodies[0]; body.replaceChildren();
    list.forEach((c) => {
      const open = el("button", { type: "button", textContent: t("ad_open"), onclick: () => showCampaign(c.name) });
      const tr = el("tr", {}, el("td", { textContent: c.name }), el("td", { textContent: stateText(c.state) }),
        el("td", { textContent: t("ad_mode_" + c.dial_mode) }), el("td", { textContent: c.queue }), el("td", { textContent: "" }), el("td", {}, open));
      tr.dataset.campaign = c.name; body.append(tr);
    });
  }
  $("new-campaign").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const c = await api("POST", "/api/dialer/campaigns", { name: $("nc-name").value.trim(), queue: $("nc-queue").value.trim(),
        dial_mode: $("nc-mode").value, ruleset: $("nc-rules").value });
      say(t("ad_campaign_created")); ev.target.reset(); $("nc-queue").value = "outbound"; await loadCampaigns(); showCampaign(c.name);
    } catch (e) { say(errorText(e)); }
  });
  async function showCampaign(name) {
    current = name; $("campaign").hidden = false;
    clearInterval(campaignTimer); campaignTimer = setInterval(() => refreshCampaign(), 3000);
    await refreshCampaign();
  }
  async function refreshCampaign() {
    if (!current || $("campaigns").hidden) return;
    try {
      const c = await api("GET", "/api/dialer/campaigns/" + encodeURIComponent(current));
      renderCampaign(c);
      const why = await api("GET", "/api/dialer/campaigns/" + encodeURIComponent(current) + "/why?limit=1000");
      renderWhy(why);
    } catch (e) { say(errorText(e)); }
  }
  function renderCampaign(c) {
    text($("c-name"), c.name); text($("c-state"), stateText(c.state));
    const total = Object.values(c.contacts || {}).reduce((a, b) => a + b, 0);
    const done = Object.entries(c.contacts || {}).filter(([k]) => k !== "pending" && k !== "scheduled").reduce((a, [, v]) => a + v, 0);
    const s = c.stats;
    const figures = [["ad_total", total], ["ad_dialled", s.attempts], ["ad_remaining", total - done], ["ad_contact_rate", pct(s.contact_rate)],
      ["ad_conversion", pct(s.conversion)], ["ad_drop_rate", pct(s.drop_rate)], ["ad_argued", s.argued], ["ad_converted", s.converted]];
    $("c-figures").replaceChildren(...figures.map(([k, v]) => el("div", {}, el("dt", { textContent: t(k) }), el("dd", { textContent: v, id: "fig-" + k }))));
    text($("c-engine"), c.engine ? (c.engine.dialing ? t("ad_engine_dialing") : t("ad_engine_waiting")) + " — " + c.engine.reason : "");
    $("c-start").disabled = c.state === "running"; $("c-pause").disabled = c.state !== "running"; $("c-stop").disabled = c.state === "stopped";
    const row = document.querySelector(`#campaign-table tr[data-campaign="${CSS.escape(c.name)}"]`);
    if (row) { text(row.children[1], stateText(c.state)); text(row.children[4], total); }
  }
  // Why contacts wait: by reason, with the next allowed time in the callee's zone and the centre's.
  // A why code is "<rule set>:<rule>" (fr:window) or a contact's state (scheduled, retry...).
  const whyText = (code) => {
    const rule = String(code).split(":").pop();
    return t("why_" + rule) !== "why_" + rule ? t("why_" + rule) : code;
  };
  // The callee's zone, as the dialer's explanation names it ("... in Europe/Paris: it is ...").
  const zoneOf = (textValue) => { const m = /\bin ([A-Z][A-Za-z_]+\/[A-Za-z_\/-]+)/.exec(textValue || ""); return m ? m[1] : null; };
  function renderWhy(why) {
    const groups = new Map();
    (why.contacts || []).forEach((h) => {
      const key = h.why_code || h.status;
      const g = groups.get(key) || { count: 0, next: null, sample: h.why_not_dialed, zone: null };
      g.count += 1;
      if (h.next_attempt_at && (!g.next || h.next_attempt_at < g.next)) { g.next = h.next_attempt_at; g.zone = zoneOf(h.why_not_dialed); }
      groups.set(key, g);
    });
    const body = $("why-table").tBodies[0]; body.replaceChildren();
    [...groups.entries()].sort((a, b) => b[1].count - a[1].count).forEach(([key, g]) => {
      const reason = el("td", { textContent: whyText(key), title: g.sample || "" });
      const local = g.next ? when(g.next, g.zone || undefined) + (g.zone ? " (" + g.zone + ")" : "") : "—";
      const tr = el("tr", {}, reason, el("td", { textContent: g.count }), el("td", { textContent: local }), el("td", { textContent: when(g.next) }));
      tr.dataset.why = key; body.append(tr);
    });
  }
  const campaignAction = (action) => async () => {
    try { await api("POST", "/api/dialer/campaigns/" + encodeURIComponent(current) + "/" + action); say(t("ad_done")); refreshCampaign(); }
    catch (e) { say(errorText(e)); }
  };
  $("c-start").onclick = campaignAction("start"); $("c-pause").onclick = campaignAction("pause"); $("c-stop").onclick = campaignAction("stop");

  // The contact file: sent as JSON text (the API takes JSON only), the upload shown by a
  // progress bar; the per-line report of rejected rows comes back with the answer.
  $("upload").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = $("upload-file").files[0];
    if (!file || !current) return;
    const reader = new FileReader();
    reader.onload = () => send(String(reader.result));
    reader.readAsText(file);
  });
  // The importer's reasons (docs/dialer.md) in the page's language; another one is shown as is.
  const REASONS = [
    [/^no phone number$/, () => t("rr_no_phone")],
    [/^('.*') is not a valid number \(region (\w+)\)(.*)$/, (m) => t("rr_invalid").replace("{n}", m[1]).replace("{r}", m[2]) + m[3]],
    [/^('.*') is not a phone number$/, (m) => t("rr_not_phone").replace("{n}", m[1])],
    [/^unknown time zone ('.*?')/, (m) => t("rr_zone").replace("{z}", m[1])],
    [/^unknown country ('.*?')/, (m) => t("rr_country").replace("{c}", m[1])],
    [/^consent ('.*?')/, (m) => t("rr_consent").replace("{v}", m[1])],
    [/^priority ('.*?')/, (m) => t("rr_priority").replace("{v}", m[1])],
    [/^duplicate/i, () => t("rr_duplicate")],
  ];
  function rowReason(reason) {
    for (const [pattern, render] of REASONS) { const m = pattern.exec(reason || ""); if (m) return render(m); }
    return reason;
  }
  function send(csv) {
    const xhr = new XMLHttpRequest();
    const bar = $("upload-progress"); bar.hidden = false; bar.value = 0; $("upload-report").replaceChildren();
    text($("upload-state"), t("ad_uploading"));
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = Math.round((e.loaded / e.total) * 100); };
    xhr.upload.onload = () => { bar.value = 100; text($("upload-state"), t("ad_importing")); };
    xhr.onload = () => {
      let data = {}; try { data = JSON.parse(xhr.responseText); } catch (e) { /* keep {} */ }
      if (xhr.status >= 400) { text($("upload-state"), errorText({ id: data.error_id, body: data })); return; }
      text($("upload-state"), t("ad_imported").replace("{accepted}", data.accepted).replace("{rejected}", data.rejected));
      const list = $("upload-report");
      (data.reasons || []).forEach((r) => list.append(el("li", { textContent: t("ad_line") + " " + r.line + " : " + rowReason(r.reason), title: r.reason })));
      refreshCampaign();
    };
    xhr.onerror = () => text($("upload-state"), t("err_generic"));
    xhr.open("POST", "/api/dialer/campaigns/" + encodeURIComponent(current) + "/contacts");
    xhr.setRequestHeader("Content-Type", "application/json");
    xhr.send(JSON.stringify({ csv }));
  }

  applyLang();
  api("GET", "/api/me").then(begin).catch(() => show("login-panel"));
})();

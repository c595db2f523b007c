// The REST API's documentation, rendered from /api/openapi.json (served by the daemon): every
// operation by tag, with its parameters, request body and responses as schema trees. Plain DOM,
// no inline script or style, nothing fetched from elsewhere (the page's CSP allows only 'self').
"use strict";

(function () {
  const METHODS = ["get", "post", "put", "patch", "delete"];
  let doc = null;

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function resolve(schema, seen) {
    if (schema && schema.$ref) {
      const name = schema.$ref.split("/").pop();
      if (seen.has(name)) return { schema: { type: "object", description: "(" + name + ", see above)" }, name };
      return { schema: (doc.components.schemas || {})[name] || {}, name };
    }
    return { schema: schema || {}, name: null };
  }

  function typeOf(schema) {
    if (schema.$ref) return schema.$ref.split("/").pop();
    if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
    if (schema.const !== undefined) return JSON.stringify(schema.const);
    const alternatives = schema.anyOf || schema.oneOf;
    if (alternatives) return alternatives.map(typeOf).join(" | ");
    if (schema.type === "array") return typeOf(schema.items || {}) + "[]";
    if (schema.type === "object" && schema.additionalProperties && typeof schema.additionalProperties === "object"
        && !schema.properties) {
      return "{string: " + typeOf(schema.additionalProperties) + "}";
    }
    let type = schema.type || "any";
    if (schema.format) type += " (" + schema.format + ")";
    return type;
  }

  // A schema as a nested list: one line per property, its type, whether it is required.
  function tree(schema, seen, depth) {
    const { schema: s, name } = resolve(schema, seen);
    const inner = new Set(seen);
    if (name) inner.add(name);
    const list = el("ul", { class: "schema" });
    if (depth > 8) return list;
    const alternatives = s.anyOf || s.oneOf;
    if (alternatives && !s.properties) {
      for (const alt of alternatives) {
        if (alt.type === "null") continue;
        list.append(el("li", {}, el("span", { class: "type" }, "one of: " + typeOf(alt)), tree(alt, inner, depth + 1)));
      }
      return list;
    }
    if (s.type === "array" && s.items) {
      list.append(el("li", {}, el("span", { class: "type" }, "items: " + typeOf(s.items)), tree(s.items, inner, depth + 1)));
      return list;
    }
    const required = new Set(s.required || []);
    for (const [key, prop] of Object.entries(s.properties || {})) {
      const described = resolve(prop, inner).schema;
      const line = el("li", {}, el("code", {}, key), " ", el("span", { class: "type" }, typeOf(prop)),
        required.has(key) ? el("span", { class: "required" }, " required") : null,
        prop.description || described.description
          ? el("span", { class: "desc" }, " — " + (prop.description || described.description).split("\n")[0]) : null);
      const nested = nestedOf(prop, inner);
      if (nested) line.append(tree(nested, inner, depth + 1));
      list.append(line);
    }
    if (s.additionalProperties && typeof s.additionalProperties === "object" && s.properties) {
      list.append(el("li", {}, el("code", {}, "…"), " ", el("span", { class: "type" }, typeOf(s.additionalProperties)),
        el("span", { class: "desc" }, " — any other key")));
    }
    return list;
  }

  function nestedOf(prop, seen) {
    const alternatives = prop.anyOf || prop.oneOf;
    const candidate = alternatives ? alternatives.find((a) => a.$ref || a.type === "array" || a.properties) : prop;
    if (!candidate) return null;
    if (candidate.$ref) {
      const name = candidate.$ref.split("/").pop();
      return seen.has(name) ? null : candidate;
    }
    if (candidate.type === "array" && candidate.items && (candidate.items.$ref || candidate.items.properties)) {
      return candidate.items.$ref && seen.has(candidate.items.$ref.split("/").pop()) ? null : candidate.items;
    }
    return candidate.properties ? candidate : null;
  }

  function parameters(op) {
    if (!op.parameters || !op.parameters.length) return null;
    const rows = op.parameters.map((p) => el("tr", {},
      el("td", {}, el("code", {}, p.name)), el("td", {}, p.in), el("td", { class: "type" }, typeOf(p.schema || {})),
      el("td", {}, p.required ? "required" : ""), el("td", { class: "desc" }, p.description || "")));
    return [el("h3", {}, "Parameters"),
      el("table", {}, el("thead", {}, el("tr", {}, ["name", "in", "type", "", ""].map((h) => el("th", {}, h)))),
        el("tbody", {}, rows))];
  }

  function content(block) {
    const out = [];
    for (const [media, body] of Object.entries(block.content || {})) {
      out.push(el("p", {}, el("code", {}, media), " ", el("span", { class: "type" }, typeOf(body.schema || {}))));
      if (media === "application/json") out.push(tree(body.schema || {}, new Set(), 0));
    }
    return out;
  }

  function operation(path, method, op) {
    const summary = el("summary", {},
      el("span", { class: "method " + method }, method.toUpperCase()), el("span", { class: "path" }, path),
      el("span", { class: "op-summary" }, op.summary || ""),
      op.security && op.security.length === 0 ? el("span", { class: "public" }, "no session") : null);
    const body = el("div", { class: "op-body" });
    if (op.description) body.append(el("p", {}, op.description));
    const params = parameters(op);
    if (params) body.append(...params);
    if (op.requestBody) {
      body.append(el("h3", {}, "Request body" + (op.requestBody.required ? " (required)" : " (optional)")));
      body.append(...content(op.requestBody));
    }
    body.append(el("h3", {}, "Responses"));
    for (const [status, response] of Object.entries(op.responses || {})) {
      const item = el("div", { class: "response" },
        el("p", {}, el("span", { class: "status" }, status), " ", response.description || ""));
      item.append(...content(response));
      body.append(item);
    }
    const node = el("details", { class: "operation", id: op.operationId || method + path }, summary, body);
    node.dataset.search = [method, path, op.summary, (op.tags || []).join(" ")].join(" ").toLowerCase();
    return node;
  }

  function render() {
    document.getElementById("title").textContent = doc.info.title + " — REST API";
    document.getElementById("summary").textContent = doc.info.description || "";
    document.getElementById("openapi-version").textContent = doc.openapi;
    document.getElementById("api-version").textContent = doc.info.version;
    const tags = (doc.tags || []).map((t) => t.name);
    const byTag = new Map(tags.map((t) => [t, []]));
    for (const [path, item] of Object.entries(doc.paths)) {
      for (const method of METHODS) {
        if (!item[method]) continue;
        const tag = (item[method].tags || ["other"])[0];
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push(operation(path, method, item[method]));
      }
    }
    const main = document.getElementById("operations");
    const toc = document.getElementById("toc");
    main.replaceChildren();
    for (const [tag, ops] of byTag) {
      if (!ops.length) continue;
      const info = (doc.tags || []).find((t) => t.name === tag);
      main.append(el("section", { class: "tag", id: "tag-" + tag }, el("h2", {}, tag),
        info ? el("p", {}, info.description) : null, ops));
      toc.append(el("a", { href: "#tag-" + tag }, tag + " (" + ops.length + ")"));
    }
    document.body.dataset.operations = String(main.querySelectorAll("details.operation").length);
  }

  function filter(text) {
    const wanted = text.trim().toLowerCase();
    for (const node of document.querySelectorAll("details.operation")) {
      node.classList.toggle("hidden", wanted !== "" && !node.dataset.search.includes(wanted));
    }
    for (const section of document.querySelectorAll("section.tag")) {
      section.classList.toggle("hidden", !section.querySelector("details.operation:not(.hidden)"));
    }
  }

  async function start() {
    document.getElementById("filter").addEventListener("input", (e) => filter(e.target.value));
    try {
      const reply = await fetch("/api/openapi.json", { credentials: "same-origin" });
      if (!reply.ok) throw new Error("HTTP " + reply.status);
      doc = await reply.json();
      render();
      document.body.dataset.ready = "1";
    } catch (error) {
      document.getElementById("operations").replaceChildren(
        el("p", { class: "error" }, "Could not read /api/openapi.json: " + error.message));
      document.body.dataset.ready = "error";
    }
  }

  document.addEventListener("DOMContentLoaded", start);
}());

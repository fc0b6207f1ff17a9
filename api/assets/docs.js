// The API reference, rendered from the server's own OpenAPI document. No third-party
// code and nothing fetched from elsewhere: the page, its style and this script are all
// served from the binary. Every text from the document goes in as text, never as HTML.
"use strict";

(function () {
  const main = document.getElementById("operations");
  const filter = document.getElementById("filter");
  const METHODS = ["get", "post", "put", "patch", "delete"];

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function refName(ref) {
    return ref.split("/").pop();
  }

  // A schema as a short type expression: `JobView`, `array of Uuid`, `string (uuid)`.
  function typeOf(schema, spec, depth) {
    if (!schema) return "any";
    if (schema.$ref) return refName(schema.$ref);
    if (schema.oneOf || schema.anyOf) {
      return (schema.oneOf || schema.anyOf).map((s) => typeOf(s, spec, depth)).join(" | ");
    }
    let t = Array.isArray(schema.type) ? schema.type.filter((x) => x !== "null").join(" | ") : schema.type;
    if (t === "array") return "array of " + typeOf(schema.items, spec, depth);
    if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
    if (schema.format) t = (t || "any") + " (" + schema.format + ")";
    return t || "object";
  }

  // The fields of an object schema (following one $ref), as table rows.
  function fields(schema, spec) {
    if (schema && schema.$ref) schema = spec.components.schemas[refName(schema.$ref)];
    if (!schema || !schema.properties) return null;
    const required = new Set(schema.required || []);
    const rows = Object.entries(schema.properties).map(([name, prop]) =>
      el("tr", {},
        el("td", {}, el("code", {}, name), required.has(name) ? " *" : ""),
        el("td", {}, typeOf(prop, spec, 0)),
        el("td", {}, prop.description || "")));
    return el("table", {}, el("tr", {}, el("th", {}, "field"), el("th", {}, "type"), el("th", {}, "meaning")), rows);
  }

  function operation(path, method, op, spec) {
    const body = el("div", { class: "body" });
    if (op.description) body.append(el("p", {}, op.description));
    const security = (op.security || []).flatMap((s) => Object.keys(s));
    if (security.length) {
      body.append(el("p", { class: "auth" }, "Authorization: " +
        security.map((s) => (s === "admin_token" ? "operator token" : "tenant API key")).join(" or ")));
    }
    if (op.parameters && op.parameters.length) {
      body.append(el("h3", {}, "Parameters"));
      body.append(el("table", {},
        el("tr", {}, el("th", {}, "name"), el("th", {}, "in"), el("th", {}, "type"), el("th", {}, "meaning")),
        op.parameters.map((p) => el("tr", {},
          el("td", {}, el("code", {}, p.name), p.required ? " *" : ""),
          el("td", {}, p.in),
          el("td", {}, typeOf(p.schema, spec, 0)),
          el("td", {}, p.description || "")))));
    }
    const content = op.requestBody && op.requestBody.content;
    if (content) {
      body.append(el("h3", {}, "Request body"));
      for (const [type, media] of Object.entries(content)) {
        body.append(el("p", {}, el("code", {}, type), " — ", typeOf(media.schema, spec, 0)));
        const table = fields(media.schema, spec);
        if (table) body.append(table);
      }
    }
    body.append(el("h3", {}, "Responses"));
    body.append(el("table", {},
      Object.entries(op.responses || {}).map(([status, res]) => {
        const media = res.content ? Object.values(res.content)[0] : null;
        return el("tr", {},
          el("td", {}, el("code", {}, status)),
          el("td", {}, media ? typeOf(media.schema, spec, 0) : ""),
          el("td", {}, res.description || ""));
      })));
    const brief = (op.summary || (op.description || "").split("\n")[0] || "");
    const details = el("details", { class: "op", "data-search": (method + " " + path + " " + brief + " " + (op.description || "")).toLowerCase() },
      el("summary", {},
        el("span", { class: "method " + method }, method.toUpperCase()),
        el("span", { class: "path" }, path),
        el("span", { class: "brief" }, brief)),
      body);
    return details;
  }

  function render(spec) {
    document.getElementById("title").textContent = (spec.info && spec.info.title) || "API";
    document.title = document.getElementById("title").textContent;
    const byTag = new Map();
    for (const [path, item] of Object.entries(spec.paths || {})) {
      for (const method of METHODS) {
        const op = item[method];
        if (!op) continue;
        const tag = (op.tags && op.tags[0]) || "other";
        if (!byTag.has(tag)) byTag.set(tag, []);
        byTag.get(tag).push(operation(path, method, op, spec));
      }
    }
    main.replaceChildren(...[...byTag.entries()].map(([tag, ops]) =>
      el("section", { "data-tag": tag }, el("h2", {}, tag), ops)));
  }

  function applyFilter() {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    for (const section of main.querySelectorAll("section")) {
      let shown = 0;
      for (const op of section.querySelectorAll("details.op")) {
        const hit = words.every((w) => op.dataset.search.includes(w));
        op.classList.toggle("hidden", !hit);
        if (hit) shown++;
      }
      section.classList.toggle("hidden", shown === 0);
    }
  }

  filter.addEventListener("input", applyFilter);
  fetch(main.dataset.spec)
    .then((r) => {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    })
    .then((spec) => {
      render(spec);
      applyFilter();
    })
    .catch((e) => main.replaceChildren(el("p", { class: "error" }, "Could not load the document: " + e.message)));
})();

/* torchyard dashboard: the models and services pages. Plain DOM, no third-party code.
 * Everything user-written (model names, tags, properties, descriptions, log lines) goes into the page
 * as text (textContent / createTextNode), never as HTML. */
"use strict";

const MAPI = "/api/v1";
const REFRESH_MS = 2000;
const COLORS = ["#2f6fdb", "#21918c", "#e07b39", "#8e44ad", "#c0392b", "#5ec962", "#6b7385"];

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) { continue; }
    if (k === "class") { node.className = v; }
    else if (k === "dataset") { Object.assign(node.dataset, v); }
    else if (k.startsWith("on")) { node.addEventListener(k.slice(2), v); }
    else { node.setAttribute(k, v === true ? "" : String(v)); }
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) { continue; }
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function empty(node) { while (node.firstChild) { node.removeChild(node.firstChild); } return node; }

function banner(message) {
  const b = document.getElementById("banner");
  b.textContent = message;
  b.hidden = false;
}

async function get(path, params) {
  const url = new URL(MAPI + path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (Array.isArray(v)) { v.forEach((x) => url.searchParams.append(k, x)); }
    else if (v !== null && v !== undefined && v !== "") { url.searchParams.set(k, v); }
  }
  const resp = await fetch(url, { headers: { Accept: "application/json" } });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error((body.error && body.error.message) || `${resp.status} ${resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return body;
}

const q = encodeURIComponent;
function when(ts) { return ts ? new Date(ts * 1000).toLocaleString() : "–"; }
function bytes(n) {
  if (n === null || n === undefined) { return "–"; }
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0, v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return (i ? v.toFixed(1) : String(v)) + " " + units[i];
}
function badge(state) {
  const known = ["Healthy", "Transitioning", "Unhealthy", "Failed", "Stopped"].includes(state) ? state : "Unknown";
  return h("span", { class: `status st-${known}`, dataset: { state: state } }, state);
}
function chips(obj) {
  return Object.entries(obj || {}).map(([k, v]) => h("span", { class: "chip", title: `${k}=${v}` }, v === "" ? k : `${k}=${v}`));
}
function modelLink(id) {
  const i = id.lastIndexOf(":");
  return h("a", { href: `/models/${q(id.slice(0, i))}/versions/${q(id.slice(i + 1))}` }, id);
}
function runLink(runId, exists) {
  if (!runId) { return h("span", { class: "muted" }, "–"); }
  return exists === false ? h("span", { title: "the run is no longer in the store" }, runId)
    : h("a", { class: "lineage", href: "/runs/" + q(runId) }, runId);
}
function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.filter((p) => p).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}
function uri(text) { return text ? h("code", { class: "uri" }, text) : h("span", { class: "muted" }, "–"); }
function table(id, heads, rows) {
  return h("table", { id }, h("thead", {}, h("tr", {}, heads.map((x) => h("th", {}, x)))), h("tbody", {}, rows));
}

/* A traffic split as a stacked bar and a legend (mirror shares dashed in the legend). */
function split(traffic, mirror) {
  const names = Object.keys(traffic || {});
  const bar = h("div", { class: "split", title: names.map((n) => `${n} ${traffic[n]}%`).join(", ") });
  const legend = h("div", { class: "split-legend" });
  names.forEach((n, i) => {
    const color = COLORS[i % COLORS.length];
    const part = h("i", { dataset: { deployment: n } });
    part.style.width = `${traffic[n]}%`;
    part.style.backgroundColor = color;
    bar.appendChild(part);
    const dot = h("b");
    dot.style.backgroundColor = color;
    legend.appendChild(h("span", { dataset: { deployment: n } }, dot, `${n} ${traffic[n]}%`));
  });
  for (const [n, pct] of Object.entries(mirror || {})) {
    legend.appendChild(h("span", { class: "muted", dataset: { mirror: n } }, `mirror → ${n} ${pct}%`));
  }
  return h("div", {}, bar, legend);
}

/* ---------------------------------------------------------------- models */

async function modelsPage(main) {
  const params = new URLSearchParams(location.search);
  const tagIn = h("input", { placeholder: "tag KEY or KEY=VALUE", value: params.get("tag") || "", "aria-label": "tag" });
  const box = h("div");
  add(main, h("h1", {}, "Models"), h("div", { class: "filters" }, tagIn), box);
  const load = async () => {
    const tag = tagIn.value.trim();
    const body = await get("/models", { tag: tag ? [tag] : [] });
    const byName = new Map();
    for (const m of body.models) {
      if (!byName.has(m.name)) { byName.set(m.name, []); }
      byName.get(m.name).push(m);
    }
    empty(box);
    if (!byName.size) { box.appendChild(h("p", { class: "muted" }, tag ? "No version has that tag." : "No model is registered yet.")); return; }
    box.appendChild(table("models", ["Name", "Latest", "Versions", "Aliases", "Tags (latest)", "Run (latest)", "Registered"],
      Array.from(byName, ([name, versions]) => {
        const latest = versions[0];
        const aliases = versions.flatMap((v) => v.aliases.map((a) => h("span", { class: "chip" }, `${a} → ${v.version}`)));
        return h("tr", { dataset: { model: name } },
          h("td", {}, h("a", { href: "/models/" + q(name) }, name)),
          h("td", {}, modelLink(latest.id)),
          h("td", { class: "num" }, versions.length),
          h("td", { class: "tags" }, aliases),
          h("td", { class: "tags" }, chips(latest.tags)),
          h("td", {}, runLink(latest.run_id)),
          h("td", {}, when(latest.created_at)));
      })));
  };
  tagIn.addEventListener("change", () => {
    const url = new URL(location.href);
    if (tagIn.value.trim()) { url.searchParams.set("tag", tagIn.value.trim()); } else { url.searchParams.delete("tag"); }
    history.replaceState(null, "", url);
    load().catch((err) => banner(err.message));
  });
  await load();
}

async function modelPage(main, name) {
  const body = await get(`/models/${q(name)}`);
  const aliasRows = body.alias_history.slice().reverse().map((e) => h("tr", {},
    h("td", {}, e.alias), h("td", {}, modelLink(`${name}:${e.version}`)), h("td", {}, when(e.time))));
  add(main, h("h1", {}, name),
    h("p", {}, Object.entries(body.aliases).map(([a, v]) => h("span", { class: "chip" }, `${a} → ${v}`))),
    h("h2", {}, "Versions"),
    table("versions", ["Version", "Aliases", "Tags", "Description", "sha256", "Size", "Run", "Registered"],
      body.versions.map((m) => h("tr", { dataset: { version: m.version } },
        h("td", {}, modelLink(m.id)),
        h("td", { class: "tags" }, m.aliases.map((a) => h("span", { class: "chip" }, a))),
        h("td", { class: "tags" }, chips(m.tags)),
        h("td", {}, m.description || ""),
        h("td", { class: "hash", title: m.sha256 }, m.sha256.slice(0, 12)),
        h("td", { class: "num" }, bytes(m.size)),
        h("td", {}, runLink(m.run_id)),
        h("td", {}, when(m.created_at))))),
    h("h2", {}, "Alias history (newest first)"),
    aliasRows.length ? table("alias-history", ["Alias", "Pointed at", "When"], aliasRows)
      : h("p", { class: "muted" }, "No alias was ever set."));
}

async function versionPage(main, name, version) {
  const body = await get(`/models/${q(name)}/versions/${q(version)}`);
  const m = body.model;
  const pairTable = (id, obj, empty_) => (Object.keys(obj).length
    ? table(id, ["Key", "Value"], Object.entries(obj).map(([k, v]) => h("tr", {}, h("td", {}, k), h("td", {}, v))))
    : h("p", { class: "muted" }, empty_));
  add(main, h("div", { class: "row" }, h("h1", {}, m.id), m.aliases.map((a) => h("span", { class: "chip" }, a))),
    h("div", { class: "card" }, kv([
      ["Name", h("a", { href: "/models/" + q(m.name) }, m.name)],
      ["Version", m.version],
      ["Description", m.description || "–"],
      ["Framework", m.framework || "–"],
      ["Files", `${m.kind === "folder" ? "folder" : "file"} ${m.file_name} · ${m.file_count} file(s) · ${bytes(m.size)}`],
      ["sha256", h("span", { class: "hash" }, m.sha256)],
      ["Run (lineage)", runLink(m.run_id, body.run_exists)],
      ["Experiment", m.experiment || "–"],
      ["Registered", when(m.created_at)],
    ])),
    h("h2", {}, "Tags"), pairTable("tags", m.tags, "No tags."),
    h("h2", {}, "Properties"), pairTable("properties", m.properties, "No properties."),
    h("h2", {}, "Served by"),
    body.services.length ? h("ul", { id: "served-by" }, body.services.map((s) => h("li", {}, h("a", { href: "/services/" + q(s) }, s))))
      : h("p", { class: "muted" }, "No service serves this version."));
}

/* ---------------------------------------------------------------- services and endpoints */

async function servicesPage(main) {
  const svcBox = h("div"), epBox = h("div");
  add(main, h("h1", {}, "Endpoints"), epBox, h("h1", {}, "Services"), svcBox);
  const load = async () => {
    const [svcs, eps] = await Promise.all([get("/services"), get("/endpoints")]);
    empty(epBox).appendChild(eps.endpoints.length ? table("endpoints", ["Name", "State", "Scoring URI", "Traffic", "Deployments", "Restarts"],
      eps.endpoints.map((e) => h("tr", { dataset: { endpoint: e.name } },
        h("td", {}, h("a", { href: "/endpoints/" + q(e.name) }, e.name)),
        h("td", {}, badge(e.state)),
        h("td", {}, uri(e.scoring_uri)),
        h("td", {}, split(e.traffic, e.mirror)),
        h("td", {}, Object.entries(e.deployments).map(([d, info]) => h("div", {},
          h("a", { href: "/services/" + q(info.service) }, d), " ", badge(info.state)))),
        h("td", { class: "num" }, e.restarts))))
      : h("p", { class: "muted" }, "No endpoint."));
    empty(svcBox).appendChild(svcs.services.length ? table("services", ["Name", "State", "Scoring URI", "Models", "Workers", "Restarts", "Generation", "Target"],
      svcs.services.map((s) => h("tr", { dataset: { service: s.name } },
        h("td", {}, h("a", { href: "/services/" + q(s.name) }, s.name)),
        h("td", {}, badge(s.state)),
        h("td", {}, uri(s.scoring_uri)),
        h("td", {}, s.models.map((id) => h("div", {}, modelLink(id)))),
        h("td", { class: "num" }, s.replicas !== null && s.replicas !== undefined ? `${s.replicas} replicas`
          : `${s.workers.filter((w) => w.ready && !w.draining).length}/${s.config.workers || s.workers.length}`),
        h("td", { class: "num" }, s.restarts),
        h("td", { class: "num" }, s.generation === null ? "–" : s.generation),
        h("td", {}, s.deployment_target || "local"))))
      : h("p", { class: "muted" }, "No service."));
  };
  await load();
  setInterval(() => load().catch((err) => banner(err.message)), REFRESH_MS);
}

async function servicePage(main, name) {
  const head = h("div"), logs = h("pre", { class: "logs", id: "logs" });
  add(main, head, h("h2", {}, "Logs (tail)"), logs);
  const load = async () => {
    const body = await get(`/services/${q(name)}`, { lines: 200 });
    const s = body.service;
    empty(head).appendChild(h("div", {},
      h("div", { class: "row" }, h("h1", {}, s.name), badge(s.state)),
      h("div", { class: "card" }, kv([
        ["Scoring URI", uri(s.scoring_uri)],
        ["Swagger", uri(s.swagger_uri)],
        ["Models", s.models.map((id) => h("span", {}, modelLink(id), " "))],
        ["Entry script", s.entry_script || "–"],
        ["Target", s.deployment_target || "local"],
        ["Generation", s.generation === null ? "–" : s.generation],
        ["Restarts", s.last_crash ? `${s.restarts} (last: worker ${s.last_crash.worker || ""} ${s.last_crash.how}, ${when(s.last_crash.time)})` : s.restarts],
        s.endpoint ? ["Endpoint", h("a", { href: "/endpoints/" + q(s.endpoint) }, s.endpoint)] : null,
        ["Auth", s.auth_enabled ? "keys (Bearer)" : "none"],
        ["Limits", `max ${s.config.max_concurrent_requests} in flight per worker · timeout ${s.config.request_timeout_ms} ms · body ≤ ${bytes(s.config.max_request_bytes)} · batch ≤ ${s.config.max_batch_size}`],
        s.error ? ["Error", h("pre", {}, s.error)] : null,
      ])),
      s.workers.length ? table("workers", ["Worker", "pid", "Generation", "Ready", "Draining"], s.workers.map((w) => h("tr", {},
        h("td", {}, w.label), h("td", { class: "num" }, w.pid), h("td", { class: "num" }, w.generation),
        h("td", {}, w.ready ? "yes" : "no"), h("td", {}, w.draining ? "yes" : "no")))) : null));
    logs.textContent = body.logs || "(no log yet)";
  };
  await load();
  setInterval(() => load().catch((err) => banner(err.message)), REFRESH_MS);
}

async function endpointPage(main, name) {
  const head = h("div"), logs = h("pre", { class: "logs", id: "logs" });
  add(main, head, h("h2", {}, "Router log (tail)"), logs);
  const load = async () => {
    const body = await get(`/endpoints/${q(name)}`, { lines: 200 });
    const e = body.endpoint;
    empty(head).appendChild(h("div", {},
      h("div", { class: "row" }, h("h1", {}, e.name), badge(e.state)),
      h("div", { class: "card" }, kv([
        ["Scoring URI", uri(e.scoring_uri)],
        ["Traffic", split(e.traffic, e.mirror)],
        ["Auth", e.auth_mode === "key" ? "keys (Bearer)" : "none"],
        ["Body limit", bytes(e.max_request_bytes)],
        ["Router restarts", e.last_crash ? `${e.restarts} (last: ${e.last_crash.how}, ${when(e.last_crash.time)})` : e.restarts],
      ])),
      h("h2", {}, "Deployments"),
      table("deployments", ["Deployment", "State", "Traffic", "Mirror", "Models", "Service"],
        Object.entries(e.deployments).map(([d, info]) => h("tr", { dataset: { deployment: d } },
          h("td", {}, d), h("td", {}, badge(info.state)), h("td", { class: "num" }, `${e.traffic[d] || 0}%`),
          h("td", { class: "num" }, e.mirror[d] ? `${e.mirror[d]}%` : "–"),
          h("td", {}, (info.models || []).map((id) => h("div", {}, modelLink(id)))),
          h("td", {}, h("a", { href: "/services/" + q(info.service) }, info.service)))))));
    logs.textContent = body.logs || "(no log yet)";
  };
  await load();
  setInterval(() => load().catch((err) => banner(err.message)), REFRESH_MS);
}

function add(node, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) { continue; }
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/* ---------------------------------------------------------------- router */

async function routeModels() {
  const main = empty(document.getElementById("main"));
  const path = location.pathname;
  let m;
  try {
    if (path === "/models") { await modelsPage(main); }
    else if ((m = path.match(/^\/models\/([^/]+)\/versions\/([^/]+)$/))) {
      await versionPage(main, decodeURIComponent(m[1]), decodeURIComponent(m[2]));
    }
    else if ((m = path.match(/^\/models\/([^/]+)$/))) { await modelPage(main, decodeURIComponent(m[1])); }
    else if (path === "/services") { await servicesPage(main); }
    else if ((m = path.match(/^\/services\/([^/]+)$/))) { await servicePage(main, decodeURIComponent(m[1])); }
    else if ((m = path.match(/^\/endpoints\/([^/]+)$/))) { await endpointPage(main, decodeURIComponent(m[1])); }
    else { main.appendChild(h("h1", {}, "Not found")); }
  } catch (err) {
    if (err.status === 404) { add(empty(main), h("h1", {}, "Not found"), h("p", { class: "muted" }, err.message)); }
    else { banner(err.message); }
  }
  document.body.dataset.ready = "1";
}

routeModels();

/* torchyard dashboard pages: runs table, run page, compare, sweep. Plain DOM, no third-party code.
 * Everything user-written (names, tags, params, metric keys, log lines, file names) goes into the page
 * as text (textContent / createTextNode), never as HTML. */
"use strict";

const API = "/api/v1";
const ACTIVE = new Set(["NotStarted", "Queued", "Preparing", "Starting", "Running", "Finalizing",
  "CancelRequested", "Retrying", "NotResponding"]);
const STATUSES = ["NotStarted", "Queued", "Preparing", "Starting", "Running", "Finalizing", "CancelRequested",
  "Retrying", "NotResponding", "Completed", "Failed", "Canceled"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) { continue; }
    if (k === "class") { node.className = v; }
    else if (k === "color") { node.style.backgroundColor = v; }
    else if (k === "dataset") { Object.assign(node.dataset, v); }
    else if (k.startsWith("on")) { node.addEventListener(k.slice(2), v); }
    else { node.setAttribute(k, v === true ? "" : String(v)); }
  }
  return add(node, ...children);
}

/* Append children (nodes, or text for anything else; arrays flattened; null/false skipped). */
function add(node, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) { continue; }
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } return node; }

function showError(message) {
  const b = document.getElementById("banner");
  b.textContent = message;
  b.hidden = false;
}

async function api(path, params) {
  const url = new URL(API + path, location.origin);
  for (const [k, v] of Object.entries(params || {})) {
    if (Array.isArray(v)) { v.forEach((x) => url.searchParams.append(k, x)); }
    else if (v !== null && v !== undefined && v !== "") { url.searchParams.set(k, v); }
  }
  return answer(fetch(url, { headers: { Accept: "application/json" } }));
}

/* The JSON of a fetch's response; an error (with its status) for an error answer. */
async function answer(pending) {
  const resp = await pending;
  if (resp.status === 401 && document.body.dataset.login !== "no") { location.href = "/login"; }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error((body.error && body.error.message) || `${resp.status} ${resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return body;
}

function enc(s) { return encodeURIComponent(s); }
function fmtTime(ts) { return ts ? new Date(ts * 1000).toLocaleString() : "–"; }
function fmtDuration(run) {
  if (!run.started_at) { return "–"; }
  const s = (run.ended_at || Date.now() / 1000) - run.started_at;
  if (s < 60) { return s.toFixed(1) + " s"; }
  if (s < 3600) { return (s / 60).toFixed(1) + " min"; }
  return (s / 3600).toFixed(2) + " h";
}
function statusBadge(status) {
  const known = STATUSES.includes(status) ? status : "Unknown";
  return el("span", { class: `status st-${known}`, dataset: { status: status } }, status);
}
function runName(run) { return run.display_name || run.id; }

/* One EventSource per page; re-opening replaces the previous one. */
let pageStream = null;
function openStream(path, handlers) {
  if (pageStream) { pageStream.close(); }
  const source = new EventSource(API + path);
  for (const [name, fn] of Object.entries(handlers)) {
    source.addEventListener(name, (ev) => fn(JSON.parse(ev.data)));
  }
  source.addEventListener("end", () => source.close());
  pageStream = source;
  return source;
}

/* ---------------------------------------------------------------- runs table */

async function runsPage(main) {
  const q = new URLSearchParams(location.search);
  const state = { sort: q.get("sort") || "created_at", order: q.get("order") || "desc",
    experiment: q.get("experiment") || "", status: q.get("status") || "", tag: q.get("tag") || "",
    q: q.get("q") || "", cursor: null, rows: [], selected: new Set() };
  const expSel = el("select", { "aria-label": "experiment" }, el("option", { value: "" }, "all experiments"));
  const stSel = el("select", { "aria-label": "status" }, el("option", { value: "" }, "any status"),
    STATUSES.map((s) => el("option", { value: s }, s)));
  const tagIn = el("input", { placeholder: "tag KEY or KEY=VALUE", value: state.tag, "aria-label": "tag" });
  const searchIn = el("input", { placeholder: "search id or name", value: state.q, "aria-label": "search" });
  const compareBtn = el("button", { class: "primary", disabled: true, onclick: () => {
    location.href = "/compare?runs=" + Array.from(state.selected).map(enc).join(",");
  } }, "Compare selected");
  const table = el("table", { id: "runs" });
  const more = el("button", { hidden: true, onclick: () => load(false) }, "Load more");
  const count = el("span", { class: "muted" });
  add(clear(main), el("h1", {}, "Runs"),
    el("div", { class: "filters" }, expSel, stSel, tagIn, searchIn, compareBtn, count), table, el("p", {}, more));
  try {
    const exps = await api("/experiments");
    exps.experiments.forEach((e) => expSel.appendChild(el("option", { value: e }, e)));
  } catch (err) { showError(err.message); }
  expSel.value = state.experiment; stSel.value = state.status;
  const refilter = () => {
    state.experiment = expSel.value; state.status = stSel.value; state.tag = tagIn.value.trim();
    state.q = searchIn.value.trim();
    load(true);
  };
  expSel.addEventListener("change", refilter); stSel.addEventListener("change", refilter);
  tagIn.addEventListener("change", refilter); searchIn.addEventListener("change", refilter);

  const metricCols = () => {
    const names = new Set();
    state.rows.forEach((r) => Object.keys(r.metrics || {}).forEach((m) => names.add(m)));
    return Array.from(names).sort().slice(0, 8);
  };
  const header = (label, key) => {
    const th = el("th", { class: "sortable" + (state.sort === key ? " sorted" : ""), onclick: () => {
      if (state.sort === key) { state.order = state.order === "desc" ? "asc" : "desc"; }
      else { state.sort = key; state.order = key.startsWith("metric:") || key === "name" ? "asc" : "desc"; }
      load(true);
    } }, label, state.sort === key ? (state.order === "desc" ? " ▼" : " ▲") : "");
    return th;
  };
  const render = () => {
    const cols = metricCols();
    clear(table);
    table.appendChild(el("thead", {}, el("tr", {}, el("th", {}, ""), header("Name", "name"),
      header("Status", "status"), header("Experiment", "experiment"), header("Created", "created_at"),
      el("th", {}, "Duration"), el("th", {}, "Tags"), cols.map((m) => header(m, "metric:" + m)))));
    const body = el("tbody");
    for (const r of state.rows) {
      const box = el("input", { type: "checkbox", "aria-label": "select " + r.id, onchange: (ev) => {
        if (ev.target.checked) { state.selected.add(r.id); } else { state.selected.delete(r.id); }
        compareBtn.disabled = state.selected.size < 1;
      } });
      box.checked = state.selected.has(r.id);
      body.appendChild(el("tr", { dataset: { run: r.id } },
        el("td", {}, box),
        el("td", {}, el("a", { href: "/runs/" + enc(r.id), title: r.id }, runName(r))),
        el("td", { class: "st" }, statusBadge(r.status)),
        el("td", {}, r.experiment),
        el("td", {}, fmtTime(r.created_at)),
        el("td", { class: "num dur" }, fmtDuration(r)),
        el("td", { class: "tags" }, Object.entries(r.tags || {}).filter(([k]) => k !== "hyperparameters")
          .map(([k, v]) => el("span", { title: `${k}=${v}` }, `${k}=${v}`))),
        cols.map((m) => el("td", { class: "num" }, r.metrics && r.metrics[m] ? tyFormat(r.metrics[m].last) : ""))));
    }
    table.appendChild(body);
    count.textContent = `${state.rows.length} run${state.rows.length === 1 ? "" : "s"}${state.cursor ? "+" : ""}`;
    more.hidden = !state.cursor;
  };
  const load = async (fresh) => {
    const params = { sort: state.sort, order: state.order, experiment: state.experiment, status: state.status,
      q: state.q, limit: 50, cursor: fresh ? null : state.cursor };
    if (state.tag) { params.tag = state.tag; }
    const url = new URL(location.href);
    for (const k of ["sort", "order", "experiment", "status", "tag", "q"]) {
      if (state[k] && !(k === "sort" && state[k] === "created_at") && !(k === "order" && state[k] === "desc")) {
        url.searchParams.set(k, state[k]);
      } else { url.searchParams.delete(k); }
    }
    history.replaceState(null, "", url);
    try {
      const page = await api("/runs", params);
      state.rows = fresh ? page.runs : state.rows.concat(page.runs);
      state.cursor = page.next_cursor;
      render();
    } catch (err) { showError(err.message); }
  };
  await load(true);
  let reloadTimer = null;
  openStream("/events", {
    status: (ch) => {
      const row = state.rows.find((r) => r.id === ch.id);
      if (!row || row.status === ch.status) { return; }
      Object.assign(row, ch);
      const tr = table.querySelector(`tr[data-run="${CSS.escape(ch.id)}"]`);
      if (tr) {
        clear(tr.querySelector("td.st")).appendChild(statusBadge(ch.status));
        tr.querySelector("td.dur").textContent = fmtDuration(row);
      }
    },
    runs: () => { clearTimeout(reloadTimer); reloadTimer = setTimeout(() => load(true), 300); },
  });
}

/* ---------------------------------------------------------------- metric charts */

function metricPath(runId, name) { return `/runs/${enc(runId)}/metrics/${name.split("/").map(enc).join("/")}`; }

/* What boot.js asked for before this script ran (a run's details; opened on the Metrics tab, each
 * chart's buckets), taken once, for the run it was asked for. */
function booted(key, runId) {
  const boot = window.tyBoot;
  if (!boot || boot.runId !== runId || !boot[key]) { return null; }
  const found = boot[key];
  delete boot[key];
  return found;
}

const prefetched = { data: null };
async function takePrefetched(name) {
  if (!prefetched.data) { return null; }
  const all = await prefetched.data;
  const found = all[name];
  delete all[name];
  return found ? await found : null;
}

class MetricPanel {
  /* A chart of one metric for one or more runs: fetches buckets sized to its width, re-fetches on zoom. */
  constructor(container, name, runs, opts) {
    this.name = name; this.runs = runs; this.rank = opts.rank || 0; this.xAxis = opts.xAxis || "step";
    this.range = [null, null];
    const box = el("div", { class: "chart", dataset: { metric: name } }, el("div", { class: "title" }, name));
    container.appendChild(box);
    this.chart = new TYChart(box, { xAxis: this.xAxis, onZoom: (a, b) => { this.range = [a, b]; this.load(); } });
    if (runs.length > 1) {
      box.appendChild(el("div", { class: "legend" }, runs.map((r, i) =>
        el("span", {}, el("i", { color: TY_COLORS[i % TY_COLORS.length] }), r.label))));
    }
    this.appended = 0;
  }

  async load() {
    const points = this.chart.plotWidth();
    const early = this.runs.length === 1 && this.rank === 0 && this.xAxis === "step" && this.range[0] === null
      ? await takePrefetched(this.name) : null;
    const results = early ? [early] : await Promise.all(this.runs.map((r) => r.has && !r.has.has(this.name) ? null :
      api(metricPath(r.id, this.name),
        { rank: this.rank, x: this.xAxis, points, from: this.range[0], to: this.range[1] })
        .catch((err) => (err.status === 404 ? null : Promise.reject(err)))));
    this.chart.setSeries(results.map((d, i) => ({ label: this.runs[i].label, data: d || { mode: "raw", x: [], y: [] },
      color: TY_COLORS[i % TY_COLORS.length] })));
    this.appended = 0;
  }

  /* Live points from the page's stream (only while not zoomed into the past). */
  addPoints(ev) {
    if (ev.rank !== this.rank || !ev.vals) { return; }
    if (this.range[0] !== null) { return; }
    const xs = this.xAxis === "time" ? ev.ts : ev.steps.map((s, i) => (s === -9223372036854775808 ? i : s));
    this.chart.append(0, xs, ev.vals);
    this.appended += xs.length;
    if (this.appended > this.chart.plotWidth()) { this.load(); }
  }
}

/* ---------------------------------------------------------------- system metrics */

const SYSTEM = "system/";
function isSystem(name) { return name.startsWith(SYSTEM); }
const SYSTEM_TITLES = {
  cpu_percent: "CPU %", memory_percent: "Memory %", memory_used_gb: "Memory used (GB)",
  disk_read_mb_s: "Disk read (MB/s)", disk_write_mb_s: "Disk write (MB/s)",
  net_recv_mb_s: "Network in (MB/s)", net_sent_mb_s: "Network out (MB/s)",
  "gpu_*/utilization_percent": "GPU utilization %", "gpu_*/memory_percent": "GPU memory %",
  "gpu_*/memory_used_gb": "GPU memory used (GB)", "gpu_*/power_w": "GPU power (W)",
  "gpu_*/temperature_c": "GPU temperature (°C)",
};
/* The chart a system series belongs to: its name with a GPU's index as "*" (every GPU of every node
 * in one chart); and the GPU's index, if any. */
function systemFamily(name) {
  const m = name.match(/^system\/gpu_(\d+)\//);
  return m ? { family: name.replace(/^system\/gpu_\d+\//, "system/gpu_*/"), gpu: Number(m[1]) } : { family: name, gpu: null };
}

class SystemPanel {
  /* One chart of a system metric family: a line per node (per node and GPU for GPU series), on the
   * time axis; re-fetches its own series on zoom. */
  constructor(container, runId, family, lines) {
    this.runId = runId; this.family = family; this.lines = lines; this.range = [null, null];
    const short = family.slice(SYSTEM.length);
    const box = el("div", { class: "chart", dataset: { metric: family } },
      el("div", { class: "title", title: family }, SYSTEM_TITLES[short] || short));
    container.appendChild(box);
    this.chart = new TYChart(box, { xAxis: "time", onZoom: (a, b) => { this.range = [a, b]; this.load(); } });
    box.appendChild(el("div", { class: "legend" }, lines.map((l, i) =>
      el("span", { dataset: { rank: l.rank } }, el("i", { color: TY_COLORS[i % TY_COLORS.length] }), l.label))));
    this.appended = 0;
  }

  wants(ev) { return this.lines.some((l) => l.name === ev.name && l.rank === ev.rank); }

  show(found) {
    this.chart.setSeries(this.lines.map((l, i) => ({ label: l.label, color: TY_COLORS[i % TY_COLORS.length],
      data: found.get(`${l.rank} ${l.name}`) || { mode: "raw", x: [], y: [] } })));
    // the newest chunk each line has: the page's stream may send it again
    this.seen = new Map(this.lines.map((l) => [`${l.rank} ${l.name}`, (found.get(`${l.rank} ${l.name}`) || {}).last_chunk || 0]));
    this.appended = 0;
  }

  async load() {
    const names = Array.from(new Set(this.lines.map((l) => l.name)));
    const body = await api(`/runs/${enc(this.runId)}/system`,
      { name: names, points: this.chart.plotWidth(), from: this.range[0], to: this.range[1] });
    this.show(new Map(body.series.map((s) => [`${s.rank} ${s.name}`, s])));
  }

  addPoints(ev) {
    if (this.range[0] !== null || !ev.vals) { return; }
    const index = this.lines.findIndex((l) => l.name === ev.name && l.rank === ev.rank);
    if (index < 0 || ev.chunk <= (this.seen.get(`${ev.rank} ${ev.name}`) || 0)) { return; }
    this.chart.append(index, ev.ts, ev.vals);
    this.appended += ev.ts.length;
    if (this.appended > this.chart.plotWidth()) { this.load(); }
  }
}

/* The System tab's charts from one answer of GET .../system (every node's series). */
function systemPanels(grid, runId, body) {
  const labels = new Map(body.nodes.map((n) => [n.rank, n.label]));
  const families = new Map();
  for (const s of body.series) {
    const { family, gpu } = systemFamily(s.name);
    const node = labels.get(s.rank) || `rank ${s.rank}`;
    if (!families.has(family)) { families.set(family, []); }
    families.get(family).push({ name: s.name, rank: s.rank, gpu, label: gpu === null ? node : `${node} · GPU ${gpu}` });
  }
  const order = Object.keys(SYSTEM_TITLES).map((k) => SYSTEM + k);
  const rank = (f) => (order.indexOf(f) < 0 ? order.length : order.indexOf(f));
  const found = new Map(body.series.map((s) => [`${s.rank} ${s.name}`, s]));
  return Array.from(families.keys()).sort((a, b) => rank(a) - rank(b) || a.localeCompare(b)).map((f) => {
    const lines = families.get(f).sort((a, b) => a.rank - b.rank || (a.gpu || 0) - (b.gpu || 0));
    const panel = new SystemPanel(grid, runId, f, lines);
    panel.show(found);
    return panel;
  });
}

/* ---------------------------------------------------------------- run page */

/* A modal <dialog> (not window.confirm: the page keeps running, and its text is ours): `build`
 * fills it and returns its primary action, which closes it when it resolves to true. */
function openDialog(id, title, build) {
  const old = document.getElementById(id);
  if (old) { old.remove(); }
  const error = el("p", { class: "error", hidden: true });
  const body = el("div");
  const dialog = el("dialog", { id, class: "dialog" }, el("h2", {}, title), body, error);
  const fail = (message) => { error.textContent = message; error.hidden = !message; };
  const actions = build(body, fail, () => dialog.close());
  dialog.appendChild(el("div", { class: "row actions" }, actions));
  dialog.addEventListener("close", () => dialog.remove());
  document.body.appendChild(dialog);
  dialog.showModal();
  return dialog;
}

/* POST JSON; the answer's body, or an error carrying the API's message and field. */
async function post(path, body) {
  const resp = await fetch(API + path, { method: "POST", headers: { "Content-Type": "application/json",
    Accept: "application/json" }, body: JSON.stringify(body) });
  return answer(Promise.resolve(resp));
}

/* "lr=0.1" lines (or comma-separated) → {lr: "0.1"}; a line without "=" is an error naming it. */
function parseChanges(text) {
  const out = {};
  for (const part of text.split(/[\n,]/).map((p) => p.trim()).filter(Boolean)) {
    const at = part.indexOf("=");
    if (at <= 0) { throw new Error(`expected KEY=VALUE, got "${part}"`); }
    out[part.slice(0, at).trim()] = part.slice(at + 1).trim();
  }
  return out;
}

function rerunDialog(runId, run) {
  openDialog("rerun-dialog", `Re-run ${runName(run)}`, (body, fail, close) => {
    const input = el("textarea", { id: "rerun-set", rows: 4, "aria-label": "changes",
      placeholder: "lr=0.1\nnode_count=2" });
    add(body, el("p", { class: "muted" }, "A new run from the same code snapshot, environment and inputs. ",
      "Changes, one KEY=VALUE a line (optional): a job setting (node_count, process_count_per_node, ",
      "compute_target, max_run_duration_seconds, priority, max_retries, use_gpu, …) or a script argument ",
      "(lr=0.1 sets --lr)."), input);
    const go = el("button", { class: "primary", id: "rerun-submit", onclick: async () => {
      fail("");
      let changes;
      try { changes = parseChanges(input.value); } catch (err) { fail(err.message); return; }
      go.disabled = true;
      try {
        const made = await post(`/runs/${enc(runId)}/rerun`, { set: changes });
        location.href = "/runs/" + enc(made.run_id);
      } catch (err) { fail(err.message); go.disabled = false; }
    } }, "Start re-run");
    return [go, el("button", { onclick: close }, "Close")];
  });
}

function cancelDialog(runId, run, button) {
  openDialog("cancel-dialog", `Cancel ${runName(run)}?`, (body, fail, close) => {
    add(body, el("p", {}, "Its processes are stopped; the run ends as Canceled. This cannot be undone ",
      "(Re-run starts a new run)."));
    const go = el("button", { class: "danger", id: "cancel-confirm", onclick: async () => {
      go.disabled = true;
      try {
        await post(`/runs/${enc(runId)}/cancel`, { reason: "canceled from the dashboard" });
        button.disabled = true;
        close();
      } catch (err) { fail(err.message); go.disabled = false; }
    } }, "Cancel run");
    return [go, el("button", { onclick: close }, "Keep running")];
  });
}

async function runPage(main, runId) {
  let info;
  const early = booted("details", runId);
  try { info = await (early ? answer(early) : api(`/runs/${enc(runId)}`)); } catch (err) {
    add(clear(main), el("h1", {}, "Run not found"), el("p", { class: "muted" }, err.message));
    return;
  }
  const run = info.run, details = info.details;
  document.title = `${runName(run)} · torchyard`;
  const badge = el("span", { id: "run-status" }, statusBadge(run.status));
  // the buttons only for who may use them (GET /runs/ID says: can_edit); the API checks again
  const canEdit = info.can_edit !== false;
  const cancelBtn = el("button", { class: "danger", id: "cancel-run", hidden: !canEdit || !ACTIVE.has(run.status),
    onclick: () => cancelDialog(runId, run, cancelBtn) }, "Cancel run");
  const rerunBtn = canEdit && !run.is_sweep
    ? el("button", { id: "rerun", onclick: () => rerunDialog(runId, run) }, "Re-run…") : null;
  const tabsBar = el("div", { class: "tabs", role: "tablist" });
  const pane = el("div", { id: "pane" });
  add(clear(main), 
    el("div", { class: "row" }, el("h1", {}, runName(run)), badge, cancelBtn, rerunBtn,
      run.is_sweep ? el("a", { href: "/sweeps/" + enc(runId) }, "Sweep trials →") : null,
      run.parent_id ? el("a", { href: "/sweeps/" + enc(run.parent_id) }, "← parent sweep") : null),
    el("p", { class: "muted" }, `${run.id} · ${run.experiment} · ${run.compute_target}`),
    tabsBar, pane);

  const state = { tab: null, rank: 0, logRank: 0, logOffset: 0, logPre: null, panels: [], xAxis: "step",
    after: Math.max(0, ...info.metric_keys.map((k) => k.last_chunk)) };
  const restream = () => {
    const params = new URLSearchParams({ after: state.after });
    if (state.tab === "Logs") { params.set("log_rank", state.logRank); params.set("log_offset", state.logOffset); }
    openStream(`/runs/${enc(runId)}/events?${params}`, {
      status: (r) => {
        clear(badge).appendChild(statusBadge(r.status));
        cancelBtn.hidden = !canEdit || !ACTIVE.has(r.status);
      },
      points: (ev) => {
        state.after = Math.max(state.after, ev.chunk);
        if (!info.metric_keys.some((k) => k.name === ev.name && k.rank === ev.rank)) {
          info.metric_keys.push({ name: ev.name, rank: ev.rank, count: ev.count, last_chunk: ev.chunk });
          if (state.tab === (isSystem(ev.name) ? "System" : "Metrics")) { show(state.tab); }
          return;
        }
        state.panels.filter((p) => (p.wants ? p.wants(ev) : p.name === ev.name)).forEach((p) => p.addPoints(ev));
      },
      log: (ev) => {
        if (ev.rank !== state.logRank || !state.logPre) { return; }
        state.logOffset = ev.next_offset;
        const pre = state.logPre, atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.appendChild(document.createTextNode(ev.text));
        if (atEnd) { pre.scrollTop = pre.scrollHeight; }
      },
    });
  };

  const tabs = {
    Overview: () => overview(pane, run, details, info),
    Metrics: async () => {
      const own = info.metric_keys.filter((k) => !isSystem(k.name));  // system/...: the System tab
      const ranks = Array.from(new Set(own.map((k) => k.rank))).sort((a, b) => a - b);
      const rankSel = el("select", { "aria-label": "rank" }, ranks.map((r) => el("option", { value: r }, "rank " + r)));
      rankSel.value = String(state.rank);
      const xSel = el("select", { "aria-label": "x axis" }, el("option", { value: "step" }, "x: step"),
        el("option", { value: "time" }, "x: time"));
      xSel.value = state.xAxis;
      const grid = el("div", { class: "charts" });
      add(clear(pane), el("div", { class: "filters" }, rankSel, xSel,
        el("span", { class: "muted" }, "drag to zoom · double-click to reset")), grid);
      rankSel.addEventListener("change", () => { state.rank = Number(rankSel.value); tabs.Metrics(); });
      xSel.addEventListener("change", () => { state.xAxis = xSel.value; tabs.Metrics(); });
      const names = own.filter((k) => k.rank === state.rank).map((k) => k.name);
      if (!names.length) { grid.appendChild(el("p", { class: "muted" }, "No scalar metrics logged yet.")); }
      state.panels = names.map((n) => new MetricPanel(grid, n, [{ id: runId, label: runName(run) }],
        { rank: state.rank, xAxis: state.xAxis }));
      await Promise.all(state.panels.map((p) => p.load()));
    },
    System: async () => {  // its data is asked for only now, in one answer for every chart
      const grid = el("div", { class: "charts", id: "system-charts" });
      add(clear(pane), el("div", { class: "filters" },
        el("span", { class: "muted" }, "each node's CPU, memory, disk, network and GPUs, sampled by its launcher · drag to zoom · double-click to reset")),
        grid);
      const width = Math.min(window.innerWidth, 1500) - 40;
      const body = await api(`/runs/${enc(runId)}/system`, { points: Math.max(50, Math.floor(width / 2) - 80) });
      if (!body.series.length) {
        grid.appendChild(el("p", { class: "muted", id: "no-system" }, "This run has no system metrics. ",
          "Each node's launcher samples them every TORCHYARD_SYSTEM_METRICS_SECONDS (default 5 s; 0 turns ",
          "sampling off), so a run shorter than one interval, or one with sampling off, has none."));
        return;
      }
      state.panels = systemPanels(grid, runId, body);
    },
    Logs: async () => {
      const { logs } = await api(`/runs/${enc(runId)}/logs`);
      const ranks = logs.filter((f) => f.rank !== null);
      const bar = el("div", { class: "tabs", id: "rank-tabs" });
      const pre = el("pre", { id: "log" });
      add(clear(pane), bar, pre);
      const pick = async (rank) => {
        state.logRank = rank;
        Array.from(bar.children).forEach((b) => b.classList.toggle("active", b.dataset.rank === String(rank)));
        const part = await api(`/runs/${enc(runId)}/logs/${rank}`, { tail: 262144 }).catch(() => null);
        clear(pre).appendChild(document.createTextNode(part ? part.text : ""));
        pre.scrollTop = pre.scrollHeight;
        state.logPre = pre; state.logOffset = part ? part.next_offset : 0;
        restream();
      };
      (ranks.length ? ranks : [{ rank: 0 }]).forEach((f) => bar.appendChild(el("button",
        { dataset: { rank: f.rank }, onclick: () => pick(f.rank) }, `rank ${f.rank}`)));
      await pick(ranks.some((f) => f.rank === state.logRank) ? state.logRank : (ranks[0] ? ranks[0].rank : 0));
    },
    Outputs: async () => {
      const { artifacts } = await api(`/runs/${enc(runId)}/artifacts`);
      clear(pane).appendChild(artifacts.length ? el("table", { class: "files" },
        el("thead", {}, el("tr", {}, el("th", {}, "File"), el("th", {}, "Size"))),
        el("tbody", {}, artifacts.map((a) => el("tr", {},
          el("td", {}, el("a", { href: `${API}/runs/${enc(runId)}/artifacts/${a.name.split("/").map(enc).join("/")}`,
            download: a.name.split("/").pop() }, a.name)),
          el("td", { class: "num" }, a.size === null ? "" : a.size.toLocaleString() + " B")))))
        : el("p", { class: "muted" }, "No artifacts (they are collected when the run finalizes)."));
    },
    Snapshot: async () => {
      let snap;
      try { snap = await api(`/runs/${enc(runId)}/snapshot`); } catch (err) {
        clear(pane).appendChild(el("p", { class: "muted" }, err.message)); return;
      }
      const code = el("pre", { id: "code" }, "Pick a file.");
      const list = el("table", { class: "files" }, el("tbody", {}, snap.files.map((f) => el("tr", {},
        el("td", {}, el("a", { href: "#", onclick: async (ev) => {
          ev.preventDefault();
          const resp = await fetch(`${API}/runs/${enc(runId)}/snapshot/${f.path.split("/").map(enc).join("/")}`);
          clear(code).appendChild(document.createTextNode(await resp.text()));
        } }, f.path)), el("td", { class: "num" }, f.size.toLocaleString() + " B")))));
      add(clear(pane), el("p", { class: "muted" }, "snapshot " + snap.snapshot), list, el("h2", {}, "Code"), code);
    },
  };
  const show = async (name) => {
    state.tab = name;
    state.panels = []; state.logPre = null;
    Array.from(tabsBar.children).forEach((b) => b.classList.toggle("active", b.textContent === name));
    const url = new URL(location.href);
    url.hash = name === "Overview" ? "" : name.toLowerCase();
    history.replaceState(null, "", url);
    try { await tabs[name](); } catch (err) { showError(err.message); }
    if (name !== "Logs") { restream(); }
  };
  Object.keys(tabs).forEach((name) => tabsBar.appendChild(el("button", { role: "tab", onclick: () => show(name) }, name)));
  const initial = Object.keys(tabs).find((t) => t.toLowerCase() === location.hash.slice(1)) || "Overview";
  await show(initial);
}

function overview(pane, run, details, info) {
  const err = details.error && details.error.message;
  const kv = (pairs) => el("dl", { class: "kv" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  const summary = Object.entries(info.summary || {});
  add(clear(pane), 
    el("div", { class: "card" }, kv([["Status", run.status], ["Created", fmtTime(run.created_at)],
      ["Started", fmtTime(run.started_at)], ["Ended", run.ended_at ? fmtTime(run.ended_at) : null],
      ["Duration", fmtDuration(run)], ["Compute", run.compute_target], ["Exit code", run.exit_code],
      ["Error", err], ["Cancel reason", details.cancel_reason]])),
    el("h2", {}, "Tags"), el("div", { class: "card" }, kv(Object.entries(details.tags || {}))),
    el("h2", {}, "Properties"), el("div", { class: "card" }, kv(Object.entries(details.properties || {}))),
    summary.length ? [el("h2", {}, "Metrics (rank 0)"), el("table", {},
      el("thead", {}, el("tr", {}, ["Metric", "Last", "Min", "Max", "Values"].map((h) => el("th", {}, h)))),
      el("tbody", {}, summary.map(([name, s]) => el("tr", {}, el("td", {}, name), el("td", { class: "num" }, tyFormat(s.last)),
        el("td", { class: "num" }, tyFormat(s.min)), el("td", { class: "num" }, tyFormat(s.max)),
        el("td", { class: "num" }, s.count.toLocaleString())))))] : null,
    Object.keys(info.other_metrics || {}).length ? [el("h2", {}, "Other metrics"),
      el("pre", {}, JSON.stringify(info.other_metrics, null, 2))] : null,
    el("h2", {}, "Status history"), el("table", {},
      el("tbody", {}, (details.statusHistory || []).map((s) => el("tr", {}, el("td", {}, statusBadge(s.status)),
        el("td", {}, fmtTime(s.time)), el("td", {}, s.detail || ""))))),
    el("h2", {}, "Job definition"), el("pre", {}, JSON.stringify(details.runDefinition, null, 2)));
}

/* ---------------------------------------------------------------- compare */

async function comparePage(main) {
  const ids = (new URLSearchParams(location.search).get("runs") || "").split(",").filter(Boolean);
  const grid = el("div", { class: "charts" });
  add(clear(main), el("h1", {}, "Compare runs"), el("p", { class: "muted" }, ids.join(" · ")), grid);
  if (!ids.length) { grid.appendChild(el("p", { class: "muted" }, "Pick runs in the runs table.")); return; }
  const infos = await Promise.all(ids.map((id) => api(`/runs/${enc(id)}`).catch(() => null)));
  const runs = infos.filter(Boolean).map((i) => ({ id: i.run.id, label: runName(i.run),
    has: new Set(i.metric_keys.filter((k) => k.rank === 0).map((k) => k.name)) }));
  const names = new Set();  // the scripts' own metrics (system/... ones are on each run's System tab)
  infos.filter(Boolean).forEach((i) => i.metric_keys.filter((k) => k.rank === 0 && !isSystem(k.name))
    .forEach((k) => names.add(k.name)));
  const panels = Array.from(names).sort().map((n) => new MetricPanel(grid, n, runs, { rank: 0 }));
  await Promise.all(panels.map((p) => p.load()));
}

/* ---------------------------------------------------------------- sweep */

function metricColor(t) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.min(0.9999, Math.max(0, t)) * (stops.length - 1), i = Math.floor(x), f = x - i;
  const c = stops[i].map((v, j) => Math.round(v + f * (stops[i + 1][j] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

async function sweepPage(main, runId) {
  let body, info;
  try {
    [info, body] = await Promise.all([api(`/runs/${enc(runId)}`), api(`/runs/${enc(runId)}/children`)]);
  } catch (err) {
    add(clear(main), el("h1", {}, "Sweep not found"), el("p", { class: "muted" }, err.message));
    return;
  }
  const metric = body.primary_metric.name, maximize = body.primary_metric.goal === "MAXIMIZE";
  const badge = el("span", {}, statusBadge(info.run.status));
  const canvas = el("canvas", { class: "parcoords", id: "parcoords" });
  const table = el("table", { id: "trials" });
  const grid = el("div", { class: "charts" });
  add(clear(main), el("div", { class: "row" }, el("h1", {}, runName(info.run)), badge,
    el("a", { href: "/runs/" + enc(runId) }, "parent run →")),
  el("p", { class: "muted" }, `${body.children.length} trials · primary metric ${metric} (${maximize ? "maximize" : "minimize"})`),
  el("h2", {}, "Parallel coordinates"), el("p", { class: "muted" }, "drag along an axis to filter · double-click to clear · dashed: stopped early"),
  canvas, el("h2", {}, "Trials, best first"), table, el("h2", {}, `${metric} of every trial`), grid);
  const values = body.children.map((c) => c.best_primary_metric).filter((v) => v !== null);
  const lo = Math.min(...values), hi = Math.max(...values);
  const color = (v) => (v === null ? "#b8bfcc" : metricColor(hi > lo ? (maximize ? (v - lo) / (hi - lo) : (hi - v) / (hi - lo)) : 1));
  const rows = body.children.map((c) => ({ id: c.run_id, early: c.early_terminated, color: color(c.best_primary_metric),
    values: Object.assign({}, c.hyperparameters, { [metric]: c.best_primary_metric }) }));
  add(clear(table), el("thead", {}, el("tr", {}, el("th", {}, "#"), el("th", {}, "Trial"), el("th", {}, "Status"),
    el("th", {}, metric), body.parameters.map((p) => el("th", {}, p)))),
  el("tbody", {}, body.children.map((c) => el("tr", { dataset: { run: c.run_id }, class: c.early_terminated ? "early" : null },
    el("td", {}, c.rank === null ? "–" : c.rank),
    el("td", {}, el("a", { href: "/runs/" + enc(c.run_id) }, c.run_id)),
    el("td", {}, statusBadge(c.status), c.early_terminated ? el("span", { class: "chip", title: c.cancel_reason || "" }, "early terminated") : null),
    el("td", { class: "num" }, tyFormat(c.best_primary_metric)),
    body.parameters.map((p) => el("td", {}, c.hyperparameters[p] === undefined ? "" : JSON.stringify(c.hyperparameters[p])))))));
  new TYParallel(canvas, body.parameters.concat([metric]), rows, { onBrush: (kept) => {
    const keep = new Set(kept);
    table.querySelectorAll("tbody tr").forEach((tr) => tr.classList.toggle("dim", !keep.has(tr.dataset.run)));
  } }).draw();
  const series = await api(`/runs/${enc(runId)}/children/metric`, { points: 400 });
  const box = el("div", { class: "chart", dataset: { metric } }, el("div", { class: "title" }, metric));
  grid.appendChild(box);
  const chart = new TYChart(box, { onZoom: null });
  chart.setSeries(body.children.filter((c) => series.series[c.run_id]).map((c) => ({ label: c.run_id,
    color: c.early_terminated ? "#b8bfcc" : color(c.best_primary_metric),
    data: { mode: "raw", x: series.series[c.run_id].x, y: series.series[c.run_id].y } })));
  openStream(`/runs/${enc(runId)}/events`, { status: (r) => clear(badge).appendChild(statusBadge(r.status)) });
}

/* ---------------------------------------------------------------- router */

async function route() {
  const main = document.getElementById("main");
  const path = location.pathname;
  let m;
  try {
    if (path === "/" || path === "") { await runsPage(main); }
    else if ((m = path.match(/^\/runs\/([^/]+)$/))) {
      prefetched.data = booted("charts", decodeURIComponent(m[1]));
      await runPage(main, decodeURIComponent(m[1]));
    }
    else if ((m = path.match(/^\/sweeps\/([^/]+)$/))) { await sweepPage(main, decodeURIComponent(m[1])); }
    else if (path === "/compare") { await comparePage(main); }
    else { clear(main).appendChild(el("h1", {}, "Not found")); }
  } catch (err) { showError(err.message); }
  document.body.dataset.ready = "1";
}

window.addEventListener("beforeunload", () => { if (pageStream) { pageStream.close(); } });
route();

/* torchyard dashboard: a run page's first requests, started while the page's other scripts load
 * (a small blocking script in <head>; app.js takes the answers over). Opened on its Metrics tab, the
 * metric keys and each chart's buckets (sized from the window) are asked for too. */
(function () {
  "use strict";
  const m = location.pathname.match(/^\/runs\/([^/]+)$/);
  if (!m) { return; }
  const base = `/api/v1/runs/${m[1]}`;  // the path's own (encoded) id
  const get = (path) => fetch(base + path, { headers: { Accept: "application/json" } });
  const boot = { runId: decodeURIComponent(m[1]), details: get("") };
  if (location.hash === "#metrics") {
    boot.charts = get("/metrics").then((r) => (r.ok ? r.json() : { metrics: [] })).then((k) => {
      const names = k.metrics.filter((x) => x.rank === 0).map((x) => x.name);
      const width = Math.min(window.innerWidth, 1500) - 40;
      const cols = Math.max(1, Math.min(names.length, Math.floor((width + 12) / 472)));
      const points = Math.max(50, Math.round((width - (cols - 1) * 12) / cols - 78));
      const out = {};
      names.forEach((n) => {
        const path = `/metrics/${n.split("/").map(encodeURIComponent).join("/")}?rank=0&x=step&points=${points}`;
        out[n] = get(path).then((r) => (r.ok ? r.json() : null)).catch(() => null);
      });
      return out;
    }).catch(() => ({}));
  }
  window.tyBoot = boot;
})();

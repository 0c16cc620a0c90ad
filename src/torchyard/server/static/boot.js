/* torchyard dashboard: a run page's first requests, started while the page's other scripts load
 * (a small blocking script in <head>; app.js takes the answers over). Opened on its Metrics tab, the
 * first charts' buckets too, sized by the server for the page's grid in the window's width. */
(function () {
  "use strict";
  const m = location.pathname.match(/^\/runs\/([^/]+)$/);
  if (!m) { return; }
  const base = `/api/v1/runs/${m[1]}`;  // the path's own (encoded) id
  const get = (path) => fetch(base + path, { headers: { Accept: "application/json" } });
  const boot = { runId: decodeURIComponent(m[1]), details: get("") };
  if (location.hash === "#metrics") {  // the keys and the first charts' buckets, in one answer
    const width = Math.min(window.innerWidth, 1500) - 40;
    boot.charts = get(`/metrics?charts_width=${width}`).then((r) => (r.ok ? r.json() : { charts: {} }))
      .then((k) => k.charts || {}).catch(() => ({}));
  }
  window.tyBoot = boot;
})();

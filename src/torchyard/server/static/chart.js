/* torchyard's canvas charts, written for the dashboard (no third-party code).
 *
 * TYChart draws series that the API reduced to min/max/first/last buckets: each bucket is a vertical
 * stroke from its min to its max (so every spike shows) joined by a line through first/last values.
 * Drag across the plot to zoom (the owner re-fetches detail for the range); double-click to reset.
 * TYParallel draws parallel coordinates with brushing (drag along an axis; double-click clears).
 */
"use strict";

const TY_COLORS = ["#2f6fdb", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0c8599", "#e67700", "#5c940d",
  "#a61e4d", "#1864ab"];

function tyNiceTicks(lo, hi, count) {
  if (!(hi > lo)) { return [lo]; }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) { out.push(v); }
  return out;
}

function tyFormat(v) {
  if (v === null || v === undefined || Number.isNaN(v)) { return "–"; }
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) { return v.toExponential(2); }
  return Number(v.toPrecision(5)).toString();
}

function tyFormatX(v, axis) {
  if (axis === "time") { return new Date(v * 1000).toLocaleTimeString(); }
  return tyFormat(v);
}

class TYChart {
  constructor(container, opts) {
    this.opts = Object.assign({ xAxis: "step", onZoom: null, height: 240 }, opts || {});
    this.series = [];
    this.view = null; // [lo, hi] when zoomed
    this.canvas = document.createElement("canvas");
    this.tip = document.createElement("div");
    this.tip.className = "tip";
    this.tip.hidden = true;
    container.appendChild(this.canvas);
    container.appendChild(this.tip);
    this.drawnAt = null;
    this._drag = null;
    this._bind();
    this._resizeObserver = new ResizeObserver(() => this.draw());
    this._resizeObserver.observe(this.canvas);
  }

  /** Pixels of plot width: what to ask the API for as `points`. */
  plotWidth() {
    return Math.max(50, Math.round((this.canvas.clientWidth || 600) - 60));
  }

  setSeries(series) { this.series = series; this.draw(); }

  /** Append live points (xs, ys) to series `index` as one-value buckets. */
  append(index, xs, ys) {
    const s = this.series[index];
    if (!s) { return; }
    const d = s.data;
    for (let i = 0; i < xs.length; i++) {
      if (d.mode === "raw") { d.x.push(xs[i]); d.y.push(ys[i]); }
      else {
        d.x.push(xs[i]); d.x_last.push(xs[i]); d.min.push(ys[i]); d.max.push(ys[i]);
        d.first.push(ys[i]); d.last.push(ys[i]); d.n.push(1);
      }
    }
    this.draw();
  }

  _extent() {
    let xlo = Infinity, xhi = -Infinity, ylo = Infinity, yhi = -Infinity;
    for (const s of this.series) {
      const d = s.data;
      if (!d || !d.x.length) { continue; }
      const lows = d.mode === "raw" ? d.y : d.min, highs = d.mode === "raw" ? d.y : d.max;
      const xl = d.mode === "raw" ? d.x : d.x_last;
      xlo = Math.min(xlo, d.x[0]); xhi = Math.max(xhi, xl[xl.length - 1]);
      for (let i = 0; i < lows.length; i++) {
        const lo = lows[i], hi = highs[i];
        if (lo !== null && lo < ylo) { ylo = lo; }
        if (hi !== null && hi > yhi) { yhi = hi; }
      }
    }
    if (this.view) { xlo = this.view[0]; xhi = this.view[1]; }
    if (!Number.isFinite(xlo)) { return null; }
    if (xhi === xlo) { xhi = xlo + 1; }
    if (!Number.isFinite(ylo)) { ylo = 0; yhi = 1; }
    if (yhi === ylo) { const pad = Math.abs(ylo) * 0.1 || 1; ylo -= pad; yhi += pad; }
    const ypad = (yhi - ylo) * 0.05;
    return { xlo, xhi, ylo: ylo - ypad, yhi: yhi + ypad, dataMax: yhi };
  }

  draw() {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || 600, h = c.clientHeight || this.opts.height;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const L = 52, R = 8, T = 8, B = 22;
    this.box = { L, R, T, B, w, h };
    const e = this._extent();
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#6b7385";
    if (!e) { g.fillText("no values yet", L + 8, T + 20); return; }
    this.ext = e;
    const px = (x) => L + (x - e.xlo) / (e.xhi - e.xlo) * (w - L - R);
    const py = (y) => T + (1 - (y - e.ylo) / (e.yhi - e.ylo)) * (h - T - B);
    // grid and ticks
    g.strokeStyle = "#eceff4"; g.lineWidth = 1;
    g.textAlign = "right"; g.textBaseline = "middle";
    for (const t of tyNiceTicks(e.ylo, e.yhi, 5)) {
      const y = Math.round(py(t)) + 0.5;
      g.beginPath(); g.moveTo(L, y); g.lineTo(w - R, y); g.stroke();
      g.fillText(tyFormat(t), L - 4, y);
    }
    g.textAlign = "center"; g.textBaseline = "top";
    const xticks = this.opts.xAxis === "time" ? tyNiceTicks(e.xlo, e.xhi, 4) : tyNiceTicks(e.xlo, e.xhi, 6);
    for (const t of xticks) {
      const X = px(t);
      g.textAlign = X > w - R - 16 ? "right" : "center";
      g.fillText(tyFormatX(t, this.opts.xAxis), Math.min(X, w - R), h - B + 5);
    }
    g.strokeStyle = "#c5cad3";
    g.beginPath(); g.moveTo(L, T); g.lineTo(L, h - B); g.lineTo(w - R, h - B); g.stroke();
    g.save();
    g.beginPath(); g.rect(L, T, w - L - R, h - T - B); g.clip();
    this.series.forEach((s, si) => {
      const d = s.data, color = s.color || TY_COLORS[si % TY_COLORS.length];
      if (!d || !d.x.length) { return; }
      g.lineWidth = 1.25;
      g.strokeStyle = color;
      if (d.mode === "raw") {
        g.beginPath();
        let pen = false;
        for (let i = 0; i < d.x.length; i++) {
          if (d.y[i] === null) { pen = false; continue; }
          const X = px(d.x[i]), Y = py(d.y[i]);
          if (pen) { g.lineTo(X, Y); } else { g.moveTo(X, Y); pen = true; }
        }
        g.stroke();
        if (d.x.length < 60) {
          g.fillStyle = color;
          for (let i = 0; i < d.x.length; i++) {
            if (d.y[i] !== null) { g.fillRect(px(d.x[i]) - 1.5, py(d.y[i]) - 1.5, 3, 3); }
          }
        }
      } else {
        g.globalAlpha = 0.35; g.beginPath();
        for (let i = 0; i < d.x.length; i++) {
          if (d.min[i] === null) { continue; }
          const X = Math.round(px(d.x[i])) + 0.5;
          g.moveTo(X, py(d.max[i])); g.lineTo(X, py(d.min[i]) + 1);
        }
        g.stroke(); g.globalAlpha = 1; g.beginPath();
        let pen = false;
        for (let i = 0; i < d.x.length; i++) {
          if (d.first[i] === null || d.last[i] === null) { pen = false; continue; }
          const X0 = px(d.x[i]), X1 = px(d.x_last[i]);
          if (pen) { g.lineTo(X0, py(d.first[i])); } else { g.moveTo(X0, py(d.first[i])); pen = true; }
          g.lineTo(X1, py(d.last[i]));
        }
        g.stroke();
      }
    });
    if (this._drag && this._drag.x1 !== null) {
      g.fillStyle = "rgba(47,111,219,0.12)";
      const a = Math.min(this._drag.x0, this._drag.x1), b = Math.max(this._drag.x0, this._drag.x1);
      g.fillRect(a, T, b - a, h - T - B);
    }
    g.restore();
    const last = this.series.length && this.series[0].data ? this.series[0].data : null;
    if (last && last.x.length) {
      c.dataset.lastX = String(last.mode === "raw" ? last.x[last.x.length - 1] : last.x_last[last.x_last.length - 1]);
      c.dataset.maxY = String(e.dataMax);
    }
    if (this.drawnAt === null && this.series.some((s) => s.data && s.data.x.length)) {
      this.drawnAt = performance.now();
      c.dataset.drawn = "1";
      window.tyFirstChartAt = window.tyFirstChartAt || this.drawnAt;
      document.dispatchEvent(new CustomEvent("ty-chart-drawn"));
    }
  }

  _xAt(clientX) {
    const r = this.canvas.getBoundingClientRect(), b = this.box, e = this.ext;
    return e.xlo + (clientX - r.left - b.L) / (b.w - b.L - b.R) * (e.xhi - e.xlo);
  }

  _bind() {
    const c = this.canvas;
    c.addEventListener("mousedown", (ev) => {
      if (!this.ext) { return; }
      const r = c.getBoundingClientRect();
      this._drag = { x0: ev.clientX - r.left, x1: null, cx0: ev.clientX };
    });
    window.addEventListener("mouseup", (ev) => {
      const d = this._drag;
      this._drag = null;
      if (!d || d.x1 === null || Math.abs(ev.clientX - d.cx0) < 4) { this.draw(); return; }
      const a = this._xAt(Math.min(d.cx0, ev.clientX)), b = this._xAt(Math.max(d.cx0, ev.clientX));
      this.view = [a, b];
      this.draw();
      if (this.opts.onZoom) { this.opts.onZoom(a, b); }
    });
    c.addEventListener("mousemove", (ev) => {
      const r = c.getBoundingClientRect();
      if (this._drag) { this._drag.x1 = ev.clientX - r.left; this.draw(); }
      this._hover(ev.clientX, ev.clientY);
    });
    c.addEventListener("mouseleave", () => { this.tip.hidden = true; });
    c.addEventListener("dblclick", () => {
      this.view = null;
      this.draw();
      if (this.opts.onZoom) { this.opts.onZoom(null, null); }
    });
  }

  _hover(clientX, clientY) {
    if (!this.ext) { return; }
    const x = this._xAt(clientX), lines = [];
    for (const s of this.series) {
      const d = s.data;
      if (!d || !d.x.length) { continue; }
      let lo = 0, hi = d.x.length - 1;
      while (lo < hi) { const mid = (lo + hi) >> 1; if (d.x[mid] < x) { lo = mid + 1; } else { hi = mid; } }
      const i = lo > 0 && Math.abs(d.x[lo - 1] - x) < Math.abs(d.x[lo] - x) ? lo - 1 : lo;
      const name = s.label ? s.label + ": " : "";
      if (d.mode === "raw") { lines.push(`${name}${tyFormatX(d.x[i], this.opts.xAxis)} → ${tyFormat(d.y[i])}`); }
      else {
        lines.push(`${name}${tyFormatX(d.x[i], this.opts.xAxis)}…${tyFormatX(d.x_last[i], this.opts.xAxis)} (${d.n[i]})` +
          `  min ${tyFormat(d.min[i])}  max ${tyFormat(d.max[i])}  last ${tyFormat(d.last[i])}`);
      }
    }
    const pr = this.canvas.parentElement.getBoundingClientRect();
    this.tip.textContent = lines.join("\n");
    this.tip.hidden = lines.length === 0;
    const left = clientX - pr.left + 12;
    this.tip.style.left = Math.max(0, Math.min(left, pr.width - this.tip.offsetWidth - 4)) + "px";
    this.tip.style.top = (clientY - pr.top + 14) + "px";
  }
}

/* Parallel coordinates: rows [{id, values: {axis: number|string}, color, early}], axes [names]. */
class TYParallel {
  constructor(canvas, axes, rows, opts) {
    this.canvas = canvas; this.axes = axes; this.rows = rows;
    this.opts = Object.assign({ onBrush: null }, opts || {});
    this.brush = {}; // axis -> [lo, hi] in axis units (0..1 position)
    this._prep();
    this._bind();
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  _prep() {
    this.scales = this.axes.map((a) => {
      const vals = this.rows.map((r) => r.values[a]).filter((v) => v !== undefined && v !== null);
      const numeric = vals.every((v) => typeof v === "number");
      if (numeric) {
        let lo = Math.min(...vals), hi = Math.max(...vals);
        if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
        if (hi === lo) { hi = lo + 1; }
        return { numeric, lo, hi, pos: (v) => (v - lo) / (hi - lo), label: (p) => tyFormat(lo + p * (hi - lo)) };
      }
      const cats = Array.from(new Set(vals.map(String))).sort();
      return { numeric, cats, pos: (v) => cats.length < 2 ? 0.5 : cats.indexOf(String(v)) / (cats.length - 1),
        label: null };
    });
  }

  selected(row) {
    return this.axes.every((a, i) => {
      const b = this.brush[a];
      if (!b) { return true; }
      const v = row.values[a];
      if (v === undefined || v === null) { return false; }
      const p = this.scales[i].pos(v);
      return p >= b[0] && p <= b[1];
    });
  }

  draw() {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth || 800, h = c.clientHeight || 320;
    c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const T = 34, B = 24, L = 60, R = 80, n = this.axes.length;
    this.geom = { T, B, L, R, w, h };
    const ax = (i) => n < 2 ? w / 2 : L + i * (w - L - R) / (n - 1);
    const ay = (p) => T + (1 - p) * (h - T - B);
    const draw = (row, alpha, width) => {
      g.globalAlpha = alpha; g.lineWidth = width; g.strokeStyle = row.color || "#2f6fdb";
      g.setLineDash(row.early ? [4, 3] : []);
      g.beginPath();
      let pen = false;
      this.axes.forEach((a, i) => {
        const v = row.values[a];
        if (v === undefined || v === null) { pen = false; return; }
        const X = ax(i), Y = ay(this.scales[i].pos(v));
        if (pen) { g.lineTo(X, Y); } else { g.moveTo(X, Y); pen = true; }
      });
      g.stroke();
    };
    const sel = this.rows.filter((r) => this.selected(r)), rest = this.rows.filter((r) => !this.selected(r));
    rest.forEach((r) => draw({ ...r, color: "#b8bfcc" }, 0.5, 1));
    sel.forEach((r) => draw(r, 0.9, 1.8));
    g.setLineDash([]); g.globalAlpha = 1;
    g.font = "11px system-ui, sans-serif";
    this.axes.forEach((a, i) => {
      const X = Math.round(ax(i)) + 0.5, s = this.scales[i];
      g.strokeStyle = "#6b7385"; g.lineWidth = 1;
      g.beginPath(); g.moveTo(X, T); g.lineTo(X, h - B); g.stroke();
      g.fillStyle = "#1d2330"; g.textAlign = "center"; g.textBaseline = "bottom";
      g.fillText(a.length > 24 ? a.slice(0, 23) + "…" : a, X, T - 16);
      g.fillStyle = "#6b7385"; g.textBaseline = "middle";
      g.textAlign = i === n - 1 ? "left" : "right";
      const dx = i === n - 1 ? 6 : -6;
      if (s.numeric) {
        for (const p of [0, 0.5, 1]) { g.fillText(s.label(p), X + dx, ay(p)); }
      } else {
        s.cats.forEach((cat) => g.fillText(cat, X + dx, ay(s.pos(cat))));
      }
      const b = this.brush[a];
      if (b) {
        g.fillStyle = "rgba(47,111,219,0.18)";
        g.fillRect(X - 8, ay(b[1]), 16, ay(b[0]) - ay(b[1]));
      }
    });
    c.dataset.drawn = "1";
  }

  _axisAt(clientX) {
    const r = this.canvas.getBoundingClientRect(), g = this.geom, n = this.axes.length;
    const x = clientX - r.left;
    let best = -1, dist = 25;
    for (let i = 0; i < n; i++) {
      const X = n < 2 ? g.w / 2 : g.L + i * (g.w - g.L - g.R) / (n - 1);
      if (Math.abs(X - x) < dist) { dist = Math.abs(X - x); best = i; }
    }
    return best;
  }

  _posAt(clientY) {
    const r = this.canvas.getBoundingClientRect(), g = this.geom;
    return Math.min(1, Math.max(0, 1 - (clientY - r.top - g.T) / (g.h - g.T - g.B)));
  }

  _bind() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener("mousedown", (ev) => {
      const i = this._axisAt(ev.clientX);
      if (i >= 0) { drag = { axis: this.axes[i], p0: this._posAt(ev.clientY) }; ev.preventDefault(); }
    });
    c.addEventListener("mousemove", (ev) => {
      if (!drag) { return; }
      const p = this._posAt(ev.clientY);
      this.brush[drag.axis] = [Math.min(drag.p0, p), Math.max(drag.p0, p)];
      this.draw();
    });
    window.addEventListener("mouseup", () => {
      if (!drag) { return; }
      const b = this.brush[drag.axis];
      if (b && b[1] - b[0] < 0.01) { delete this.brush[drag.axis]; }
      drag = null;
      this.draw();
      if (this.opts.onBrush) { this.opts.onBrush(this.rows.filter((r) => this.selected(r)).map((r) => r.id)); }
    });
    c.addEventListener("dblclick", () => {
      this.brush = {};
      this.draw();
      if (this.opts.onBrush) { this.opts.onBrush(this.rows.map((r) => r.id)); }
    });
  }
}

window.TYChart = TYChart;
window.TYParallel = TYParallel;
window.TY_COLORS = TY_COLORS;
window.tyFormat = tyFormat;

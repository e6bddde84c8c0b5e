/* clipshift explorer: ID accuracy against shift accuracy for every model of er.csv, with the baseline fit.
   Reads the JSON in #explorer-data (payload.py), draws with Plotly (embedded above), filters in the page.
   Nothing here makes a network request. */
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("explorer-data").textContent);
  const M = D.models;
  const N = M.model.length;
  const gd = document.getElementById("plot");
  const $ = (id) => document.getElementById(id);
  const state = { shift: D.datasets[0], axes: D.transform, terms: [], baseline: true,
                  sources: new Set(M.sources.map((_, i) => i)), pinned: -1, selected: null };
  const CONFIG = { displaylogo: false, showLink: false, showSendToCloud: false, showEditInChartStudio: false,
                   responsive: true, scrollZoom: false, modeBarButtonsToRemove: ["sendDataToCloud"],
                   toImageButtonOptions: { format: "png", filename: "explore", scale: 2 } };

  // --- scales: logit and probit (Acklam's rational approximation of the normal quantile, refined once) ---
  function ndtri(p) {
    const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.3577518672690, -30.66479806614716, 2.506628277459239];
    const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
    const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
    const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
    const tail = (q) => (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
                        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    if (p < 0.02425) return tail(Math.sqrt(-2 * Math.log(p)));
    if (p > 1 - 0.02425) return -tail(Math.sqrt(-2 * Math.log(1 - p)));
    const q = p - 0.5, r = q * q;
    return (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
           (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  }
  const SCALES = { logit: (p) => Math.log(p / (1 - p)), probit: ndtri };
  function fwd(p) {
    if (p === null || p === undefined) return null;
    const e = D.epsilon;
    return SCALES[state.axes](Math.min(Math.max(p, e), 1 - e));
  }

  // --- text ---
  const pct = (v) => (v === null ? "n/a" : (100 * v).toFixed(2) + "%");
  const pp = (v) => (v === null ? "n/a" : (v >= 0 ? "+" : "\u2212") + Math.abs(100 * v).toFixed(2) + " pp");
  const esc = (s) => String(s).replace(/[&<>"]/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[ch]);
  // text for plotly (labels, legend, titles): plotly reads a subset of HTML and decodes &lt; &gt; &amp;, not &quot;
  const ptext = (s) => String(s).replace(/[&<>]/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" })[ch]);
  const shiftName = (d) => (d === D.average ? "average over shifts" : d);
  const sourceOf = (i) => (M.source[i] >= 0 ? M.sources[M.source[i]] : "");
  const short = (label) => label.replace(/ \(.*\)$/, ""); // "timm results (results/, copied ...)" → "timm results"
  const field = (name, i) => (M[name] ? M[name][i] : "");
  const lowered = M.model.map((m, i) => (m + " " + field("name", i) + " " + field("pretrained", i)).toLowerCase());

  function hoverText(i, k, rows) {
    const lines = ["<b>" + ptext(M.model[i]) + "</b>"];
    if (field("name", i) && field("name", i) !== M.model[i]) lines.push("name: " + ptext(field("name", i)));
    if (field("pretrained", i)) lines.push("pretrained: " + ptext(field("pretrained", i)));
    if (sourceOf(i)) lines.push("source: " + ptext(sourceOf(i)));
    if (field("training_data", i)) lines.push("training data: " + ptext(field("training_data", i)));
    lines.push(ptext(D.id_dataset) + ": " + pct(rows.x[k]) + "  \u00b7  " + ptext(shiftName(state.shift)) + ": " + pct(rows.y[k]));
    lines.push("ER " + pp(rows.e[k]) + " [" + pp(rows.l[k]) + ", " + pp(rows.h[k]) + "]" + (M.baseline[i] ? "  (baseline model)" : ""));
    return lines.join("<br>");
  }

  // --- which models are shown ---
  function shown(i) {
    if (M.baseline[i] && !state.baseline) return false;
    if (M.sources.length && M.source[i] >= 0 && !state.sources.has(M.source[i])) return false;
    return state.terms.every((t) => lowered[i].includes(t));
  }
  function visibleRows() { // positions k in the current dataset's rows
    const rows = D.data[state.shift], out = [];
    for (let k = 0; k < rows.i.length; k++) if (shown(rows.i[k])) out.push(k);
    return out;
  }

  // --- traces ---
  const xOf = (rows, k) => (D.fits[state.shift].plane ? rows.b[k] : rows.x[k]);
  function modelTrace(rows, ks, name, marker, extra) {
    return Object.assign({ type: "scatter", mode: "markers", name: ptext(name), x: ks.map((k) => fwd(xOf(rows, k))),
      y: ks.map((k) => fwd(rows.y[k])), customdata: ks.map((k) => rows.i[k]),
      hovertext: ks.map((k) => hoverText(rows.i[k], k, rows)), hovertemplate: "%{hovertext}<extra></extra>",
      marker: marker, meta: "models" }, extra || {});
  }
  function errorBars(rows, ks) { // the ER interval as shift accuracies, in axis space
    const bound = (k, c) => Math.min(Math.max(rows.b[k] + c, 0), 1);
    return { type: "data", visible: true, thickness: 1.2, width: 3, color: "#333",
      array: ks.map((k) => (rows.h[k] === null ? 0 : Math.max(fwd(bound(k, rows.h[k])) - fwd(rows.y[k]), 0))),
      arrayminus: ks.map((k) => (rows.l[k] === null ? 0 : Math.max(fwd(rows.y[k]) - fwd(bound(k, rows.l[k])), 0))) };
  }
  function fitTraces(lo, hi) {
    const f = D.fits[state.shift], out = [];
    if (f.grid) {
      const gx = f.grid.map(fwd);
      out.push({ type: "scatter", mode: "lines", name: "95% bootstrap band", x: gx.concat(gx.slice().reverse()),
        y: f.hi.map(fwd).concat(f.lo.map(fwd).reverse()), fill: "toself", fillcolor: "rgba(0,0,0,0.12)",
        line: { width: 0 }, hoverinfo: "skip", meta: "band" });
      out.push({ type: "scatter", mode: "lines", name: "baseline fit (R\u00b2 " + f.r2.toFixed(2) + ", " + f.n + " models)",
        x: gx, y: f.line.map(fwd), line: { color: "black", width: 2 }, hoverinfo: "skip", meta: "fit" });
    }
    out.push({ type: "scatter", mode: "lines", name: f.plane ? "y = x: the plane (R\u00b2 " + f.r2.toFixed(2) + ")" : "y = x",
      x: [lo, hi], y: [lo, hi], line: { color: f.plane ? "black" : "grey", dash: f.plane ? "solid" : "dash", width: f.plane ? 2 : 1 },
      hoverinfo: "skip", meta: "identity" });
    return out;
  }
  function sourceColour(s) {
    const palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];
    return palette[s % palette.length];
  }
  function traces(lo, hi) {
    const rows = D.data[state.shift], ks = visibleRows();
    const base = ks.filter((k) => M.baseline[rows.i[k]]);
    const user = ks.filter((k) => M.user[rows.i[k]]);
    const others = ks.filter((k) => !M.baseline[rows.i[k]] && !M.user[rows.i[k]]);
    const out = fitTraces(lo, hi);
    out.push(modelTrace(rows, base, "baseline models (" + base.length + ")",
      { color: D.baseline_colour, size: 6, opacity: 0.55 }));
    const bySource = new Map();
    others.forEach((k) => { const s = M.source[rows.i[k]]; if (!bySource.has(s)) bySource.set(s, []); bySource.get(s).push(k); });
    [...bySource.keys()].sort((a, b) => a - b).forEach((s) => {
      const part = bySource.get(s), label = s >= 0 ? short(M.sources[s]) : "other models";
      // each model in its colour of the static figures (its group's), else one per source table
      const colour = part.map((k) => M.colour[rows.i[k]] || sourceColour(Math.max(s, 0)));
      out.push(modelTrace(rows, part, label + " (" + part.length + ")", { color: colour, size: 7, opacity: 0.75 }));
    });
    const right = lo + 0.7 * (hi - lo); // names of points in the right part go left of them
    out.push(modelTrace(rows, user, "your models (" + user.length + ")",
      { color: user.map((k) => M.colour[rows.i[k]] || "#d62728"), size: 12, line: { color: "black", width: 1 } },
      { mode: "markers+text", text: user.map((k) => ptext(M.model[rows.i[k]])),
        textposition: user.map((k) => (fwd(xOf(rows, k)) > right ? "middle left" : "middle right")),
        textfont: { size: 12 }, cliponaxis: false, error_y: errorBars(rows, user) }));
    out.push(pinTrace(rows));
    return out;
  }
  function pinTrace(rows) {
    const k = rows.i.indexOf(state.pinned), ks = k >= 0 ? [k] : [];
    return modelTrace(rows, ks, "pinned", { color: "rgba(0,0,0,0)", size: 18, line: { color: "black", width: 2.5 } },
      { showlegend: false, error_y: errorBars(rows, ks), meta: "pinned" });
  }

  // --- axes ---
  function limits() { // square axis limits holding every model of the dataset (not only those shown)
    const rows = D.data[state.shift];
    let lo = Infinity, hi = -Infinity;
    rows.i.forEach((_, k) => [fwd(xOf(rows, k)), fwd(rows.y[k])].forEach((v) => {
      if (v !== null && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }));
    const pad = 0.08 * (hi - lo) + 0.15;
    return [lo - pad, hi + pad];
  }
  function ticks(lo, hi) {
    let inside = [];
    for (const set of D.ticks) {
      inside = set.filter((v) => { const z = fwd(v); return z >= lo && z <= hi; });
      if (inside.length <= 8) break;
    }
    return { tickvals: inside.map(fwd), ticktext: inside.map((v) => +(100 * v).toFixed(1) + "%") };
  }
  function layout(lo, hi) {
    const f = D.fits[state.shift];
    const xTitle = f.plane ? "accuracy predicted by the plane from " + Object.keys(f.plane).join(", ") : D.id_dataset + " accuracy, in distribution";
    const t = ticks(lo, hi), scale = " (" + state.axes + " scale)";
    return { template: D.layout.template, margin: { l: 70, r: 20, t: 40, b: 60 }, hovermode: "closest",
      uirevision: state.shift + "/" + state.axes, dragmode: "zoom", legend: { x: 0.01, y: 0.99, bgcolor: "rgba(255,255,255,0.85)" },
      title: { text: "Effective robustness: " + ptext(shiftName(state.shift)), x: 0.5 },
      xaxis: Object.assign({ range: [lo, hi], title: { text: ptext(xTitle) + scale }, zeroline: false }, t),
      yaxis: Object.assign({ range: [lo, hi], title: { text: ptext(shiftName(state.shift)) + " accuracy" + scale }, zeroline: false }, t) };
  }
  function draw() {
    const [lo, hi] = limits();
    return Plotly.react(gd, traces(lo, hi), layout(lo, hi), CONFIG);
  }

  // --- the table of what is shown (or box-selected), and its CSV ---
  const COLUMNS = [["model", "model"], ["pretrained", "pretrained"], ["source", "source"], ["training_data", "training data"],
    ["x", "id accuracy"], ["y", "shift accuracy"], ["b", "baseline prediction"], ["e", "effective robustness"],
    ["l", "ci low"], ["h", "ci high"], ["baseline", "baseline model"]];
  const TABLE_ROWS = 500;
  function selectedRows() {
    const rows = D.data[state.shift];
    const ks = visibleRows().filter((k) => !state.selected || state.selected.has(rows.i[k]));
    return ks.sort((a, b) => (rows.e[b] === null ? -1e9 : rows.e[b]) - (rows.e[a] === null ? -1e9 : rows.e[a]));
  }
  function cells(rows, k) {
    const i = rows.i[k];
    return { model: M.model[i], pretrained: field("pretrained", i), source: sourceOf(i), training_data: field("training_data", i),
      x: rows.x[k], y: rows.y[k], b: rows.b[k], e: rows.e[k], l: rows.l[k], h: rows.h[k], baseline: M.baseline[i] ? "yes" : "" };
  }
  function columns() { return COLUMNS.filter(([key]) => !["pretrained", "training_data"].includes(key) || M[key]).filter(([key]) => key !== "source" || M.sources.length); }
  function renderTable() {
    const rows = D.data[state.shift], ks = selectedRows(), cols = columns();
    const fmt = (key, v) => (["x", "y", "b"].includes(key) ? pct(v) : ["e", "l", "h"].includes(key) ? pp(v) : esc(v));
    $("table").tHead.innerHTML = "<tr>" + cols.map(([key, label]) => "<th" + (key.length === 1 ? ' class="num"' : "") + ">" + label + "</th>").join("") + "</tr>";
    $("table").tBodies[0].innerHTML = ks.slice(0, TABLE_ROWS).map((k) => {
      const c = cells(rows, k), i = rows.i[k], cls = (M.user[i] ? "user " : "") + (i === state.pinned ? "pinned" : "");
      const sw = M.user[i] ? '<span class="swatch" style="background:' + esc(M.colour[i]) + '"></span>' : "";
      return '<tr data-i="' + i + '" class="' + cls + '">' + cols.map(([key], n) =>
        "<td" + (key.length === 1 ? ' class="num"' : "") + ">" + (n === 0 ? sw : "") + fmt(key, c[key]) + "</td>").join("") + "</tr>";
    }).join("");
    $("table-title").textContent = (state.selected ? "Selected models" : "Models shown") + ": " + ks.length + " on " + shiftName(state.shift);
    $("table-note").textContent = (ks.length > TABLE_ROWS ? "The first " + TABLE_ROWS + " by effective robustness are listed; the CSV holds all " + ks.length + ". " : "") +
      (state.selected ? "Box or lasso selection on the plot; double-click the plot to clear it." : "Use the box or lasso tool of the plot to select a region.");
  }
  function csvText() {
    const rows = D.data[state.shift], cols = COLUMNS.filter(([key]) => key.length === 1 || columns().some(([k]) => k === key));
    const quote = (v) => { const s = v === null || v === undefined ? "" : String(v); return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; };
    const names = { x: "id_accuracy", y: "shift_accuracy", b: "baseline_accuracy", e: "effective_robustness", l: "ci_low", h: "ci_high", baseline: "is_baseline" };
    const header = ["model", "dataset"].concat(cols.slice(1).map(([key]) => names[key] || key));
    const lines = selectedRows().map((k) => { const c = cells(rows, k);
      return [c.model, state.shift].concat(cols.slice(1).map(([key]) => key === "baseline" ? (c.baseline ? "True" : "False") : c[key])).map(quote).join(","); });
    return [header.join(",")].concat(lines).join("\n") + "\n";
  }
  function download() {
    const url = URL.createObjectURL(new Blob([csvText()], { type: "text/csv" }));
    const a = document.createElement("a");
    a.href = url; a.download = "explore_" + state.shift.replace(/[^A-Za-z0-9._-]/g, "_") + ".csv";
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  // --- the pinned model: its numbers on every dataset ---
  function renderPin() {
    const i = state.pinned, box = $("pin");
    if (i < 0) { box.innerHTML = ""; return; }
    const meta = [["pretrained", field("pretrained", i)], ["source", sourceOf(i)], ["training data", field("training_data", i)],
      ["baseline model", M.baseline[i] ? "yes" : "no"]].filter(([, v]) => v);
    const lines = D.datasets.map((d) => { const rows = D.data[d], k = rows.i.indexOf(i);
      const n = (v, digits) => (v === null ? "n/a" : (v >= 0 ? "+" : "\u2212") + Math.abs(100 * v).toFixed(digits));
      return k < 0 ? "" : '<tr data-dataset="' + esc(d) + '"><td>' + esc(d) + '</td><td class="num">' + pct(rows.y[k]) +
        '</td><td class="num er">' + n(rows.e[k], 2) + '</td><td class="num">[' + n(rows.l[k], 1) + ", " + n(rows.h[k], 1) + "]</td></tr>"; });
    box.innerHTML = "<h3>" + esc(M.model[i]) + "</h3><dl>" + meta.map(([k, v]) => "<dt>" + k + "</dt><dd>" + esc(v) + "</dd>").join("") +
      "</dl><table><thead><tr><th>dataset</th><th class=\"num\">accuracy</th><th class=\"num\">ER, pp</th><th class=\"num\">" +
      "95% interval</th></tr></thead><tbody>" + lines.join("") + '</tbody></table><button type="button" id="unpin">Unpin</button>';
    $("unpin").addEventListener("click", () => pin(-1));
  }
  function pin(i) { state.pinned = i === state.pinned ? -1 : i; update(); }

  // --- wiring ---
  function summary() {
    const nb = M.baseline.reduce((a, b) => a + b, 0), nu = M.user.reduce((a, b) => a + b, 0);
    $("summary").textContent = N + " models (" + nb + " in the baseline" + (nu ? ", " + nu + " yours, highlighted" : "") + ") on " +
      (D.datasets.length - 1) + " shifts; in distribution: " + D.id_dataset + ". Hover a point for its numbers.";
  }
  function controls() {
    $("shift").innerHTML = D.datasets.map((d) => '<option value="' + esc(d) + '">' + esc(shiftName(d)) + "</option>").join("");
    $("axes").value = state.axes;
    $("sources").innerHTML = M.sources.map((s, n) => '<label title="' + esc(s) + '"><input type="checkbox" data-source="' + n +
      '" checked> ' + esc(short(s)) + "</label>").join("");
    $("shift").addEventListener("change", (e) => { state.shift = e.target.value; state.selected = null; update(); });
    $("axes").addEventListener("change", (e) => { state.axes = e.target.value; update(); });
    $("baseline").addEventListener("change", (e) => { state.baseline = e.target.checked; update(); });
    $("sources").addEventListener("change", (e) => { const n = +e.target.dataset.source;
      if (e.target.checked) state.sources.add(n); else state.sources.delete(n); update(); });
    let timer = null;
    $("search").addEventListener("input", (e) => { clearTimeout(timer); timer = setTimeout(() => {
      state.terms = e.target.value.toLowerCase().split(/\s+/).filter(Boolean); update(); }, 120); });
    $("download").addEventListener("click", download);
    $("table").tBodies[0].addEventListener("click", (e) => { const tr = e.target.closest("tr"); if (tr) pin(+tr.dataset.i); });
  }
  function plotEvents() {
    gd.on("plotly_click", (ev) => { const p = ev.points.find((q) => q.data.meta === "models" || q.data.meta === "pinned");
      if (p && p.customdata !== undefined) pin(p.customdata); });
    gd.on("plotly_selected", (ev) => { state.selected = ev && ev.points.length ? new Set(ev.points.filter((q) => q.customdata !== undefined).map((q) => q.customdata)) : null; renderTable(); });
    gd.on("plotly_deselect", () => { state.selected = null; renderTable(); });
  }
  function update() {
    const k = visibleRows().length;
    $("count").textContent = k + " of " + D.data[state.shift].i.length + " models shown";
    return draw().then(() => { renderTable(); renderPin(); window.explorerState = { shift: state.shift, axes: state.axes, shown: k, pinned: state.pinned }; });
  }
  summary();
  controls();
  update().then(() => {
    plotEvents();
    window.explorerReady = true;
    window.explorerReadyAt = performance.now();
  });
  window.explorer = { state: state, data: D, csvText: csvText, update: update, pin: pin };
})();

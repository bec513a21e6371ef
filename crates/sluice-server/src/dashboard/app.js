// The Sluice dashboard: renders the snapshots /events sends every second.
"use strict";

const token = new URLSearchParams(location.search).get("token") || localStorage.getItem("sluice-token") || "";
if (token) localStorage.setItem("sluice-token", token);
const auth = token ? { Authorization: "Bearer " + token } : {};

let selected = null;          // the selected job's id
let previous = new Map();     // vertex key -> {t, in, out}: for rates
const history = new Map();    // job id -> [records/s of its last operator]

const $ = (id) => document.getElementById(id);
const text = (tag, s, cls) => { const e = document.createElement(tag); e.textContent = s; if (cls) e.className = cls; return e; };
const row = (cells) => { const tr = document.createElement("tr"); for (const c of cells) tr.appendChild(c instanceof Node ? c : text("td", String(c))); return tr; };
const fmtTime = (ms) => ms > 0 ? new Date(ms).toLocaleTimeString() : "";
const fmtDuration = (ms) => { const s = Math.floor(ms / 1000); return s >= 3600 ? `${Math.floor(s / 3600)} h ${Math.floor(s / 60) % 60} min` : s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`; };

function render(snap) {
  const o = snap.overview;
  $("overview").textContent = `${o["jobs-running"]} running · ${o["jobs-finished"]} finished · ${o["jobs-cancelled"]} cancelled · ${o["jobs-failed"]} failed`;
  const tbody = $("jobs").tBodies[0];
  tbody.replaceChildren();
  for (const j of snap.jobs) {
    const tr = row([j.name, text("td", j.state, "state-" + j.state), fmtTime(j["start-time"]), fmtDuration(j.duration), text("td", j.jid, "muted")]);
    tr.className = "job" + (j.jid === selected ? " selected" : "");
    tr.dataset.jid = j.jid;
    tr.addEventListener("click", () => { selected = j.jid; render(snap); });
    tbody.appendChild(tr);
  }
  if (!selected && snap.jobs.length) selected = snap.jobs[snap.jobs.length - 1].jid;
  const job = snap.jobs.find((j) => j.jid === selected);
  $("job-section").hidden = !job;
  if (job) renderJob(job, job.now);
  renderBroker(snap);
}

function formatLag(ms) {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 120000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 7200000) return `${Math.round(ms / 60000)} min`;
  if (ms < 172800000) return `${Math.round(ms / 3600000)} h`;
  return `${Math.round(ms / 86400000)} d`;
}

function renderJob(job, now) {
  $("job-title").textContent = `${job.name} (${job.state})`;
  const graph = $("graph");
  graph.replaceChildren();
  let lastRate = 0;
  job.vertices.forEach((v, i) => {
    const key = job.jid + "/" + v.id;
    const m = v.metrics;
    const cur = { t: now, in: m["read-records"], out: m["write-records"], busy: m["busy-ms"] || 0, bp: m["backpressured-ms"] || 0 };
    const prev = previous.get(key);
    let rateIn = 0, rateOut = 0, busy = 0, bp = 0;
    if (prev && cur.t > prev.t) {
      const dt = cur.t - prev.t;
      rateIn = (cur.in - prev.in) * 1000 / dt;
      rateOut = (cur.out - prev.out) * 1000 / dt;
      // Fractions of the time of all subtasks (Flink's busy and backpressured time).
      busy = Math.min(1, (cur.busy - prev.busy) / dt / v.parallelism);
      bp = Math.min(1, (cur.bp - prev.bp) / dt / v.parallelism);
    }
    previous.set(key, cur);
    const box = document.createElement("div");
    box.className = "vertex" + (bp > 0.3 ? " backpressured" : busy > 0.5 ? " busy" : rateIn > 0 || rateOut > 0 ? " flowing" : "");
    box.dataset.busy = String(busy);
    box.dataset.backpressured = String(bp);
    box.dataset.vertex = v.name;
    box.appendChild(text("div", v.name, "name"));
    box.appendChild(text("div", `parallelism ${v.parallelism}`, "muted"));
    const rate = text("div", `${Math.round(rateIn)} in/s · ${Math.round(rateOut)} out/s`, "rate");
    rate.dataset.in = String(rateIn);
    rate.dataset.out = String(rateOut);
    box.appendChild(rate);
    box.appendChild(text("div", `${cur.in} in · ${cur.out} out`, "muted"));
    box.appendChild(text("div", `busy ${Math.round(busy * 100)}% · backpressured ${Math.round(bp * 100)}%`, "muted"));
    // Event time: how far the operator's input watermark is behind the wall clock.
    const wm = m["current-input-watermark"];
    const lag = text("div", wm == null ? "no watermark" : `watermark lag ${formatLag(now - wm)}`, "muted watermark");
    lag.dataset.watermark = wm == null ? "" : String(wm);
    box.appendChild(lag);
    if (i > 0) graph.appendChild(text("span", "→", "arrow"));
    graph.appendChild(box);
    lastRate = Math.max(rateIn, rateOut);
  });
  const h = history.get(job.jid) || [];
  h.push(lastRate);
  if (h.length > 120) h.shift();
  history.set(job.jid, h);
  drawChart(h);
  renderResults(job);
  const cps = $("checkpoints").tBodies[0];
  cps.replaceChildren();
  for (const c of (job.checkpoints.history || []).slice(0, 10)) {
    cps.appendChild(row([c.id, c.status, fmtTime(c.trigger_timestamp), c.end_to_end_duration, c.state_size]));
  }
}

const columnHistory = new Map(); // "job/sink/column" -> [numbers]

// The newest rows of the chosen sink, and a chart of one of its numeric columns over time
// (the newest row's value at each snapshot).
function renderResults(job) {
  const sinks = (job.preview && job.preview.sinks) || [];
  const sinkSelect = $("sink");
  const chosenSink = sinkSelect.value;
  sinkSelect.replaceChildren(...sinks.map((s) => { const o = text("option", s.name); o.value = s.vertex; return o; }));
  if (sinks.some((s) => s.vertex === chosenSink)) sinkSelect.value = chosenSink;
  const sink = sinks.find((s) => s.vertex === sinkSelect.value) || sinks[0];
  const table = $("results");
  table.tHead.replaceChildren();
  table.tBodies[0].replaceChildren();
  if (!sink) return;
  table.tHead.appendChild(row(["", ...sink.columns].map((c) => text("th", c))));
  for (const r of sink.rows.slice().reverse()) table.tBodies[0].appendChild(row([r.kind, ...r.values]));
  const newest = sink.rows[sink.rows.length - 1];
  const numeric = sink.columns.filter((_, i) => newest && newest.values[i] !== "NULL" && !isNaN(Number(newest.values[i])));
  const columnSelect = $("column");
  const chosen = columnSelect.value;
  columnSelect.replaceChildren(...numeric.map((c) => text("option", c)));
  // The last numeric column (often the measure) unless another was chosen.
  columnSelect.value = numeric.includes(chosen) ? chosen : numeric[numeric.length - 1] || "";
  const column = columnSelect.value;
  if (!column || !newest) return;
  const key = `${job.jid}/${sink.vertex}/${column}`;
  const h = columnHistory.get(key) || [];
  h.push(Number(newest.values[sink.columns.indexOf(column)]));
  if (h.length > 120) h.shift();
  columnHistory.set(key, h);
  plot($("column-chart"), h, "");
}

function drawChart(values) {
  plot($("chart"), values, "/s");
}

function plot(svg, values, unit) {
  const w = svg.width.baseVal.value, h = svg.height.baseVal.value;
  const max = Math.max(1, ...values), min = Math.min(0, ...values);
  const y = (v) => h - 4 - ((v - min) / (max - min || 1)) * (h - 8);
  const pts = values.map((v, i) => `${(i / 119) * w},${y(v)}`).join(" ");
  svg.innerHTML = `<polyline fill="none" stroke="#2f6fdb" stroke-width="2" points="${pts}"/>` +
    `<text x="4" y="14" font-size="11" fill="#7a8394">max ${Math.round(max)}${unit}</text>`;
}

function renderBroker(snap) {
  $("broker-section").hidden = !snap.topics;
  if (!snap.topics) return;
  const t = $("topics").tBodies[0];
  t.replaceChildren();
  for (const topic of snap.topics) {
    t.appendChild(row([topic.name, topic.partitions.length, topic.partitions.map((p) => p["log-end-offset"]).join(", ")]));
  }
  const g = $("groups").tBodies[0];
  g.replaceChildren();
  for (const group of snap.groups) g.appendChild(row([group.group, group.state, group.lag]));
}

function gutter() {
  const lines = $("sql").value.split("\n").length;
  const g = $("gutter");
  const marked = g.dataset.error ? Number(g.dataset.error) : 0;
  g.replaceChildren();
  for (let i = 1; i <= lines; i++) {
    const s = text("span", String(i));
    if (i === marked) s.className = "error";
    g.appendChild(s);
  }
}

async function submit() {
  const result = $("submit-result");
  $("gutter").dataset.error = "";
  result.className = ""; result.textContent = "submitting…";
  const r = await fetch("/jobs", { method: "POST", headers: { "Content-Type": "text/plain", ...auth }, body: $("sql").value });
  const body = await r.json().catch(() => ({}));
  if (r.status === 202) {
    result.className = "ok";
    result.textContent = `Job ${body.jobid} started`;
    selected = body.jobid;
  } else {
    result.className = "error";
    const where = body.line ? `line ${body.line}${body.column ? ", column " + body.column : ""}: ` : "";
    result.textContent = where + (body.errors || [r.statusText]).join("; ");
    if (body.line) $("gutter").dataset.error = String(body.line);
  }
  gutter();
}

async function act(method, path, what) {
  const r = await fetch(path, { method, headers: auth });
  $("job-message").textContent = r.status === 202 ? `${what} requested` : `${what} refused (${r.status})`;
  return r.status === 202 ? r.json().catch(() => ({})) : null;
}

// A savepoint while the job goes on: asked for, then watched until it is written or fails.
async function savepoint(job) {
  const asked = await act("POST", `/jobs/${job}/savepoints`, "savepoint");
  if (!asked || !asked["request-id"]) return;
  for (;;) {
    await new Promise((done) => setTimeout(done, 500));
    const r = await fetch(`/jobs/${job}/savepoints/${asked["request-id"]}`, { headers: auth });
    const s = await r.json().catch(() => ({}));
    if (r.status !== 200) { $("job-message").textContent = `savepoint: ${(s.errors || [r.statusText]).join("; ")}`; return; }
    if (s.status && s.status.id === "COMPLETED") {
      const op = s.operation || {};
      $("job-message").textContent = op.location ? `savepoint written to ${op.location}` : `savepoint failed: ${(op["failure-cause"] || {})["stack-trace"] || "?"}`;
      return;
    }
  }
}

$("sql").addEventListener("input", gutter);
$("submit").addEventListener("click", submit);
$("savepoint").addEventListener("click", () => selected && savepoint(selected));
$("stop").addEventListener("click", () => selected && act("POST", `/jobs/${selected}/stop`, "stop with savepoint"));
$("cancel").addEventListener("click", () => selected && act("PATCH", `/jobs/${selected}?mode=cancel`, "cancel"));
gutter();

function connect() {
  const events = new EventSource("/events" + (token ? "?token=" + encodeURIComponent(token) : ""));
  events.addEventListener("snapshot", (e) => {
    $("connection").textContent = "live";
    render(JSON.parse(e.data));
  });
  events.onerror = () => { $("connection").textContent = "reconnecting…"; };
}
connect();

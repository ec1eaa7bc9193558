"""The timeline explorer: one HTML page (plain HTML, CSS and a small script; no build step, no
library) that the HTTP gateway serves at /ui, and that reads everything through the public
HTTP API with the token the user gives it (kept in the tab's sessionStorage; `#token=...`
in the address also works, a fragment the browser never sends to the server).

What it shows: a timer found by id, label selector or deadline range; its timeline (created,
armed, deadline, fired with its lateness, settled or cancelled, attempts) plus the live events
of that timer from /v1/events; the fire-lateness histogram of the last hour (timers that fired
in it, by ListTimers' fired_at range); the leader and each member's health, polled every 2 s,
with leader changes listed as the page sees them. Kept as a Python string so the wheel holds
only Python modules.
"""

__all__ = ["PAGE"]

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MINOOTS timeline explorer</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
 header{background:#1d2330;color:#fff;padding:10px 18px;display:flex;gap:16px;align-items:center}
 header h1{font-size:17px;margin:0;font-weight:600} header input{width:320px}
 main{display:grid;grid-template-columns:1.3fr 1fr;gap:14px;padding:14px}
 section{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:12px 14px}
 h2{font-size:14px;margin:0 0 8px;text-transform:uppercase;letter-spacing:.04em;color:#556}
 input,select,button{font:inherit;padding:4px 6px} button{cursor:pointer}
 table{border-collapse:collapse;width:100%} td,th{text-align:left;padding:3px 6px;border-bottom:1px solid #eef}
 tr.pick{cursor:pointer} tr.pick:hover{background:#eef3ff} .mono{font-family:ui-monospace,monospace;font-size:12px}
 .err{color:#b00020} .ok{color:#16794c} .muted{color:#778} .state{font-weight:600}
 #events li{font-family:ui-monospace,monospace;font-size:12px}
</style></head>
<body>
<header><h1>MINOOTS timeline explorer</h1>
 <label>token <input id="token" type="password" placeholder="mnt_… (Authorization: Bearer)"></label>
 <button id="connect">use</button><span id="who" class="muted"></span></header>
<main>
<section style="grid-column:1/3"><h2>Find timers</h2>
 <form id="find">id <input id="q-id" size="24"> &nbsp;label <input id="q-label" size="18" placeholder="k=v,k2=v2">
 &nbsp;deadline from <input id="q-from" type="datetime-local"> to <input id="q-to" type="datetime-local">
 &nbsp;tenant <input id="q-tenant" size="10"> <button>find</button></form>
 <div id="found" style="margin-top:8px"></div></section>
<section><h2>Timeline</h2><div id="timeline" class="muted">pick a timer</div>
 <h2 style="margin-top:12px">Live events of this timer</h2><ul id="events"></ul></section>
<section><h2>Fire lateness, last hour</h2><div id="histogram" class="muted">loading…</div>
 <h2 style="margin-top:12px">Cluster</h2><div id="cluster" class="muted">loading…</div>
 <h2 style="margin-top:12px">Leader changes seen</h2><ul id="leaders"></ul></section>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const frag = new URLSearchParams(location.hash.slice(1));
let token = frag.get("token") || sessionStorage.getItem("minoots-token") || "";
$("token").value = token;
let selected = null, stream = null;

async function api(path, opts = {}) {
  const r = await fetch(path, {...opts, headers: {"Authorization": "Bearer " + token, ...(opts.headers || {})}});
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && `${body.error.status}: ${body.error.message}`) || r.statusText);
  return body;
}
const ms = (t) => t ? Date.parse(t) : null;
const fmt = (t) => t ? new Date(t).toISOString().replace("T", " ").replace("Z", " UTC") : "—";
const short = (s) => String(s || "").replace(/^TIMER_STATE_|^EVENT_KIND_/, "").toLowerCase();

async function find(ev) {
  if (ev) ev.preventDefault();
  const out = $("found");
  try {
    const tenant = $("q-tenant").value.trim(), id = $("q-id").value.trim();
    let timers;
    if (id) {
      timers = [await api(`/v1/timers/${encodeURIComponent(id)}` + (tenant ? `?tenant=${encodeURIComponent(tenant)}` : ""))];
    } else {
      const q = new URLSearchParams({pageSize: "50"});
      if (tenant) q.set("tenant", tenant);
      if ($("q-label").value.trim()) q.set("labelSelector", $("q-label").value.trim());
      if ($("q-from").value) q.set("fireAtFrom", new Date($("q-from").value).toISOString());
      if ($("q-to").value) q.set("fireAtTo", new Date($("q-to").value).toISOString());
      timers = (await api("/v1/timers?" + q)).timers;
    }
    out.innerHTML = timers.length ? `<table><tr><th>id</th><th>tenant</th><th>state</th><th>deadline</th><th>fired</th><th>labels</th></tr>` +
      timers.map((t, i) => `<tr class="pick" data-i="${i}"><td class="mono">${esc(t.id)}</td><td>${esc(t.tenant)}</td>` +
        `<td class="state">${esc(short(t.state))}</td><td>${fmt(ms(t.fireAt))}</td><td>${fmt(ms(t.firedAt))}</td>` +
        `<td class="mono">${esc(Object.entries(t.labels || {}).map(([k, v]) => k + "=" + v).join(", "))}</td></tr>`).join("") + "</table>"
      : `<span class="muted">no timer matches</span>`;
    out.querySelectorAll("tr.pick").forEach((tr) => tr.onclick = () => select(timers[+tr.dataset.i]));
    if (timers.length === 1) select(timers[0]);
  } catch (e) { out.innerHTML = `<span class="err">${esc(e.message)}</span>`; }
}

function drawTimeline(t) {
  const marks = [["created", ms(t.createdAt)], ["armed", ms(t.armedAt)], ["deadline", ms(t.fireAt)],
                 ["fired", ms(t.firedAt)], [short(t.state) === "cancelled" ? "cancelled" : "settled", ms(t.settledAt)]]
    .filter(([, v]) => v !== null);
  const lo = Math.min(...marks.map(m => m[1])), hi = Math.max(...marks.map(m => m[1]));
  const x = (v) => 20 + (hi === lo ? 0 : (v - lo) / (hi - lo)) * 560;
  const late = t.firedAt ? ms(t.firedAt) - ms(t.fireAt) : null;
  const groups = [];                                   // marks closer than 40 px share one dot and label
  for (const [n, v] of marks) {
    const g = groups.find((g) => Math.abs(x(g.v) - x(v)) < 40);
    if (g) g.names.push(n); else groups.push({v, names: [n]});
  }
  const svg = `<svg width="620" height="86" role="img" aria-label="timeline"><line x1="20" y1="40" x2="580" y2="40" stroke="#99a" />` +
    groups.map((g, i) => `<circle cx="${x(g.v)}" cy="40" r="6" fill="${g.names.includes("fired") ? "#d9480f" : g.names.includes("deadline") ? "#1c7ed6" : "#556"}"/>` +
      `<text x="${x(g.v)}" y="${i % 2 ? 70 : 22}" font-size="11" text-anchor="${x(g.v) > 420 ? "end" : x(g.v) < 160 ? "start" : "middle"}">${g.names.join(" · ")}</text>`).join("") + "</svg>";
  $("timeline").className = "";
  $("timeline").innerHTML = `<div class="mono">${esc(t.id)} <span class="muted">(tenant ${esc(t.tenant)}, revision ${esc(t.revision)})</span></div>` +
    `<div>state <span class="state" id="tl-state">${esc(short(t.state))}</span>` +
    (late !== null ? ` · fired ${late} ms after its deadline` : "") + ` · attempts ${esc(t.attempts)}` +
    (t.fireId && t.fireId !== "0" ? ` · fire id ${esc(t.fireId)}` : "") + `</div>` + svg +
    `<table>${marks.map(([n, v]) => `<tr><td>${n}</td><td>${fmt(v)}</td></tr>`).join("")}</table>`;
}

async function select(t) {
  selected = t;
  drawTimeline(t);
  $("events").innerHTML = "";
  if (stream) stream.abort();
  stream = new AbortController();
  follow(t, stream.signal).catch(() => {});
}

// Server-Sent Events through fetch (EventSource cannot send a token): the timer's tenant, from
// the start of the retained history, resuming with Last-Event-ID when the connection drops.
async function follow(t, signal) {
  let lastId = null, live = false;
  for (;;) {
    try {
      const headers = {"Authorization": "Bearer " + token};
      if (lastId !== null) headers["Last-Event-ID"] = lastId;
      const from = lastId === null && !live ? "&fromSequence=1" : "";
      const r = await fetch(`/v1/events?tenant=${encodeURIComponent(t.tenant)}${from}`, {signal, headers});
      if (r.status === 410 && lastId === null && !live) { live = true; continue; }   // history trimmed: live only
      if (!r.ok) { $("events").innerHTML = `<li class="err">events: HTTP ${r.status}</li>`; return; }
      const reader = r.body.getReader(), dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += dec.decode(value, {stream: true});
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i); buf = buf.slice(i + 2);
          const id = /^id: (\d+)$/m.exec(block), data = /^data: (.*)$/m.exec(block);
          if (id) lastId = id[1];
          if (!data) continue;
          const e = JSON.parse(data[1]);
          if (e.error || e.timerId !== t.id) continue;
          $("events").insertAdjacentHTML("beforeend", `<li data-kind="${esc(short(e.kind))}">#${esc(e.sequence)} ${esc(short(e.kind))} at ${fmt(ms(e.at))}</li>`);
          if (selected && selected.id === t.id) refreshSelected();
        }
      }
    } catch (e) { if (signal.aborted) return; }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function refreshSelected() {
  try { drawTimeline(selected = await api(`/v1/timers/${encodeURIComponent(selected.id)}?tenant=${encodeURIComponent(selected.tenant)}`)); }
  catch (e) { /* shown on the next search */ }
}

const BINS = [[0, 1], [1, 5], [5, 10], [10, 50], [50, 100], [100, 500], [500, 1000], [1000, Infinity]];
async function histogram() {
  try {
    const now = Date.now(), counts = BINS.map(() => 0);
    let page = "", n = 0;
    do {
      const q = new URLSearchParams({pageSize: "1000", firedAtFrom: new Date(now - 3600e3).toISOString()});
      if (page) q.set("pageToken", page);
      const r = await api("/v1/timers?" + q);
      for (const t of r.timers) {
        const late = ms(t.firedAt) - ms(t.fireAt);
        counts[BINS.findIndex(([a, b]) => late >= a && late < b)]++; n++;
      }
      page = r.nextPageToken;
    } while (page && n < 20000);
    const max = Math.max(1, ...counts);
    $("histogram").className = "";
    $("histogram").innerHTML = `<div>${n} timers fired in the last hour</div><svg width="420" height="150" role="img" aria-label="lateness histogram">` +
      counts.map((c, i) => { const h = 90 * c / max, x = 10 + i * 50;
        return `<rect x="${x}" y="${110 - h}" width="40" height="${h}" fill="#1c7ed6"/><text x="${x + 20}" y="${105 - h}" font-size="10" text-anchor="middle">${c}</text>` +
               `<text x="${x + 20}" y="126" font-size="10" text-anchor="middle">${BINS[i][1] === Infinity ? "≥" + BINS[i][0] : BINS[i][0] + "–" + BINS[i][1]}</text>`; }).join("") +
      `<text x="210" y="145" font-size="10" text-anchor="middle">fired minus deadline, ms</text></svg>`;
  } catch (e) { $("histogram").innerHTML = `<span class="err">${esc(e.message)}</span>`; }
}

let lastLeader = null;
async function cluster() {
  try {
    const s = await api("/v1/cluster/status");
    $("cluster").className = "";
    $("cluster").innerHTML = `leader <b id="leader">${esc(s.leader || "none")}</b> · term ${esc(s.term)} · commit ${esc(s.commitIndex)} (answered by ${esc(s.node)})` +
      `<table>${s.members.sort((a, b) => a.id.localeCompare(b.id)).map((m) => `<tr><td>${esc(m.id)}</td><td>${esc(m.role)}</td>` +
        `<td class="${m.connected ? "ok" : "err"}">${m.connected ? "connected" : "disconnected"}</td><td class="mono">${esc(m.grpcAddress)}</td></tr>`).join("")}</table>`;
    const key = `${s.leader}@${s.term}`;
    if (key !== lastLeader) { lastLeader = key; $("leaders").insertAdjacentHTML("afterbegin", `<li>${fmt(Date.now())}: ${esc(s.leader || "no leader")} (term ${esc(s.term)})</li>`); }
    $("who").textContent = "";
  } catch (e) { $("cluster").innerHTML = `<span class="err">${esc(e.message)}</span>`; }
}

$("connect").onclick = () => { token = $("token").value.trim(); sessionStorage.setItem("minoots-token", token); start(); };
$("find").onsubmit = find;
function start() {
  if (!token) { $("who").textContent = "give an API token"; return; }
  sessionStorage.setItem("minoots-token", token);
  cluster(); histogram();
  if (frag.get("id")) { $("q-id").value = frag.get("id"); $("q-tenant").value = frag.get("tenant") || ""; find(); }
}
setInterval(() => token && cluster(), 2000);
setInterval(() => token && histogram(), 30000);
start();
</script></body></html>
"""

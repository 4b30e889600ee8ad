// The status page (docs/operations.md, "Status page"): asks /api/status every 2 s and draws it. Everything
// from the agent is shown as text (textContent), never parsed as HTML. A missing figure shows as a dash,
// never as zero. With the page token in the URL's fragment (#token=..., from `agentctl page`), the output of
// running jobs is followed through /api/logs; the fragment never leaves the browser but in that header.
"use strict";

const REFRESH_MS = 2000;
const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
const headers = token ? { Authorization: "Bearer " + token } : {};
const logs = new Map(); // job id -> { next, el }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function missing() { return el("span", { class: "missing" }, "—"); }
function orMissing(v, f) { return v === null || v === undefined || v === "" ? missing() : (f ? f(v) : String(v)); }

function duration(ms) {
  if (ms === null || ms === undefined) return missing();
  if (ms < 1000) return ms + " ms";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(1) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}

function ago(unixMs) {
  if (!unixMs) return missing();
  return el("span", {}, duration(Math.max(0, Date.now() - unixMs)), " ago");
}

function state(s) { return el("span", { class: "state state-" + s }, s); }

function number(v) {
  if (v === null || v === undefined) return missing();
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : v.toPrecision(4);
}

function fill(id, rows) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren(...rows);
}

function row(attrs, ...cells) { return el("tr", attrs, ...cells.map((c) => el("td", {}, c))); }

function drawSelf(s) {
  const a = s.agent;
  document.getElementById("cluster").textContent = a.cluster ? "· " + a.cluster : "";
  document.getElementById("self").replaceChildren(
    el("span", {}, orMissing(a.instance_id), " "), state(a.phase), " ",
    el("span", { class: "muted" }, a.detail + " · " + (a.address || "no address yet") + " · " + a.gpus + " GPUs · " + a.version + " · up " ),
    duration(a.uptime_ms),
    a.ready_after_ms !== null ? el("span", { class: "muted" }, " · ready after ", duration(a.ready_after_ms)) : "");
}

function drawMembers(s) {
  const note = document.getElementById("members-note");
  if (s.members === null) {
    note.textContent = "Gossip does not run on this agent (no cluster, or not formed yet).";
    fill("members", []);
    return;
  }
  const counts = {};
  for (const m of s.members) counts[m.state] = (counts[m.state] || 0) + 1;
  note.textContent = s.members.length + " members: " + Object.entries(counts).map(([k, v]) => v + " " + k).join(", ");
  fill("members", s.members.map((m) => row({ "data-member": m.name, "data-state": m.state },
    m.name, state(m.state), orMissing(m.role), String(m.gpus), orMissing(m.address), String(m.incarnation), String(m.flaps),
    orMissing(m.availability_zone), el("span", {}, duration(m.changed_ms_ago)))));
}

function drawRoster(s) {
  const note = document.getElementById("roster-note");
  const r = s.roster;
  if (r === null) {
    note.textContent = "This agent forms no roster (cluster.expected_nodes is 0).";
    fill("roster", []);
  } else {
    note.replaceChildren(r.generation ? "generation " + r.generation + " sealed by " + r.sealed_by : "not sealed yet",
      " · " + r.alive + " of " + r.expected + " alive", r.dead.length ? " · not alive: " + r.dead.join(", ") : "",
      r.failure ? " · " + r.failure : "");
    note.setAttribute("data-generation", String(r.generation));
    fill("roster", r.nodes.map((n) => row({ "data-rank": String(n.rank), "data-instance": n.instance_id },
      String(n.rank), n.instance_id, orMissing(n.ip), String(n.gpus), n.prepared ? "yes" : "no")));
  }
  document.getElementById("generations").textContent = s.generations.length
    ? "Generations seen here: " + s.generations.map((g) => g.generation + " (" + g.members + " nodes, " + new Date(g.first_seen_unix_ms).toLocaleTimeString() + ")").join(", ")
    : "";
}

function drawTimeline(s) {
  const longest = Math.max(1, ...s.timeline.map((t) => t.took_ms || 0));
  fill("timeline", s.timeline.map((t) => row({ "data-phase": t.phase },
    state(t.phase), "+" + (t.at_ms / 1000).toFixed(3) + " s", t.took_ms === null ? el("span", { class: "muted" }, "now") : duration(t.took_ms),
    t.took_ms === null ? "" : bar(300 * t.took_ms / longest))));
}

// Widths through the CSSOM: the page's policy allows no inline style attribute.
function bar(px) {
  const b = el("div", { class: "bar" });
  b.style.width = Math.round(px) + "px";
  return b;
}

// One small line chart of a value over time; a missing (non-finite) value breaks the line.
function chart(title, points) {
  const W = 320, H = 120, P = 28;
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]).filter((v) => v !== null);
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  const box = el("div", { class: "chart", "data-chart": title }, el("div", { class: "title" }, title), svg);
  if (ys.length === 0) {
    box.append(el("div", { class: "missing" }, "no value reported yet"));
    return box;
  }
  const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1), y0 = Math.min(...ys), y1 = Math.max(...ys, y0 + 1e-12);
  const sx = (x) => P + ((x - x0) / (x1 - x0)) * (W - P - 4), sy = (y) => H - 14 - ((y - y0) / (y1 - y0)) * (H - 24);
  let run = [];
  const flush = () => {
    if (run.length === 0) return;
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", run.join(" "));
    svg.append(line);
    run = [];
  };
  for (const [x, y] of points) {
    if (y === null) flush();
    else run.push(sx(x).toFixed(1) + "," + sy(y).toFixed(1));
  }
  flush();
  for (const [y, v] of [[10, y1], [H - 14, y0]]) {
    const t = document.createElementNS("http://www.w3.org/2000/svg", "text");
    t.setAttribute("x", 0);
    t.setAttribute("y", y);
    t.textContent = number(v);
    svg.append(t);
  }
  return box;
}

// "4 nodes × 1" when every node runs as many ranks (the list is in the tooltip); else each node's count.
function perNode(counts) {
  const entries = Object.entries(counts);
  if (entries.length === 0) return missing();
  const list = entries.map(([n, k]) => n + ": " + k).join(", ");
  const same = entries.every(([, k]) => k === entries[0][1]);
  return el("span", { title: list }, same ? entries.length + " nodes × " + entries[0][1] : list);
}

function drawJobs(s) {
  const note = document.getElementById("jobs-note");
  const j = s.jobs;
  if (j === null) {
    note.textContent = "Jobs are not served yet (the cluster is not ready), or not asked yet.";
    fill("jobs", []);
    return;
  }
  if (j.list === null) {
    note.textContent = "Could not list the jobs: " + j.error;
    return;
  }
  note.textContent = j.list.length + " jobs, as of " + new Date(j.as_of_unix_ms).toLocaleTimeString() +
    (j.unreachable.length ? " · not answering: " + j.unreachable.join(", ") : "") + (j.error ? " · last ask failed: " + j.error : "");
  fill("jobs", j.list.map((job) => row({ "data-job": job.id, "data-state": job.state },
    job.name ? job.id + " (" + job.name + ")" : job.id, state(job.state), job.running + " of " + job.ranks + " running",
    perNode(job.ranks_per_node),
    job.attempt + " (" + job.restarts.length + " of " + job.max_restarts + " restarts)",
    job.training ? String(job.training.step) : missing(), job.training ? ago(job.training.step_unix_ms) : missing(),
    job.training ? Object.entries(job.training.values).map(([k, v]) => k + " " + (v === null ? "—" : number(v))).join(", ") : missing())));
  const charts = [];
  for (const job of j.list) {
    const names = new Set();
    for (const p of job.history) for (const k of Object.keys(p[2])) names.add(k);
    for (const name of names) charts.push(chart(job.id + " · " + name, job.history.map((p) => [p[0], name in p[2] ? p[2][name] : null])));
    if (job.history.length > 1) charts.push(chart(job.id + " · step", job.history.map((p) => [p[0], p[1]])));
  }
  document.getElementById("charts").replaceChildren(...charts);
  followLogs(s);
}

function followLogs(s) {
  const box = document.getElementById("logs");
  if (!s.logs) {
    box.replaceChildren(el("p", { class: "muted" }, "The output of jobs shows with the page token: open the URL `agentctl page` prints (as root)."));
    return;
  }
  const running = s.jobs.list.filter((j) => j.state === "running" || j.state === "restarting").slice(0, 3);
  for (const id of [...logs.keys()]) if (!running.some((j) => j.id === id)) { logs.get(id).el.remove(); logs.delete(id); }
  for (const job of running) {
    if (!logs.has(job.id)) {
      const pre = el("div", { class: "log", "data-log": job.id });
      const wrap = el("div", {}, el("h2", {}, "Output of " + job.id), pre);
      box.append(wrap);
      logs.set(job.id, { next: 0, el: wrap, pre, busy: false });
    }
    pollLog(job.id);
  }
}

async function pollLog(id) {
  const l = logs.get(id);
  if (l.busy) return; // the last ask is still out: asking again would show its lines twice
  l.busy = true;
  try {
    const r = await fetch("api/logs?job=" + encodeURIComponent(id) + "&after=" + l.next, { headers, cache: "no-store" });
    const body = await r.json();
    if (!r.ok) { l.pre.replaceChildren(el("span", { class: "err" }, body.error || r.statusText)); return; }
    const stick = l.pre.scrollTop + l.pre.clientHeight >= l.pre.scrollHeight - 4;
    if (body.skipped) l.pre.append(el("div", { class: "src" }, "… older lines skipped"));
    for (const line of body.lines) {
      l.pre.append(el("div", line.stderr ? { class: "err" } : {}, el("span", { class: "src" }, line.node + "/" + line.rank + " "), line.text));
    }
    while (l.pre.childNodes.length > 500) l.pre.firstChild.remove();
    l.next = body.next;
    if (stick) l.pre.scrollTop = l.pre.scrollHeight;
  } catch (e) {
    l.pre.append(el("div", { class: "err" }, "could not read the output: " + e));
  } finally {
    l.busy = false;
  }
}

// The shard's traffic: rates between the agent's samples of its running totals.
function drawDlps(s) {
  const note = document.getElementById("dlps-note");
  const box = document.getElementById("dlps");
  if (s.dlps === null) {
    note.textContent = "This agent serves no dlps shard (ps.enabled = false, or no cluster key yet).";
    box.replaceChildren();
    return;
  }
  const p = s.dlps.points;
  if (p.length < 2) {
    note.textContent = "Sampled every 2 s: the first rates come with the next sample.";
    box.replaceChildren();
    return;
  }
  const rate = (i, k, scale) => [p[i][0], ((p[i][k] - p[i - 1][k]) * 1000) / Math.max(1, p[i][0] - p[i - 1][0]) / scale];
  const series = (k, scale) => p.slice(1).map((_, j) => rate(j + 1, k, scale));
  const last = p[p.length - 1];
  note.textContent = "Since the agent started: " + (last[1] / 1e6).toFixed(1) + " MB pushed in, " + (last[2] / 1e6).toFixed(1) + " MB pulled out, " + last[3] + " rounds.";
  box.replaceChildren(chart("dlps in (MB/s)", series(1, 1e6)), chart("dlps out (MB/s)", series(2, 1e6)), chart("dlps rounds/s", series(3, 1)));
}

async function refresh() {
  const updated = document.getElementById("updated");
  try {
    const r = await fetch("api/status", { headers, cache: "no-store" });
    if (!r.ok) throw new Error("HTTP " + r.status);
    const s = await r.json();
    drawSelf(s);
    drawJobs(s);
    drawDlps(s);
    drawMembers(s);
    drawRoster(s);
    drawTimeline(s);
    updated.textContent = "updated " + new Date().toLocaleTimeString();
    document.body.setAttribute("data-loaded", "1");
  } catch (e) {
    updated.textContent = "the agent does not answer (" + e.message + "); what is shown is from " + (document.body.dataset.loaded ? "before" : "nothing yet");
  } finally {
    setTimeout(refresh, REFRESH_MS);
  }
}

refresh();

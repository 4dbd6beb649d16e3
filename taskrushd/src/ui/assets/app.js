// The TaskRush plugin manager page: plain JavaScript, no framework, no
// build step. Talks to the daemon's page server (same origin, session
// cookie): GET /api/* to read, POST /api/* (JSON) to act, and
// /api/events (server-sent events) to stay live.
"use strict";

const state = {
  overview: null,
  project: null,        // the selected project's root
  plugins: [],          // plugin_info of each plugin of the project
  audit: {},            // plugin name -> audit records
  logs: {},             // plugin name -> log lines, or an error string
  samples: {},          // "root\0plugin\0hook" -> [{t, ms}]
  metrics: {},          // "root\0plugin" -> the plugin's figures of the metrics method
  metricsNote: null,    // why there are no metrics, when there are none
  runs: { running: [], recent: [] },
  open: {},             // "plugin\0section" -> whether its <details> is open
};

const SAMPLE_EVERY_MS = 5000;
const SAMPLES_KEPT = 60;

// ---------- helpers ----------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
}

async function getJson(path) {
  const r = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = new Error(body.error || `${r.status} ${r.statusText}`);
    err.status = r.status;
    throw err;
  }
  return body;
}

async function post(path, data) {
  const r = await fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(data),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const err = new Error(body.error || `${r.status} ${r.statusText}`);
    err.status = r.status;
    err.hint = body.hint;
    throw err;
  }
  return body;
}

function toast(text, isError) {
  const t = document.getElementById("toast");
  t.className = "toast" + (isError ? " error" : "");
  t.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.textContent = ""; }, isError ? 9000 : 4000);
}

function bytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}

function ms(n) {
  if (n === undefined || n === null) return "–";
  return n >= 1000 ? `${(n / 1000).toFixed(2)} s` : n < 10 ? `${n.toFixed(1)} ms` : `${Math.round(n)} ms`;
}

function since(t) {
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function perms(p) {
  if (!p) return [];
  const out = [];
  for (const kind of ["filesystem", "network", "environment", "process"]) {
    for (const v of p[kind] || []) out.push(`${kind}: ${v}`);
  }
  return out;
}

function permList(p) {
  const items = perms(p);
  if (!items.length) return el("span", { class: "muted" }, "none");
  return el("ul", { class: "diff" }, items.map((i) => el("li", {}, i)));
}

// ---------- confirmation dialog ----------

function confirmAction(title, body, okLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-h").textContent = title;
  const holder = document.getElementById("confirm-body");
  holder.replaceChildren(...(Array.isArray(body) ? body : [body]));
  document.getElementById("confirm-ok").textContent = okLabel || "Confirm";
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

// ---------- actions ----------

async function act(kind, plugin, detail) {
  const labels = {
    restart: ["Restart", `Stop ${plugin.name}'s process if it runs, forget its failures and start it again.`],
    grant: ["Grant", `Give ${plugin.name} what it asks for. It is started with these permissions.`],
    revoke: ["Revoke", `Withdraw ${plugin.name}'s grant for this project. Its process is stopped; a required plugin fails its tasks until granted again.`],
    disable: ["Disable", `Skip ${plugin.name}'s hooks in this project (with a warning); tasks fail naming it if it is required.`],
    enable: ["Enable", `Run ${plugin.name}'s hooks again in this project.`],
    update: ["Update", `Install the newest version of ${plugin.name} from its registry.`],
    remove: ["Remove", `Remove every installed version of ${plugin.name} for this user.`],
  };
  const [verb, what] = labels[kind];
  const body = [el("p", {}, what)];
  if (detail) body.push(detail);
  body.push(el("p", { class: "muted" }, "The daemon writes this action to the audit trail."));
  if (!(await confirmAction(`${verb} ${plugin.name}?`, body, verb))) return;
  try {
    await post(`/api/plugins/${kind}`, { project: state.project, name: plugin.name });
    toast(`${verb}: done for ${plugin.name}`);
  } catch (e) {
    toast(e.status === 501 ? `${verb}: ${e.message} in this daemon.` : `${verb} failed: ${e.message}${e.hint ? ` (hint: ${e.hint})` : ""}`, true);
  }
  await loadPlugins();
}

function grantDiff(p) {
  const now = new Set(perms(p.granted));
  const after = new Set([...now, ...perms(p.pending)]);
  return diffList(now, after);
}

function revokeDiff(p) {
  const now = new Set(perms(p.granted));
  return diffList(now, new Set());
}

function diffList(before, after) {
  const rows = [];
  for (const x of after) if (!before.has(x)) rows.push(el("li", { class: "add" }, `+ ${x}`));
  for (const x of before) if (!after.has(x)) rows.push(el("li", { class: "remove" }, `− ${x}`));
  if (!rows.length) rows.push(el("li", { class: "muted" }, "no change to the permissions"));
  return el("div", {}, el("h3", {}, "Permissions"), el("ul", { class: "diff", "aria-label": "permission changes" }, rows));
}

// ---------- rendering ----------

function renderDaemon() {
  const o = state.overview;
  if (!o) return;
  const up = Math.round(o.uptime_ms / 1000);
  document.getElementById("daemon").textContent =
    `taskrushd ${o.version} · pid ${o.pid} · up ${up >= 3600 ? Math.round(up / 3600) + " h" : up >= 60 ? Math.round(up / 60) + " min" : up + " s"} · ${bytes(o.rss_bytes)} resident · ${o.runs} run${o.runs === 1 ? "" : "s"} in progress`;
}

function renderProjects() {
  const list = document.getElementById("projects");
  const roots = (state.overview && state.overview.projects) || [];
  if (!roots.length) {
    list.replaceChildren(el("li", { class: "muted" }, "none loaded yet"));
    return;
  }
  list.replaceChildren(...roots.map((root) => el("li", {},
    el("button", {
      type: "button",
      "aria-current": root === state.project ? "true" : "false",
      onclick: () => selectProject(root),
    }, root.split("/").filter(Boolean).pop() || root, el("br"), el("small", { class: "muted" }, root)))));
}

function sparkline(points) {
  const w = 220, h = 36;
  const s = svg("svg", { class: "spark", width: w, height: h, viewBox: `0 0 ${w} ${h}`, role: "img" });
  s.append(svg("line", { x1: 0, y1: h - 1, x2: w, y2: h - 1 }));
  if (points.length < 2) return s;
  const max = Math.max(...points.map((p) => p.ms), 1);
  const step = w / (SAMPLES_KEPT - 1);
  const start = SAMPLES_KEPT - points.length;
  const pts = points.map((p, i) => `${((start + i) * step).toFixed(1)},${(h - 2 - (p.ms / max) * (h - 6)).toFixed(1)}`);
  s.append(svg("polyline", { points: pts.join(" ") }));
  const label = svg("title", {});
  label.textContent = `p95 over the last ${points.length} samples, max ${ms(max)}`;
  s.append(label);
  return s;
}

function metricsBlock(p) {
  const box = el("div", { class: "metrics" });
  if (state.metricsNote) {
    box.append(el("p", { class: "muted" }, "No figures (see above)."));
    return box;
  }
  const m = state.metrics[`${state.project}\0${p.name}`];
  if (m) {
    const hookRows = [...(m.hooks || []), ...(m.commands || []).map((c) => ({ ...c, name: `command ${c.name}` }))]
      .filter((h) => h.calls || (h.latency && h.latency.count));
    box.append(el("dl", { class: "facts" },
      el("dt", {}, "crashes"), el("dd", {}, `${m.crashes} (spawns ${m.spawns}, restarts ${m.restarts})`),
      el("dt", {}, "CPU"), el("dd", {}, m.cpu_ms !== undefined && m.cpu_ms !== null ? ms(m.cpu_ms) : "–"),
      el("dt", {}, "peak RSS"), el("dd", {}, m.peak_rss_kib ? bytes(m.peak_rss_kib * 1024) : "–"),
      el("dt", {}, "time added"), el("dd", {}, `${ms(m.added_ms)} to ${m.added_tasks} task${m.added_tasks === 1 ? "" : "s"}`)));
    if (hookRows.length) {
      const head = el("tr", {}, ...["hook", "calls", "p50", "p95", "p99", "errors", "timeouts", "vetoes"].map((h) => el("th", {}, h)));
      box.append(el("table", { class: "hook-metrics" }, el("thead", {}, head), el("tbody", {}, ...hookRows.map((h) =>
        el("tr", { "data-hook": h.name },
          el("td", {}, h.name), el("td", { class: "calls" }, String(h.calls)),
          el("td", {}, ms(h.latency.p50_ms)), el("td", {}, ms(h.latency.p95_ms)), el("td", {}, ms(h.latency.p99_ms)),
          el("td", {}, String(h.errors)), el("td", {}, String(h.timeouts || 0)), el("td", {}, String(h.vetoes || 0)))))));
    }
  }
  const hooks = Object.keys(state.samples)
    .filter((k) => k.startsWith(`${state.project}\0${p.name}\0`))
    .map((k) => [k.split("\0")[2], state.samples[k]]);
  if (!hooks.length) {
    if (!m) box.append(el("p", { class: "muted" }, "No hook calls measured yet."));
    return box;
  }
  for (const [hook, pts] of hooks) {
    box.append(el("div", { class: "chart-row" },
      el("span", {}, hook), sparkline(pts), el("span", {}, `p95 ${ms(pts[pts.length - 1].ms)}`)));
  }
  return box;
}

// A <details> that keeps its open state across re-renders.
function section(p, key, openByDefault, summary, ...content) {
  const id = `${p.name}\0${key}`;
  const d = el("details", { "data-key": id, open: state.open[id] ?? openByDefault }, el("summary", {}, summary), ...content);
  d.addEventListener("toggle", () => { state.open[id] = d.open; });
  return d;
}

function pluginCard(p) {
  const m = p.manifest || {};
  const kind = p.kind || (m.type) || "external";
  const signer = p.signer || m.signer || null;
  const card = el("article", { class: "card", "aria-labelledby": `plugin-${p.name}` },
    el("h3", { id: `plugin-${p.name}` }, p.name,
      el("span", { class: `badge state-${p.needs_grant ? "needs_grant" : p.state}` }, p.needs_grant ? "needs grant" : (p.state || "unknown").replace("_", " ")),
      p.required ? el("span", { class: "badge" }, "required") : null),
    m.description ? el("p", { class: "muted" }, m.description) : null,
    el("dl", { class: "facts" },
      el("dt", {}, "kind"), el("dd", {}, kind),
      el("dt", {}, "version"), el("dd", {}, p.version || m.version || "–"),
      el("dt", {}, "signer"), el("dd", {}, signer || el("span", { class: "muted" }, "not known (unsigned)")),
      el("dt", {}, "process"), el("dd", { class: "pid" }, p.pid ? `pid ${p.pid}` : "not running", ` · ${p.restarts || 0} restart${p.restarts === 1 ? "" : "s"}`),
      el("dt", {}, "hooks"), el("dd", {}, (p.hooks || []).join(", ") || "–"),
      p.commands && p.commands.length ? [el("dt", {}, "commands"), el("dd", {}, p.commands.join(", "))] : null,
      p.error || p.last_error ? [el("dt", {}, "error"), el("dd", { class: "status-failed" }, p.error || p.last_error)] : null),
    permissionsTable(p),
    section(p, "latency", true, "Hook latency", metricsBlock(p)),
    logBlock(p),
    auditBlock(p),
    el("div", { class: "actions" },
      el("button", { type: "button", onclick: () => act("restart", p) }, "Restart"),
      p.pending ? el("button", { type: "button", class: "primary", onclick: () => act("grant", p, grantDiff(p)) }, "Grant…") : null,
      p.granted ? el("button", { type: "button", class: "danger", onclick: () => act("revoke", p, revokeDiff(p)) }, "Revoke…") : null,
      el("button", { type: "button", onclick: () => act(p.disabled ? "enable" : "disable", p) }, p.disabled ? "Enable" : "Disable"),
      el("button", { type: "button", onclick: () => act("update", p) }, "Update"),
      el("button", { type: "button", class: "danger", onclick: () => act("remove", p) }, "Remove")));
  return card;
}

function permissionsTable(p) {
  const declared = (p.manifest && p.manifest.permissions) || null;
  const rows = ["filesystem", "network", "environment", "process"].map((kind) => el("tr", {},
    el("th", { scope: "row" }, kind),
    el("td", {}, ((declared && declared[kind]) || []).join(", ") || "–"),
    el("td", {}, ((p.granted && p.granted[kind]) || []).join(", ") || "–"),
    el("td", {}, ((p.effective && p.effective[kind]) || []).join(", ") || "–"),
    el("td", {}, (p.enforcement && p.enforcement[kind]) || "–")));
  return section(p, "permissions", true, "Permissions",
    el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "kind"), el("th", {}, "declared"), el("th", {}, "granted"), el("th", {}, "in force"), el("th", {}, "enforced"))),
      el("tbody", {}, rows)),
    p.pending ? el("p", { class: "notice" }, "Asks for more than is granted: ", perms(p.pending).join("; ")) : null);
}

function logBlock(p) {
  const logs = state.logs[p.name];
  const lines = Array.isArray(logs) ? logs : (p.stderr || []);
  const note = typeof logs === "string" ? el("p", { class: "muted" }, `Showing its last stderr lines (${logs}).`) : null;
  return section(p, "logs", false, `Recent log lines (${lines.length})`, note,
    lines.length ? el("pre", { class: "lines" }, lines.join("\n")) : el("p", { class: "muted" }, "none"));
}

function auditBlock(p) {
  const records = state.audit[p.name] || [];
  return section(p, "audit", false, `Audit trail (${records.length})`,
    records.length ? el("pre", { class: "lines" }, records.slice(-20).map((r) => {
      const { time, kind, plugin, root, ...rest } = r;
      return `${time} ${kind} ${JSON.stringify(rest)}`;
    }).join("\n")) : el("p", { class: "muted" }, "no records"));
}

function renderPlugins() {
  const holder = document.getElementById("plugins");
  document.getElementById("project-name").textContent = state.project ? `in ${state.project}` : "";
  if (!state.project) {
    holder.replaceChildren(el("p", { class: "muted" }, "Choose a project."));
    return;
  }
  if (!state.plugins.length) {
    holder.replaceChildren(el("p", { class: "muted" }, "This project declares no plugins."));
    return;
  }
  const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest("article");
  const focusId = focused ? focused.getAttribute("aria-labelledby") : null;
  const focusText = document.activeElement ? document.activeElement.textContent : null;
  const note = document.getElementById("metrics-note");
  note.textContent = state.metricsNote || "";
  note.hidden = !state.metricsNote;
  holder.replaceChildren(...state.plugins.map(pluginCard));
  if (focusId) {
    const again = [...holder.querySelectorAll(`[aria-labelledby="${CSS.escape(focusId)}"] button`)].find((b) => b.textContent === focusText);
    if (again) again.focus();
  }
}

function runTable(runs, title) {
  if (!runs.length) return el("p", { class: "muted" }, `${title}: none`);
  return el("table", { class: "runs" },
    el("caption", { class: "muted" }, title),
    el("thead", {}, el("tr", {}, el("th", {}, "run"), el("th", {}, "project"), el("th", {}, "started"), el("th", {}, "status"), el("th", {}, "time"), el("th", {}, "tasks"))),
    el("tbody", {}, runs.map((r) => el("tr", {},
      el("td", {}, `#${r.run_id}`),
      el("td", {}, (r.root || "").split("/").pop()),
      el("td", {}, r.started_ms ? since(r.started_ms) : "–"),
      el("td", { class: `status-${r.status || "running"}` }, r.status || "running"),
      el("td", {}, r.duration_ms !== undefined ? ms(r.duration_ms) : "–"),
      el("td", {}, (r.tasks || []).map((t) => `${t.task} ${t.state}${t.duration_ms !== undefined ? ` ${ms(t.duration_ms)}` : ""}`).join(" · "))))));
}

function renderRuns() {
  const running = state.runs.running || [];
  const recentIds = new Set(running.map((r) => r.run_id));
  const recent = (state.runs.recent || []).filter((r) => r.status !== "running" || !recentIds.has(r.run_id));
  document.getElementById("runs").replaceChildren(
    runTable(running.map((r) => ({ ...r, status: "running" })), "In progress"),
    runTable(recent, "Recent (since the page's server started)"));
}

// ---------- loading ----------

async function loadOverview() {
  state.overview = await getJson("/api/overview");
  if (!state.project && state.overview.projects.length) state.project = state.overview.projects[0];
  renderDaemon();
  renderProjects();
}

async function loadPlugins() {
  if (!state.project) { renderPlugins(); return; }
  const root = state.project;
  const q = `project=${encodeURIComponent(root)}`;
  try {
    const [plugins, audit] = await Promise.all([getJson(`/api/plugins?${q}`), getJson(`/api/audit?${q}`)]);
    if (root !== state.project) return;
    state.plugins = plugins;
    state.audit = {};
    for (const r of audit) (state.audit[r.plugin] ||= []).push(r);
    await Promise.all(plugins.map(async (p) => {
      try {
        const l = await getJson(`/api/logs?${q}&plugin=${encodeURIComponent(p.name)}`);
        state.logs[p.name] = Array.isArray(l) ? l : (l.lines || []);
      } catch (e) {
        state.logs[p.name] = e.message;
      }
    }));
  } catch (e) {
    toast(`Cannot read the plugins: ${e.message}`, true);
  }
  renderPlugins();
}

async function loadRuns() {
  try {
    state.runs = await getJson("/api/runs");
  } catch (e) {
    toast(`Cannot read the runs: ${e.message}`, true);
  }
  renderRuns();
}

function selectProject(root) {
  state.project = root;
  state.plugins = [];
  renderProjects();
  loadPlugins();
}

// The metrics method's answer (`protocol/src/metrics.rs`): per plugin
// (project root and name), per hook, its p95 latency in milliseconds.
function hookLatencies(metrics) {
  const out = [];
  for (const p of metrics.plugins || []) {
    for (const h of p.hooks || []) {
      if (h.latency && h.latency.count) out.push({ root: p.root, plugin: p.name, hook: h.name, ms: h.latency.p95_ms });
    }
  }
  return out;
}

async function sampleMetrics() {
  if (document.hidden) return;
  try {
    const metrics = await getJson("/api/metrics");
    state.metricsNote = null;
    state.metrics = {};
    for (const p of metrics.plugins || []) state.metrics[`${p.root}\0${p.name}`] = p;
    const t = Date.now();
    for (const s of hookLatencies(metrics)) {
      const key = `${s.root}\0${s.plugin}\0${s.hook}`;
      const pts = (state.samples[key] ||= []);
      pts.push({ t, ms: s.ms });
      if (pts.length > SAMPLES_KEPT) pts.shift();
    }
  } catch (e) {
    state.metricsNote = e.status === 501
      ? "Metrics are not available in this daemon yet."
      : `Cannot read the metrics: ${e.message}`;
    if (e.status === 501) clearInterval(sampleMetrics.timer);
  }
  renderPlugins();
}

// ---------- live ----------

function connectEvents() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/events");
  let pending = null;
  const soon = (fn) => { clearTimeout(pending); pending = setTimeout(fn, 150); };
  source.onopen = () => { live.className = "live on"; live.textContent = "live"; };
  source.onerror = () => { live.className = "live off"; live.textContent = "reconnecting…"; };
  source.onmessage = (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch { return; }
    if (ev.event.startsWith("run_") || ev.event.startsWith("task_")) {
      soon(async () => { await loadRuns(); await loadOverview(); });
    }
    if (ev.event.startsWith("plugin_") || ev.event.startsWith("config_") || ev.event === "lagged") {
      soon(async () => { await loadOverview(); await loadPlugins(); await loadRuns(); });
    }
  };
}

async function main() {
  document.getElementById("registry-form").addEventListener("submit", searchRegistry);
  try {
    await loadOverview();
  } catch (e) {
    document.getElementById("daemon").textContent = e.status === 401
      ? "This page's session has ended: run `taskrush daemon ui` for a new link."
      : `Cannot reach the daemon: ${e.message}`;
    return;
  }
  await Promise.all([loadPlugins(), loadRuns()]);
  connectEvents();
  sampleMetrics();
  sampleMetrics.timer = setInterval(sampleMetrics, SAMPLE_EVERY_MS);
}

// ---------- registry ----------

async function searchRegistry(event) {
  event.preventDefault();
  const holder = document.getElementById("registry");
  const q = document.getElementById("registry-q").value.trim();
  holder.replaceChildren(el("p", { class: "muted" }, "Searching…"));
  try {
    const found = await getJson(`/api/registry/search?q=${encodeURIComponent(q)}`);
    const items = Array.isArray(found) ? found : (found.plugins || []);
    if (!items.length) { holder.replaceChildren(el("p", { class: "muted" }, "Nothing found.")); return; }
    holder.replaceChildren(el("div", { class: "plugins" }, items.map(registryCard)));
  } catch (e) {
    holder.replaceChildren(el("p", { class: "notice" }, e.status === 501
      ? "Browsing a registry is not available in this daemon yet."
      : `The search failed: ${e.message}`));
  }
}

function registryCard(r) {
  const versions = r.versions || (r.version ? [r.version] : []);
  return el("article", { class: "card" },
    el("h3", {}, r.name, versions.length ? el("span", { class: "muted" }, versions[0]) : null),
    r.description ? el("p", {}, r.description) : null,
    el("dl", { class: "facts" },
      el("dt", {}, "versions"), el("dd", {}, versions.join(", ") || "–"),
      el("dt", {}, "signer"), el("dd", {}, r.signer || el("span", { class: "muted" }, "unsigned")),
      el("dt", {}, "asks for"), el("dd", {}, permList(r.permissions))),
    el("div", { class: "actions" }, el("button", {
      type: "button", class: "primary",
      onclick: async () => {
        if (!state.project) { toast("Choose a project first.", true); return; }
        const ok = await confirmAction(`Install ${r.name}?`, [
          el("p", {}, `Install ${r.name} ${versions[0] || ""} for this user (verified; add it to the project's .rush to use it).`),
          el("h3", {}, "It asks for"), permList(r.permissions),
          el("p", { class: "muted" }, "Nothing is granted until you grant it. The daemon writes this action to the audit trail.")], "Install");
        if (!ok) return;
        try {
          await post("/api/registry/install", { project: state.project, name: r.name, version: versions[0] });
          toast(`Installed ${r.name}`);
        } catch (e) {
          toast(e.status === 501 ? "Installing is not available in this daemon yet." : `Install failed: ${e.message}`, true);
        }
        loadPlugins();
      },
    }, "Install…")));
}

main();

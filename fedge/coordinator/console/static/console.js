// fedge console: renders the page named by the URL from the coordinator's JSON API and keeps
// it current by polling (no reload). No framework, no external resources.
"use strict";

const POLL_MS = 1000;
const main = document.getElementById("main");
let timer = null;

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

function badge(text) {
  return `<span class="badge ${esc(text)}">${esc(String(text).replace("_", " "))}</span>`;
}

function taskMetrics(metrics) {
  return Object.entries(metrics || {}).filter(([k]) => k !== "threshold").sort()
    .map(([k, v]) => `${esc(k)} ${fmt(v, 4)}`).join(", ");
}

function fmt(x, digits = 3) {
  return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
}

function ago(unix) {
  if (!unix) return "never";
  const s = Math.max(0, Date.now() / 1000 - unix);
  if (s < 120) return `${s.toFixed(0)}s ago`;
  if (s < 7200) return `${(s / 60).toFixed(0)}m ago`;
  return `${(s / 3600).toFixed(1)}h ago`;
}

function clock(unix) {
  return new Date(unix * 1000).toISOString().slice(11, 19);
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

async function act(path, payload) {
  try {
    const body = await api(path, {
      method: "POST",
      headers: { "content-type": "application/json", "x-fedge-action": "1" },
      body: JSON.stringify(payload || {}),
    });
    toast("done");
    await refresh();
    return body;
  } catch (err) {
    toast(err.message, true);
    return null;
  }
}

function toast(text, error = false) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.className = error ? "error" : "";
  el.hidden = false;
  clearTimeout(el._t);
  el._t = setTimeout(() => { el.hidden = true; }, 4000);
}

function card(key, value, id = "") {
  return `<div class="card"><div class="k">${esc(key)}</div><div class="v"${id ? ` id="${id}"` : ""}>${value}</div></div>`;
}

// A line chart as SVG: one series, axes with min/max labels, a dot per point.
function lineChart(title, xs, ys, color = "#2f5fd0") {
  const w = 360, h = 180, l = 44, r = 12, t = 24, b = 26;
  const points = xs.map((x, i) => [x, ys[i]]).filter((p) => p[1] !== null && p[1] !== undefined);
  let body = `<text x="${l}" y="15" style="font-weight:600;fill:#1d2430">${esc(title)}</text>`;
  if (points.length === 0) {
    body += `<text x="${l}" y="${h / 2}">no data yet</text>`;
  } else {
    const xMin = Math.min(...points.map((p) => p[0])), xMax = Math.max(...points.map((p) => p[0]));
    let yMin = Math.min(...points.map((p) => p[1])), yMax = Math.max(...points.map((p) => p[1]));
    if (yMax === yMin) { yMax += 0.5; yMin -= 0.5; }
    const sx = (x) => l + (xMax === xMin ? (w - l - r) / 2 : ((x - xMin) / (xMax - xMin)) * (w - l - r));
    const sy = (y) => t + (1 - (y - yMin) / (yMax - yMin)) * (h - t - b);
    body += `<line x1="${l}" y1="${h - b}" x2="${w - r}" y2="${h - b}" stroke="#c8ced8"/>`;
    body += `<line x1="${l}" y1="${t}" x2="${l}" y2="${h - b}" stroke="#c8ced8"/>`;
    const short = (v) => Number(Number(v).toPrecision(3)).toString();
    body += `<text x="4" y="${t + 4}">${short(yMax)}</text><text x="4" y="${h - b}">${short(yMin)}</text>`;
    body += `<text x="${l}" y="${h - 8}">round ${xMin}</text>`;
    body += `<text x="${w - r - 60}" y="${h - 8}">round ${xMax}</text>`;
    const path = points.map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    body += `<polyline fill="none" stroke="${color}" stroke-width="2" points="${path}"/>`;
    for (const p of points) {
      body += `<circle cx="${sx(p[0]).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="3" fill="${color}"><title>round ${p[0]}: ${fmt(p[1], 4)}</title></circle>`;
    }
  }
  return `<div class="chart"><svg width="${w}" height="${h}" role="img" aria-label="${esc(title)}">${body}</svg></div>`;
}

// A device's last personalisation report, as the device noised it.
function personal(d) {
  if (!d.personal_version) return "–";
  const what = d.personal_reason === "gain" ? "serves its own" : `kept the release (${esc(d.personal_reason)})`;
  return `release ${d.personal_version}: ${what}, gain ${d.personal_gain >= 0 ? "+" : ""}${fmt(d.personal_gain, 2)} <span class="muted">(noised)</span>`;
}

// ---------------------------------------------------------------------------- pages

// A --mode async run: model version, buffer, trainings out, staleness, refused updates, and
// which updates each version took (how stale, weighed how).
function asyncStatus(a, rounds) {
  if (!a) return "";
  const staleness = Object.entries(a.staleness_histogram).map(([k, v]) => `${esc(k)}: ${v}`).join(", ");
  const refusals = a.last_refusals.map((d) => `<tr><td>${esc(d.device_id || `node ${d.node_id}`)}</td><td>${esc(d.reason)}</td></tr>`).join("");
  const took = rounds.filter((x) => x.updates.length).map((x) => `<tr><td class="num">${x.server_round}</td><td>${x.updates.map((u) =>
    `${esc(u.device_id || `node ${u.node_id}`)} (staleness ${u.staleness}, weight ${fmt(u.weight, 3)})`).join(", ")}</td></tr>`).join("");
  return `<div class="cards" id="async">${card("model version", a.version, "async-version")}
    ${card("in buffer", `${a.in_buffer}/${a.buffer}`, "async-buffer")}${card("training", a.training)}
    ${card("applied", a.updates_applied)}${card("refused", a.updates_refused, "async-refused")}</div>
    <p class="muted">Updates by staleness (versions behind): ${staleness || "–"}</p>
    ${refusals ? `<h2>Refused updates</h2><table><thead><tr><th>device</th><th>reason</th></tr></thead><tbody>${refusals}</tbody></table>` : ""}
    ${took ? `<h2>Updates per version</h2><table id="async-updates"><thead><tr><th class="num">version</th><th>updates</th></tr></thead><tbody>${took}</tbody></table>` : ""}`;
}

const pages = {
  async fleet() {
    const [fleet, drift] = await Promise.all([api("/api/fleet"), api("/api/drift")]);
    const devices = fleet.devices;
    const online = devices.filter((d) => !["offline", "revoked"].includes(d.state)).length;
    const installed = devices.filter((d) => d.release_version > 0).length;
    const drifted = devices.filter((d) => d.drifted).length;
    const personalised = devices.filter((d) => d.personal_version && d.personal_reason === "gain").length;
    const rows = devices.map((d) => `<tr data-device="${esc(d.device_id)}">
      <td><b>${esc(d.name)}</b><br><span class="muted">${esc(d.device_id)}</span></td>
      <td>${badge(d.state)}</td>
      <td>${ago(d.last_seen_unix)}</td>
      <td>${esc(d.profile || "–")}</td>
      <td>${d.release_version ? `<a href="/releases/${d.release_version}">release ${d.release_version}</a> (slot ${esc(d.release_slot)})` : "none"}</td>
      <td>${d.can_train ? "trains" : "inference only"}</td>
      <td class="num">${d.inference_requests}</td>
      <td class="num">${d.inference_errors}</td>
      <td class="num">${d.inference_requests ? fmt(d.latency_p50_ms, 2) : "–"}</td>
      <td class="num">${d.inference_requests ? fmt(d.latency_p99_ms, 2) : "–"}</td>
      <td class="num">${d.privacy_spent === null ? "–" : fmt(d.privacy_spent, 2)}</td>
      <td>${d.drifted ? badge("drifted") : (d.drift_psi ? `PSI ${fmt(d.drift_psi, 2)}` : "–")}</td>
      <td class="personal">${personal(d)}</td>
    </tr>`).join("");
    return `<h1>Fleet</h1>
      <div class="cards">${card("devices", devices.length)}${card("online", online, "online-count")}
      ${card("serving a release", installed)}${card("drifted", drifted)}${card("personalised", personalised)}</div>
      <table id="fleet"><thead><tr><th>device</th><th>state</th><th>heartbeat</th><th>profile</th>
      <th>installed release</th><th>role</th><th class="num">requests</th><th class="num">errors</th>
      <th class="num">p50 ms</th><th class="num">p99 ms</th><th class="num">ε spent</th><th>drift</th><th>personalisation</th></tr></thead>
      <tbody>${rows || `<tr><td colspan="13" class="muted">no devices enrolled yet</td></tr>`}</tbody></table>
      <p class="muted">Drift threshold: PSI ${fmt(drift.threshold, 2)}. Personalisation outcomes are
      noised on each device (randomised response and Laplace noise) before they leave it.</p>`;
  },

  async runs() {
    const { runs } = await api("/api/runs");
    const rows = runs.slice().reverse().map((r) => {
      const cfg = JSON.parse(r.config_json || "{}");
      return `<tr><td><a href="/runs/${r.run_id}">run ${r.run_id}</a></td><td>${badge(r.state)}</td>
        <td class="num">${r.rounds_done}/${r.rounds_total}</td><td class="num">${fmt(r.accuracy, 4)}</td>
        <td>${esc(cfg.dataset)} / ${esc(cfg.model)}</td><td>${clock(r.created_unix)}</td><td>${esc(r.error)}</td></tr>`;
    }).join("");
    return `<h1>Runs</h1><table id="runs"><thead><tr><th>run</th><th>state</th><th class="num">rounds</th>
      <th class="num">accuracy</th><th>dataset / model</th><th>created (UTC)</th><th>error</th></tr></thead>
      <tbody>${rows || `<tr><td colspan="7" class="muted">no runs yet</td></tr>`}</tbody></table>`;
  },

  // The task's own metrics of a round (ROC-AUC of a binary task; precision, recall, F1).
  async run(id) {
    const reply = await api(`/api/runs/${id}`);
    const r = reply.run, rounds = reply.rounds;
    const xs = rounds.map((x) => x.server_round);
    const active = ["queued", "running"].includes(r.state);
    const drops = rounds.flatMap((x) => x.drops.map((d) => `<tr><td class="num">${x.server_round}</td>
      <td>${esc(d.device_id || `node ${d.node_id}`)}</td><td>${esc(d.reason)}</td></tr>`)).join("");
    const table = rounds.map((x) => `<tr><td class="num">${x.server_round}</td><td class="num">${fmt(x.accuracy, 4)}</td>
      <td class="num">${fmt(x.loss, 4)}</td><td class="num">${x.aggregated}/${x.sampled}</td>
      <td class="num">${x.dropped}</td><td class="num">${fmt(x.epsilon, 3)}</td><td class="num">${fmt(x.seconds, 1)}</td>
      <td>${taskMetrics(x.metrics)}</td></tr>`).join("");
    const events = reply.events.slice().reverse().map((e) => `<div>${clock(e.time_unix)} ${esc(e.kind.padEnd(12))} ${esc(e.device_id)} ${esc(e.message)}</div>`).join("");
    return `<h1>Run ${r.run_id} ${badge(r.state)}</h1>${asyncStatus(r.async_status, rounds)}
      <div class="cards">${card("round", `<span id="rounds-done">${r.rounds_done}</span>/${r.rounds_total}`)}
      ${card("accuracy", fmt(r.accuracy, 4), "accuracy")}
      ${card("ε", rounds.length ? fmt(rounds[rounds.length - 1].epsilon, 3) : "–", "epsilon")}</div>
      ${r.error ? `<p class="badge bad">${esc(r.error)}</p>` : ""}
      <div class="actions"><button class="danger" id="stop-run" ${active ? "" : "disabled"}
        onclick="if (confirm('Stop run ${r.run_id}?')) act('/api/runs/${r.run_id}/stop')">Stop run</button></div>
      <div class="charts">${lineChart("accuracy", xs, rounds.map((x) => x.accuracy), "#1f8a4c")}
      ${lineChart("loss", xs, rounds.map((x) => x.loss), "#c0392b")}
      ${lineChart("ε (central DP)", xs, rounds.map((x) => x.epsilon), "#6b4fd0")}</div>
      <h2>Rounds</h2><table id="rounds"><thead><tr><th class="num">round</th><th class="num">accuracy</th>
      <th class="num">loss</th><th class="num">replied/asked</th><th class="num">dropped</th><th class="num">ε</th>
      <th class="num">seconds</th><th>task metrics</th></tr></thead><tbody>${table || `<tr><td colspan="8" class="muted">no round yet</td></tr>`}</tbody></table>
      <h2>Drops</h2><table><thead><tr><th class="num">round</th><th>device</th><th>reason</th></tr></thead>
      <tbody>${drops || `<tr><td colspan="3" class="muted">no device dropped</td></tr>`}</tbody></table>
      <h2>Events</h2><div class="events" id="events">${events}</div>`;
  },

  async releases() {
    const { releases } = await api("/api/releases");
    const rows = releases.map((r) => `<tr><td><a href="/releases/${r.version}">release ${r.version}</a></td>
      <td>${esc(r.name)}</td><td>${esc(r.profile)}</td><td class="num">${r.percent}%</td>
      <td>${r.withdrawn ? badge("withdrawn") : badge("live")}${r.rollback_of ? ` rollback of ${r.rollback_of}` : ""}</td>
      <td>${r.rollout ? `${badge(r.rollout.state)} stage ${r.rollout.stage + 1}/${r.rollout.stages.length}` : "–"}</td>
      <td class="num">${r.states.installed || 0}</td><td class="num">${(r.states.refused || 0) + (r.states.rolled_back || 0) + (r.states.failed || 0)}</td>
      <td>${esc(r.created)}</td></tr>`).join("");
    return `<h1>Releases</h1><table id="releases"><thead><tr><th>release</th><th>name</th><th>profile</th>
      <th class="num">rollout</th><th>status</th><th>gated rollout</th><th class="num">installed</th>
      <th class="num">failed</th><th>created</th></tr></thead>
      <tbody>${rows || `<tr><td colspan="9" class="muted">no releases yet</td></tr>`}</tbody></table>`;
  },

  async release(version) {
    const reply = await api(`/api/releases/${version}`);
    const r = reply.release, s = r.states;
    const offered = ["offered", "downloading", "installed", "refused", "rolled_back", "failed"]
      .reduce((n, k) => n + (s[k] || 0), 0);
    const reached = offered - (s.offered || 0);
    const steps = [
      ["offered", offered], ["downloading", reached], ["installed", s.installed || 0],
      ["refused", s.refused || 0], ["rolled_back", s.rolled_back || 0], ["failed", s.failed || 0],
    ];
    const top = Math.max(1, offered);
    const funnel = steps.map(([k, n]) => `<div>${esc(k.replace("_", " "))}</div>
      <div><div class="bar ${k}" style="width:${(100 * n) / top}%"></div></div><div class="num" data-state="${k}">${n}</div>`).join("");
    const devices = reply.devices.map((d) => `<tr><td><b>${esc(d.name)}</b> <span class="muted">${esc(d.device_id)}</span></td>
      <td>${badge(d.state)}</td><td>${esc(d.reason)}</td></tr>`).join("");
    const tele = reply.telemetry.map((t) => `<tr><td>${esc(t.device_id)}</td><td class="num">${t.requests}</td>
      <td class="num">${t.errors}</td><td class="num">${fmt(t.latency_p50_ms, 2)}</td><td class="num">${fmt(t.latency_p99_ms, 2)}</td></tr>`).join("");
    const ro = r.rollout;
    const gated = ro ? `<h2>Health-gated rollout ${badge(ro.state)}</h2>
      <p>Stage ${ro.stage + 1} of ${ro.stages.length} (${ro.stages.map((p, i) => i === ro.stage ? `<b>${p}%</b>` : `${p}%`).join(" → ")}),
      failure rate ${ro.outcomes ? fmt(ro.failures / ro.outcomes, 2) : "–"} of ${ro.outcomes} outcomes
      (halts above ${fmt(ro.max_failure_rate, 2)} once ${ro.min_devices} devices have one).</p>
      ${ro.reason ? `<p class="badge bad" id="rollout-reason">${esc(ro.reason)}</p>` : ""}
      <div class="actions">
        <button id="pause" ${ro.state === "running" ? "" : "disabled"} onclick="act('/api/releases/${version}/pause')">Pause</button>
        <button id="resume" ${ro.state === "paused" ? "" : "disabled"} onclick="act('/api/releases/${version}/resume')">Resume</button>
        <button class="danger" id="abort" ${["running", "paused"].includes(ro.state) ? "" : "disabled"}
          onclick="if (confirm('Abort the rollout and roll the fleet back?')) act('/api/releases/${version}/abort')">Abort and roll back</button>
      </div>` : "";
    return `<h1>Release ${r.version} <span class="muted">${esc(r.name)}</span> ${r.withdrawn ? badge("withdrawn") : badge("live")}</h1>
      <div class="cards">${card("rollout", `${r.percent}%`, "percent")}${card("profile", esc(r.profile))}
      ${card("serving now", s.running || 0)}${card("size", `${(r.length / 1024).toFixed(1)} KiB`)}</div>
      <div class="actions"><label>Promote to <input id="promote-percent" type="number" min="0" max="100" value="100">%</label>
        <button id="promote" ${r.withdrawn ? "disabled" : ""} onclick="act('/api/releases/${version}/promote', {percent: Number(document.getElementById('promote-percent').value)})">Promote</button>
        <button class="danger" id="rollback" ${r.withdrawn ? "disabled" : ""} onclick="if (confirm('Roll back release ${version}?')) act('/api/releases/${version}/rollback')">Roll back</button></div>
      ${gated}
      <h2>Rollout funnel</h2><div class="funnel" id="funnel">${funnel}</div>
      <h2>Devices</h2><table id="release-devices"><thead><tr><th>device</th><th>state</th><th>reason</th></tr></thead>
      <tbody>${devices || `<tr><td colspan="3" class="muted">no device has been offered this release</td></tr>`}</tbody></table>
      <h2>Inference on this release</h2><table><thead><tr><th>device</th><th class="num">requests</th><th class="num">errors</th>
      <th class="num">p50 ms</th><th class="num">p99 ms</th></tr></thead><tbody>${tele || `<tr><td colspan="5" class="muted">no telemetry yet</td></tr>`}</tbody></table>`;
  },

  async drift() {
    const reply = await api("/api/drift");
    const rows = reply.devices.map((d) => `<tr><td><b>${esc(d.name)}</b> <span class="muted">${esc(d.device_id)}</span></td>
      <td>${d.version ? `release ${d.version}` : "–"}</td><td class="num">${fmt(d.psi_classes, 3)}</td>
      <td class="num">${fmt(d.psi_inputs, 3)}</td><td class="num">${d.samples}</td>
      <td>${d.drifted ? badge("drifted") : badge("ok")}</td><td>${d.updated_unix ? ago(d.updated_unix) : "–"}</td><td>${esc(d.note)}</td></tr>`).join("");
    return `<h1>Drift</h1><p class="muted">Each device's latest window of predictions (noisy counts, differential
      privacy on the device) against its release's reference distribution, by population stability index;
      drifted above ${fmt(reply.threshold, 2)}.</p><table id="drift"><thead><tr><th>device</th><th>release</th>
      <th class="num">PSI classes</th><th class="num">PSI inputs</th><th class="num">samples</th><th>status</th>
      <th>updated</th><th>note</th></tr></thead><tbody>${rows || `<tr><td colspan="8" class="muted">no window reported yet</td></tr>`}</tbody></table>`;
  },
};

function route() {
  const parts = location.pathname.split("/").filter(Boolean);
  const section = parts[0] || "fleet";
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("active", a.dataset.nav === section);
  }
  if (section === "runs" && parts[1]) return () => pages.run(Number(parts[1]));
  if (section === "releases" && parts[1]) return () => pages.release(Number(parts[1]));
  return pages[section] || pages.fleet;
}

const render = route();

async function refresh() {
  const live = document.getElementById("live");
  try {
    const html = await render();
    // Keep what the operator is typing: skip a refresh while a form field has the focus.
    if (!(document.activeElement && document.activeElement.tagName === "INPUT")) {
      main.innerHTML = html;
    }
    live.className = "";
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  } catch (err) {
    live.className = "stale";
    main.innerHTML = `<p class="badge bad">${esc(err.message)}</p>`;
  }
}

async function start() {
  try {
    const who = await api("/api/session");
    document.getElementById("who").textContent = who.operator;
  } catch (err) { /* the page itself says what is wrong */ }
  await refresh();
  timer = setInterval(refresh, POLL_MS);
}

start();

// chroma-orch dashboard: REST for actions, /v1/events for live state.
// The token travels as a WebSocket subprotocol (browsers cannot set headers), never in a URL.
"use strict";

const TOKEN_KEY = "chroma-orch.token";
const SUBPROTOCOL = "chroma-orch.v1";
const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  instances: new Map(),   // id -> instance on the table's page (paging.js), kept current by events
  tenants: new Map(),     // id -> name
  lastSeq: null,          // resume cursor: ?since=lastSeq after a drop
  socket: null,
  retry: 0,
  logSocket: null,
};
window.chromaOrch = state; // for debugging (and tests)

// ---- REST ---------------------------------------------------------------------------

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) { signOut("The token was refused."); throw new Error("unauthorized"); }
  const data = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error(data && (data.detail || data.title) || response.statusText);
  return data;
}

async function act(label, run) {
  $("action-error").hidden = true;
  try { await run(); } catch (err) {
    $("action-error").textContent = `${label}: ${err.message}`;
    $("action-error").hidden = false;
  }
}

// ---- the event stream ---------------------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  // snapshot=none: a snapshot or resync brings only its seq (the page is read again), not the fleet
  const query = "?snapshot=none" + (state.lastSeq === null ? "" : `&since=${state.lastSeq}`);
  const socket = new WebSocket(`${scheme}://${location.host}/v1/events${query}`,
                               [SUBPROTOCOL, `chroma-orch.bearer.${state.token}`]);
  state.socket = socket;
  socket.onopen = () => { state.retry = 0; setLink(true, "live"); };  // since=: no snapshot comes first
  socket.onmessage = (frame) => handle(JSON.parse(frame.data));
  socket.onclose = (event) => {
    if (state.socket !== socket) return;  // replaced or signed out
    setLink(false, event.code === 4429 ? "too slow, catching up" : "reconnecting");
    if (event.code === 4401) { signOut("The token was refused."); return; }
    const delay = Math.min(250 * 2 ** state.retry++, 5000);
    setTimeout(() => { if (state.socket === socket) connect(); }, delay);
  };
}

function handle(message) {
  switch (message.type) {
    case "snapshot":
    case "resync":
      // paging.js: read the page again; the message's whole-fleet list is not kept
      state.lastSeq = message.seq;
      pageResynced();
      snapshotsResynced();
      rolloutsResynced();  // rollouts.js
      upgradesResynced();  // upgrades.js
      fleetResynced();  // fleet.js
      break;
    case "event":
      if (isSnapshotEvent(message)) applySnapshotEvent(message);  // snapshots.js
      else if (isRolloutEvent(message)) applyRolloutEvent(message);  // rollouts.js
      else if (isUpgradeEvent(message)) applyUpgradeEvent(message);  // upgrades.js
      else if (!pageHas(message)) apply(message);  // patches its row, if on the page (paging.js)
      fleetEvent(message);  // fleet.js
      state.lastSeq = message.seq;
      // paging.js: only this instance's row, never the whole table
      if (!message.event.startsWith("instance.") && state.instances.has(message.instance_id)) patchRow(message.instance_id);
      if (isSnapshotEvent(message)) renderSnapshots();
      break;
    case "heartbeat":
      if (message.seq !== null && message.seq > (state.lastSeq ?? -1)) state.lastSeq = message.seq;
      break;
  }
  setLink(true, "live");
}

function apply(ev) {
  const after = ev.after || {};
  let inst = state.instances.get(ev.instance_id);
  if (ev.event === "instance.created") {
    inst = {
      id: ev.instance_id, tenant_id: ev.tenant_id, name: after.name, phase: after.phase,
      desired_state: after.desired_state, generation: after.generation, observed_generation: 0,
      endpoint: null, failure: null, created_at: ev.created_at, phase_changed_at: ev.created_at,
      spec: after.spec || {},
    };
    // paging.js: on this page only when it is the last one, has room and the instance matches
    if (!pageTakes(inst, state.tenants.get(inst.tenant_id))) { changedElsewhere(inst.id); return; }
    state.instances.set(inst.id, inst);
  }
  if (!inst) { changedElsewhere(ev.instance_id); return; }  // paging.js
  if ("desired_state" in after) inst.desired_state = after.desired_state;
  if ("generation" in after) inst.generation = after.generation;
  if ("observed_generation" in after) inst.observed_generation = after.observed_generation;
  if ("endpoint" in after) {
    const ep = after.endpoint;
    inst.endpoint = ep ? { ...ep, url: `http://${ep.host}:${ep.port}` } : null;
  }
  if ("failure" in after) inst.failure = after.failure;
  if (after.spec) inst.spec = after.spec;
  if (ev.event === "instance.start_phase") {
    // how far the start got (each start phase is one event, in order)
    inst.start_phases = { ...(inst.start_phases || {}), [after.start_phase]: after.at };
    inst.start_phase = after.start_phase;
  }
  if (ev.event === "instance.crashed" || ev.event === "instance.failed") {
    inst.failure = { reason: after.reason, message: after.message };
  }
  if ("phase" in after && after.phase !== inst.phase) {
    inst.phase = after.phase;
    inst.phase_changed_at = ev.created_at;
    if (inst.phase === "starting") { inst.start_phase = null; inst.start_phases = {}; }
  }
  inst.last_event = { name: ev.event.replace("instance.", ""), at: ev.created_at };
  if (inst.phase === "deleted") state.instances.delete(inst.id);
  patchRow(inst.id);  // paging.js
}

// ---- rendering ----------------------------------------------------------------------

function setLink(up, text) {
  $("link").className = `link ${up ? "link-up" : "link-down"}`;
  $("link").textContent = text;
  $("cursor").textContent = state.lastSeq === null ? "" : `seq ${state.lastSeq}`;
}

function ago(iso) {
  if (!iso) return "";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function button(label, enabled, run, extra = "") {
  return el("button", { class: `small ${extra}`, disabled: !enabled, "data-action": label, onclick: run }, label);
}

function startPhase(inst) {
  // while starting: the start's furthest phase, and how far into the start it came
  if (inst.phase !== "starting" || !inst.start_phase) return null;
  const at = (inst.start_phases || {})[inst.start_phase];
  const into = at && inst.phase_changed_at
    ? ` +${Math.max(0, (Date.parse(at) - Date.parse(inst.phase_changed_at)) / 1000).toFixed(1)}s` : "";
  return el("div", { class: "muted start-phase", "data-start-phase": inst.start_phase },
    `${inst.start_phase.replace("_", " ")}${into}`);
}

function row(inst) {
  const phase = inst.phase;
  const settled = inst.observed_generation === inst.generation;
  const path = `/v1/instances/${inst.id}`;
  const lastChange = inst.last_event
    ? `${inst.last_event.name} ${ago(inst.last_event.at)} ago`
    : `${phase} ${ago(inst.phase_changed_at)} ago`;
  return el("tr", { "data-id": inst.id, "data-phase": phase },
    el("td", {}, el("strong", {}, inst.name), el("div", { class: "mono muted" }, inst.id.slice(0, 8))),
    el("td", {}, state.tenants.get(inst.tenant_id) || inst.tenant_id.slice(0, 8)),
    el("td", {},
      el("span", { class: `phase phase-${phase}` }, phase),
      startPhase(inst),
      settled ? null : el("div", { class: "muted" }, `→ ${inst.desired_state}`),
      inst.failure ? el("div", { class: "failure" }, `${inst.failure.reason}: ${inst.failure.message}`) : null,
      upgradeStatus(inst)),  // upgrades.js
    versionCell(inst),
    el("td", { class: "mono" }, inst.endpoint ? inst.endpoint.url : "—"),
    el("td", {}, ago(inst.created_at)),
    el("td", {}, lastChange),
    el("td", { class: "actions" },
      button("start", inst.desired_state === "stopped" || phase === "failed",
             () => act("start", () => api("POST", `${path}/start`))),
      button("stop", inst.desired_state === "running",
             () => act("stop", () => api("POST", `${path}/stop`))),
      button("upgrade", inst.desired_state === "running" && !upgradeOpen(inst), () => askUpgrade(inst)),
      button("logs", true, () => openLogs(inst)),
      button("snapshot", inst.desired_state !== "deleted", () => takeSnapshot(inst)),
      button("snapshots", true, () => openSnapshots(inst)),
      button("delete", true, () => {
        if (confirm(`Delete ${inst.name} and its data?`)) act("delete", () => api("DELETE", path));
      }, "danger")));
}

function render() {
  patchPage();  // paging.js: the page's rows, cell by cell
  renderSnapshots();
}

// ---- logs ---------------------------------------------------------------------------

function openLogs(inst) {
  closeLogs();
  $("logs").hidden = false;
  $("logs-name").textContent = inst.name;
  $("logs-lines").textContent = "";
  $("logs-state").textContent = "connecting";
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/v1/instances/${inst.id}/logs/stream?tail=200`,
                               [SUBPROTOCOL, `chroma-orch.bearer.${state.token}`]);
  state.logSocket = socket;
  socket.onmessage = (frame) => {
    const message = JSON.parse(frame.data);
    const pre = $("logs-lines");
    if (message.type === "log") {
      const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent += message.lines.map(plain).join("\n") + "\n";
      if (stick) pre.scrollTop = pre.scrollHeight;
    }
    $("logs-state").textContent = message.type === "log_end" ? "ended" : "following";
  };
  socket.onclose = (event) => {
    if (state.logSocket === socket) $("logs-state").textContent = `closed (${event.code})`;
  };
}

const ANSI = new RegExp(String.fromCharCode(27) + "\\[[0-9;]*[A-Za-z]", "g");
const plain = (line) => line.replace(ANSI, "");  // Chroma colours its banner

function closeLogs() {
  if (state.logSocket) { const s = state.logSocket; state.logSocket = null; s.close(); }
  $("logs").hidden = true;
}

// ---- sign in / out ------------------------------------------------------------------

async function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("signout").hidden = false;
  try {
    const tenants = await api("GET", "/v1/tenants");
    state.tenants = new Map(tenants.map((t) => [t.id, t.name]));
    $("tenant").replaceChildren(...tenants.map((t) => el("option", { value: t.id }, t.name)));
  } catch (err) {
    if (!state.token) return;
  }
  try { state.lastSeq = await loadPage(); } catch (err) {  // paging.js: connect since its seq
    if (!state.token) return;
  }
  rolloutsResynced();  // rollouts.js: since= brings no snapshot to start it
  fleetResynced();  // fleet.js: likewise
  connect();
}

function signOut(reason) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  const socket = state.socket;
  state.socket = null;
  if (socket) socket.close();
  closeLogs();
  closeSnapshots();
  closeRollouts();
  closeFleet();  // fleet.js
  upgrades.byInstance.clear();
  state.instances.clear();
  resetPaging();  // paging.js
  state.lastSeq = null;
  $("app").hidden = true;
  $("signout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = reason || "";
  $("login-error").hidden = !reason;
  setLink(false, "offline");
}

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  $("token").value = "";
  sessionStorage.setItem(TOKEN_KEY, state.token);
  start();
});
$("signout").addEventListener("click", () => signOut());
$("logs-close").addEventListener("click", closeLogs);
$("launch-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const body = { name: $("name").value.trim() };
  if ($("tenant").value) body.tenant_id = $("tenant").value;
  act("launch", () => api("POST", "/v1/instances", body));
});
setInterval(render, 5000);  // ages
if (state.token) start();

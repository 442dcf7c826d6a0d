// chroma-orch dashboard: fleet upgrades and rolling restarts (admins only: a tenant token
// gets 403 and the panel stays hidden). Loaded once, then kept current by the rollout.*
// events of /v1/events (each re-reads its rollout, whose per-wave counts the panel shows);
// pause, resume, cancel. Uses app.js's helpers.
"use strict";

const rollouts = {
  items: new Map(),      // id -> rollout (RolloutRead)
  admin: false,          // the token may see rollouts
  reading: new Map(),    // id -> a re-read in flight (one at a time per rollout)
  again: new Set(),      // ids with an event seen while their re-read was in flight
};
window.chromaOrch.rollouts = rollouts;

const isRolloutEvent = (ev) => ev.event.startsWith("rollout.");

function applyRolloutEvent(ev) {
  const id = (ev.after || {}).rollout_id;
  if (rollouts.admin && id) rereadRollout(id);
}

async function rereadRollout(id) {
  if (rollouts.reading.has(id)) { rollouts.again.add(id); return; }
  const reading = api("GET", `/v1/rollouts/${id}`)
    .then((rollout) => { rollouts.items.set(id, rollout); renderRollouts(); })
    .catch(() => {})
    .finally(() => {
      rollouts.reading.delete(id);
      if (rollouts.again.delete(id)) rereadRollout(id);  // an event came meanwhile
    });
  rollouts.reading.set(id, reading);
}

async function loadRollouts() {
  let listed;
  try { listed = await api("GET", "/v1/rollouts?limit=20"); } catch (err) {
    rollouts.admin = false;  // a tenant token: 403
    $("rollouts").hidden = true;
    return;
  }
  rollouts.admin = true;
  rollouts.items = new Map(listed.map((r) => [r.id, r]));
  $("rollouts").hidden = false;
  renderRollouts();
}

function rolloutsResynced() {
  // the stream started over (first connect, or a resync): events may have been missed
  if (state.token) loadRollouts();
}

function closeRollouts() {
  rollouts.items = new Map();
  rollouts.admin = false;
  $("rollouts").hidden = true;
}

function waveCell(rollout, wave) {
  const c = wave.counts;
  const done = wave.members - c.waiting - c.active;
  const bad = c.failed + c.rolled_back;
  const current = wave.wave === rollout.current_wave && ["pending", "running", "paused"].includes(rollout.state);
  const bar = el("progress", { max: Math.max(wave.members, 1), value: wave.members ? done : 1 });
  return el("div", { class: `wave${current ? " wave-current" : ""}`, "data-wave": wave.wave,
                     "data-done": done, "data-members": wave.members, "data-failed": bad },
    el("span", { class: "muted" }, `${wave.percent}%`), bar,
    `${done}/${wave.members}`,
    c.active ? el("span", { class: "muted" }, ` ${c.active} active`) : null,
    bad ? el("span", { class: "failure" }, ` ${bad} failed`) : null);
}

function rolloutRow(rollout) {
  const path = `/v1/rollouts/${rollout.id}`;
  const what = rollout.kind === "upgrade" ? `upgrade to ${rollout.request.chroma_version}` : "restart";
  const live = ["pending", "running"].includes(rollout.state);
  return el("tr", { "data-rollout-id": rollout.id, "data-state": rollout.state },
    el("td", {}, el("strong", {}, what), el("div", { class: "mono muted" }, rollout.id.slice(0, 8))),
    el("td", {}, el("span", { class: `phase rollout-${rollout.state}` }, rollout.state),
      rollout.message ? el("div", { class: "failure" }, rollout.message) : null),
    el("td", { class: "waves" }, ...rollout.waves.map((w) => waveCell(rollout, w))),
    el("td", {}, `${ago(rollout.created_at)} ago`),
    el("td", { class: "actions" },
      button("pause", live, () => act("pause", () => api("POST", `${path}/pause`))),
      button("resume", rollout.state === "paused", () => act("resume", () => api("POST", `${path}/resume`))),
      button("cancel", live || ["paused", "halted"].includes(rollout.state), () => {
        if (confirm(`Cancel this ${what}? Members not started yet are skipped.`)) {
          act("cancel", () => api("POST", `${path}/cancel`));
        }
      }, "danger")));
}

function renderRollouts() {
  if (!rollouts.admin) return;
  const rows = [...rollouts.items.values()]
    .sort((a, b) => (a.created_at < b.created_at ? 1 : -1)).map(rolloutRow);
  $("rollout-rows").replaceChildren(...rows);
  $("rollouts-empty").hidden = rows.length > 0;
}

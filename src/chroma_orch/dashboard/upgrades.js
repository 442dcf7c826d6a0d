// chroma-orch dashboard: guarded upgrades of one instance. Each row shows its Chroma version
// (spec.chroma_version) and size; while an upgrade is open, its phase, live from the upgrade.*
// events of /v1/events; once it ended, the outcome (succeeded, or rolled back with why and what
// differed: the upgrade and the instance are re-read). The "upgrade" action asks for a version
// (free text: the service refuses one the runtime or the plan does not offer). Uses app.js's
// helpers.
"use strict";

const upgrades = {
  byInstance: new Map(),  // instance id -> its latest upgrade seen (the event's view, or the API's)
};
window.chromaOrch.upgrades = upgrades;

const UPGRADE_ENDED = ["succeeded", "rolled_back", "cancelled"];
const isUpgradeEvent = (ev) => ev.event.startsWith("upgrade.");

function applyUpgradeEvent(ev) {
  // one upgrade is open per instance at a time, and events come in order: the latest is it
  const view = ev.after || {};
  const known = upgrades.byInstance.get(ev.instance_id);
  const same = known && known.id === view.id;
  upgrades.byInstance.set(ev.instance_id, { ...(same ? known : {}), ...view, instance_id: ev.instance_id });
  if (UPGRADE_ENDED.includes(view.phase)) rereadUpgrade(ev.instance_id, view.id);
}

async function rereadUpgrade(instanceId, upgradeId) {
  // the outcome's message and differences, and the instance's spec and failure as they are now
  try {
    const [upgrade, inst] = await Promise.all([
      api("GET", `/v1/instances/${instanceId}/upgrades/${upgradeId}`),
      api("GET", `/v1/instances/${instanceId}`),
    ]);
    const known = upgrades.byInstance.get(instanceId);
    if (!known || known.id === upgrade.id) upgrades.byInstance.set(instanceId, upgrade);
    const shown = state.instances.get(instanceId);
    if (shown) Object.assign(shown, { spec: inst.spec, failure: inst.failure });
    render();
  } catch (err) { /* deleted meanwhile: the instance's own events say so */ }
}

function upgradesResynced() {
  // the stream started over: an open upgrade may have moved on unseen
  for (const [instanceId, upgrade] of upgrades.byInstance) {
    if (!state.instances.has(instanceId)) upgrades.byInstance.delete(instanceId);
    else if (!UPGRADE_ENDED.includes(upgrade.phase)) rereadUpgrade(instanceId, upgrade.id);
  }
}

function sizeText(spec) {
  const parts = [];
  if (spec.cpu) parts.push(`${spec.cpu / 1024} vCPU`);
  if (spec.memory_mib) parts.push(`${spec.memory_mib} MiB`);
  return parts.join(", ");
}

function versionCell(inst) {
  const spec = inst.spec || {};
  return el("td", { class: "version", "data-version": spec.chroma_version || "" },
    el("span", { class: "mono" }, spec.chroma_version || "default"),
    sizeText(spec) ? el("div", { class: "muted" }, sizeText(spec)) : null);
}

function upgradeStatus(inst) {
  // the open upgrade's phase, or the outcome of the last one
  const upgrade = upgrades.byInstance.get(inst.id);
  if (!upgrade) return null;
  const phase = upgrade.phase;
  const to = upgrade.to_version;
  const attrs = { class: `upgrade upgrade-${phase}`, "data-upgrade-id": upgrade.id, "data-upgrade-phase": phase };
  if (!UPGRADE_ENDED.includes(phase)) {
    return el("div", attrs, el("span", { class: "phase phase-starting" }, `upgrade to ${to}: ${phase.replace("_", " ")}`));
  }
  if (phase === "succeeded") return el("div", attrs, el("span", { class: "muted" }, `upgraded ${upgrade.from_version} → ${to}`));
  const failure = upgrade.failure
    ? `${upgrade.failure.reason}: ${upgrade.failure.message}` : (upgrade.failure_reason || "");
  const verb = phase === "cancelled" ? "cancelled" : "rolled back";
  return el("div", attrs,
    el("div", { class: "failure upgrade-failure" }, `upgrade to ${to} ${verb}${failure ? `: ${failure}` : ""}`),
    ...(upgrade.differences || []).map((d) => el("div", { class: "failure upgrade-difference" }, d)));
}

function upgradeOpen(inst) {
  const upgrade = upgrades.byInstance.get(inst.id);
  return Boolean(upgrade) && !UPGRADE_ENDED.includes(upgrade.phase);
}

function askUpgrade(inst) {
  const current = (inst.spec || {}).chroma_version || "";
  const version = (prompt(`Upgrade ${inst.name} (Chroma ${current || "default"}) to which Chroma version?`) || "").trim();
  if (!version) return;
  act("upgrade", async () => {
    const upgrade = await api("POST", `/v1/instances/${inst.id}/upgrade`, { chroma_version: version });
    const known = upgrades.byInstance.get(inst.id);
    // an event about it may have come first: keep what it said
    if (!known || known.id !== upgrade.id) upgrades.byInstance.set(inst.id, upgrade);
    render();
  });
}

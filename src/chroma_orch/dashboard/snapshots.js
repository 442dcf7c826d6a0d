// chroma-orch dashboard: the snapshots of one instance (kind, phase, size, created), loaded
// once when the panel opens and then kept current by the snapshot.* events of /v1/events;
// take one, restore the instance to a ready one, delete one. Uses app.js's helpers.
"use strict";

const snaps = {
  instanceId: null,  // the instance whose snapshots the panel shows
  items: new Map(),  // id -> snapshot (SnapshotRead fields, kept current by events)
  gone: new Set(),   // ids deleted while the list was loading
  load: 0,           // number of the latest load: an older answer is ignored
};
window.chromaOrch.snapshots = snaps;

const isSnapshotEvent = (ev) => ev.event.startsWith("snapshot.");

function applySnapshotEvent(ev) {
  if (ev.instance_id !== snaps.instanceId) return;
  const view = ev.after || ev.before || {};
  if (ev.event === "snapshot.deleted") {
    snaps.items.delete(view.id);
    snaps.gone.add(view.id);
    return;
  }
  const known = snaps.items.get(view.id)
    || { id: view.id, instance_id: ev.instance_id, created_at: ev.created_at, failure: null };
  const failure = view.failure_reason
    ? { reason: view.failure_reason, message: (known.failure || {}).message || "" } : null;
  snaps.items.set(view.id, {
    ...known, kind: view.kind, phase: view.phase, size_bytes: view.size_bytes,
    checksum: view.checksum, failure,
  });
}

async function loadSnapshots() {
  const load = ++snaps.load;
  const instanceId = snaps.instanceId;
  const page = await api("GET", `/v1/instances/${instanceId}/snapshots`);
  if (load !== snaps.load || instanceId !== snaps.instanceId) return;
  for (const listed of page.items) {
    if (snaps.gone.has(listed.id)) continue;
    // an event already seen is at least as new as this answer; later ones come after it
    const seen = snaps.items.get(listed.id);
    snaps.items.set(listed.id, seen ? { ...listed, ...seen, created_at: listed.created_at } : listed);
  }
  renderSnapshots();
}

function openSnapshots(inst) {
  if (snaps.instanceId === inst.id) return;
  snaps.instanceId = inst.id;
  snaps.items = new Map();
  snaps.gone = new Set();
  $("snapshots").hidden = false;
  $("snapshots-name").textContent = inst.name;
  renderSnapshots();
  act("snapshots", loadSnapshots);
}

function closeSnapshots() {
  snaps.instanceId = null;
  snaps.load++;
  $("snapshots").hidden = true;
}

function snapshotsResynced() {
  // the stream started over (first connect, or a resync): events may have been missed
  if (snaps.instanceId !== null) act("snapshots", loadSnapshots);
}

function size(bytes) {
  if (bytes === null || bytes === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB"];
  let amount = bytes, unit = 0;
  while (amount >= 1024 && unit < units.length - 1) { amount /= 1024; unit++; }
  return unit === 0 ? `${bytes} B` : `${amount.toFixed(1)} ${units[unit]}`;
}

function snapshotRow(inst, snap) {
  const path = `/v1/snapshots/${snap.id}`;
  const created = new Date(snap.created_at).toLocaleString();
  return el("tr", { "data-snapshot-id": snap.id, "data-phase": snap.phase, "data-kind": snap.kind },
    el("td", {}, snap.kind, el("div", { class: "mono muted" }, snap.id.slice(0, 8))),
    el("td", {},
      el("span", { class: `phase phase-${snap.phase}` }, snap.phase),
      snap.failure ? el("div", { class: "failure" },
        `${snap.failure.reason}${snap.failure.message ? `: ${snap.failure.message}` : ""}`) : null),
    el("td", { class: "size" }, size(snap.size_bytes)),
    el("td", { title: created }, `${ago(snap.created_at)} ago`),
    el("td", { class: "actions" },
      button("restore", snap.phase === "ready", () => {
        const question = `Restore ${inst.name} to the ${snap.kind} snapshot of ${created}? `
          + "The instance restarts on that data; its current data is kept as a pre_restore snapshot.";
        if (confirm(question)) {
          act("restore", () => api("POST", `/v1/instances/${inst.id}/restore`, { snapshot_id: snap.id }));
        }
      }),
      button("delete", snap.phase === "ready" || snap.phase === "failed", () => {
        if (confirm(`Delete the ${snap.kind} snapshot of ${inst.name} from ${created}?`)) {
          act("delete snapshot", () => api("DELETE", path));
        }
      }, "danger")));
}

function renderSnapshots() {
  if (snaps.instanceId === null) return;
  const inst = state.instances.get(snaps.instanceId);
  if (!inst) { closeSnapshots(); return; }  // the instance is gone
  const rows = [...snaps.items.values()]
    .sort((a, b) => (a.created_at < b.created_at ? 1 : -1)).map((s) => snapshotRow(inst, s));
  $("snapshot-rows").replaceChildren(...rows);
  $("snapshots-empty").hidden = rows.length > 0;
}

function takeSnapshot(inst) {
  openSnapshots(inst);
  act("snapshot", () => api("POST", `/v1/instances/${inst.id}/snapshots`));
}

$("snapshots-close").addEventListener("click", closeSnapshots);

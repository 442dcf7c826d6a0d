// chroma-orch dashboard: the fleet view (admins only: a tenant token gets 403 and the
// section stays hidden). GET /v1/fleet drawn as SVG: instances by phase and by runtime,
// a histogram of the latest starts' seconds (request to running), and the latest
// failures. Re-read when instance events arrive on /v1/events, at most once a second,
// so a busy fleet of 10,000 costs one small query a second, not one per event.
// Uses app.js's helpers.
"use strict";

const fleet = {
  admin: false,      // the token may see the fleet view
  data: null,        // the last FleetRead
  reads: 0,          // how many times it was read (for tests)
  last: 0,           // when the last read began (ms)
  timer: null,       // a re-read scheduled
  reading: false,    // a read in flight
  again: false,      // an event came while reading
};
window.chromaOrch.fleet = fleet;
const FLEET_MIN_INTERVAL = 1000;  // ms between reads
const SVG_NS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);
  return node;
}

async function loadFleet() {
  fleet.timer = null;
  if (fleet.reading) { fleet.again = true; return; }
  fleet.reading = true;
  fleet.last = Date.now();
  try {
    fleet.data = await api("GET", "/v1/fleet?failures=20&window=3600");
    fleet.admin = true;
    fleet.reads += 1;
    $("fleet").hidden = false;
    renderFleet();
  } catch (err) {
    fleet.admin = false;  // a tenant token: 403
    $("fleet").hidden = true;
  } finally {
    fleet.reading = false;
    if (fleet.again) { fleet.again = false; scheduleFleet(); }
  }
}

function scheduleFleet() {
  if (fleet.timer !== null) return;
  if (fleet.reading) { fleet.again = true; return; }
  const wait = Math.max(0, fleet.last + FLEET_MIN_INTERVAL - Date.now());
  fleet.timer = setTimeout(loadFleet, wait);
}

function fleetEvent(ev) {
  // a change of an instance may change the counts, the starts or the failures
  if (fleet.admin && ev.event.startsWith("instance.")) scheduleFleet();
}

function fleetResynced() {
  if (state.token) scheduleFleet();
}

function closeFleet() {
  if (fleet.timer !== null) clearTimeout(fleet.timer);
  Object.assign(fleet, { admin: false, data: null, timer: null, again: false });
  $("fleet").hidden = true;
}

// ---- drawing ------------------------------------------------------------------------

function countBars(id, counts, kind) {
  // one horizontal bar per key, longest first; data-* for tests and tooltips
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  const most = Math.max(1, ...entries.map(([, n]) => n));
  const rowH = 20, labelW = 80, barW = 200;
  const rows = entries.map(([key, n], i) => svg("g", { "data-key": key, "data-count": n,
                                                       transform: `translate(0 ${i * rowH})` },
    svg("text", { x: 0, y: 14, class: "fleet-label" }, key),
    svg("rect", { x: labelW, y: 3, height: 14, width: Math.max(1, (n / most) * barW),
                  class: `fleet-bar ${kind}-${key}` }),
    svg("text", { x: labelW + (n / most) * barW + 4, y: 14, class: "fleet-count" }, String(n))));
  $(id).replaceChildren(svg("svg", { width: labelW + barW + 60, height: Math.max(rowH, entries.length * rowH),
                                     role: "img", "aria-label": `${kind} counts` }, ...rows));
}

function seconds(s) {
  return s === null || s === undefined ? "—" : s < 10 ? `${s.toFixed(1)}s` : `${Math.round(s)}s`;
}

function histogram(h) {
  const w = 320, hgt = 100, gap = 2;
  const most = Math.max(1, ...h.buckets);
  const barW = w / h.buckets.length;
  const bars = h.buckets.map((n, i) => svg("rect", {
    class: "fleet-hist-bar", "data-bucket": i, "data-count": n,
    x: i * barW + gap / 2, width: barW - gap,
    y: hgt - (n / most) * hgt, height: (n / most) * hgt,
  }, svg("title", {}, `${seconds(i * h.bucket_seconds)}–${seconds((i + 1) * h.bucket_seconds)}: ${n}`)));
  const axis = [
    svg("line", { x1: 0, y1: hgt, x2: w, y2: hgt, class: "fleet-axis" }),
    svg("text", { x: 0, y: hgt + 14, class: "fleet-label" }, "0s"),
    svg("text", { x: w, y: hgt + 14, class: "fleet-label", "text-anchor": "end" }, seconds(h.max_seconds)),
  ];
  $("fleet-starts").replaceChildren(
    svg("svg", { width: w, height: hgt + 18, role: "img", "aria-label": "start times",
                 "data-count": h.count }, ...bars, ...axis));
  $("fleet-starts-summary").textContent = h.count
    ? `${h.count} starts in the last ${Math.round(h.window_seconds / 60)} min: ` +
      `median ${seconds(h.p50_seconds)}, p90 ${seconds(h.p90_seconds)}, max ${seconds(h.max_seconds)}`
    : `no starts in the last ${Math.round(h.window_seconds / 60)} min`;
}

function failureItem(f) {
  const who = `${f.instance_name || (f.instance_id || "").slice(0, 8)}` +
              (f.tenant_name ? ` (${f.tenant_name})` : "");
  return el("li", { "data-seq": f.seq, "data-reason": f.reason || "" },
    el("span", { class: "muted" }, `${ago(f.at)} ago `),
    el("strong", {}, who), " ",
    el("span", { class: "muted" }, f.event.replace("instance.", "")), " ",
    el("span", { class: "failure" }, `${f.reason || "?"}${f.message ? `: ${f.message}` : ""}`));
}

function renderFleet() {
  const data = fleet.data;
  if (!fleet.admin || !data) return;
  $("fleet-total").textContent = `${data.total} instances`;
  countBars("fleet-phases", data.by_phase, "phase");
  countBars("fleet-runtimes", data.by_runtime, "runtime");
  histogram(data.start_times);
  $("fleet-failures").replaceChildren(...data.failures.map(failureItem));
  $("fleet-failures-empty").hidden = data.failures.length > 0;
}

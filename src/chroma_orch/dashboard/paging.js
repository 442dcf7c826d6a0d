// chroma-orch dashboard: the instance table one server-side page at a time (50 rows), so it
// stays usable at 10,000 instances. A search (a prefix of the instance's or tenant's name,
// debounced), a phase filter, next/previous. The page is read with GET /v1/instances, whose
// `seq` the event socket resumes from (`since=`: diffs only, never a snapshot of the fleet).
// Live events patch the page's own rows cell by cell; a change to an instance elsewhere only
// counts toward an "N changed elsewhere — refresh" button. Uses app.js's helpers and state.
"use strict";

const PAGE_SIZE = 50;
const SEARCH_DELAY = 250;  // ms of quiet typing before the search is run

const paging = {
  search: "",
  phase: "",
  cursors: [null],      // the cursor of each page up to the current one (previous = pop)
  next: null,           // the next page's cursor, null on the last page
  order: [],            // the page's instance ids, in the table's order
  rows: new Map(),      // id -> its <tr>
  elsewhere: new Set(), // ids changed since the page was read, not on it
  loading: 0,           // the newest load's number (an older answer is dropped)
  seq: null,            // the event log's seq the page was read at: older events are in it
  timer: null,
  timings: { load: null, patch: null },  // ms (performance.now()) of the last page load / patch
};
window.chromaOrch.paging = paging;

async function loadPage() {
  // read the current page; returns the event log's seq it is valid at
  const mine = ++paging.loading;
  const began = performance.now();
  const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (paging.search) params.set("search", paging.search);
  if (paging.phase) params.set("phase", paging.phase);
  const cursor = paging.cursors[paging.cursors.length - 1];
  if (cursor) params.set("cursor", cursor);
  let page;
  try { page = await api("GET", `/v1/instances?${params}`); } catch (err) {
    if (mine === paging.loading) { $("page-info").textContent = err.message; }
    throw err;
  }
  if (mine !== paging.loading) return null;
  paging.seq = page.seq;
  state.instances = new Map(page.items.map((i) => [i.id, i]));
  paging.order = page.items.map((i) => i.id);
  paging.next = page.next_cursor;
  paging.elsewhere.clear();
  renderPage();
  paging.timings.load = performance.now() - began;
  return page.seq;
}

async function reloadPage() {
  // the page again (after a search, a filter, a page change, or "refresh")
  try { await loadPage(); } catch (err) { /* shown in #page-info */ }
}

function renderPage() {
  // the one full render: a new page
  paging.rows = new Map(paging.order.filter((id) => state.instances.has(id))
    .map((id) => [id, row(state.instances.get(id))]));
  $("instances").replaceChildren(...paging.rows.values());
  pageChrome();
}

function pageChrome() {
  const count = paging.rows.size;
  const first = (paging.cursors.length - 1) * PAGE_SIZE;
  $("empty").hidden = count > 0;
  $("empty").textContent = paging.search || paging.phase ? "No instances match." : "No instances yet.";
  $("page-info").textContent = count ? `${first + 1}–${first + count}` : "";
  $("page-prev").disabled = paging.cursors.length <= 1;
  $("page-next").disabled = paging.next === null;
  const n = paging.elsewhere.size;
  $("elsewhere").hidden = n === 0;
  $("elsewhere").textContent = `${n} changed elsewhere — refresh`;
}

function patchRow(id) {
  // bring one row up to date, replacing only the cells that differ
  const began = performance.now();
  const old = paging.rows.get(id);
  const inst = state.instances.get(id);
  if (!inst) {  // gone (deleted)
    if (old) old.remove();
    paging.rows.delete(id);
    paging.order = paging.order.filter((other) => other !== id);
  } else if (!old) {  // new on this page (created while it is the last)
    const fresh = row(inst);
    paging.rows.set(id, fresh);
    $("instances").append(fresh);
  } else {
    const fresh = row(inst);
    for (const name of fresh.getAttributeNames()) old.setAttribute(name, fresh.getAttribute(name));
    [...fresh.children].forEach((cell, i) => {
      const current = old.children[i];
      if (!current) old.append(cell);
      else if (!current.isEqualNode(cell)) current.replaceWith(cell);
    });
  }
  pageChrome();
  paging.timings.patch = performance.now() - began;
}

function patchPage() {
  // every row of the page (ages, an upgrade's or snapshot's news): at most PAGE_SIZE rows
  for (const id of [...paging.rows.keys()]) patchRow(id);
}

function pageTakes(inst, tenantName) {
  // would a new instance be on this page? only the last page, with room, if it matches
  if (paging.next !== null || paging.rows.size >= PAGE_SIZE) return false;
  if (paging.phase && inst.phase !== paging.phase) return false;
  const s = paging.search;
  return !s || (inst.name || "").startsWith(s) || (tenantName || "").startsWith(s);
}

function changedElsewhere(id) {
  paging.elsewhere.add(id);
  pageChrome();
}

function pageHas(message) {
  // whether the page was read after this event (it shows its change already; applied
  // again, the event's older values would overwrite newer ones until the next event)
  return paging.seq !== null && message.seq <= paging.seq;
}

function pageResynced() {
  // the stream started over (its snapshot is not used: the page is read again)
  reloadPage();
}

function resetPaging() {
  paging.cursors = [null];
  paging.next = null;
  paging.order = [];
  paging.rows.clear();
  paging.elsewhere.clear();
  $("instances").replaceChildren();
}

$("search").addEventListener("input", () => {
  clearTimeout(paging.timer);
  paging.timer = setTimeout(() => {
    const value = $("search").value.trim();
    if (value === paging.search) return;
    paging.search = value;
    paging.cursors = [null];
    reloadPage();
  }, SEARCH_DELAY);
});
$("phase-filter").addEventListener("change", () => {
  paging.phase = $("phase-filter").value;
  paging.cursors = [null];
  reloadPage();
});
$("page-next").addEventListener("click", () => {
  if (paging.next === null) return;
  paging.cursors.push(paging.next);
  reloadPage();
});
$("page-prev").addEventListener("click", () => {
  if (paging.cursors.length <= 1) return;
  paging.cursors.pop();
  reloadPage();
});
$("elsewhere").addEventListener("click", reloadPage);

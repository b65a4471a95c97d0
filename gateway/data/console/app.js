// The staff console's client: plain JavaScript, no build step. Live data comes from one
// Server-Sent Events stream (/api/events/stream): "state" every second (positions,
// occupancy, health figures) and "event" for each pipeline event as sent upstream.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const planBox = document.getElementById("plan");
const projection = JSON.parse(planBox.dataset.projection);
const svg = planBox.querySelector("svg");
const SVGNS = "http://www.w3.org/2000/svg";
const devicesLayer = document.createElementNS(SVGNS, "g");
devicesLayer.id = "devices";
svg.appendChild(devicesLayer);
let filter = "";
let zoneNames = {};  // zone id → the map's name (/api/plan)
// Times are shown as the shop lives them: the store's zone (from /api/plan, again with every
// state), never the browser's; the server keeps UTC.
let storeZone = "UTC";

function storeTime(seconds) {
  return new Intl.DateTimeFormat("en-GB", {
    timeZone: storeZone, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  }).format(new Date(seconds * 1000));
}

function storeDate(seconds) {
  const parts = new Intl.DateTimeFormat("en-CA", {
    timeZone: storeZone, year: "numeric", month: "2-digit", day: "2-digit",
  }).format(new Date(seconds * 1000));
  return `${parts} ${storeTime(seconds)} ${storeZone}`;
}

// "0 s", "42 s", "5 min 3 s", "3 h 12 min", "2 d 4 h" (as the CLI says it: gateway/humantime.py)
function duration(seconds) {
  let s = Math.floor(Math.abs(seconds));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  const text = d ? `${d} d` + (h ? ` ${h} h` : "") : h ? `${h} h` + (m ? ` ${m} min` : "")
    : m ? `${m} min` + (s ? ` ${s} s` : "") : `${s} s`;
  return (seconds < 0 ? "-" : "") + text;
}

function post(url, body) {
  return fetch(url, {
    method: "POST",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify(body || {}),
    credentials: "same-origin",
  });
}

function px(x, y, level) {
  const panel = Math.max(0, projection.levels.indexOf(level));
  return [
    panel * projection.panel_w + projection.margin + (x - projection.min_x) * projection.scale,
    projection.top + projection.margin + (projection.max_y - y) * projection.scale,
  ];
}

// A shopper's label: the last four characters of its pseudonym, as the event list says it
// ("Shopper dev-…3f2a entered Fiction").
function shortLabel(id) {
  return "…" + id.slice(-4);
}

function shortDevice(id) {
  const dash = id.indexOf("-");
  return dash < 0 || id.length - dash <= 5 ? id : `${id.slice(0, dash + 1)}…${id.slice(-4)}`;
}

function el(tag, attrs, text) {
  const node = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// Live markers stay on the floor plan: clipped above the legend.
const viewBox = svg.viewBox.baseVal;
const clip = el("clipPath", {id: "plan-clip"});
clip.appendChild(el("rect", {x: 0, y: 0, width: viewBox.width,
  height: projection.panel_h || viewBox.height}));
svg.appendChild(clip);
devicesLayer.setAttribute("clip-path", "url(#plan-clip)");
// The plan's own labels (zone names, beacon and gateway ids): people's labels avoid them.
const fixedBoxes = [...svg.querySelectorAll("text, circle, rect:not(:first-of-type)")]
  .map((t) => t.getBBox()).filter((b) => b.width < viewBox.width / 2)
  .map((b) => [b.x, b.y, b.x + b.width, b.y + b.height]);

function overlaps(a, b) {
  return a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
}

// Plan units per 11 px label: on a phone the plan is drawn small, people's labels are not.
function labelUnit() {
  const shown = svg.getBoundingClientRect().width;
  return shown > 0 ? Math.max(1, (0.9 * viewBox.width) / shown) : 1;
}

function placeLabel(text, cx, cy, taken, u) {
  const w = u * (7 * text.length + 2), h = 13 * u, gap = 8 * u;
  const spots = [[cx + gap, cy + 4 * u], [cx - gap - w, cy + 4 * u], [cx - w / 2, cy - gap - u],
    [cx - w / 2, cy + gap + h], [cx + gap, cy - gap - u], [cx + gap, cy + gap + h],
    [cx - gap - w, cy - gap - u], [cx - gap - w, cy + gap + h]];
  const limit = projection.panel_h || viewBox.height;
  const inside = spots.filter(([x, y]) => x >= 0 && x + w <= viewBox.width && y - h >= 0 && y <= limit);
  const boxOf = ([x, y]) => [x, y - h + 2 * u, x + w, y + 2 * u];
  const free = (inside.length ? inside : spots).find((s) => !taken.some((b) => overlaps(boxOf(s), b)));
  const spot = free || inside[0] || spots[0];
  taken.push(boxOf(spot));
  return spot;
}

function drawDevices(devices) {
  devicesLayer.replaceChildren();
  const taken = [...fixedBoxes];
  const bottom = projection.panel_h || viewBox.height;
  const all = devices.map((d) => ({d, at: px(d.x, d.y, d.level)}));
  // estimated beyond the drawn area (out of the door, say): counted, not drawn over the legend
  const placed = all.filter(({at: [x, y]}) => x >= 0 && x <= viewBox.width && y >= 0 && y <= bottom);
  const outside = all.length - placed.length;
  document.getElementById("outside").textContent = outside ?
    ` ${outside} more ${outside === 1 ? "is" : "are"} just outside the drawn area.` : "";
  const u = labelUnit();
  for (const {at: [cx, cy]} of placed) taken.push([cx - 6 * u, cy - 6 * u, cx + 6 * u, cy + 6 * u]);
  for (const {d, at: [cx, cy]} of placed) {
    // the circle is one standard deviation; beyond 8 m it says "somewhere here" well enough
    const r = Math.max(4, Math.min(8, d.uncertainty_m) * projection.scale);
    devicesLayer.appendChild(el("circle", {class: "device-area", cx, cy, r}));
  }
  for (const {d, at: [cx, cy]} of placed) {
    const dot = el("circle", {class: "device", cx, cy, r: 5 * u});
    dot.dataset.device = d.id;
    const where = d.zones.length ? ` in ${d.zones.map(zoneName).join(", ")}` : "";
    dot.appendChild(el("title", {}, `Shopper ${shortDevice(d.id)}${where}, ±${d.uncertainty_m} m`));
    const text = shortLabel(d.id);
    const [lx, ly] = placeLabel(text, cx, cy, taken, u);
    const label = el("text", {class: "device-label", x: lx, y: ly, "font-size": 11 * u,
      "stroke-width": 3 * u}, text);
    label.dataset.device = d.id;
    devicesLayer.append(dot, label);
  }
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c;
    tr.appendChild(td);
  }
  return tr;
}

function zoneName(id) {
  return zoneNames[id] || id;
}

function showState(state) {
  drawDevices(state.devices);
  const occ = document.querySelector("#occupancy tbody");
  occ.replaceChildren(...Object.entries(state.occupancy).filter(([, n]) => n > 0)
    .map(([zone, n]) => row([zoneName(zone), n === 1 ? "1 shopper" : `${n} shoppers`])));
  if (!occ.children.length) occ.appendChild(row(["nobody in a zone", ""]));
  const links = document.querySelector("#links tbody");
  const rates = Object.entries(state.sources.rates_per_s).map(([r, v]) => `${r} ${v}/s`).join(", ");
  links.replaceChildren(
    row(["adverts", rates || "none yet"]),
    row(["outbox", outboxText(state.outbox)]),
    row(["MQTT", state.mqtt.enabled ? (state.mqtt.connected ? "connected" : "DISCONNECTED " + state.mqtt.last_error) : "off"]),
    row(["event loop lag", `${state.loop_lag_ms} ms`]),
    ...Object.entries(state.sources.receiver_offsets || {}).map(([r, o]) =>
      row([`offset ${r}`, `${o.offset_db > 0 ? "+" : ""}${o.offset_db} dB from fixed beacons, ${o.applied ? "applied" : `learning (${o.samples} readings)`}${o.at_bound ? " AT THE BOUND: check this receiver" : ""}`])),
  );
  const beacons = document.querySelector("#beacons tbody");
  beacons.replaceChildren(...Object.entries(state.beacons).map(([id, b]) =>
    row([id, b.status.replace("_", " "), b.battery_mv ? `${b.battery_mv} mV` : "", b.seen_s_ago === null ? "never heard" : `heard ${duration(b.seen_s_ago)} ago`])));
  storeZone = state.timezone || storeZone;
  const clock = document.getElementById("clock");
  clock.textContent = storeTime(state.t);
  clock.title = storeDate(state.t);
}

function outboxText(outbox) {
  const queued = Object.values(outbox.depth).reduce((a, b) => a + b, 0);
  const dropped = Object.values(outbox.dropped || {}).reduce((a, b) => a + b, 0);
  const waiting = queued ? `${queued} queued, oldest waiting ${duration(outbox.oldest_age_s)}` : "empty";
  return dropped ? `${waiting}; ${dropped} dropped unsent since start` : waiting;
}

// Each event arrives as a sentence in the store's time (gateway/web/wording.py): the page
// only lays it out.
function addLine(line) {
  if (filter && line.stream !== filter) return;
  const li = document.createElement("li");
  const time = document.createElement("time");
  time.textContent = line.clock;
  time.dateTime = line.t ? new Date(line.t * 1000).toISOString() : "";
  const text = document.createElement("span");
  text.textContent = line.text;
  li.append(time, " ", text);
  li.title = line.when;
  if (line.tone) li.className = line.tone;
  li.dataset.type = line.type;
  const list = document.getElementById("events");
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
}

async function reloadEvents() {
  const reply = await fetch(`/api/feed?limit=200${filter ? "&kind=" + filter : ""}`);
  document.getElementById("events").replaceChildren();
  for (const line of await reply.json()) addLine(line);
}

function connect() {
  const source = new EventSource("/api/events/stream?view=lines");
  source.addEventListener("state", (m) => showState(JSON.parse(m.data)));
  source.addEventListener("line", (m) => addLine(JSON.parse(m.data)));
  source.onerror = () => { source.close(); setTimeout(connect, 2000); };
}

async function runChecks() {
  const body = document.querySelector("#checks tbody");
  body.replaceChildren(row(["checking…", ""]));
  const checks = await (await fetch("/api/health")).json();
  body.replaceChildren(...checks.map((c) => {
    const status = document.createElement("span");
    status.className = c.status; status.textContent = c.status.toUpperCase();
    return row([status, c.name, c.detail + (c.fix ? " — fix: " + c.fix : "")]);
  }));
}

// --- calibration -------------------------------------------------------------------------

const cal = {
  receiver: document.getElementById("cal-receiver"),
  beacon: document.getElementById("cal-beacon"),
  distance: document.getElementById("cal-distance"),
  seconds: document.getElementById("cal-seconds"),
  result: document.getElementById("cal-result"),
  plot: document.getElementById("cal-plot"),
  options: {receivers: [], beacons: [], min_readings: 10},
  last: {},  // the latest progress, drawn again when the tab opens
};

// Beacons' intervals are learnt as the shop runs: the shortest duration is asked again.
async function loadCalibrationOptions() {
  cal.options = await (await fetch("/api/calibration/options")).json();
  fitDuration();
}

function option(value, text) {
  const o = document.createElement("option");
  o.value = value; o.textContent = text; return o;
}

function calInstruction() {
  const receiver = cal.options.receivers.find((r) => r.id === cal.receiver.value);
  const beacon = cal.options.beacons.find((b) => b.id === cal.beacon.value);
  if (!receiver || !beacon) return;
  const metres = parseFloat(cal.distance.value) || 1;
  document.getElementById("cal-instruction").textContent =
    `Stand at receiver ${receiver.id} (${receiver.where}). Hold beacon ${beacon.id} ` +
    `${metres} m from it, in line of sight, press Start and keep still until the bar is full.`;
  document.getElementById("cal-need").textContent =
    `${beacon.id} advertises about every ${beacon.interval_s} s: ${cal.options.min_readings} ` +
    `readings need at least ${beacon.min_seconds} s.`;
  cal.seconds.min = beacon.min_seconds;
}

function pickBeaconFor(receiver) {
  const near = cal.options.beacons.find((b) => b.nearest_receiver === receiver);
  if (near) cal.beacon.value = near.id;
  fitDuration();
}

function fitDuration() {
  const beacon = cal.options.beacons.find((b) => b.id === cal.beacon.value);
  if (beacon && !(parseFloat(cal.seconds.value) >= beacon.min_seconds)) cal.seconds.value = beacon.min_seconds;
  calInstruction();
}

function niceStep(span, ticks) {
  const raw = span / ticks;
  return [1, 2, 5, 10, 15, 20, 30, 60, 120].find((s) => s >= raw) || 300;
}

// RSSI (dBm) against seconds since the start, with both axes labelled and the RSSI the
// beacon's profile expects at that distance; the median once there is a result.
function plotCalibration(status) {
  // drawn for the width it is shown at: a phone gets a narrower plot, not smaller text
  const shown = cal.plot.getBoundingClientRect().width;
  const narrow = shown && shown < 520;
  const W = narrow ? 400 : 640, H = 320, L = 64, R = 16, T = narrow ? 54 : 34, B = 50;
  cal.plot.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const seconds = status.seconds || parseFloat(cal.seconds.value) || 30;
  const series = status.series || [];
  const result = status.result;
  const values = series.map(([, rssi]) => rssi);
  if (status.expected_dbm !== undefined) values.push(status.expected_dbm);
  if (result) values.push(result.median_dbm);
  const lo = Math.floor((Math.min(-70, ...values) - 3) / 10) * 10;
  const hi = Math.ceil((Math.max(-50, ...values) + 3) / 10) * 10;
  const x = (t) => L + (Math.min(t, seconds) / seconds) * (W - L - R);
  const y = (v) => T + ((hi - v) / (hi - lo)) * (H - T - B);
  const g = [];
  g.push(el("rect", {class: "plot-area", x: L, y: T, width: W - L - R, height: H - T - B}));
  const step = niceStep(seconds, W < 640 ? 4 : 6);
  for (let t = 0; t <= seconds + 1e-9; t += step) {
    g.push(el("line", {class: "grid", x1: x(t), x2: x(t), y1: T, y2: H - B}));
    g.push(el("text", {class: "tick", x: x(t), y: H - B + 16, "text-anchor": "middle"}, String(t)));
  }
  for (let v = lo; v <= hi; v += 10) {
    g.push(el("line", {class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v)}));
    g.push(el("text", {class: "tick", x: L - 6, y: y(v) + 4, "text-anchor": "end"}, String(v)));
  }
  g.push(el("line", {class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B}));
  g.push(el("line", {class: "axis", x1: L, x2: L, y1: T, y2: H - B}));
  g.push(el("text", {class: "axis-title", id: "cal-x-axis", x: L + (W - L - R) / 2, y: H - 10,
    "text-anchor": "middle"}, "time since start (s)"));
  g.push(el("text", {class: "axis-title", id: "cal-y-axis", x: 0, y: 0, "text-anchor": "middle",
    transform: `translate(16 ${T + (H - T - B) / 2}) rotate(-90)`}, "RSSI (dBm)"));
  // the key, above the plot area: a reading, the expected level, the median
  let kx = L, ky = 16;
  const key = (mark, text, cls) => {
    const width = 30 + 7 * text.length;
    if (kx > L && kx + width > W - R) { kx = L; ky += 20; }  // a second row on a phone
    g.push(mark(kx, ky), el("text", {class: `note ${cls}`, x: kx + 22, y: ky + 4}, text));
    kx += width;
  };
  key((x0, y0) => el("circle", {class: "key-reading", cx: x0 + 8, cy: y0, r: 3}), "reading", "");
  if (status.expected_dbm !== undefined) {
    const at = y(status.expected_dbm);
    g.push(el("line", {class: "expected", x1: L, x2: W - R, y1: at, y2: at}));
    key((x0, y0) => el("line", {class: "expected", x1: x0, x2: x0 + 18, y1: y0, y2: y0}),
      `expected at ${status.distance_m} m: ${status.expected_dbm} dBm`, "");
  }
  if (result) {
    const at = y(result.median_dbm);
    g.push(el("line", {class: "median", x1: L, x2: W - R, y1: at, y2: at}));
    key((x0, y0) => el("line", {class: "median", x1: x0, x2: x0 + 18, y1: y0, y2: y0}),
      `median ${result.median_dbm} dBm`, "median-note");
  }
  for (const [t, rssi] of series) g.push(el("circle", {class: "reading", cx: x(t), cy: y(rssi), r: 2.5}));
  cal.plot.replaceChildren(...g);
}

async function calibrationLoop() {
  const status = await (await fetch("/api/calibration")).json();
  cal.last = status;
  const progress = document.getElementById("cal-progress");
  if (status.seconds) progress.value = status.elapsed_s / status.seconds;
  plotCalibration(status);
  if (status.receiver) {
    document.getElementById("cal-count").textContent =
      `${status.readings} readings from ${status.receiver} (at least ${status.min_readings} needed), ` +
      `${Math.round(status.elapsed_s)} of ${status.seconds} s`;
  }
  const result = status.result;
  if (status.running) {
    cal.result.textContent = `Measuring ${status.beacon} at ${status.receiver}…`;
  } else if (status.receiver && !result) {
    cal.result.textContent = `${status.receiver} did not hear ${status.beacon} at all: check that the beacon is ` +
      "switched on and that you stood at the right receiver, then start again.";
  } else if (result) {
    const verdict = result.problems.length ? ` Not saved: ${result.problems.join("; ")}.` : "";
    cal.result.textContent = `${result.receiver}: ${result.samples} readings, median ${result.median_dbm} dBm, ` +
      `spread ${result.spread_db} dB → at 1 m ${result.measured_power_dbm} dBm, offset ${result.offset_db} dB.` +
      verdict + (status.saved ? ` Saved to ${status.saved}.` : "");
    cal.result.className = result.problems.length ? "warn" : "";
  }
  document.getElementById("cal-save").disabled = status.running || !result || result.problems.length > 0 || !!status.saved;
  if (status.running) setTimeout(calibrationLoop, 500);
}

document.querySelectorAll("nav button[data-tab]").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll("nav button[data-tab]").forEach((x) => x.classList.toggle("active", x === b));
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.id === b.dataset.tab));
  if (b.dataset.tab === "health") runChecks();
  if (b.dataset.tab === "calibrate") {
    plotCalibration(cal.last);  // now that it has a width
    loadCalibrationOptions();
  }
}));
document.getElementById("recheck").addEventListener("click", runChecks);
document.getElementById("filter").addEventListener("change", (e) => { filter = e.target.value; reloadEvents(); });
document.getElementById("logout").addEventListener("click", async () => {
  await post("/logout"); location.href = "/login";
});
cal.receiver.addEventListener("change", () => pickBeaconFor(cal.receiver.value));
cal.beacon.addEventListener("change", fitDuration);
cal.distance.addEventListener("input", calInstruction);
document.getElementById("calibration-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const reply = await post("/api/calibration", {
    receiver: cal.receiver.value,
    beacon: cal.beacon.value,
    distance: parseFloat(cal.distance.value),
    seconds: parseFloat(cal.seconds.value),
  });
  cal.result.className = "";
  if (reply.ok) {
    cal.result.textContent = "Measuring…";
    calibrationLoop();
  } else {
    const body = await reply.json().catch(() => ({error: `HTTP ${reply.status}`}));
    if (body.min_seconds) {  // offer the duration that works: Start again is enough
      cal.seconds.min = body.min_seconds;
      cal.seconds.value = body.min_seconds;
    }
    cal.result.textContent = `Not started: ${body.error}`;
    cal.result.className = "warn";
    if (body.min_seconds) loadCalibrationOptions();  // the interval heard here, again
  }
});
document.getElementById("cal-save").addEventListener("click", async () => {
  const reply = await post("/api/calibration/save");
  const body = await reply.json();
  cal.result.textContent += reply.ok ? ` Saved to ${body.saved}.` : ` Not saved: ${body.error}`;
  document.getElementById("cal-save").disabled = true;
});

(async () => {
  const plan = await (await fetch("/api/plan")).json();
  storeZone = plan.timezone || storeZone;
  zoneNames = Object.fromEntries(plan.zones.map((z) => [z.id, z.name]));
  await loadCalibrationOptions();
  cal.receiver.replaceChildren(...cal.options.receivers.map((r) => option(r.id, r.id)));
  cal.beacon.replaceChildren(...cal.options.beacons.map((b) => option(b.id, b.id)));
  pickBeaconFor(cal.receiver.value);
  plotCalibration({});
  await reloadEvents();
  connect();
})();

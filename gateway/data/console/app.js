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

function drawDevices(devices) {
  devicesLayer.replaceChildren();
  for (const d of devices) {
    const [cx, cy] = px(d.x, d.y, d.level);
    const area = document.createElementNS(SVGNS, "circle");
    area.setAttribute("class", "device-area");
    area.setAttribute("cx", cx); area.setAttribute("cy", cy);
    // the circle is one standard deviation; beyond 8 m it says "somewhere here" well enough
    area.setAttribute("r", Math.max(4, Math.min(8, d.uncertainty_m) * projection.scale));
    const dot = document.createElementNS(SVGNS, "circle");
    dot.setAttribute("class", "device");
    dot.setAttribute("cx", cx); dot.setAttribute("cy", cy); dot.setAttribute("r", 5);
    dot.dataset.device = d.id;
    const title = document.createElementNS(SVGNS, "title");
    title.textContent = `${d.id} ±${d.uncertainty_m} m ${d.zones.join(", ")}`;
    dot.appendChild(title);
    devicesLayer.append(area, dot);
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

function showState(state) {
  drawDevices(state.devices);
  const occ = document.querySelector("#occupancy tbody");
  occ.replaceChildren(...Object.entries(state.occupancy).filter(([, n]) => n > 0)
    .map(([zone, n]) => row([zone, String(n)])));
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
    row([id, b.status, b.battery_mv ? `${b.battery_mv} mV` : "", b.seen_s_ago === null ? "never" : `${duration(b.seen_s_ago)} ago`])));
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

function describe(e) {
  const d = e.data || {};
  const kind = e.type.replace("com.storegate.", "");
  if (kind.startsWith("offer.")) {
    const what = d.issued === false || kind.endsWith("suppressed") ? `suppressed (${d.reason})` : `ISSUED ${d.percent || ""} % ${d.title || ""}`;
    return [`offer ${d.profile_id || "unknown"} ${d.trigger}: ${what}`, kind.endsWith("suppressed") ? "suppressed" : "issued"];
  }
  if (kind.startsWith("zone.")) return [`${kind} ${d.zone} ${d.device}`, ""];
  if (kind.startsWith("redemption.")) return [`redeemed ${d.code || ""} ${d.sku || ""}`, "issued"];
  if (kind.startsWith("nfc.")) return [`tap at ${d.reader} ${d.tag || ""}`, ""];
  if (kind.startsWith("beacon.")) return [`beacon ${d.beacon} ${d.status}`, d.status === "ok" ? "" : "warn"];
  return [`${kind} ${JSON.stringify(d).slice(0, 120)}`, ""];
}

function addEvent(e) {
  if (filter && !e.type.startsWith("com.storegate." + filter)) return;
  const [text, cls] = describe(e);
  const li = document.createElement("li");
  const t = Date.parse(e.time) / 1000;
  li.textContent = `${storeTime(t)} ${text}`;
  li.title = storeDate(t);
  li.className = cls;
  li.dataset.type = e.type;
  const list = document.getElementById("events");
  list.prepend(li);
  while (list.children.length > 200) list.lastChild.remove();
}

async function reloadEvents() {
  const reply = await fetch(`/api/events?limit=200${filter ? "&kind=" + filter : ""}`);
  document.getElementById("events").replaceChildren();
  for (const e of await reply.json()) addEvent(e);
}

function connect() {
  const source = new EventSource("/api/events/stream");
  source.addEventListener("state", (m) => showState(JSON.parse(m.data)));
  source.addEventListener("event", (m) => addEvent(JSON.parse(m.data)));
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

async function calibrationLoop() {
  const status = await (await fetch("/api/calibration")).json();
  const progress = document.getElementById("cal-progress");
  if (status.seconds) progress.value = status.elapsed_s / status.seconds;
  const receiver = status.result ? status.result.receiver : null;
  const points = (status.series || []).filter(([, r]) => !receiver || r === receiver).map(([t, , rssi]) =>
    `${(t / (status.seconds || 30)) * 600},${Math.min(200, Math.max(0, (-30 - rssi) * 2.5))}`);
  document.querySelector("#cal-trace polyline").setAttribute("points", points.join(" "));
  const result = status.result;
  const out = document.getElementById("cal-result");
  if (result) {
    out.textContent = `${result.receiver}: ${result.samples} readings, median ${result.median_dbm} dBm, ` +
      `spread ${result.spread_db} dB → at 1 m ${result.measured_power_dbm} dBm, offset ${result.offset_db} dB` +
      (result.problems.length ? ` — ${result.problems.join("; ")}` : "") + (status.saved ? ` — saved` : "");
  }
  document.getElementById("cal-save").disabled = status.running || !result || result.problems.length > 0 || !!status.saved;
  if (status.running) setTimeout(calibrationLoop, 500);
}

document.querySelectorAll("nav button[data-tab]").forEach((b) => b.addEventListener("click", () => {
  document.querySelectorAll("nav button[data-tab]").forEach((x) => x.classList.toggle("active", x === b));
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.id === b.dataset.tab));
  if (b.dataset.tab === "health") runChecks();
}));
document.getElementById("recheck").addEventListener("click", runChecks);
document.getElementById("filter").addEventListener("change", (e) => { filter = e.target.value; reloadEvents(); });
document.getElementById("logout").addEventListener("click", async () => {
  await post("/logout"); location.href = "/login";
});
document.getElementById("calibration-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const reply = await post("/api/calibration", {
    beacon: document.getElementById("cal-beacon").value,
    distance: parseFloat(document.getElementById("cal-distance").value),
    seconds: parseFloat(document.getElementById("cal-seconds").value),
  });
  document.getElementById("cal-result").textContent = reply.ok ? "measuring…" : "could not start";
  if (reply.ok) calibrationLoop();
});
document.getElementById("cal-save").addEventListener("click", async () => {
  const reply = await post("/api/calibration/save");
  const body = await reply.json();
  document.getElementById("cal-result").textContent += reply.ok ? ` — saved to ${body.saved}` : ` — ${body.error}`;
  document.getElementById("cal-save").disabled = true;
});

(async () => {
  const plan = await (await fetch("/api/plan")).json();
  storeZone = plan.timezone || storeZone;
  document.getElementById("cal-beacon").replaceChildren(...plan.beacons.map((b) => {
    const o = document.createElement("option"); o.value = b.id; o.textContent = b.id; return o;
  }));
  await reloadEvents();
  connect();
})();

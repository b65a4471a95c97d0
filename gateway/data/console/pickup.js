// The pickup page: refresh the open tasks every 3 s; staff act on one with a button.
"use strict";
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const body = document.querySelector("#tasks tbody");
const staff = document.getElementById("staff");
const status = document.getElementById("status");
const ACTIONS = ["ready", "not_found", "collected"];

staff.value = localStorage.getItem("pickup-staff") || "";
staff.addEventListener("change", () => localStorage.setItem("pickup-staff", staff.value.trim()));

function cell(row, text, small) {
  const td = document.createElement("td");
  td.textContent = text;
  if (small) {
    td.appendChild(document.createElement("br"));
    const s = document.createElement("small");
    s.textContent = small;
    td.appendChild(s);
  }
  row.appendChild(td);
  return td;
}

function eta(seconds) {
  if (seconds === null) return "not in the shop";
  return seconds < 5 ? "at the counter" : `${seconds} s`;
}

function render(tasks) {
  body.replaceChildren();
  if (!tasks.length) {
    const row = body.insertRow();
    row.className = "empty";
    const td = cell(row, "No open pickup tasks.");
    td.colSpan = 7;
    return;
  }
  for (const t of tasks) {
    const row = body.insertRow();
    row.dataset.task = t.task_id;
    row.dataset.status = t.status;
    cell(row, t.title, t.sku);
    cell(row, t.zone);
    cell(row, "…" + t.code_hint).className = "code";
    cell(row, t.language);
    cell(row, t.age_s < 60 ? `${t.age_s} s` : `${Math.floor(t.age_s / 60)} min`);
    cell(row, eta(t.eta_s));
    const td = cell(row, "");
    for (const a of ACTIONS) {
      const b = document.createElement("button");
      b.dataset.action = a;
      b.textContent = a.replace("_", " ");
      td.appendChild(b);
    }
  }
}

async function refresh() {
  const r = await fetch("/api/pickup", {credentials: "same-origin"});
  if (r.status === 401) { location.href = "/login"; return; }
  render((await r.json()).tasks);
}

body.addEventListener("click", async (e) => {
  const button = e.target.closest("button[data-action]");
  if (!button) return;
  const task = button.closest("tr").dataset.task;
  const r = await fetch(`/api/pickup/${encodeURIComponent(task)}`, {
    method: "POST",
    credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify({action: button.dataset.action, by: staff.value.trim() || "console"}),
  });
  const reply = await r.json();
  status.textContent = r.ok ? `${reply.action.replace("_", " ")}: done` : reply.error;
  await refresh();
});

refresh();
setInterval(refresh, 3000);

// The dashboard page: polls the JSON API and redraws. Plain DOM, no framework.
"use strict";

const FAILED_EVERY = 3;  // the failure queue is read less often: every read opens its items
let tick = 0;
let interval = 5;

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "-" : String(text);
  if (className) td.className = className;
  return td;
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function lastValue(values) {
  for (let i = values.length - 1; i >= 0; i--) if (values[i] !== null) return values[i];
  return null;
}

function queueCard(container, name) {
  for (const card of container.querySelectorAll(".queue")) if (card.dataset.queue === name) return card;
  const card = document.createElement("div");
  card.className = "queue";
  card.dataset.queue = name;
  card.innerHTML = '<h3><span class="name"></span><span>depth <b class="depth-now"></b></span></h3>' +
    '<svg class="depth"></svg><div class="caption">per second: in <b class="in rate-in"></b>, ' +
    'out <b class="out rate-out"></b></div><svg class="rate"></svg>';
  card.querySelector(".name").textContent = name;
  container.append(card);
  return card;
}

function showQueues(data) {
  interval = Math.max(1, data.interval);
  const container = document.getElementById("queues");
  const names = Object.keys(data.queues).sort((a, b) =>
    (lastValue(data.queues[b].depth) || 0) - (lastValue(data.queues[a].depth) || 0) || a.localeCompare(b));
  container.querySelector(".empty")?.remove();
  for (const card of [...container.querySelectorAll(".queue")]) {
    if (!(card.dataset.queue in data.queues)) card.remove();
  }
  for (const name of names) {
    const q = data.queues[name];
    const card = queueCard(container, name);
    container.append(card);  // keeps the deepest first
    card.querySelector(".depth-now").textContent = lastValue(q.depth) ?? "-";
    card.querySelector(".rate-in").textContent = lastValue(q.rate_in) ?? "-";
    card.querySelector(".rate-out").textContent = lastValue(q.rate_out) ?? "-";
    drawLineChart(card.querySelector("svg.depth"), data.times, [{name: "depth", color: "#333", values: q.depth}]);
    drawLineChart(card.querySelector("svg.rate"), data.times, [
      {name: "out", color: "#1f5fbf", values: q.rate_out},
      {name: "in", color: "#2a7d2a", values: q.rate_in, dash: "4 3"},
    ]);
  }
  const status = document.getElementById("status");
  status.className = data.error ? "error" : "";
  status.textContent = data.error ? `server: ${data.error}` :
    `updated ${new Date().toLocaleTimeString()}, every ${interval} s`;
}

function showWorkers(data) {
  const body = document.querySelector("#workers tbody");
  body.replaceChildren();
  for (const p of data.processes) {
    const row = body.insertRow();
    row.dataset.name = p.name;
    cell(row, p.name);
    cell(row, p.kind);
    cell(row, p.pid);
    const state = p.alive ? p.state : (p.state === "running" ? "dead" : p.state);
    cell(row, state, state);
    cell(row, duration(p.uptime));
    cell(row, p.restarts);
    cell(row, p.last_exit);
  }
  document.getElementById("workers-note").textContent = !data.supervised
    ? "no supervisor config given (starlingpy dashboard -c starlingpy.toml shows its processes)"
    : (data.running ? "" : "the supervisor is not running");
}

async function act(action, id) {
  const reply = await fetch(`/api/failed/${action}`, {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({ids: [id]}),
  });
  const result = await reply.json();
  document.getElementById("failed-action").textContent = reply.ok
    ? `${action}: ${result[action].join(", ") || "nothing"}` : `${action} failed: ${result.error}`;
  await refreshFailed();
}

function showFailed(data) {
  const body = document.querySelector("#failed tbody");
  body.replaceChildren();
  for (const item of data.items) {
    const row = body.insertRow();
    row.dataset.id = item.id ?? "";
    cell(row, item.id);
    cell(row, item.task);
    cell(row, item.queue);
    cell(row, item.attempt);
    cell(row, item.failed_at);
    const error = cell(row, `${item.reason}: ${item.error ?? item.raw ?? ""}`);
    if (item.traceback) {
      const details = document.createElement("details");
      details.innerHTML = "<summary>traceback</summary><pre></pre>";
      details.querySelector("pre").textContent = item.traceback;
      error.append(details);
    }
    const buttons = row.insertCell();
    if (item.id) {
      for (const action of ["retry", "drop"]) {
        const button = document.createElement("button");
        button.type = "button";
        button.className = action;
        button.textContent = action;
        button.addEventListener("click", () => act(action, item.id));
        buttons.append(button);
      }
    }
  }
  document.getElementById("failed-note").textContent = data.items.length ? "" : "no failed messages";
}

async function getJson(path) {
  const reply = await fetch(path);
  const data = await reply.json();
  if (!reply.ok) throw new Error(data.error || reply.statusText);
  return data;
}

async function refreshFailed() {
  try {
    showFailed(await getJson("/api/failed"));
  } catch (error) {
    document.getElementById("failed-note").textContent = `cannot read the failure queue: ${error.message}`;
  }
}

async function refresh() {
  try {
    showQueues(await getJson("/api/queues"));
    showWorkers(await getJson("/api/workers"));
  } catch (error) {
    const status = document.getElementById("status");
    status.className = "error";
    status.textContent = `dashboard: ${error.message}`;
  }
  if (tick++ % FAILED_EVERY === 0) await refreshFailed();
  setTimeout(refresh, interval * 1000);
}

document.getElementById("failed-refresh").addEventListener("click", refreshFailed);
refresh();

// The live transfers page: polls transfers.json once a second and redraws.
// Data goes in with textContent only, never as HTML.
"use strict";

const POLL_MS = 1000;

function size(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (i === 0 ? String(n) : n.toFixed(1)) + " " + units[i];
}

function seconds(s) {
  if (s < 60) return s.toFixed(1) + " s";
  const m = Math.floor(s / 60);
  return m + " min " + Math.round(s % 60) + " s";
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function progress(row, f) {
  const td = cell(row, "", "progress");
  const bar = document.createElement("progress");
  if (f.length) {
    bar.max = f.length;
    bar.value = f.bytes;
  }
  td.appendChild(bar);
}

function drawFlights(flights) {
  const body = document.querySelector("#flights tbody");
  body.replaceChildren();
  for (const f of flights) {
    const row = document.createElement("tr");
    row.className = f.stalled ? "flight stalled" : "flight";
    row.dataset.path = f.path;
    row.dataset.bytes = f.bytes;
    cell(row, f.method + " " + f.path, "path");
    cell(row, f.client);
    progress(row, f);
    cell(row, size(f.bytes) + " / " + size(f.length), "num sent");
    cell(row, size(f.rate) + "/s", "num");
    cell(row, seconds(f.age), "num");
    cell(row, f.stalled ? "stalled " + seconds(f.idle) : "moving",
         f.stalled ? "state-stalled" : "state-moving");
    cell(row, String(f.pid), "num");
    body.appendChild(row);
  }
  document.getElementById("flight-count").textContent = flights.length;
  document.getElementById("no-flights").hidden = flights.length > 0;
}

function drawEndings(endings) {
  const body = document.querySelector("#endings tbody");
  body.replaceChildren();
  for (const e of endings) {
    const row = document.createElement("tr");
    row.className = "ending";
    row.dataset.path = e.path;
    row.dataset.outcome = e.outcome;
    cell(row, new Date(e.ended * 1000).toLocaleTimeString());
    cell(row, e.method + " " + e.path, "path");
    cell(row, e.client);
    cell(row, e.status === null ? "-" : String(e.status), "num");
    cell(row, e.outcome, "outcome outcome-" + e.outcome);
    cell(row, size(e.bytes) + " / " + size(e.length), "num");
    cell(row, seconds(e.duration), "num");
    cell(row, e.via || "-");
    cell(row, e.reason || "");
    body.appendChild(row);
  }
  document.getElementById("ending-count").textContent = endings.length;
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const answer = await fetch("transfers.json", { cache: "no-store", credentials: "same-origin" });
    if (!answer.ok) throw new Error(answer.status + " " + (await answer.text()));
    const data = await answer.json();
    drawFlights(data.in_flight);
    drawEndings(data.endings);
    status.className = "";
    status.textContent = "workers " + data.workers.join(", ") + " · updated " +
      new Date(data.now * 1000).toLocaleTimeString();
  } catch (err) {
    status.className = "error";
    status.textContent = "cannot load transfers: " + err.message;
  }
  setTimeout(poll, POLL_MS);
}

poll();

// BESS dashboard: fleet overview and site pages over the collector's API.
// Token: ?token=… or the one stored in localStorage ("bess-token").
// This file holds the shell (token, API client, routing), the fleet page
// and the site's live values and charts; alerts.js, loaded after it, the
// alerts, silences and alert history. Routes: #/ (fleet), #/site/SITE,
// #/site/SITE/history.
"use strict";

const TOKEN_KEY = "bess-token";
const ONLINE_WITHIN_MS = 60_000;
const LIVE_WINDOW_MS = 10 * 60_000;
const $ = (sel) => document.querySelector(sel);

// An element with attributes (`class`, `dataset`, `onclick`…) and children
// (nodes or text; null, undefined and false are skipped).
function h(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  e.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return e;
}

let token = new URLSearchParams(location.search).get("token") || localStorage.getItem(TOKEN_KEY) || "";
if (new URLSearchParams(location.search).get("token")) localStorage.setItem(TOKEN_KEY, token);

let socket = null;
// Refreshes the page shown: the fleet, or the site's alerts.
let refreshTimer = null;
let liveChart = null;
let historyChart = null;
// Per site page: "device/point" → {unit, xs:[], ys:[]} for charted points.
let charted = new Map();

function setStatus(text, cls) {
  const el = $("#status");
  el.textContent = text;
  el.className = "status " + (cls || "");
}

// A refusal of the API: `status` (403: the token may not do this), the
// error's `code` and its `detail` (the API's message alone).
class ApiError extends Error {
  constructor(status, code, detail) {
    super(code ? `${code}: ${detail}` : detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

// GET by default; `options.method` and `options.body` (sent as JSON) for the rest.
async function api(path, options = {}) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const init = { method: options.method || "GET", headers };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  const response = await fetch(path, init);
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    showLogin(body.error ? body.error.message : "token required");
    throw new Error("unauthorized");
  }
  if (!response.ok) {
    throw body.error
      ? new ApiError(response.status, body.error.code, body.error.message)
      : new ApiError(response.status, null, `HTTP ${response.status}`);
  }
  return body;
}

// Every item of a paged list, following `next_cursor`.
async function apiAll(path, field) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(`${path}${sep}limit=1000` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""));
    items.push(...page[field]);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

function showOnly(id) {
  for (const s of ["login", "fleet", "site", "episodes"]) $("#" + s).hidden = s !== id;
}

function showLogin(message) {
  closeLive();
  showOnly("login");
  $("#login-error").textContent = message || "";
  setStatus("no token", "bad");
}

function fmt(v, digits = 2) {
  if (v === null || v === undefined) return "—";
  return Math.abs(v) >= 1000 ? v.toFixed(0) : Number(v.toFixed(digits)).toString();
}

function formatPower(watts) {
  if (watts === null) return "—";
  return Math.abs(watts) >= 1000 ? fmt(watts / 1000, 1) + " kW" : fmt(watts, 0) + " W";
}

// ---- fleet overview ----

async function renderFleet() {
  showOnly("fleet");
  $("#crumb").textContent = "";
  const [sites, alerts] = await Promise.all([apiAll("/api/v1/sites", "sites"), apiAll("/api/v1/alerts", "alerts")]);
  const alertsBySite = new Map();
  for (const a of alerts) {
    if (!alertsBySite.has(a.site)) alertsBySite.set(a.site, []);
    alertsBySite.get(a.site).push(a);
  }
  const rows = await Promise.all(sites.map(async (s) => {
    let points = [];
    try { points = (await api(`/api/v1/sites/${encodeURIComponent(s.site)}/latest`)).points; } catch (e) { /* shown as — */ }
    const soc = points.filter((p) => p.name === "soc" && p.value !== null).map((p) => p.value);
    const power = points.filter((p) => p.name === "active_power" && p.value !== null).map((p) => p.value);
    const lastSeen = s.last_seen ? Date.parse(s.last_seen) : 0;
    return {
      site: s.site, lastSeen, devices: s.devices,
      online: Date.now() - lastSeen < ONLINE_WITHIN_MS,
      soc: soc.length ? soc.reduce((a, b) => a + b, 0) / soc.length : null,
      power: power.length ? power.reduce((a, b) => a + b, 0) : null,
      alerts: alertsBySite.get(s.site) || [],
    };
  }));
  const body = $("#fleet-table tbody");
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.site = r.site;
    tr.className = r.online ? "online" : "offline";
    tr.innerHTML = `<td><a href="#/site/${encodeURIComponent(r.site)}"></a></td>
      <td><span class="badge ${r.online ? "online" : "offline"}">${r.online ? "online" : "offline"}</span></td>
      <td>${r.lastSeen ? new Date(r.lastSeen).toLocaleString() : "never"}</td>
      <td class="num">${r.devices}</td>
      <td class="num soc">${r.soc === null ? "—" : fmt(r.soc, 1) + " %"}</td>
      <td class="num power">${formatPower(r.power)}</td>
      <td class="alarms"></td>`;
    tr.querySelector("a").textContent = r.site;
    fillFleetAlerts(tr.querySelector(".alarms"), r.alerts);
    return tr;
  }));
  setStatus(`${rows.filter((r) => r.online).length}/${rows.length} online`, "ok");
}

// ---- site page ----

function closeLive() {
  if (socket) { socket.onclose = null; socket.close(); socket = null; }
}

function chartOpts(title, series, width) {
  return {
    title, width, height: 280,
    scales: { x: { time: true } },
    series: [{}, ...series.map((s, i) => ({ label: s, stroke: ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f"][i % 6], width: 1.5, spanGaps: true }))],
  };
}

function chartWidth(el) {
  return Math.max(560, el.clientWidth || 600);
}

function redrawLive() {
  const el = $("#live-chart");
  if (liveChart) { liveChart.destroy(); liveChart = null; }
  el.replaceChildren();
  if (!charted.size) { el.textContent = "Tick points in the table to chart them live."; return; }
  // Align all charted series on the union of their timestamps.
  const times = [...new Set([...charted.values()].flatMap((c) => c.xs))].sort((a, b) => a - b);
  const data = [times, ...[...charted.values()].map((c) => {
    const byT = new Map(c.xs.map((x, i) => [x, c.ys[i]]));
    return times.map((t) => (byT.has(t) ? byT.get(t) : null));
  })];
  liveChart = new uPlot(chartOpts("live", [...charted.keys()], chartWidth(el)), data, el);
}

function onFrame(frame) {
  const cutoff = Date.now() / 1000 - LIVE_WINDOW_MS / 1000;
  let chartedChanged = false;
  for (const v of frame.values) {
    const key = `${frame.device}/${v.point}`;
    updateRow({ device: frame.device, name: v.point, value: v.value, unit: v.unit, quality: v.quality, ts: frame.ts });
    const c = charted.get(key);
    if (c) {
      c.xs.push(frame.ts_ms / 1000); c.ys.push(v.value);
      while (c.xs.length && c.xs[0] < cutoff) { c.xs.shift(); c.ys.shift(); }
      chartedChanged = true;
    }
  }
  if (chartedChanged) redrawLive();
}

function updateRow(p) {
  const key = `${p.device}/${p.name}`;
  const body = $("#live-table tbody");
  let tr = body.querySelector(`tr[data-point="${CSS.escape(key)}"]`);
  if (!tr) {
    tr = document.createElement("tr");
    tr.dataset.point = key;
    tr.innerHTML = `<td><input type="checkbox"></td><td></td><td></td><td class="num value"></td><td class="unit"></td><td class="quality"></td><td class="ts"></td>`;
    tr.children[1].textContent = p.device;
    tr.children[2].textContent = p.name;
    tr.querySelector("input").addEventListener("change", (e) => toggleChart(key, p.unit, e.target.checked));
    const rows = [...body.children];
    const after = rows.find((r) => r.dataset.point > key);
    body.insertBefore(tr, after || null);
  }
  const value = tr.querySelector(".value");
  const text = fmt(p.value, 3);
  if (value.textContent !== text) {
    value.textContent = text;
    value.classList.add("flash");
    setTimeout(() => value.classList.remove("flash"), 400);
  }
  tr.querySelector(".unit").textContent = p.unit;
  const q = tr.querySelector(".quality");
  q.textContent = p.quality;
  q.className = "quality q-" + p.quality;
  tr.querySelector(".ts").textContent = new Date(p.ts).toLocaleTimeString();
}

function toggleChart(key, unit, on) {
  if (on) charted.set(key, { unit, xs: [], ys: [] }); else charted.delete(key);
  redrawLive();
  loadHistory().catch((e) => { $("#history-info").textContent = e.message; });
}

function openLive(site) {
  closeLive();
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const url = `${scheme}//${location.host}/api/v1/live` + (token ? `?access_token=${encodeURIComponent(token)}` : "");
  socket = new WebSocket(url);
  socket.onopen = () => {
    setStatus("live", "ok");
    socket.send(JSON.stringify({ subscribe: { sites: [site] } }));
  };
  socket.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "snapshot") msg.points.forEach(updateRow);
    else if (msg.type === "frame") onFrame(msg.frame);
    else if (msg.type === "lagged") setStatus(`live (missed ${msg.missed})`, "ok");
    else if (msg.type === "error") setStatus(msg.error.message, "bad");
  };
  socket.onclose = () => {
    setStatus("disconnected; retrying", "bad");
    setTimeout(() => { if (location.hash === `#/site/${encodeURIComponent(site)}`) openLive(site); }, 3000);
  };
}

function toLocalInput(date) {
  const d = new Date(date.getTime() - date.getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 19);
}

function setRange(seconds) {
  const to = new Date();
  $("#history-to").value = toLocalInput(to);
  $("#history-from").value = toLocalInput(new Date(to.getTime() - seconds * 1000));
}

async function loadHistory() {
  const site = currentSite();
  const el = $("#history-chart");
  if (historyChart) { historyChart.destroy(); historyChart = null; }
  el.replaceChildren();
  const keys = [...charted.keys()];
  if (!site || !keys.length) { $("#history-info").textContent = "tick points to show their history"; return; }
  const range = Number($("#history-range").value);
  if (range) setRange(range);
  const from = new Date($("#history-from").value).toISOString();
  const to = new Date($("#history-to").value).toISOString();
  const points = keys.map((k) => `${site}/${k}`).join(",");
  // Columns: one array of epoch-millisecond times and one of values per
  // point, which is what uPlot takes.
  const body = await api(`/api/v1/series?point=${encodeURIComponent(points)}&from=${from}&to=${to}&max_points=10000&format=columns`);
  const series = body.series || [body];
  const times = [...new Set(series.flatMap((s) => s.ts_ms))].sort((a, b) => a - b);
  const data = [times.map((t) => t / 1000), ...series.map((s) => {
    const byT = new Map(s.ts_ms.map((t, i) => [t, s.value[i]]));
    return times.map((t) => (byT.has(t) ? byT.get(t) : null));
  })];
  historyChart = new uPlot(chartOpts("history", keys, chartWidth(el)), data, el);
  el.dataset.samples = String(times.length);
  $("#history-info").textContent = `${times.length} samples, ${body.resolution || "raw"}`;
}

// The site page shown, `{site, view}` with view "live" or "history"; null on the fleet page.
function currentRoute() {
  const m = location.hash.match(/^#\/site\/([^/]+)(\/history)?$/);
  return m ? { site: decodeURIComponent(m[1]), view: m[2] ? "history" : "live" } : null;
}

function currentSite() {
  const r = currentRoute();
  return r ? r.site : null;
}

function siteHash(site, view) {
  return `#/site/${encodeURIComponent(site)}` + (view === "history" ? "/history" : "");
}

async function renderSite(site) {
  showOnly("site");
  $("#crumb").textContent = "› " + site;
  $("#site-title").textContent = site;
  openSiteAlerts(site);
  $("#live-table tbody").replaceChildren();
  charted = new Map();
  redrawLive();
  const latest = await api(`/api/v1/sites/${encodeURIComponent(site)}/latest`);
  latest.points.forEach(updateRow);
  // Chart SoC by default so the page shows something moving.
  for (const p of latest.points.filter((p) => p.name === "soc")) {
    charted.set(`${p.device}/${p.name}`, { unit: p.unit, xs: [], ys: [] });
    $(`#live-table tr[data-point="${CSS.escape(p.device + "/" + p.name)}"] input`).checked = true;
  }
  redrawLive();
  openLive(site);
  await loadHistory();
}

async function route() {
  clearInterval(refreshTimer);
  closeLive();
  closeAlertDialogs();
  try {
    const r = currentRoute();
    if (r && r.view === "history") await renderEpisodes(r.site);
    else if (r) {
      refreshTimer = setInterval(() => refreshSiteAlerts(r.site).catch(showAlertsError), 5000);
      await renderSite(r.site);
    } else { await renderFleet(); refreshTimer = setInterval(() => renderFleet().catch(showError), 5000); }
  } catch (e) { showError(e); }
}

function showError(e) {
  if (e.message !== "unauthorized") setStatus(e.message, "bad");
}

$("#login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("#token").value.trim();
  localStorage.setItem(TOKEN_KEY, token);
  route();
});
$("#logout").addEventListener("click", () => { localStorage.removeItem(TOKEN_KEY); token = ""; route(); });
$("#history-form").addEventListener("submit", (e) => { e.preventDefault(); loadHistory().catch((err) => { $("#history-info").textContent = err.message; }); });
$("#history-range").addEventListener("change", () => loadHistory().catch((err) => { $("#history-info").textContent = err.message; }));
window.addEventListener("hashchange", route);
setRange(3600);
// After every script (alerts.js too) has run.
document.addEventListener("DOMContentLoaded", route);

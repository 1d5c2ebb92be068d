// Alerts on the dashboard: the fleet's count of firing alerts per site, a
// site's active alerts (device alarms and rule episodes) with acknowledge
// and silence, its silences, and the history of its rule episodes.
// Loaded after dashboard.js, whose API client (api, apiAll, ApiError) and
// helpers ($, h, fmt) it uses. Acting needs a token with role `operate`;
// the API's refusal is shown where the operator acted.
"use strict";

const SEVERITY_ORDER = ["critical", "warning", "info"];
const STATE_ORDER = ["firing", "acknowledged", "silenced"];
const EPISODES_PER_PAGE = 50;

// The site page's alert panel: what the silence dialog offers, and what
// the tables show (to redraw only on a change).
const alertPanel = { site: null, devices: [], rules: [], shownAlerts: "", shownSilences: "" };
// The alert the acknowledge dialog is about.
let ackTarget = null;
// The history view: its site, where the next page starts, and a counter
// that makes answers to an older request be dropped.
const episodesView = { site: null, cursor: null, generation: 0, rulesLoaded: null };

// ---- presentation ----

function rank(order, value) {
  const i = order.indexOf(value);
  return i < 0 ? order.length : i;
}

// Critical first, then firing before acknowledged and silenced, then the oldest.
function compareAlerts(a, b) {
  return rank(SEVERITY_ORDER, a.severity) - rank(SEVERITY_ORDER, b.severity)
    || rank(STATE_ORDER, a.state) - rank(STATE_ORDER, b.state)
    || (a.started_at || a.ts).localeCompare(b.started_at || b.ts)
    || alertTarget(a).localeCompare(alertTarget(b));
}

// What an alert is about, within its site: "bms-1/soc", "bms-1" or "whole site".
function alertTarget(a) {
  if (a.point === a.site) return "whole site";
  const prefix = a.site + "/";
  return a.point.startsWith(prefix) ? a.point.slice(prefix.length) : a.point;
}

function alertTitle(a) {
  return a.source === "rule" ? a.summary || a.rule : "device alarm";
}

// One line of the fleet page's tooltip.
function alertLine(a) {
  const value = a.value === null ? "" : ` = ${fmt(a.value, 3)}`;
  const what = a.source === "rule" ? `${alertTitle(a)} — ` : "";
  const by = a.acknowledged ? ` (acknowledged by ${a.acknowledged.by})` : "";
  return `${a.severity} ${a.state}: ${what}${alertTarget(a)}${value}${by}`;
}

function severityBadge(severity) {
  return h("span", { class: `badge sev-${severity}` }, severity);
}

function stateBadge(state) {
  return h("span", { class: `badge state state-${state}` }, state);
}

function lateBadge() {
  return h("span", { class: "badge late", title: "detected a while after its readings (a backlog after an outage)" }, "late");
}

function timeText(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

function formatDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

// A refusal as the operator should read it: a 403 says the token may not.
function actionError(e) {
  if (e instanceof ApiError && e.status === 403) return `Not allowed: ${e.detail}.`;
  return e instanceof ApiError ? e.detail : e.message;
}

// ---- fleet page ----

// The fleet page's cell: a badge with the number of firing alerts in the
// colour of the worst of them and their count by severity, then the
// acknowledged and silenced ones counted apart; every alert in the tooltip.
function fillFleetAlerts(td, alerts) {
  const sorted = [...alerts].sort(compareAlerts);
  td.replaceChildren();
  td.title = sorted.map(alertLine).join("\n");
  if (!sorted.length) { td.textContent = "none"; return; }
  const firing = sorted.filter((a) => a.state === "firing");
  if (firing.length) {
    const bySeverity = SEVERITY_ORDER
      .map((severity) => [severity, firing.filter((a) => a.severity === severity).length])
      .filter(([, n]) => n)
      .map(([severity, n]) => `${n} ${severity}`);
    td.append(h("span", { class: `badge firing sev-${firing[0].severity}`, dataset: { severity: firing[0].severity } }, String(firing.length)),
      " ", h("small", { class: "severities" }, bySeverity.join(", ")));
  } else {
    td.append(h("span", { class: "muted" }, "none firing"));
  }
  const quiet = ["acknowledged", "silenced"]
    .map((state) => [state, sorted.filter((a) => a.state === state).length])
    .filter(([, n]) => n)
    .map(([state, n]) => `${n} ${state}`);
  if (quiet.length) td.append(" ", h("small", { class: "muted" }, "· ", h("span", { class: "quiet" }, quiet.join(", "))));
}

// ---- site page: active alerts and silences ----

// Starts the site page's alert panel: the choices of the silence dialog
// and the first load (the page's timer refreshes it after).
function openSiteAlerts(site) {
  alertPanel.site = site;
  alertPanel.shownAlerts = alertPanel.shownSilences = "";
  $("#alerts-table tbody").replaceChildren();
  $("#silences-table tbody").replaceChildren();
  $("#alerts-message").textContent = "";
  $("#alerts-count").textContent = "";
  $("#site-episodes-link").href = siteHash(site, "history");
  const q = encodeURIComponent(site);
  Promise.all([
    apiAll(`/api/v1/sites/${q}/devices`, "devices").catch(() => []),
    api("/api/v1/rules").then((r) => r.rules).catch(() => []),
  ]).then(([devices, rules]) => {
    if (alertPanel.site !== site) return;
    alertPanel.devices = devices.map((d) => d.device);
    alertPanel.rules = rules;
  });
  refreshSiteAlerts(site).catch(showAlertsError);
}

async function refreshSiteAlerts(site) {
  const q = encodeURIComponent(site);
  const [alerts, silences] = await Promise.all([
    apiAll(`/api/v1/alerts?site=${q}`, "alerts"),
    apiAll(`/api/v1/silences?site=${q}`, "silences"),
  ]);
  if (currentSite() !== site || alertPanel.site !== site) return;
  renderAlerts(alerts);
  renderSilences(silences);
}

function showAlertsError(e) {
  if (e.message !== "unauthorized") $("#alerts-message").textContent = `Alerts: ${actionError(e)}`;
}

function renderAlerts(alerts) {
  const sorted = [...alerts].sort(compareAlerts);
  // A device alarm's `ts` moves with every reading; redraw on what is shown.
  const shown = JSON.stringify(sorted.map((a) => [a.source, a.device, a.name, a.rule, a.episode_id, a.severity,
    a.state, a.value, a.summary, a.started_at, a.late, a.acknowledged]));
  if (shown === alertPanel.shownAlerts) return;
  alertPanel.shownAlerts = shown;
  $("#alerts-table tbody").replaceChildren(...sorted.map(alertRow));
  $("#alerts-table").hidden = !sorted.length;
  $("#alerts-empty").hidden = sorted.length > 0;
  const firing = sorted.filter((a) => a.state === "firing").length;
  $("#alerts-count").textContent = sorted.length ? `(${firing} firing, ${sorted.length} in all)` : "";
}

function alertRow(a) {
  const since = a.started_at
    ? h("span", {}, timeText(a.started_at))
    : h("span", { class: "muted", title: `a device alarm has no start time; last reported ${timeText(a.ts)}` }, "—");
  const ack = a.acknowledged;
  return h("tr", {
    class: `alert state-${a.state}`,
    dataset: { source: a.source, severity: a.severity, state: a.state, device: a.device, name: a.name, rule: a.rule || "", episode: a.episode_id ?? "" },
  },
  h("td", {}, severityBadge(a.severity)),
  h("td", { class: "what" }, alertTitle(a), a.source === "rule" && a.summary ? h("small", { class: "muted" }, ` (rule ${a.rule})`) : null),
  h("td", { class: "target" }, alertTarget(a)),
  h("td", { class: "num value", title: a.source === "rule" ? "the episode's extreme value so far" : "the alarm point's value" },
    a.value === null ? "—" : fmt(a.value, 3)),
  h("td", { class: "since" }, since, a.late ? [" ", lateBadge()] : null),
  h("td", { class: "state" }, stateBadge(a.state),
    ack ? h("small", { class: "muted by", title: `${timeText(ack.at)}${ack.note ? ": " + ack.note : ""}` }, ` by ${ack.by}`) : null),
  h("td", { class: "actions" },
    ack ? null : h("button", { type: "button", class: "ack", onclick: () => openAckDialog(a) }, "Acknowledge…"),
    " ",
    h("button", { type: "button", class: "silence", onclick: () => openSilenceDialog(a) }, "Silence…")));
}

function renderSilences(silences) {
  const shown = JSON.stringify(silences);
  if (shown === alertPanel.shownSilences) return;
  alertPanel.shownSilences = shown;
  $("#silences-table tbody").replaceChildren(...silences.map((s) => h("tr", { dataset: { silenceId: s.silence_id }, class: s.active ? "active" : "planned" },
    h("td", {}, s.site ?? "every site"),
    h("td", {}, s.device ?? "every device"),
    h("td", {}, s.rule ?? "every rule and device alarms"),
    h("td", {}, s.active ? timeText(s.starts_at) : h("span", { title: "not in effect yet" }, `planned: ${timeText(s.starts_at)}`)),
    h("td", {}, timeText(s.ends_at)),
    h("td", {}, s.created_by),
    h("td", { class: "comment" }, s.comment),
    h("td", {}, h("button", { type: "button", class: "end", onclick: () => endSilence(s) }, "End now")))));
  $("#silences-table").hidden = !silences.length;
  $("#silences-empty").hidden = silences.length > 0;
}

async function endSilence(s) {
  $("#alerts-message").textContent = "";
  try {
    await api(`/api/v1/silences/${encodeURIComponent(s.silence_id)}`, { method: "DELETE" });
    await refreshSiteAlerts(alertPanel.site);
  } catch (e) {
    if (e.message !== "unauthorized") $("#alerts-message").textContent = `Ending the silence: ${actionError(e)}`;
  }
}

// ---- acknowledge ----

function openAckDialog(a) {
  ackTarget = a;
  $("#ack-what").textContent = `${a.severity}: ${alertTitle(a)} — ${alertTarget(a)}` + (a.value === null ? "" : ` = ${fmt(a.value, 3)}`);
  $("#ack-note").value = "";
  $("#ack-error").textContent = "";
  $("#ack-dialog").showModal();
  $("#ack-note").focus();
}

function ackPath(a) {
  const site = encodeURIComponent(a.site);
  return a.source === "rule"
    ? `/api/v1/sites/${site}/episodes/${encodeURIComponent(a.episode_id)}/ack`
    : `/api/v1/sites/${site}/alerts/${encodeURIComponent(a.device)}/${encodeURIComponent(a.name)}/ack`;
}

async function submitAck(event) {
  event.preventDefault();
  const a = ackTarget;
  if (!a) return;
  $("#ack-error").textContent = "";
  try {
    await api(ackPath(a), { method: "POST", body: { note: $("#ack-note").value.trim() } });
    $("#ack-dialog").close();
    await refreshSiteAlerts(a.site);
  } catch (e) {
    if (e.message !== "unauthorized") $("#ack-error").textContent = actionError(e);
  }
}

// ---- silence ----

// The silence dialog, for the site page's site; from an alert it starts at
// that alert's device and rule.
function openSilenceDialog(a) {
  const site = alertPanel.site;
  const device = a ? a.device : "";
  const rule = a && a.rule ? a.rule : "";
  $("#silence-site").value = site;
  const devices = [...new Set([...alertPanel.devices, ...(device ? [device] : [])])].sort();
  $("#silence-device").replaceChildren(h("option", { value: "" }, "every device"),
    ...devices.map((d) => h("option", { value: d }, d)));
  const rules = alertPanel.rules.map((r) => r.name);
  if (rule && !rules.includes(rule)) rules.push(rule);
  $("#silence-rule").replaceChildren(h("option", { value: "" }, "every rule, and device alarms"),
    ...rules.sort().map((r) => h("option", { value: r }, r)));
  $("#silence-device").value = device;
  $("#silence-rule").value = rule;
  $("#silence-comment").value = "";
  $("#silence-error").textContent = "";
  describeSilence();
  $("#silence-dialog").showModal();
  $("#silence-comment").focus();
}

// What the silence being set up covers, in words.
function describeSilence() {
  const site = $("#silence-site").value;
  const device = $("#silence-device").value;
  const rule = $("#silence-rule").value;
  const duration = $("#silence-duration").value;
  let what;
  if (!device && !rule) what = `every alert of ${site}: its device alarms and every rule's episodes`;
  else if (!rule) what = `the device alarms of ${device} and every rule's episodes about it`;
  else if (!device) what = `episodes of rule ${rule} anywhere on ${site}`;
  else what = `episodes of rule ${rule} about ${device}`;
  $("#silence-covers").textContent = `Covers ${what}, from now for ${duration}.`;
}

async function submitSilence(event) {
  event.preventDefault();
  $("#silence-error").textContent = "";
  const body = {
    site: $("#silence-site").value,
    device: $("#silence-device").value || null,
    rule: $("#silence-rule").value || null,
    duration: $("#silence-duration").value,
    comment: $("#silence-comment").value.trim(),
  };
  try {
    await api("/api/v1/silences", { method: "POST", body });
    $("#silence-dialog").close();
    await refreshSiteAlerts(body.site);
  } catch (e) {
    if (e.message !== "unauthorized") $("#silence-error").textContent = actionError(e);
  }
}

function closeAlertDialogs() {
  for (const d of ["#ack-dialog", "#silence-dialog"]) if ($(d).open) $(d).close();
}

// ---- history of a site's episodes ----

async function renderEpisodes(site) {
  showOnly("episodes");
  const link = h("a", { href: siteHash(site, "live") }, site);
  $("#crumb").replaceChildren("› ", link, " › alert history");
  $("#episodes-title").textContent = site;
  $("#episodes-back").href = siteHash(site, "live");
  setStatus("alert history", "ok");
  if (episodesView.site !== site) {
    episodesView.site = site;
    $("#episodes-rule").value = "";
    $("#episodes-severity").value = "";
    episodesView.rulesLoaded = null;
    $("#episodes-table tbody").replaceChildren();
  }
  if (episodesView.rulesLoaded !== site) {
    const rules = await api("/api/v1/rules").then((r) => r.rules.map((x) => x.name)).catch(() => []);
    const chosen = $("#episodes-rule").value;
    $("#episodes-rule").replaceChildren(h("option", { value: "" }, "any"), ...rules.sort().map((r) => h("option", { value: r }, r)));
    $("#episodes-rule").value = rules.includes(chosen) ? chosen : "";
    episodesView.rulesLoaded = site;
  }
  await loadEpisodes(false);
}

// The first page (`more` false) or the next one, appended.
async function loadEpisodes(more) {
  const site = episodesView.site;
  const generation = ++episodesView.generation;
  const params = new URLSearchParams({ site, limit: String(EPISODES_PER_PAGE) });
  if ($("#episodes-rule").value) params.set("rule", $("#episodes-rule").value);
  if ($("#episodes-severity").value) params.set("severity", $("#episodes-severity").value);
  if (more && episodesView.cursor) params.set("cursor", episodesView.cursor);
  $("#episodes-info").textContent = "loading…";
  const page = await api(`/api/v1/alerts/history?${params}`);
  if (generation !== episodesView.generation || currentSite() !== site) return;
  const body = $("#episodes-table tbody");
  const rows = page.episodes.map(episodeRow);
  if (more) body.append(...rows); else body.replaceChildren(...rows);
  episodesView.cursor = page.next_cursor;
  $("#episodes-more").hidden = !page.next_cursor;
  $("#episodes-empty").hidden = body.children.length > 0;
  $("#episodes-table").hidden = body.children.length === 0;
  $("#episodes-info").textContent = `${body.children.length} episodes, newest first` + (page.next_cursor ? "; older ones below" : "");
}

function episodeRow(e) {
  const ended = e.ended_at
    ? [timeText(e.ended_at), h("small", { class: "muted" }, ` (${formatDuration(Date.parse(e.ended_at) - Date.parse(e.started_at))})`)]
    : [h("span", { class: "badge open" }, "open"), h("small", { class: "muted" }, ` (${formatDuration(Date.now() - Date.parse(e.started_at))} so far)`)];
  const ack = e.acknowledged;
  return h("tr", { dataset: { episode: e.episode_id, rule: e.rule, severity: e.severity, open: e.ended_at ? "false" : "true" } },
    h("td", {}, timeText(e.started_at)),
    h("td", { class: "ended" }, ended),
    h("td", {}, severityBadge(e.severity)),
    h("td", { class: "rule" }, e.rule, e.summary ? h("small", { class: "muted" }, ` ${e.summary}`) : null),
    h("td", { class: "target" }, e.target || "whole site"),
    h("td", { class: "num peak" }, fmt(e.peak, 3)),
    h("td", { class: "late" }, e.late ? lateBadge() : ""),
    h("td", { class: "acknowledged", title: ack ? `${timeText(ack.at)}${ack.note ? ": " + ack.note : ""}` : "" },
      ack ? `${ack.by}` : "—", ack && ack.note ? h("small", { class: "muted" }, ` “${ack.note}”`) : null));
}

function showEpisodesError(e) {
  if (e.message !== "unauthorized") $("#episodes-info").textContent = actionError(e);
}

// ---- wiring ----

$("#ack-form").addEventListener("submit", submitAck);
$("#silence-form").addEventListener("submit", submitSilence);
for (const id of ["#silence-device", "#silence-rule", "#silence-duration"]) $(id).addEventListener("change", describeSilence);
for (const d of ["#ack-dialog", "#silence-dialog"]) $(d).querySelector(".cancel").addEventListener("click", () => $(d).close());
$("#silence-new").addEventListener("click", () => openSilenceDialog(null));
$("#episodes-form").addEventListener("submit", (e) => { e.preventDefault(); loadEpisodes(false).catch(showEpisodesError); });
for (const id of ["#episodes-rule", "#episodes-severity"]) $(id).addEventListener("change", () => loadEpisodes(false).catch(showEpisodesError));
$("#episodes-more").addEventListener("click", () => loadEpisodes(true).catch(showEpisodesError));

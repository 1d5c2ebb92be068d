// Drives the dashboard in headless Chromium against a running collector.
// Environment: DASHBOARD_URL (http://127.0.0.1:PORT), BESS_TOKEN (role
// read), BESS_OPERATE_TOKEN (role operate, named "browser-operator"), SITE,
// SCREENSHOT_DIR, CHROMIUM (default /usr/bin/chromium). The collector runs
// the rules of tests/tests/dashboard.rs: bms1-soc-reported (critical) and
// bms3-soc-reported (info) fire at once; bms-2 raises a device alarm.
// Checks: the fleet page lists the site as online with its firing alerts;
// on the site page a live value changes and the history chart renders
// samples; the active alerts show critical first; a read token's
// acknowledgement is refused with a message; an operator acknowledges a
// rule episode, silences the device alarm, reads the alert history and
// ends the silence. Every wait is on a condition. Exits non-zero on failure.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const url = process.env.DASHBOARD_URL;
const token = process.env.BESS_TOKEN;
const site = process.env.SITE || "site-001";
const shots = process.env.SCREENSHOT_DIR || ".";
const operateToken = process.env.BESS_OPERATE_TOKEN;
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const CRITICAL_RULE = "bms1-soc-reported";
const INFO_RULE = "bms3-soc-reported";
const LIMIT = 60_000;

const profile = mkdtempSync(join(tmpdir(), "bess-chromium-"));
// The profile directory goes to launchPersistentContext (Playwright refuses
// --user-data-dir in the argument list); the other flags are passed as is.
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  viewport: { width: 1400, height: 900 },
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const step = (name) => console.log(`step: ${name}`);
let failed = false;
try {
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // Only the collector is contacted: anything else would be fetched at run time.
  const foreign = [];
  page.on("request", (r) => { if (!r.url().startsWith(url) && !r.url().startsWith(url.replace("http", "ws"))) foreign.push(r.url()); });

  step("fleet page lists the site as online");
  await page.goto(`${url}/?token=${encodeURIComponent(token)}`);
  const row = page.locator(`#fleet-table tr[data-site="${site}"]`);
  await row.waitFor({ timeout: LIMIT });
  await page.waitForFunction((s) => document.querySelector(`#fleet-table tr[data-site="${s}"] .soc`)?.textContent.includes("%")
    && document.querySelector(`#fleet-table tr[data-site="${s}"]`).className === "online", site, { timeout: LIMIT });
  step("fleet page counts the firing alerts: the slow unit's alarm and both rules, coloured critical");
  await page.waitForFunction((s) => {
    const cell = document.querySelector(`#fleet-table tr[data-site="${s}"] .alarms`);
    const badge = cell?.querySelector(".badge.firing");
    return badge?.textContent.trim() === "3" && badge.dataset.severity === "critical"
      && cell.querySelector(".severities").textContent === "1 critical, 1 warning, 1 info"
      && cell.title.includes("warning firing: bms-2/alarms")
      && cell.title.includes("critical firing: bms-1 reports a state of charge — bms-1/soc")
      && cell.title.includes("info firing: bms-3 reports a state of charge");
  }, site, { timeout: LIMIT });
  await page.screenshot({ path: join(shots, "fleet.png"), fullPage: true });

  step("site page: a live value changes");
  await page.goto(`${url}/#/site/${encodeURIComponent(site)}`);
  const cell = `#live-table tr[data-point="bms-1/heartbeat"] .value`;
  await page.waitForSelector(cell, { timeout: LIMIT });
  const first = await page.textContent(cell);
  await page.waitForFunction(([sel, v]) => document.querySelector(sel)?.textContent !== v, [cell, first], { timeout: LIMIT });
  const second = await page.textContent(cell);
  console.log(`heartbeat went from ${first} to ${second}`);
  await page.waitForSelector("#live-chart canvas", { timeout: LIMIT });

  step("history chart renders samples");
  await page.waitForFunction(() => Number(document.querySelector("#history-chart")?.dataset.samples || 0) > 0
    && document.querySelector("#history-chart canvas"), null, { timeout: LIMIT });
  const samples = await page.getAttribute("#history-chart", "data-samples");
  console.log(`history chart: ${samples} samples`);
  await page.screenshot({ path: join(shots, "site.png"), fullPage: true });

  step("site page lists the active alerts, critical first, with summary, target, value and start");
  const rows = "#alerts-table tbody tr";
  const critical = page.locator(`${rows}[data-rule="${CRITICAL_RULE}"]`);
  const deviceAlarm = page.locator(`${rows}[data-source="device"][data-device="bms-2"]`);
  await page.waitForFunction(([sel, crit, info]) => {
    const all = [...document.querySelectorAll(sel)];
    return all.length === 3 && all[0].dataset.rule === crit && all[0].dataset.severity === "critical"
      && all[1].dataset.source === "device" && all[1].dataset.severity === "warning"
      && all[2].dataset.rule === info && all[2].dataset.severity === "info"
      && all.every((r) => r.dataset.state === "firing");
  }, [rows, CRITICAL_RULE, INFO_RULE], { timeout: LIMIT });
  const criticalText = {
    what: await critical.locator(".what").textContent(),
    target: await critical.locator(".target").textContent(),
    value: await critical.locator(".value").textContent(),
    since: await critical.locator(".since").textContent(),
    severity: await critical.locator(".badge.sev-critical").textContent(),
  };
  console.log(`critical alert: ${JSON.stringify(criticalText)}`);
  if (!criticalText.what.includes("bms-1 reports a state of charge") || criticalText.target !== "bms-1/soc"
    || !Number.isFinite(Number(criticalText.value)) || criticalText.since.trim() === "—" || criticalText.severity !== "critical") {
    throw new Error(`the critical alert reads wrong: ${JSON.stringify(criticalText)}`);
  }
  if ((await deviceAlarm.locator(".target").textContent()) !== "bms-2/alarms") throw new Error("the device alarm's target reads wrong");

  step("a read token's acknowledgement is refused with a message");
  await critical.locator("button.ack").click();
  await page.locator("#ack-dialog").waitFor({ state: "visible", timeout: LIMIT });
  await page.locator("#ack-note").fill("should be refused");
  await page.locator("#ack-dialog button[type=submit]").click();
  await page.waitForFunction(() => {
    const t = document.querySelector("#ack-error").textContent;
    return t.includes("Not allowed") && t.includes("operate");
  }, null, { timeout: LIMIT });
  console.log(`refused: ${await page.textContent("#ack-error")}`);
  await page.locator("#ack-dialog button.cancel").click();
  await page.locator("#ack-dialog").waitFor({ state: "hidden", timeout: LIMIT });
  if ((await critical.getAttribute("data-state")) !== "firing") throw new Error("a refused acknowledgement changed the alert");

  step("an operator acknowledges the critical rule episode with a note");
  await page.goto(`${url}/?token=${encodeURIComponent(operateToken)}#/site/${encodeURIComponent(site)}`);
  await critical.locator("button.ack").click();
  await page.locator("#ack-dialog").waitFor({ state: "visible", timeout: LIMIT });
  await page.locator("#ack-note").fill("on my way");
  await page.locator("#ack-dialog button[type=submit]").click();
  await page.locator("#ack-dialog").waitFor({ state: "hidden", timeout: LIMIT });
  await page.waitForFunction((sel) => {
    const row = document.querySelector(sel);
    return row?.dataset.state === "acknowledged" && row.querySelector(".state").textContent.includes("acknowledged by browser-operator");
  }, `${rows}[data-rule="${CRITICAL_RULE}"]`, { timeout: LIMIT });

  step("the operator silences the device alarm's device for an hour");
  await deviceAlarm.locator("button.silence").click();
  await page.locator("#silence-dialog").waitFor({ state: "visible", timeout: LIMIT });
  const prefilled = [await page.inputValue("#silence-device"), await page.inputValue("#silence-rule")];
  if (prefilled[0] !== "bms-2" || prefilled[1] !== "") throw new Error(`silence dialog starts at ${prefilled}, not bms-2 and every rule`);
  await page.selectOption("#silence-duration", "1h");
  await page.locator("#silence-comment").fill("fan replacement");
  console.log(`silence: ${await page.textContent("#silence-covers")}`);
  await page.locator("#silence-dialog button[type=submit]").click();
  await page.locator("#silence-dialog").waitFor({ state: "hidden", timeout: LIMIT });
  const silence = page.locator("#silences-table tbody tr").filter({ hasText: "fan replacement" });
  await silence.waitFor({ timeout: LIMIT });
  const silenceText = await silence.textContent();
  if (!silenceText.includes("bms-2") || !silenceText.includes("browser-operator")) throw new Error(`silence listed as ${silenceText}`);
  await page.waitForFunction((sel) => document.querySelector(sel)?.dataset.state === "silenced",
    `${rows}[data-source="device"][data-device="bms-2"]`, { timeout: LIMIT });
  await page.screenshot({ path: join(shots, "alerts.png"), fullPage: true });

  step("the alert history lists the episodes, newest first, open, with who acknowledged");
  await page.locator("#site-episodes-link").click();
  await page.locator("#episodes").waitFor({ state: "visible", timeout: LIMIT });
  const episodes = "#episodes-table tbody tr";
  await page.waitForFunction(([sel, crit, info]) => {
    const all = [...document.querySelectorAll(sel)];
    const c = all.find((r) => r.dataset.rule === crit);
    const i = all.find((r) => r.dataset.rule === info);
    const ids = all.map((r) => Number(r.dataset.episode));
    return c && i && c.dataset.open === "true" && c.querySelector(".ended").textContent.includes("open")
      && c.querySelector(".acknowledged").textContent.includes("browser-operator")
      && c.querySelector(".target").textContent === "bms-1/soc" && c.querySelector(".badge.sev-critical")
      && i.querySelector(".acknowledged").textContent === "—"
      && ids.every((id, n) => n === 0 || ids[n - 1] > id);
  }, [episodes, CRITICAL_RULE, INFO_RULE], { timeout: LIMIT });
  await page.selectOption("#episodes-severity", "info");
  await page.waitForFunction(([sel, info]) => {
    const all = [...document.querySelectorAll(sel)];
    return all.length > 0 && all.every((r) => r.dataset.rule === info && r.dataset.severity === "info");
  }, [episodes, INFO_RULE], { timeout: LIMIT });
  await page.selectOption("#episodes-severity", "");
  await page.locator(`${episodes}[data-rule="${CRITICAL_RULE}"]`).waitFor({ timeout: LIMIT });
  await page.screenshot({ path: join(shots, "history.png"), fullPage: true });

  step("the operator ends the silence; the device alarm fires again");
  await page.locator("#episodes-back").click();
  await silence.locator("button.end").click();
  await silence.waitFor({ state: "detached", timeout: LIMIT });
  await page.waitForFunction((sel) => document.querySelector(sel)?.dataset.state === "firing",
    `${rows}[data-source="device"][data-device="bms-2"]`, { timeout: LIMIT });

  step("fleet page counts the firing alerts apart from the acknowledged one");
  await page.goto(`${url}/`);
  await page.waitForFunction((s) => {
    const cell = document.querySelector(`#fleet-table tr[data-site="${s}"] .alarms`);
    const badge = cell?.querySelector(".badge.firing");
    return badge?.textContent.trim() === "2" && badge.dataset.severity === "warning"
      && cell.querySelector(".severities").textContent === "1 warning, 1 info"
      && cell.querySelector(".quiet")?.textContent === "1 acknowledged";
  }, site, { timeout: LIMIT });

  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  if (foreign.length) throw new Error(`the page fetched from elsewhere: ${foreign.join(", ")}`);
  console.log("dashboard: ok");
} catch (e) {
  failed = true;
  console.error(`dashboard: FAILED: ${e.message}`);
  for (const page of context.pages()) {
    const info = await page.evaluate(() => ["#status", "#history-info", "#alerts-message", "#ack-error", "#silence-error", "#episodes-info"]
      .map((sel) => document.querySelector(sel)?.textContent)).catch(() => []);
    console.error(`page status: ${info[0]}; history: ${info[1]}; alerts: ${info[2]}; ack: ${info[3]}; silence: ${info[4]}; episodes: ${info[5]}`);
    await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);

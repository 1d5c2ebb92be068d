// Drives the dashboard in headless Chromium against a running collector.
// Environment: DASHBOARD_URL (http://127.0.0.1:PORT), BESS_TOKEN, SITE,
// SCREENSHOT_DIR, CHROMIUM (default /usr/bin/chromium).
// Checks: the fleet page lists the site as online; on the site page a live
// value changes; the history chart renders samples. Exits non-zero on failure.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const url = process.env.DASHBOARD_URL;
const token = process.env.BESS_TOKEN;
const site = process.env.SITE || "site-001";
const shots = process.env.SCREENSHOT_DIR || ".";
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
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
  step("fleet page shows the active alarm of the slow unit");
  await page.waitForFunction((s) => document.querySelector(`#fleet-table tr[data-site="${s}"] .alarms .badge`)?.textContent.trim() === "1"
    && document.querySelector(`#fleet-table tr[data-site="${s}"] .alarms`).title.includes("bms-2/alarms"), site, { timeout: LIMIT });
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

  if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
  if (foreign.length) throw new Error(`the page fetched from elsewhere: ${foreign.join(", ")}`);
  console.log("dashboard: ok");
} catch (e) {
  failed = true;
  console.error(`dashboard: FAILED: ${e.message}`);
  for (const page of context.pages()) {
    const info = await page.evaluate(() => [document.querySelector("#status")?.textContent, document.querySelector("#history-info")?.textContent]).catch(() => []);
    console.error(`page status: ${info[0]}; history: ${info[1]}`);
    await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);

//! The dashboard in headless Chromium against a running system: simulator →
//! edge → broker → collector (with access control on and alert rules) →
//! the page. The browser part is `tests/browser/dashboard.spec.mjs`
//! (Playwright, run with `node`); it checks that the fleet page loads, a
//! live value changes and the history chart renders; that a device alarm
//! and rule episodes show with their severity; that a read token's
//! acknowledgement is refused with a message, and an operate token
//! acknowledges, silences, ends the silence and reads the alert history.
//! It leaves screenshots in the scratch dir (kept in
//! `target/test-artifacts/dashboard/`).

use anyhow::Context as _;
use std::path::Path;
use std::time::Duration;

use bess_tests::scenario::{start_edge, start_sim_with_config, wait_for_ledger, write_edge_config};
use bess_tests::{binary, workspace_root, Broker, Proc, Scratch, TestDatabase};

const CHROMIUM: &str = "/usr/bin/chromium";
const SITE: &str = "site-001";
/// The screenshots the browser part takes.
const SHOTS: [&str; 4] = ["fleet.png", "site.png", "alerts.png", "history.png"];

/// Two rules that hold for every simulated reading (a state of charge is
/// never negative), so each opens an episode with the first batch: one
/// critical, one info, either side of the device alarm's warning.
const RULES: &str = r#"
[[rule]]
name = "bms1-soc-reported"
summary = "bms-1 reports a state of charge"
severity = "critical"
device = "bms-1"
point = "soc"
kind = "threshold"
above = -1.0

[[rule]]
name = "bms3-soc-reported"
summary = "bms-3 reports a state of charge"
severity = "info"
device = "bms-3"
point = "soc"
kind = "threshold"
above = -1.0
"#;

/// A token of the site with `role`, named `name`.
fn create_token(database_url: &str, name: &str, role: &str) -> anyhow::Result<String> {
    let created = std::process::Command::new(binary("bess-collector"))
        .args([
            "token",
            "create",
            "--name",
            name,
            "--sites",
            SITE,
            "--role",
            role,
            "--database-url",
            database_url,
        ])
        .output()
        .context("running bess-collector token create")?;
    anyhow::ensure!(
        created.status.success(),
        "token create: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    Ok(String::from_utf8(created.stdout)?.trim().to_owned())
}

/// Fails with the command that installs what the browser test needs.
fn require_browser_tools(browser_dir: &Path) -> anyhow::Result<()> {
    if !Path::new(CHROMIUM).exists() {
        anyhow::bail!(
            "{CHROMIUM} is missing; install it with: apt-get update && apt-get install -y chromium"
        );
    }
    if !browser_dir.join("node_modules/playwright-core").exists() {
        anyhow::bail!(
            "playwright-core is missing; install it with: (cd {} && npm ci --no-audit --no-fund)",
            browser_dir.display()
        );
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        anyhow::bail!("node is missing; install it with: apt-get install -y nodejs npm");
    }
    Ok(())
}

#[tokio::test]
async fn the_dashboard_shows_the_fleet_live_values_history_and_alerts() -> anyhow::Result<()> {
    let browser_dir = workspace_root().join("tests/browser");
    require_browser_tools(&browser_dir)?;

    let scratch = Scratch::new("dashboard");
    let broker = Broker::start(&scratch.dir).await?;
    let database = TestDatabase::create("dashboard").await?;
    // Unit 2 answers slowly: its alarm word carries the comm-fault bit, an
    // active alarm the fleet page must show.
    let sim_config = scratch.path("sim.toml");
    std::fs::write(
        &sim_config,
        "[[fault]]\nname = \"slow-unit\"\nkind = \"slow\"\ndelay = \"20ms\"\nunits = [2]\n",
    )?;
    let sim = start_sim_with_config(&scratch.dir, 3, 11, Some(&sim_config)).await?;
    let rules = scratch.path("rules.toml");
    std::fs::write(&rules, RULES)?;

    let mut collector = Proc::spawn(
        "collector",
        &binary("bess-collector"),
        &[
            "run",
            "--database-url",
            &database.url(),
            "--brokers",
            &broker.brokers(),
            "--listen",
            "127.0.0.1:0",
            "--session-timeout",
            "3s",
            "--auth",
            "required",
            "--batch-signatures",
            "optional",
            "--pin-first-key",
            "--rules",
            rules.to_str().context("rules path")?,
        ],
        &scratch.dir,
    )?;
    let api = collector.wait_for_url("bess-collector: API on ").await?;
    let token = create_token(&database.url(), "browser", "read")?;
    let operate_token = create_token(&database.url(), "browser-operator", "operate")?;

    let config = write_edge_config(&scratch.dir, sim.addr, &broker.brokers(), "")?;
    let (mut edge, _) =
        start_edge(&scratch.dir, "edge", &config, &scratch.path("record.jsonl")).await?;
    // Some history first, so the history chart has samples to draw.
    wait_for_ledger(&database.url(), 5, Duration::from_secs(90))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}", edge.log_tail(20)))?;

    let output = tokio::process::Command::new("node")
        .arg(browser_dir.join("dashboard.spec.mjs"))
        .current_dir(&browser_dir)
        .env("DASHBOARD_URL", &api)
        .env("BESS_TOKEN", &token)
        .env("BESS_OPERATE_TOKEN", &operate_token)
        .env("SITE", SITE)
        .env("SCREENSHOT_DIR", &scratch.dir)
        .env("CHROMIUM", CHROMIUM)
        .kill_on_drop(true)
        .output()
        .await
        .context("running node")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "browser test failed:\n{stdout}\n{stderr}\ncollector:\n{}",
        collector.log_tail(20)
    );
    assert!(stdout.contains("dashboard: ok"), "{stdout}");
    println!("{stdout}");
    for shot in SHOTS {
        let path = scratch.path(shot);
        assert!(
            std::fs::metadata(&path).is_ok_and(|m| m.len() > 0),
            "no screenshot {}",
            path.display()
        );
    }
    // The scratch dir goes away with a passing test; keep the screenshots as artefacts.
    let artefacts = workspace_root().join("target/test-artifacts/dashboard");
    std::fs::create_dir_all(&artefacts)?;
    for shot in SHOTS {
        std::fs::copy(scratch.path(shot), artefacts.join(shot))?;
    }
    println!("screenshots in {}", artefacts.display());

    edge.terminate(Duration::from_secs(30)).await?;
    collector.terminate(Duration::from_secs(30)).await?;
    drop(sim);
    Ok(())
}

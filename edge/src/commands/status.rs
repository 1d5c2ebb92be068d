//! `bess-edge status`: ask a running agent's status server for `/status`
//! and print it as tables (devices, buffer, uplink, clock, totals), or as
//! the raw JSON with `--json`.

use anyhow::Context as _;
use std::time::Duration;

pub async fn status(url: &str, json: bool) -> anyhow::Result<()> {
    let url = format!("{}/status", url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let body: serde_json::Value = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("asking {url}: is `bess-edge run` running there? (see `systemctl status bess-edge`)"))?
        .error_for_status()?
        .json()
        .await
        .with_context(|| format!("reading {url}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(());
    }
    let now = bess_edge::clock::now_ms();
    let ago = |v: &serde_json::Value| match v.as_i64() {
        Some(ms) => format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(((now - ms).max(0) / 1000) as u64))
        ),
        None => "never".into(),
    };
    println!("site {}", body["site"].as_str().unwrap_or("?"));
    println!(
        "\n{:<16} {:<8} {:>14} {:>14} {:>8} {:>7}  last error",
        "device", "health", "last poll", "last good", "polls", "errors"
    );
    for d in body["devices"].as_array().into_iter().flatten() {
        let health = if d["online"].as_bool() == Some(true) {
            "online"
        } else {
            "OFFLINE"
        };
        println!(
            "{:<16} {:<8} {:>14} {:>14} {:>8} {:>7}  {}",
            d["name"].as_str().unwrap_or("?"),
            health,
            ago(&d["last_poll_ms"]),
            ago(&d["last_good_ms"]),
            d["polls"].as_u64().unwrap_or(0),
            d["errors"].as_u64().unwrap_or(0),
            d["last_error"].as_str().unwrap_or("-")
        );
    }
    let buffer = &body["buffer"];
    let uplink = &body["uplink"];
    println!("\nbuffer");
    println!("  batches waiting     {}", buffer["batches"]);
    println!("  bytes waiting       {}", buffer["bytes"]);
    println!(
        "  oldest unsent batch {} (sealed {})",
        buffer["oldest_seq"]
            .as_u64()
            .map_or("-".into(), |s| s.to_string()),
        ago(&buffer["oldest_sealed_at_ms"])
    );
    println!("uplink");
    println!("  connected           {}", uplink["connected"]);
    println!(
        "  last acknowledged   {} ({})",
        uplink["last_acked_seq"]
            .as_u64()
            .map_or("-".into(), |s| s.to_string()),
        ago(&uplink["last_acked_at_ms"])
    );
    println!(
        "  last error          {}",
        uplink["last_error"].as_str().unwrap_or("-")
    );
    let clock = &body["clock"];
    println!("clock");
    println!("  trusted             {}", clock["trusted"]);
    println!("  steps detected      {}", clock["steps"]);
    if let Some(step) = clock["last_step_ms"].as_i64() {
        println!(
            "  last step           {step} ms ({})",
            ago(&clock["last_step_at_ms"])
        );
    }
    let totals = &body["totals"];
    println!(
        "totals: read {} samples, sealed {} in {} batches, {} batches acknowledged",
        totals["samples_read"],
        totals["samples_sealed"],
        totals["batches_sealed"],
        totals["batches_acked"]
    );
    Ok(())
}

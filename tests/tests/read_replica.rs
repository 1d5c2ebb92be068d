//! Read scaling: a collector writing to a primary and answering history
//! queries from a real streaming replica (`--read-database-url`), with the
//! real binaries. While the replica's replay is paused its history trails
//! the stream — `/latest` stays current, history stops at the replica's
//! position — and once replay resumes the history served equals the
//! primary's. Every sample is still stored once.

use anyhow::Context as _;
use std::time::Duration;

use bess_tests::postgres::PrivatePostgres;
use bess_tests::scenario::*;
use bess_tests::*;

const LONG: Duration = Duration::from_secs(120);

/// Samples of site-001/bms-1/soc the primary holds, from its own tables.
async fn stored_soc_samples(database_url: &str) -> anyhow::Result<i64> {
    let db = connect(database_url).await?;
    let row = db
        .query_one(
            "SELECT count(*) FROM frames f
               JOIN layouts l USING (layout_id)
               JOIN sites s ON s.site_id = l.site_id
               JOIN devices d ON d.device_id = l.device_id
               JOIN points p ON p.point_id = ANY (l.point_ids)
             WHERE s.name = 'site-001' AND d.name = 'bms-1' AND p.name = 'soc'
               AND p.device_id = d.device_id",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// The raw soc samples the API serves (from the replica), as timestamps.
async fn served_soc(api: &str) -> anyhow::Result<Vec<i64>> {
    let (code, body) = get_json(&format!(
        "{api}/api/v1/series?point=site-001/bms-1/soc&from=2020-01-01T00:00:00Z&to=2100-01-01T00:00:00Z&resolution=raw&max_points=100000&format=columns"
    ))
    .await?;
    anyhow::ensure!(code == 200, "series: {code} {body}");
    Ok(serde_json::from_value(body["ts_ms"].clone())?)
}

/// The newest soc timestamp `/latest` serves (from the stream).
async fn latest_soc(api: &str) -> anyhow::Result<i64> {
    let (code, body) = get_json(&format!("{api}/api/v1/sites/site-001/latest")).await?;
    anyhow::ensure!(code == 200, "latest: {code} {body}");
    let point = body["points"]
        .as_array()
        .context("points")?
        .iter()
        .find(|p| p["device"] == "bms-1" && p["name"] == "soc")
        .context("bms-1/soc in /latest")?;
    let ts = time::OffsetDateTime::parse(
        point["ts"].as_str().context("ts")?,
        &time::format_description::well_known::Rfc3339,
    )?;
    Ok((ts.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_comes_from_the_replica_and_catches_up_while_latest_stays_current(
) -> anyhow::Result<()> {
    let scratch = Scratch::new("read-replica");
    let primary = PrivatePostgres::start(&scratch.dir).await?;
    let database_url = primary.create_database("bess").await?;
    let replica = primary.start_replica(&scratch.path("replica")).await?;
    let replica_url = replica.url("bess");

    let broker = Broker::start(&scratch.dir).await?;
    let sim = start_sim(&scratch.dir, 3, 21).await?;
    let (mut collector, api) = start_collector_with(
        &scratch.dir,
        "collector",
        &database_url,
        &broker.brokers(),
        &["--read-database-url", &replica_url],
    )
    .await?;
    let config = write_edge_config(&scratch.dir, sim.addr, &broker.brokers(), "")?;
    let record = scratch.path("record.jsonl");
    let (edge, _status) = start_edge(&scratch.dir, "edge", &config, &record).await?;
    wait_for_ledger(&database_url, 4, LONG).await?;

    // The replica reports itself in /health.
    let (code, health) = get_json(&format!("{api}/health?detail=storage")).await?;
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["read_replica"]["status"], "ok", "{health}");
    assert_eq!(health["read_replica"]["in_recovery"], true, "{health}");

    // Pause the replica's replay: history stops where it is.
    let replica_db = connect(&replica.url("postgres")).await?;
    replica_db
        .batch_execute("SELECT pg_wal_replay_pause()")
        .await?;
    let frozen = wait_for("the paused replica to hold still", LONG, || async {
        let a = served_soc(&api).await.ok()?;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let b = served_soc(&api).await.ok()?;
        (a == b && !a.is_empty()).then_some(a)
    })
    .await?;
    let before = stored_soc_samples(&database_url).await?;
    wait_for("the primary to move on", LONG, || async {
        (stored_soc_samples(&database_url).await.ok()? >= before + 5).then_some(())
    })
    .await?;
    // The stream keeps /latest current; the replica's history trails it.
    let latest = latest_soc(&api).await?;
    assert!(
        latest > *frozen.last().unwrap(),
        "/latest ({latest}) must be newer than the paused replica's history ({})",
        frozen.last().unwrap()
    );
    assert_eq!(
        served_soc(&api).await?,
        frozen,
        "history is read from the paused replica, not the primary"
    );
    // Writes still go to the primary: a token can be made while the
    // replica, which refuses writes, is paused.
    let client = reqwest::Client::new();
    let created = client
        .post(format!("{api}/api/v1/tokens"))
        .json(&serde_json::json!({ "name": "replica-test", "role": "read", "sites": "*" }))
        .send()
        .await?;
    assert!(
        created.status().is_success(),
        "token created on the primary: {} {}",
        created.status(),
        created.text().await.unwrap_or_default()
    );

    // Resume replay; every sample is stored once on the primary, and the
    // history served catches up with it.
    replica_db
        .batch_execute("SELECT pg_wal_replay_resume()")
        .await?;
    stop_and_count(edge, &[record], &database_url, 0).await?;
    let primary_soc = stored_soc_samples(&database_url).await?;
    let served = wait_for("the replica to catch up", LONG, || async {
        let served = served_soc(&api).await.ok()?;
        (served.len() as i64 == primary_soc).then_some(served)
    })
    .await?;
    let mut sorted = served.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, served, "in order, each timestamp once");
    assert!(collector.is_running(), "{}", collector.log_tail(20));
    Ok(())
}

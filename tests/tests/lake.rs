//! The history lake end to end on real processes: `bess-sim` → `bess-edge`
//! → Tansu → `bess-collector run` → PostgreSQL → `bess-collector export` →
//! a local S3 server (moto). The exporter is killed with SIGKILL while it
//! works, then two instances share the work; the collector is down for a
//! while, and later the site's link is cut: each time a backlog reaches the
//! database after its hour's object was written. At the end the lake,
//! read by pyarrow + DuckDB, holds every stored sample once, and the
//! database every sample the edge recorded once.

use std::time::Duration;

use bess_tests::audit::{load_record, load_stored, reconcile, unrecorded_batches};
use bess_tests::lake::{compare, load_database, read_lake};
use bess_tests::proxy::LinkProxy;
use bess_tests::scenario::*;
use bess_tests::*;

const LONG: Duration = Duration::from_secs(120);
const BUCKET: &str = "lake";

/// A broker that clients reach only through a [`LinkProxy`] (the broker
/// advertises the proxy's address), so cutting the proxy cuts the site's link.
async fn broker_behind_link(scratch: &Scratch) -> anyhow::Result<(LinkProxy, Broker)> {
    let proxy_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let broker_port = free_port();
    let proxy = LinkProxy::start(proxy_listener, ([127, 0, 0, 1], broker_port).into())?;
    let broker = Broker::start_advertising(&scratch.dir, broker_port, proxy.addr.port()).await?;
    Ok((proxy, broker))
}

/// An exporter process that also rewrites the open hour (so it is busy
/// uploading all the time, and the test need not wait for an hour to end).
async fn start_exporter(
    scratch: &Scratch,
    name: &str,
    database_url: &str,
    s3: &S3Store,
) -> anyhow::Result<Proc> {
    let bucket = format!("s3://{BUCKET}/fleet");
    let mut proc = Proc::spawn_with_env(
        name,
        &binary("bess-collector"),
        &[
            "export",
            "--database-url",
            database_url,
            "--bucket",
            &bucket,
            "--endpoint",
            &s3.endpoint,
            "--grace",
            "0s",
            "--interval",
            "200ms",
            "--open-hours",
        ],
        &s3.env(),
        &scratch.dir,
    )?;
    proc.wait_for_line("bess-collector: exporting to ", LONG)
        .await?;
    Ok(proc)
}

/// Objects written so far, rewrites included.
async fn lake_writes(db: &tokio_postgres::Client) -> i64 {
    db.query_one(
        "SELECT coalesce(sum(writes), 0)::int8 FROM lake_exports",
        &[],
    )
    .await
    .map(|r| r.get(0))
    .unwrap_or(0)
}

/// Wait for `n` lake writes; on a timeout the error shows the exporters' logs.
async fn wait_for_writes(
    db: &tokio_postgres::Client,
    n: i64,
    exporters: &[&Proc],
) -> anyhow::Result<()> {
    let waited = wait_for(&format!("{n} lake writes"), LONG, || async move {
        (lake_writes(db).await >= n).then_some(())
    })
    .await;
    waited.map_err(|e| {
        let logs: Vec<String> = exporters.iter().map(|p| p.log_tail(20)).collect();
        anyhow::anyhow!("{e}\n{}", logs.join("\n"))
    })
}

async fn wait_for_pending(db: &tokio_postgres::Client, n: i64) -> anyhow::Result<()> {
    wait_for(
        &format!("{n} site-hours pending export"),
        LONG,
        || async move {
            let pending: i64 = db
                .query_one("SELECT count(*) FROM lake_pending", &[])
                .await
                .ok()?
                .get(0);
            (pending == n).then_some(())
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_holds_every_stored_sample_once_through_kills_and_a_late_backlog(
) -> anyhow::Result<()> {
    let scratch = Scratch::new("lake");
    let database = TestDatabase::create("lake").await?;
    // Broker and link before the S3 server: in the other order every
    // connection through the proxy dropped a few seconds in (cause not found).
    let (proxy, _broker) = broker_behind_link(&scratch).await?;
    let brokers = proxy.addr.to_string();
    let s3 = S3Store::start(&scratch.dir).await?;
    s3.create_bucket(BUCKET).await?;

    let sim = start_sim(&scratch.dir, 3, 21).await?;
    let (mut collector, _api) =
        start_collector(&scratch.dir, "collector-0", &database.url(), &brokers).await?;
    let config = write_edge_config(&scratch.dir, sim.addr, &brokers, "")?;
    let record = scratch.path("record.jsonl");
    let (mut edge, status) = start_edge(&scratch.dir, "edge", &config, &record).await?;
    wait_for_ledger(&database.url(), 3, LONG).await?;
    let db = database.client().await?;

    // An exporter, killed while it keeps rewriting the hour.
    let mut first = start_exporter(&scratch, "exporter-0", &database.url(), &s3).await?;
    wait_for_writes(&db, 3, &[&first]).await?;
    first.kill9();

    // Two instances from now on, sharing the site-hours.
    let second = start_exporter(&scratch, "exporter-1", &database.url(), &s3).await?;
    let third = start_exporter(&scratch, "exporter-2", &database.url(), &s3).await?;
    let exporters = [&second, &third];
    let before_cut = lake_writes(&db).await;
    wait_for_writes(&db, before_cut + 2, &exporters).await?;

    // The collector is down for a while: the site's batches wait in Kafka,
    // and the hour's object is written without them (nothing left pending).
    collector.kill9();
    let acked = edge_acked(&status).await.unwrap_or(0);
    wait_for("a backlog in Kafka", LONG, || {
        let status = status.clone();
        async move { edge_acked(&status).await.filter(|n| *n >= acked + 6) }
    })
    .await?;
    wait_for_pending(&db, 0).await?;
    let exported_before_backlog = lake_writes(&db).await;
    // Back up: the backlog is stored late and its hour written again.
    let (_collector, _api) =
        start_collector(&scratch.dir, "collector-1", &database.url(), &brokers).await?;
    wait_for_writes(&db, exported_before_backlog + 1, &exporters).await?;

    // The site's link goes down: the edge buffers; the hour's object is
    // written meanwhile without what the edge holds.
    proxy.cut();
    wait_for("a backlog in the edge buffer", LONG, || {
        let status = status.clone();
        async move {
            let (_, s) = get_json(&format!("{status}/status")).await.ok()?;
            (s["buffer"]["batches"].as_u64()? >= 4).then_some(())
        }
    })
    .await?;
    wait_for_pending(&db, 0).await?;
    let exported_before_link = lake_writes(&db).await;
    proxy.restore();
    wait_for_writes(&db, exported_before_link + 1, &exporters).await?;

    // Stop the site, let the collector store every recorded batch.
    let exit = edge.terminate(Duration::from_secs(60)).await?;
    assert!(exit.success(), "edge exit {exit}\n{}", edge.log_tail(30));
    let recorded = load_record(&[record.as_path()])?;
    assert!(recorded.count > 0, "the edge recorded nothing");
    wait_for("every recorded batch in the ledger", LONG, || {
        let (db, recorded) = (&db, &recorded);
        async move {
            let ledger: std::collections::HashSet<i64> = db
                .query("SELECT seq FROM batch_ledger", &[])
                .await
                .ok()?
                .iter()
                .map(|r| r.get(0))
                .collect();
            recorded.seqs.is_subset(&ledger).then_some(())
        }
    })
    .await?;
    let stored = load_stored(&db).await?;
    let unrecorded = unrecorded_batches(&db, &recorded).await?;
    reconcile(&recorded, &stored).assert_exactly_once(0, unrecorded.len());

    // The exporters catch up: nothing pending, then the lake equals the database.
    wait_for_pending(&db, 0).await?;
    let rewrites: i64 = db
        .query_one("SELECT max(writes)::int8 FROM lake_exports", &[])
        .await?
        .get(0);
    assert!(rewrites > 1, "the hour was rewritten as data arrived");
    let lake = read_lake(&s3.endpoint, &format!("{BUCKET}/fleet/samples"))?;
    assert!(lake.misplaced.is_empty(), "{:?}", lake.misplaced.first());
    let in_db = load_database(&db).await?;
    let verdict = compare(&in_db, &lake);
    eprintln!(
        "recorded {} samples, stored {}, in the lake {} in {} files, missing {}, doubled {}",
        recorded.count,
        verdict.stored,
        verdict.in_lake,
        lake.files,
        verdict.missing.len(),
        verdict.doubled.len()
    );
    verdict.assert_exactly_once();
    assert_eq!(verdict.stored, stored.rows);
    let (bytes, rows): (i64, i64) = db
        .query_one(
            "SELECT sum(bytes)::int8, sum(rows)::int8 FROM lake_exports",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))?;
    eprintln!(
        "lake: {bytes} bytes for {rows} simulator samples ({:.2} bytes/sample)",
        bytes as f64 / rows as f64
    );
    Ok(())
}

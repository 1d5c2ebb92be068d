//! Signed batches across real processes: `bess-edge` signs with the key
//! `bess-edge key` created, an admin enrolls it with `bess-collector site
//! enroll`, and a collector that requires signatures stores every sample
//! the edge read exactly once, while forged, unsigned and foreign-keyed
//! batches for the same site are set aside and counted per reason; after
//! `bess-collector site revoke` the running collector refuses the edge's
//! next batches within seconds and stores nothing more.

use anyhow::Context as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::process::Command;
use std::time::Duration;

use bess_protocol::*;
use bess_tests::audit::{load_record, load_stored, reconcile};
use bess_tests::scenario::{
    ledger_count, start_collector_with, start_edge, start_sim, wait_for_ledger, write_edge_config,
};
use bess_tests::*;

fn run_ok(dir: &std::path::Path, program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(binary(program))
        .args(args)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running {program}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "{program} {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// A batch for `site-001` that did not come from its edge.
fn forged(seq: u64, catalog_hash: CatalogHash) -> Batch {
    Batch {
        site: SiteId::new("site-001").unwrap(),
        seq: BatchSeq(seq),
        catalog_hash,
        catalog: None,
        frames: vec![],
        gaps: vec![Gap {
            device: 0,
            first_ts_ms: 1_764_000_000_000,
            last_ts_ms: 1_764_000_001_000,
            samples: 1,
            reason: GapReason::DiskCap,
        }],
    }
}

fn rejected(metrics: &str, reason: &str) -> f64 {
    prometheus_value(
        metrics,
        &format!("bess_collector_messages_rejected_by_reason_total{{reason=\"{reason}\"}}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_sites_own_signed_batches_are_stored_and_revocation_stops_them(
) -> anyhow::Result<()> {
    let scratch = Scratch::new("signatures");
    let broker = Broker::start(&scratch.dir).await?;
    let database = TestDatabase::create("signatures").await?;
    let sim = start_sim(&scratch.dir, 3, 5).await?;

    // The site's key, created by the technician's command, enrolled by an admin.
    let config = write_edge_config(&scratch.dir, sim.addr, &broker.brokers(), "")?;
    let shown = run_ok(
        &scratch.dir,
        "bess-edge",
        &["key", "--config", config.to_str().context("path")?],
    )?;
    assert!(shown.starts_with("created "), "{shown}");
    let public_key = shown
        .lines()
        .find_map(|l| l.strip_prefix("public key:"))
        .context("public key line")?
        .trim()
        .to_owned();
    let enrolled = run_ok(
        &scratch.dir,
        "bess-collector",
        &[
            "site",
            "enroll",
            "site-001",
            "--public-key",
            &public_key,
            "--database-url",
            &database.url(),
        ],
    )?;
    assert!(enrolled.starts_with("enrolled key "), "{enrolled}");
    let key_id = enrolled
        .split_whitespace()
        .nth(2)
        .context("key id")?
        .to_owned();

    let (mut collector, api) = start_collector_with(
        &scratch.dir,
        "collector",
        &database.url(),
        &broker.brokers(),
        &["--batch-signatures", "required"],
    )
    .await?;
    let record = scratch.path("record.jsonl");
    let (mut edge, _) = start_edge(&scratch.dir, "edge", &config, &record).await?;
    wait_for_ledger(&database.url(), 3, Duration::from_secs(90))
        .await
        .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", edge.log_tail(30), collector.log_tail(30)))?;

    // Forgeries for the same site, beside the edge's batches on its partition.
    let db = database.client().await?;
    let catalog_hash: i64 = db
        .query_one("SELECT catalog_hash FROM catalogs LIMIT 1", &[])
        .await?
        .get(0);
    let hash = CatalogHash(catalog_hash as u64);
    let stranger = SiteSigner::from_seed([42; 32]);
    let unsigned = forged(1 << 40, hash).encode(Codec::Zstd)?;
    let foreign =
        forged((1 << 40) + 1, hash).encode_signed(Codec::Zstd, Effort::Fast, &stranger)?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .create()?;
    for payload in [&unsigned, &foreign] {
        producer
            .send(
                FutureRecord::to("bess.telemetry")
                    .key("site-001")
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    let metrics_url = format!("{api}/metrics");
    wait_for(
        "both forgeries set aside",
        Duration::from_secs(60),
        || async {
            let m = get_text(&metrics_url).await.ok()?;
            (rejected(&m, "unsigned") >= 1.0 && rejected(&m, "unknown_key") >= 1.0).then_some(())
        },
    )
    .await?;

    // Every sample the edge read, stored exactly once; nothing of the forgeries.
    let exit = edge.terminate(Duration::from_secs(30)).await?;
    assert!(exit.success(), "edge exit: {exit}\n{}", edge.log_tail(30));
    let recorded = load_record(&[record.as_path()])?;
    assert!(recorded.count > 0);
    wait_for_ledger(
        &database.url(),
        recorded.seqs.len() as i64,
        Duration::from_secs(60),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}", collector.log_tail(30)))?;
    let stored = load_stored(&db).await?;
    reconcile(&recorded, &stored).assert_exactly_once(0, 0);
    assert_eq!(stored.rows, recorded.count);
    assert_eq!(ledger_count(&db).await, recorded.seqs.len() as i64);
    let gaps: i64 = db.query_one("SELECT count(*) FROM gaps", &[]).await?.get(0);
    assert_eq!(gaps, 0, "no forged gap record was stored");
    let metrics = get_text(&metrics_url).await?;
    assert!(
        prometheus_value(&metrics, "bess_collector_batches_verified_total")
            >= recorded.seqs.len() as f64
    );

    // Revoked: the running collector refuses the edge's next batches.
    let revoked = run_ok(
        &scratch.dir,
        "bess-collector",
        &[
            "site",
            "revoke",
            "site-001",
            &key_id,
            "--database-url",
            &database.url(),
        ],
    )?;
    assert!(revoked.starts_with("revoked key "), "{revoked}");
    let listed = run_ok(
        &scratch.dir,
        "bess-collector",
        &[
            "site",
            "keys",
            "site-001",
            "--database-url",
            &database.url(),
        ],
    )?;
    assert!(
        listed.contains(&key_id) && listed.contains("revoked"),
        "{listed}"
    );
    // In force once the collector has loaded the keys' version after the
    // revocation (enrolment 1, revocation 2).
    wait_for(
        "the revocation in force",
        Duration::from_secs(30),
        || async {
            let m = get_text(&metrics_url).await.ok()?;
            (prometheus_value(&m, "bess_collector_site_keys_version") >= 2.0).then_some(())
        },
    )
    .await?;
    let before = ledger_count(&db).await;
    let (mut edge, _) = start_edge(
        &scratch.dir,
        "edge-after-revoke",
        &config,
        &scratch.path("record-2.jsonl"),
    )
    .await?;
    wait_for(
        "the edge's batches refused as revoked",
        Duration::from_secs(60),
        || async {
            let m = get_text(&metrics_url).await.ok()?;
            (rejected(&m, "revoked_key") >= 1.0).then_some(())
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}\n{}\n{}", edge.log_tail(30), collector.log_tail(30)))?;
    edge.terminate(Duration::from_secs(30)).await?;
    assert_eq!(
        ledger_count(&db).await,
        before,
        "nothing stored after the revocation"
    );
    collector.terminate(Duration::from_secs(30)).await?;
    Ok(())
}

//! The storage report operators read (`GET /health?detail=storage`,
//! `bess-collector check`), each body on plain PostgreSQL and on
//! TimescaleDB: it names the backend and its upkeep, and a policy job that
//! stopped running is reported as a problem and fails `check`.

#[macro_use]
mod support;

use bess_collector::message::IngestMessage;
use bess_collector::storage_health::{self, StorageHealth};
use bess_collector::writer::SampleWriter;
use bess_protocol::*;
use bess_tests::TestDatabase;
use support::Backend;

/// 2026-01-01T00:00:00Z
const T0: i64 = 1_767_225_600_000;

fn batch() -> Batch {
    let catalog = Catalog {
        devices: vec![DeviceInfo {
            name: "bms-1".into(),
            model: "test".into(),
        }],
        groups: vec![GroupInfo {
            device: 0,
            name: "fast".into(),
            interval_ms: 1000,
            points: vec![PointInfo::new("soc", "%", PointKind::Analog, 0.01, 0.0)],
        }],
    };
    Batch {
        site: SiteId::new("site-h").unwrap(),
        seq: BatchSeq(1),
        catalog_hash: catalog.hash(),
        catalog: Some(catalog),
        frames: (0..600)
            .map(|i| Frame {
                group: GroupIndex(0),
                ts_ms: T0 + i * 1000,
                values: vec![Reading::Int(5_000 + i % 50)],
            })
            .collect(),
        gaps: vec![],
    }
}

async fn stored(backend: Backend, test: &str) -> (TestDatabase, deadpool_postgres::Pool) {
    let database = backend.database(test).await;
    let (pool, storage) = backend.prepare(&database, 2).await;
    SampleWriter::new(pool.clone(), storage)
        .write(&[IngestMessage {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            key: None,
            payload: batch().encode(Codec::Zstd).unwrap(),
            received_ms: 0,
        }])
        .await
        .unwrap();
    backend.refresh_rollups(&pool).await;
    (database, pool)
}

async fn report(backend: Backend, pool: &deadpool_postgres::Pool) -> StorageHealth {
    let client = pool.get().await.unwrap();
    storage_health::report(&**client, backend.storage())
        .await
        .unwrap()
}

fn check(database: &TestDatabase) -> (Option<i32>, String) {
    let out = std::process::Command::new(bess_tests::binary("bess-collector"))
        .args(["check", "--database-url", &database.url()])
        .output()
        .expect("run bess-collector check");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

on_both_backends!(the_storage_report_names_the_backend_and_its_upkeep);
async fn the_storage_report_names_the_backend_and_its_upkeep(backend: Backend) {
    let (database, pool) = stored(backend, "health_report").await;
    if backend == Backend::TimescaleDb {
        let client = pool.get().await.unwrap();
        client
            .batch_execute("SELECT compress_chunk(c) FROM show_chunks('frames') c")
            .await
            .unwrap();
    }
    let health = report(backend, &pool).await;
    assert_eq!(health.backend, backend.storage().as_str());
    match backend {
        Backend::PostgreSql => {
            assert!(health.is_healthy(), "{health}");
            let plain = health.postgresql.as_ref().expect("partition report");
            assert!(plain.partitions >= 1, "{health}");
            assert_eq!(plain.rollup_minutes_pending, 0, "{health}");
            assert!(health.timescaledb.is_none());
        }
        Backend::TimescaleDb => {
            let t = health.timescaledb.as_ref().expect("TimescaleDB report");
            assert!(t.version.starts_with('2'), "{health}");
            assert_eq!((t.chunks, t.compressed_chunks), (1, 1), "{health}");
            assert!(t.compression_ratio.is_some_and(|r| r > 1.0), "{health}");
            let mut jobs: Vec<(&str, &str)> = t
                .jobs
                .iter()
                .map(|j| (j.proc_name.as_str(), j.target.as_str()))
                .collect();
            jobs.sort_unstable();
            assert_eq!(
                jobs,
                [
                    ("policy_compression", "frames"),
                    ("policy_refresh_continuous_aggregate", "rollup_1h"),
                    ("policy_refresh_continuous_aggregate", "rollup_1m"),
                ],
                "{health}"
            );
            // Every problem is a job's own failure (a job that ran and
            // failed is reported, whatever made it fail on this server).
            for problem in &health.problems {
                assert!(problem.contains("failed its last run"), "{health}");
            }
        }
    }

    // `check` prints the same report and exits by it.
    let (code, out) = check(&database);
    assert!(
        out.contains(&format!("storage: {}", backend.storage().as_str())),
        "{out}"
    );
    if health.is_healthy() {
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("problems: none"), "{out}");
    } else {
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("PROBLEM: job"), "{out}");
    }
}

on_timescaledb!(a_policy_job_that_stopped_is_a_problem_and_fails_check);
async fn a_policy_job_that_stopped_is_a_problem_and_fails_check(backend: Backend) {
    let (database, pool) = stored(backend, "health_stopped").await;
    let client = pool.get().await.unwrap();
    client
        .batch_execute(
            "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs
             WHERE proc_name = 'policy_compression'",
        )
        .await
        .unwrap();
    let health = report(backend, &pool).await;
    assert!(!health.is_healthy());
    assert!(
        health
            .problems
            .iter()
            .any(|p| p.contains("policy_compression") && p.contains("not scheduled")),
        "{health}"
    );
    let (code, out) = check(&database);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("PROBLEM: job"), "{out}");
}

#[tokio::test]
async fn check_says_when_a_database_is_not_migrated() {
    let database = TestDatabase::create("health_unmigrated").await.unwrap();
    let (code, out) = check(&database);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("not migrated yet"), "{out}");
}

//! Storage backends: plain PostgreSQL (partitions, retention, rollups the
//! collector maintains) on the real server, and the TimescaleDB SQL
//! (hypertable, compression, policies, continuous aggregates) on PGlite with
//! TimescaleDB. The same frames give the same rollups on both.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

use bess_collector::catalog::CatalogRegistry;
use bess_collector::message::IngestMessage;
use bess_collector::storage::{
    self, FramePartitions, Resolution, RollupRow, StorageBackend, StoragePreference,
};
use bess_collector::time::timestamp;
use bess_collector::writer::SampleWriter;
use bess_protocol::*;
use bess_tests::{workspace_root, TestDatabase};

/// 2023-11-14T22:13:20Z
const T0: i64 = 1_700_000_000_000;
const STEP_MS: i64 = 5_000;
/// Frames per group: a bit over two hours at 5 s.
const FRAMES: i64 = 1_600;

fn catalog() -> Catalog {
    Catalog {
        devices: vec![DeviceInfo {
            name: "bms-1".into(),
            model: "test".into(),
        }],
        groups: vec![
            GroupInfo {
                device: 0,
                name: "fast".into(),
                interval_ms: STEP_MS as u32,
                points: vec![
                    PointInfo::new("soc", "%", PointKind::Analog, 0.01, 0.0),
                    PointInfo::new("power", "W", PointKind::Analog, 1.0, 0.0),
                ],
            },
            GroupInfo {
                device: 0,
                name: "temps".into(),
                interval_ms: STEP_MS as u32,
                points: vec![PointInfo::new("temp", "°C", PointKind::Analog, 0.1, -40.0)],
            },
        ],
    }
}

/// Deterministic frames with some missing values and float readings.
fn frames() -> Vec<Frame> {
    let mut out = Vec::new();
    for i in 0..FRAMES {
        let ts_ms = T0 + i * STEP_MS;
        let soc = if i % 97 == 13 {
            Reading::Missing(MissingReason::Timeout)
        } else {
            Reading::Int(5000 + (i * 7) % 300)
        };
        out.push(Frame {
            group: GroupIndex(0),
            ts_ms,
            values: vec![soc, Reading::Float(((i * 37) % 1000) as f64 - 500.5)],
        });
        out.push(Frame {
            group: GroupIndex(1),
            ts_ms: ts_ms + 1,
            values: vec![Reading::Int(600 + (i * 13) % 50)],
        });
    }
    out
}

fn batches() -> Vec<Batch> {
    let catalog = catalog();
    frames()
        .chunks(100)
        .enumerate()
        .map(|(i, chunk)| Batch {
            site: SiteId::new("site-r").unwrap(),
            seq: BatchSeq(i as u64 + 1),
            catalog_hash: catalog.hash(),
            catalog: (i == 0).then(|| catalog.clone()),
            frames: chunk.to_vec(),
            gaps: vec![],
        })
        .collect()
}

/// The rollups of every point at both resolutions, by point name.
async fn rollups(client: &tokio_postgres::Client) -> Vec<(String, Resolution, Vec<RollupRow>)> {
    let mut out = Vec::new();
    for name in ["soc", "power", "temp"] {
        let id: i32 = client
            .query_one("SELECT point_id FROM points WHERE name = $1", &[&name])
            .await
            .unwrap()
            .get(0);
        for resolution in [Resolution::Minute, Resolution::Hour] {
            let rows = storage::rollup_series(
                client,
                id,
                resolution,
                timestamp(T0 - 3_600_000),
                timestamp(T0 + 86_400_000),
                100_000,
            )
            .await
            .unwrap();
            out.push((name.to_owned(), resolution, rows));
        }
    }
    out
}

async fn plain_postgresql_rollups() -> Vec<(String, Resolution, Vec<RollupRow>)> {
    let database = TestDatabase::create("storage_rollups").await.unwrap();
    let pool = bess_collector::service::pool(&database.url(), 2).unwrap();
    let backend = bess_collector::service::prepare_database(&pool, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(backend, StorageBackend::PostgreSql);
    let writer = SampleWriter::new(pool.clone(), backend);
    let messages: Vec<IngestMessage> = batches()
        .iter()
        .enumerate()
        .map(|(i, b)| IngestMessage {
            topic: "t".into(),
            partition: 0,
            offset: i as i64,
            key: None,
            payload: b.encode(Codec::Zstd).unwrap(),
            received_ms: 0,
        })
        .collect();
    writer.write(&messages).await.unwrap();
    bess_collector::service::maintain_once(&pool, &FramePartitions::default(), None)
        .await
        .unwrap();
    let client = database.client().await.unwrap();
    let pending: i64 = client
        .query_one("SELECT count(*) FROM rollup_pending", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(pending, 0, "every written minute was rolled up");
    rollups(&client).await
}

#[tokio::test]
async fn plain_postgresql_partitions_frames_by_day_and_drops_them_past_retention() {
    let database = TestDatabase::create("storage_partitions").await.unwrap();
    let pool = bess_collector::service::pool(&database.url(), 2).unwrap();
    let backend = bess_collector::service::prepare_database(&pool, Duration::from_secs(5))
        .await
        .unwrap();
    let writer = SampleWriter::new(pool.clone(), backend);
    let mut batch = batches().remove(0);
    batch.frames.truncate(2);
    batch.frames[1].ts_ms = T0 + 86_400_000; // the next day
    let message = IngestMessage {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        key: None,
        payload: batch.encode(Codec::Zstd).unwrap(),
        received_ms: 0,
    };
    writer.write(&[message]).await.unwrap();
    let client = database.client().await.unwrap();
    let parts = |client: tokio_postgres::Client| async move {
        client
            .query("SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'frames'::regclass ORDER BY 1", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        parts(database.client().await.unwrap()).await,
        ["frames_20231114", "frames_20231115"]
    );
    // Upkeep creates today's and the next days' partitions and drops the old ones.
    let partitions = FramePartitions::default();
    bess_collector::service::maintain_once(
        &pool,
        &partitions,
        Some(Duration::from_secs(30 * 86_400)),
    )
    .await
    .unwrap();
    let now = parts(database.client().await.unwrap()).await;
    assert_eq!(now.len(), 1 + storage::PARTITIONS_AHEAD as usize, "{now:?}");
    assert!(!now.contains(&"frames_20231114".to_owned()));
    let frames: i64 = client
        .query_one("SELECT count(*) FROM frames", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(frames, 0);
}

/// A PGlite (PostgreSQL 17 + TimescaleDB) server on a free port.
struct PgliteTimescale {
    _child: tokio::process::Child,
    port: u16,
}

impl PgliteTimescale {
    async fn start() -> Self {
        let dir: PathBuf = workspace_root().join("deploy/tools/pglite-timescale");
        let installed = dir.join("node_modules/@electric-sql/pglite/dist/timescaledb.tar.gz");
        assert!(
            installed.exists(),
            "PGlite with TimescaleDB is not installed (missing {}): run deploy/tools/install-pglite-timescale.sh",
            installed.display()
        );
        let mut child = tokio::process::Command::new(std::env::var("BESS_NODE").unwrap_or_else(|_| "node".into()))
            .arg("server.mjs")
            .args(["--host", "127.0.0.1", "--port", "0"])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start node for PGlite ({e}); install Node.js 18+ and run deploy/tools/install-pglite-timescale.sh"));
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(addr) = line.strip_prefix("pglite-timescale: listening on ") {
                    return addr.to_owned();
                }
            }
            panic!("PGlite exited before listening");
        })
        .await
        .expect("PGlite did not start within 120 s");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let port = line.rsplit(':').next().unwrap().parse().unwrap();
        Self {
            _child: child,
            port,
        }
    }

    async fn client(&self) -> tokio_postgres::Client {
        let url = format!(
            "host=127.0.0.1 port={} user=postgres password=postgres dbname=postgres",
            self.port
        );
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .expect("connecting to PGlite");
        tokio::spawn(connection);
        client
    }
}

async fn names(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    let mut names: Vec<String> = client
        .query(sql, &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn timescaledb_storage_has_hypertable_compression_policies_and_rollups_equal_to_plain_postgresql(
) {
    let expected = plain_postgresql_rollups().await;

    let server = PgliteTimescale::start().await;
    let mut client = server.client().await;
    let applied = bess_collector::migrations::apply(&mut client, StoragePreference::Auto)
        .await
        .unwrap();
    assert_eq!(applied.backend, StorageBackend::TimescaleDb);
    assert_eq!(applied.versions, [1, 2, 3, 4, 5]);
    storage::configure_retention(
        &client,
        applied.backend,
        Some(Duration::from_secs(400 * 86_400)),
    )
    .await
    .unwrap();

    assert_eq!(
        names(
            &client,
            "SELECT hypertable_name::text FROM timescaledb_information.hypertables"
        )
        .await,
        ["frames"]
    );
    let chunk_interval: String = client
        .query_one("SELECT time_interval::text FROM timescaledb_information.dimensions WHERE hypertable_name = 'frames'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(chunk_interval, "1 day");
    let compression = names(
        &client,
        "SELECT attname::text || ':' || coalesce(segmentby_column_index::text, '-') || ':' || coalesce(orderby_column_index::text, '-')
         FROM timescaledb_information.compression_settings WHERE hypertable_name = 'frames'",
    )
    .await;
    assert_eq!(compression, ["layout_id:1:-", "ts:-:1"]);
    assert_eq!(
        names(
            &client,
            "SELECT view_name::text FROM timescaledb_information.continuous_aggregates"
        )
        .await,
        ["rollup_1h", "rollup_1m"]
    );
    let jobs = names(
        &client,
        "SELECT proc_name::text || ':' || coalesce(hypertable_name::text, '') FROM timescaledb_information.jobs WHERE proc_name LIKE 'policy_%' AND proc_name <> 'policy_job_stat_history_retention'",
    )
    .await;
    assert_eq!(jobs.len(), 4, "{jobs:?}");
    assert!(
        jobs.contains(&"policy_compression:frames".to_owned()),
        "{jobs:?}"
    );
    assert!(
        jobs.contains(&"policy_retention:frames".to_owned()),
        "{jobs:?}"
    );
    assert_eq!(
        jobs.iter()
            .filter(|j| j.starts_with("policy_refresh_continuous_aggregate"))
            .count(),
        2,
        "{jobs:?}"
    );

    // The same frames, by INSERT (PGlite has no COPY).
    let catalogs = CatalogRegistry::default();
    let site_id = catalogs.site_id(&client, "site-r").await.unwrap();
    let catalog = catalog();
    let layouts = catalogs
        .register(&mut client, site_id, catalog.hash(), &catalog)
        .await
        .unwrap();
    let tx = client.transaction().await.unwrap();
    let insert = tx
        .prepare("INSERT INTO frames (layout_id, ts, vals, status) VALUES ($1, $2, $3, $4)")
        .await
        .unwrap();
    for frame in frames() {
        let layout = &layouts[usize::from(frame.group.0)];
        let vals: Vec<Option<f64>> = layout
            .points
            .iter()
            .zip(&frame.values)
            .map(|(p, r)| r.raw().map(|raw| p.engineering(raw)))
            .collect();
        let status: Option<Vec<i16>> = frame
            .values
            .iter()
            .any(|r| matches!(r, Reading::Missing(_)))
            .then(|| {
                frame
                    .values
                    .iter()
                    .map(bess_collector::copy::status_code)
                    .collect()
            });
        tx.execute(
            &insert,
            &[&layout.layout_id, &timestamp(frame.ts_ms), &vals, &status],
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    client
        .batch_execute("CALL refresh_continuous_aggregate('rollup_1m', NULL, NULL)")
        .await
        .unwrap();
    client
        .batch_execute("CALL refresh_continuous_aggregate('rollup_1h', NULL, NULL)")
        .await
        .unwrap();
    // Compression keeps the rows readable.
    client
        .batch_execute("SELECT compress_chunk(c) FROM show_chunks('frames') c")
        .await
        .unwrap();
    let frames_count: i64 = client
        .query_one("SELECT count(*) FROM frames", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(frames_count, 2 * FRAMES);

    let actual = rollups(&client).await;
    assert_eq!(actual.len(), expected.len());
    for ((name, resolution, got), (_, _, want)) in actual.iter().zip(&expected) {
        assert!(
            !want.is_empty(),
            "{name} {resolution:?}: no rollups on plain PostgreSQL"
        );
        assert_eq!(
            got.len(),
            want.len(),
            "{name} {resolution:?}: number of buckets"
        );
        for (g, w) in got.iter().zip(want) {
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
            assert_eq!(
                (g.bucket, g.count),
                (w.bucket, w.count),
                "{name} {resolution:?}"
            );
            assert!(
                close(g.min, w.min)
                    && close(g.max, w.max)
                    && close(g.avg, w.avg)
                    && close(g.last, w.last),
                "{name} {resolution:?} at {}: timescaledb {g:?}, postgresql {w:?}",
                g.bucket
            );
        }
    }
}

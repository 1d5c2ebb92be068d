//! Storage backends on real servers. One body runs on plain PostgreSQL
//! (partitions and rollups the collector maintains) and on TimescaleDB
//! (hypertable, compression, continuous aggregates): the same frames give
//! the rollups computed from their values, and retention drops raw frames
//! while the rollups stay. Backend-specific bodies check the day partitions
//! of plain PostgreSQL, and TimescaleDB's hypertable, policies running on
//! their own schedule and late data in compressed chunks and materialized
//! buckets. The last tests start the collector on a server where the
//! TimescaleDB files are installed but not preloaded.

#[macro_use]
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bess_collector::message::IngestMessage;
use bess_collector::series::{self, Resolution, RollupRow};
use bess_collector::storage::{self, FramePartitions, StorageBackend, StoragePreference};
use bess_collector::time::timestamp;
use bess_collector::writer::SampleWriter;
use bess_protocol::*;
use bess_tests::{wait_for, TestDatabase};
use support::Backend;

/// 2023-11-14T22:13:20Z
const T0: i64 = 1_700_000_000_000;
const STEP_MS: i64 = 5_000;
/// Frames per group: a bit over two hours at 5 s.
const FRAMES: i64 = 1_600;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;
/// How long a test waits for a TimescaleDB background job.
const JOB_WAIT: Duration = Duration::from_secs(60);

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

/// Deterministic frames from `t0`, `n` per group, with some missing values
/// and float readings.
fn frames_at(t0: i64, n: i64) -> Vec<Frame> {
    let mut out = Vec::new();
    for i in 0..n {
        let ts_ms = t0 + i * STEP_MS;
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

fn frames() -> Vec<Frame> {
    frames_at(T0, FRAMES)
}

/// `frames` in batches of 100 from sequence number `first_seq`, each
/// carrying the catalog.
fn batches_of(frames: &[Frame], first_seq: u64) -> Vec<Batch> {
    let catalog = catalog();
    frames
        .chunks(100)
        .enumerate()
        .map(|(i, chunk)| Batch {
            site: SiteId::new("site-r").unwrap(),
            seq: BatchSeq(first_seq + i as u64),
            catalog_hash: catalog.hash(),
            catalog: Some(catalog.clone()),
            frames: chunk.to_vec(),
            gaps: vec![],
        })
        .collect()
}

fn messages(batches: &[Batch], first_offset: i64) -> Vec<IngestMessage> {
    batches
        .iter()
        .enumerate()
        .map(|(i, b)| IngestMessage {
            topic: "t".into(),
            partition: 0,
            offset: first_offset + i as i64,
            key: None,
            payload: b.encode(Codec::Zstd).unwrap(),
            received_ms: 0,
        })
        .collect()
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

type Rollups = Vec<(String, Resolution, Vec<RollupRow>)>;

/// The rollups of every point at both resolutions in `[from, to)`, by point name.
async fn rollups(client: &tokio_postgres::Client, from: i64, to: i64) -> Rollups {
    let mut out = Vec::new();
    for name in ["soc", "power", "temp"] {
        let id: i32 = client
            .query_one("SELECT point_id FROM points WHERE name = $1", &[&name])
            .await
            .unwrap()
            .get(0);
        for resolution in [Resolution::Minute, Resolution::Hour] {
            let rows = series::rollup_series(
                client,
                id,
                resolution,
                timestamp(from),
                timestamp(to),
                100_000,
            )
            .await
            .unwrap();
            out.push((name.to_owned(), resolution, rows));
        }
    }
    out
}

/// The rollups the stored `frames` must give, computed here from their
/// values: what both backends are checked against.
fn expected_rollups(frames: &[Frame]) -> Rollups {
    let catalog = catalog();
    let mut out = Vec::new();
    for (name, group, slot) in [("soc", 0u16, 0usize), ("power", 0, 1), ("temp", 1, 0)] {
        let point = &catalog.groups[usize::from(group)].points[slot];
        for resolution in [Resolution::Minute, Resolution::Hour] {
            let width = resolution.bucket_ms().unwrap();
            let mut buckets: BTreeMap<i64, Vec<(i64, f64)>> = BTreeMap::new();
            for frame in frames.iter().filter(|f| f.group.0 == group) {
                if let Some(raw) = frame.values[slot].raw() {
                    buckets
                        .entry(frame.ts_ms.div_euclid(width) * width)
                        .or_default()
                        .push((frame.ts_ms, point.engineering(raw)));
                }
            }
            let rows = buckets
                .into_iter()
                .map(|(bucket, values)| {
                    let vals = || values.iter().map(|(_, v)| *v);
                    RollupRow {
                        bucket: timestamp(bucket),
                        min: vals().fold(f64::INFINITY, f64::min),
                        max: vals().fold(f64::NEG_INFINITY, f64::max),
                        avg: vals().sum::<f64>() / values.len() as f64,
                        last: values.iter().max_by_key(|(ts, _)| *ts).unwrap().1,
                        count: values.len() as i64,
                    }
                })
                .collect();
            out.push((name.to_owned(), resolution, rows));
        }
    }
    out
}

fn assert_rollups_eq(actual: &Rollups, expected: &Rollups, backend: Backend) {
    assert_eq!(actual.len(), expected.len());
    for ((name, resolution, got), (_, _, want)) in actual.iter().zip(expected) {
        assert!(
            !want.is_empty(),
            "{name} {resolution:?}: no expected rollups"
        );
        assert_eq!(
            got.len(),
            want.len(),
            "{backend:?} {name} {resolution:?}: number of buckets"
        );
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                (g.bucket, g.count),
                (w.bucket, w.count),
                "{backend:?} {name} {resolution:?}"
            );
            assert!(
                close(g.min, w.min)
                    && close(g.max, w.max)
                    && close(g.avg, w.avg)
                    && close(g.last, w.last),
                "{backend:?} {name} {resolution:?} at {}: stored {g:?}, expected {w:?}",
                g.bucket
            );
        }
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// Wait (up to [`JOB_WAIT`]) on a condition a TimescaleDB background job
/// brings about; on time-out, fail with the jobs' recorded errors.
async fn wait_for_job<F, Fut>(client: &tokio_postgres::Client, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    if let Err(e) = wait_for(what, JOB_WAIT, check).await {
        let errors = names(
            client,
            "SELECT DISTINCT proc_name || ': ' || coalesce(err_message, '') FROM timescaledb_information.job_errors",
        )
        .await;
        panic!("{e}; job errors: {errors:?} (too few max_worker_processes? see deploy/tools/ensure-timescaledb.sh)");
    }
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
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

on_both_backends!(the_same_frames_give_the_rollups_computed_from_their_values);
async fn the_same_frames_give_the_rollups_computed_from_their_values(backend: Backend) {
    let database = backend.database("storage_rollups").await;
    let (pool, storage) = backend.prepare(&database, 2).await;
    let writer = SampleWriter::new(pool.clone(), storage);
    writer
        .write(&messages(&batches_of(&frames(), 1), 0))
        .await
        .unwrap();
    backend.refresh_rollups(&pool).await;
    let client = database.client().await.unwrap();
    if backend == Backend::TimescaleDb {
        // Compressed chunks stay readable and give the same rollups.
        client
            .batch_execute("SELECT compress_chunk(c) FROM show_chunks('frames') c")
            .await
            .unwrap();
    }
    assert_eq!(
        count(&client, "SELECT count(*) FROM frames").await,
        2 * FRAMES
    );
    let actual = rollups(&client, T0 - HOUR_MS, T0 + DAY_MS).await;
    assert_rollups_eq(&actual, &expected_rollups(&frames()), backend);
}

on_both_backends!(retention_drops_old_frames_and_keeps_their_rollups);
async fn retention_drops_old_frames_and_keeps_their_rollups(backend: Backend) {
    let database = backend.database("storage_retention").await;
    let (pool, storage) = backend.prepare(&database, 2).await;
    let retention = Duration::from_secs(5 * 86_400);
    let old_t0 = (now_ms() - 10 * DAY_MS).div_euclid(HOUR_MS) * HOUR_MS;
    let recent_t0 = (now_ms() - 2 * HOUR_MS).div_euclid(MINUTE_MS) * MINUTE_MS;
    let (old, recent) = (frames_at(old_t0, 120), frames_at(recent_t0, 12));
    let writer = SampleWriter::new(pool.clone(), storage);
    writer
        .write(&messages(&batches_of(&old, 1), 0))
        .await
        .unwrap();
    writer
        .write(&messages(&batches_of(&recent, 10), 10))
        .await
        .unwrap();
    backend.refresh_rollups(&pool).await;
    let client = database.client().await.unwrap();
    let old_rollups = rollups(&client, old_t0, old_t0 + DAY_MS).await;
    assert_rollups_eq(&old_rollups, &expected_rollups(&old), backend);

    let old_frames = format!(
        "SELECT count(*) FROM frames WHERE ts < to_timestamp({})",
        (now_ms() - 5 * DAY_MS) / 1000
    );
    match backend {
        Backend::PostgreSql => {
            let partitions = FramePartitions::default();
            bess_collector::service::maintain_once(&pool, &partitions, Some(retention))
                .await
                .unwrap();
        }
        Backend::TimescaleDb => {
            // The collector's retention policy, run by TimescaleDB on its own schedule.
            storage::configure_retention(&client, storage, Some(retention))
                .await
                .unwrap();
            run_job_soon(&client, "policy_retention", "frames").await;
            wait_for_job(
                &client,
                "the retention policy to drop the old chunk",
                || async { (count(&client, &old_frames).await == 0).then_some(()) },
            )
            .await;
        }
    }
    assert_eq!(count(&client, &old_frames).await, 0);
    assert_eq!(
        count(&client, "SELECT count(*) FROM frames").await,
        recent.len() as i64,
        "recent frames stay"
    );
    assert_eq!(
        rollups(&client, old_t0, old_t0 + DAY_MS).await,
        old_rollups,
        "the rollups of dropped frames stay"
    );
}

#[tokio::test]
async fn plain_postgresql_partitions_frames_by_day_and_drops_them_past_retention() {
    let database = Backend::PostgreSql.database("storage_partitions").await;
    let (pool, backend) = Backend::PostgreSql.prepare(&database, 2).await;
    let writer = SampleWriter::new(pool.clone(), backend);
    let mut batch = batches_of(&frames(), 1).remove(0);
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
    assert_eq!(count(&client, "SELECT count(*) FROM frames").await, 0);
}

/// Make a TimescaleDB policy job run every second from now on. `relation`
/// is the hypertable (`frames`) or the continuous aggregate (the jobs view
/// names the view for its refresh policy).
async fn run_job_soon(client: &tokio_postgres::Client, proc_name: &str, relation: &str) {
    let jobs = client
        .query(
            "SELECT alter_job(j.job_id, schedule_interval => interval '1 second', next_start => now(), scheduled => true)
             FROM timescaledb_information.jobs j
             WHERE j.proc_name = $1 AND j.hypertable_name = $2",
            &[&proc_name, &relation],
        )
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1, "one {proc_name} job on {relation}");
}

/// Keep every policy job from running until [`run_job_soon`] asks for it, so
/// a test sees the state before a policy acts.
async fn hold_policies(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs
             WHERE proc_name LIKE 'policy_%'",
        )
        .await
        .unwrap();
}

/// Whether the `frames` chunk holding `ts_ms` is compressed.
async fn chunk_compressed(client: &tokio_postgres::Client, ts_ms: i64) -> bool {
    client
        .query_one(
            "SELECT coalesce(bool_or(is_compressed), false) FROM timescaledb_information.chunks
             WHERE hypertable_name = 'frames' AND range_start <= $1 AND range_end > $1",
            &[&timestamp(ts_ms)],
        )
        .await
        .unwrap()
        .get(0)
}

on_timescaledb!(
    timescaledb_storage_has_a_hypertable_compression_policies_and_continuous_aggregates
);
async fn timescaledb_storage_has_a_hypertable_compression_policies_and_continuous_aggregates(
    backend: Backend,
) {
    let database = backend.database("storage_tsdb_schema").await;
    let mut client = database.client().await.unwrap();
    let applied = bess_collector::migrations::apply(&mut client, StoragePreference::Auto)
        .await
        .unwrap();
    assert_eq!(applied.backend, StorageBackend::TimescaleDb);
    assert_eq!(applied.versions, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
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
        "SELECT proc_name::text || ':' || coalesce(hypertable_name::text, '') FROM timescaledb_information.jobs WHERE proc_name LIKE 'policy_%' AND proc_name NOT IN ('policy_job_stat_history_retention', 'policy_telemetry')",
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
}

on_timescaledb!(compression_and_rollup_refresh_policies_run_on_their_own_schedule);
async fn compression_and_rollup_refresh_policies_run_on_their_own_schedule(backend: Backend) {
    let database = backend.database("storage_tsdb_policies").await;
    let (pool, storage) = backend.prepare(&database, 2).await;
    hold_policies(&database.client().await.unwrap()).await;
    // Past the compression horizon (2 days); the recent frames are inside
    // the refresh window (3 days).
    let old_t0 = (now_ms() - 4 * DAY_MS).div_euclid(MINUTE_MS) * MINUTE_MS;
    let recent_t0 = (now_ms() - 2 * HOUR_MS).div_euclid(MINUTE_MS) * MINUTE_MS;
    let (old, recent) = (frames_at(old_t0, 60), frames_at(recent_t0, 60));
    let writer = SampleWriter::new(pool.clone(), storage);
    writer
        .write(&messages(&batches_of(&old, 1), 0))
        .await
        .unwrap();
    writer
        .write(&messages(&batches_of(&recent, 10), 10))
        .await
        .unwrap();
    let client = database.client().await.unwrap();
    assert!(!chunk_compressed(&client, old_t0).await);
    // Read what the refresh policy materialized, not the real-time union.
    client
        .batch_execute(
            "ALTER MATERIALIZED VIEW rollup_1m SET (timescaledb.materialized_only = true);
             ALTER MATERIALIZED VIEW rollup_1h SET (timescaledb.materialized_only = true)",
        )
        .await
        .unwrap();
    assert!(rollups(&client, recent_t0, recent_t0 + HOUR_MS)
        .await
        .iter()
        .all(|(_, _, rows)| rows.is_empty()));

    run_job_soon(&client, "policy_compression", "frames").await;
    run_job_soon(&client, "policy_refresh_continuous_aggregate", "rollup_1m").await;
    wait_for_job(
        &client,
        "the compression policy to compress the old chunk",
        || async { chunk_compressed(&client, old_t0).await.then_some(()) },
    )
    .await;
    assert!(
        !chunk_compressed(&client, recent_t0).await,
        "recent chunks stay uncompressed"
    );
    let expected: Rollups = expected_rollups(&recent)
        .into_iter()
        .filter(|(_, resolution, _)| *resolution == Resolution::Minute)
        .collect();
    let minutes = || async {
        rollups(&client, recent_t0, recent_t0 + HOUR_MS)
            .await
            .into_iter()
            .filter(|(_, resolution, _)| *resolution == Resolution::Minute)
            .collect::<Rollups>()
    };
    wait_for_job(
        &client,
        "the refresh policy to materialize rollup_1m",
        || async {
            let got = minutes().await;
            (got.iter()
                .zip(&expected)
                .all(|(g, w)| g.2.len() == w.2.len()))
            .then_some(())
        },
    )
    .await;
    assert_rollups_eq(&minutes().await, &expected, backend);
    assert_eq!(
        count(&client, "SELECT count(*) FROM frames").await,
        (old.len() + recent.len()) as i64,
        "compressed frames stay readable"
    );
}

on_timescaledb!(
    a_late_backlog_in_a_compressed_chunk_and_a_materialized_bucket_is_stored_once_and_rolled_up
);
async fn a_late_backlog_in_a_compressed_chunk_and_a_materialized_bucket_is_stored_once_and_rolled_up(
    backend: Backend,
) {
    // Older than the compression horizon (2 days).
    late_backlog_is_stored_once_and_rolled_up(backend, "storage_tsdb_late", 60).await;
}

/// Frames `age_hours` old arrive in two parts: every other minute first
/// (rolled up and compressed), then the backlog filling the minutes between.
async fn late_backlog_is_stored_once_and_rolled_up(backend: Backend, test: &str, age_hours: i64) {
    let database = backend.database(test).await;
    let (pool, storage) = backend.prepare(&database, 2).await;
    let t0 = (now_ms() - age_hours * HOUR_MS).div_euclid(HOUR_MS) * HOUR_MS;
    // Every other minute first; the backlog fills the minutes in between,
    // into the hours already materialized.
    let all = frames_at(t0, 720);
    let (early, late): (Vec<Frame>, Vec<Frame>) = all
        .iter()
        .cloned()
        .partition(|f| (f.ts_ms - t0).div_euclid(MINUTE_MS) % 2 == 0);
    let writer = SampleWriter::new(pool.clone(), storage);
    writer
        .write(&messages(&batches_of(&early, 1), 0))
        .await
        .unwrap();
    backend.refresh_rollups(&pool).await;
    let client = database.client().await.unwrap();
    client
        .batch_execute(
            "SELECT compress_chunk(c) FROM show_chunks('frames') c;
             ALTER MATERIALIZED VIEW rollup_1m SET (timescaledb.materialized_only = true);
             ALTER MATERIALIZED VIEW rollup_1h SET (timescaledb.materialized_only = true)",
        )
        .await
        .unwrap();
    assert!(chunk_compressed(&client, t0).await);
    let window = (t0, t0 + 2 * HOUR_MS);
    assert_rollups_eq(
        &rollups(&client, window.0, window.1).await,
        &expected_rollups(&early),
        backend,
    );

    // The backlog arrives, and again (a redelivery): stored once.
    let backlog = messages(&batches_of(&late, 100), 100);
    let first = writer.write(&backlog).await.unwrap();
    let again = writer.write(&backlog).await.unwrap();
    assert_eq!(
        (first.batches_written, again.batches_duplicate),
        (backlog.len() as u64, backlog.len() as u64)
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM frames").await,
        all.len() as i64
    );

    // The refresh policies, on their own schedule, fold it into both rollups.
    run_job_soon(&client, "policy_refresh_continuous_aggregate", "rollup_1m").await;
    run_job_soon(&client, "policy_refresh_continuous_aggregate", "rollup_1h").await;
    let expected = expected_rollups(&all);
    wait_for_job(
        &client,
        "the refresh policies to fold the backlog in",
        || async {
            let got = rollups(&client, window.0, window.1).await;
            got.iter()
                .zip(&expected)
                .all(|(g, w)| {
                    g.2.len() == w.2.len() && g.2.iter().zip(&w.2).all(|(a, b)| a.count == b.count)
                })
                .then_some(())
        },
    )
    .await;
    assert_rollups_eq(
        &rollups(&client, window.0, window.1).await,
        &expected,
        backend,
    );
}

/// The admin URL of the main test server when the TimescaleDB files are
/// installed there without being preloaded (as after
/// `deploy/tools/ensure-timescaledb.sh` on the machine's main cluster);
/// `None`, after saying so, elsewhere.
async fn installed_but_not_preloaded(test: &str) -> Option<String> {
    let url = TestDatabase::admin_url();
    let client = bess_tests::connect(&url).await.unwrap();
    let row = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'),
                    EXISTS (SELECT 1 FROM pg_settings WHERE name LIKE 'timescaledb.%')",
            &[],
        )
        .await
        .unwrap();
    let (installed, preloaded): (bool, bool) = (row.get(0), row.get(1));
    if installed && !preloaded {
        return Some(url);
    }
    support::skip_or_fail(
        test,
        "the server in BESS_TEST_DATABASE_URL does not have the TimescaleDB files installed without preloading them",
    );
    None
}

#[tokio::test]
async fn auto_storage_falls_back_to_plain_postgresql_where_timescaledb_is_installed_but_not_preloaded(
) {
    let test = "auto_storage_falls_back_to_plain_postgresql_where_timescaledb_is_installed_but_not_preloaded";
    let Some(admin) = installed_but_not_preloaded(test).await else {
        return;
    };
    let database = TestDatabase::create_on(&admin, "storage_fallback")
        .await
        .unwrap();
    let pool = bess_collector::service::pool(&database.url(), 2).unwrap();
    let backend = bess_collector::service::prepare_database(&pool, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(backend, StorageBackend::PostgreSql);
    // And the collector works on it: frames stored, rolled up.
    let writer = SampleWriter::new(pool.clone(), backend);
    let few = frames_at(T0, 24);
    writer
        .write(&messages(&batches_of(&few, 1), 0))
        .await
        .unwrap();
    Backend::PostgreSql.refresh_rollups(&pool).await;
    let client = database.client().await.unwrap();
    assert_rollups_eq(
        &rollups(&client, T0 - HOUR_MS, T0 + HOUR_MS).await,
        &expected_rollups(&few),
        Backend::PostgreSql,
    );

    // The binary says the same: `migrate --storage auto` succeeds on a new database.
    let other = TestDatabase::create_on(&admin, "storage_fallback_cli")
        .await
        .unwrap();
    let out = std::process::Command::new(bess_tests::binary("bess-collector"))
        .args([
            "migrate",
            "--database-url",
            &other.url(),
            "--storage",
            "auto",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("postgresql"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn timescaledb_storage_is_refused_with_the_fix_where_the_extension_is_not_preloaded() {
    let test = "timescaledb_storage_is_refused_with_the_fix_where_the_extension_is_not_preloaded";
    let Some(admin) = installed_but_not_preloaded(test).await else {
        return;
    };
    let database = TestDatabase::create_on(&admin, "storage_refused")
        .await
        .unwrap();
    let pool = bess_collector::service::pool(&database.url(), 2).unwrap();
    let err = bess_collector::service::prepare_database_with(
        &pool,
        Duration::from_secs(10),
        StoragePreference::TimescaleDb,
    )
    .await
    .unwrap_err();
    let message = format!("{err:#}");
    for words in [
        "without being preloaded",
        "shared_preload_libraries",
        "timescaledb-tune",
    ] {
        assert!(message.contains(words), "{message}");
    }
    // Nothing of the storage was set up, so the operator can fix it and start again.
    let client = database.client().await.unwrap();
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM schema_migrations WHERE version >= 3"
        )
        .await,
        0
    );

    let out = std::process::Command::new(bess_tests::binary("bess-collector"))
        .args([
            "migrate",
            "--database-url",
            &database.url(),
            "--storage",
            "timescaledb",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("shared_preload_libraries") && stderr.contains("timescaledb-tune"),
        "{stderr}"
    );
}

on_timescaledb!(a_backlog_older_than_the_refresh_window_is_rolled_up_by_the_upkeep);
async fn a_backlog_older_than_the_refresh_window_is_rolled_up_by_the_upkeep(backend: Backend) {
    let database = backend.database("storage_tsdb_late_5d").await;
    let (pool, storage) = backend.prepare(&database, 2).await;
    let client = database.client().await.unwrap();
    // No policy refresh at the same time as the upkeep's (TimescaleDB runs
    // one refresh of an aggregate at a time).
    hold_policies(&client).await;
    client
        .batch_execute(
            "ALTER MATERIALIZED VIEW rollup_1m SET (timescaledb.materialized_only = true);
             ALTER MATERIALIZED VIEW rollup_1h SET (timescaledb.materialized_only = true)",
        )
        .await
        .unwrap();
    // A backlog of 5 days ago, past the policies' 3-day window, and one of
    // 20 days ago, past a 7-day retention.
    let hour = |ms: i64| ms.div_euclid(HOUR_MS) * HOUR_MS;
    let t_late = hour(now_ms() - 5 * DAY_MS);
    let t_expired = hour(now_ms() - 20 * DAY_MS);
    // Two hours at 5 s each.
    let late = frames_at(t_late, 1440);
    let expired = frames_at(t_expired, 1440);
    let writer = SampleWriter::new(pool.clone(), storage);
    writer
        .write(&messages(&batches_of(&late, 1), 0))
        .await
        .unwrap();
    writer
        .write(&messages(&batches_of(&expired, 100), 100))
        .await
        .unwrap();
    assert_eq!(
        count(&client, "SELECT count(*) FROM rollup_late_hours").await,
        4,
        "the writer marks every late hour"
    );

    // Stored, but not rolled up: the policies refresh only the last 3 days.
    let window = (t_late, t_late + 2 * HOUR_MS);
    let rolled_up = |r: &Rollups| r.iter().map(|(_, _, rows)| rows.len()).sum::<usize>();
    assert_eq!(rolled_up(&rollups(&client, window.0, window.1).await), 0);

    // The collector's upkeep does.
    let outcome = bess_collector::late_rollups::refresh_late_hours(
        &client,
        Some(Duration::from_secs(7 * 86_400)),
    )
    .await
    .unwrap();
    assert_eq!((outcome.refreshed, outcome.expired), (2, 2));
    assert_eq!(
        count(&client, "SELECT count(*) FROM rollup_late_hours").await,
        0
    );
    assert_rollups_eq(
        &rollups(&client, window.0, window.1).await,
        &expected_rollups(&late),
        backend,
    );
    // Past retention: cleared, not refreshed.
    assert_eq!(
        rolled_up(&rollups(&client, t_expired, t_expired + 2 * HOUR_MS).await),
        0,
        "no refresh past retention"
    );
}

//! What the storage of a running server looks like, for operators: the
//! backend, and on TimescaleDB the extension's version, its background jobs
//! (compression, rollup refresh, retention) with their last run and
//! failures, chunks and the compression ratio; on plain PostgreSQL the day
//! partitions and the minutes still waiting for their rollups.
//!
//! Read by `GET /health?detail=storage` and `bess-collector check`. Every
//! figure is one catalog query; nothing here takes a lock or scans frames.

use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::GenericClient;

use crate::storage::StorageBackend;
use crate::time::rfc3339;

#[derive(Debug, Clone, Serialize)]
pub struct StorageHealth {
    pub backend: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timescaledb: Option<TimescaleHealth>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgresql: Option<PartitionHealth>,
    /// What an operator should look at: failed jobs, unscheduled policies.
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TimescaleHealth {
    pub version: String,
    pub chunks: i64,
    pub compressed_chunks: i64,
    /// Bytes of the compressed chunks before and after compression.
    pub bytes_before_compression: Option<i64>,
    pub bytes_after_compression: Option<i64>,
    /// `before / after`, when some chunk is compressed.
    pub compression_ratio: Option<f64>,
    /// Hours that received frames older than the refresh policies reach,
    /// waiting for the collector's upkeep to refresh their rollups.
    pub late_rollup_hours_pending: i64,
    pub jobs: Vec<JobHealth>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobHealth {
    pub job_id: i32,
    /// `policy_compression`, `policy_refresh_continuous_aggregate`, `policy_retention`.
    pub proc_name: String,
    /// The hypertable or continuous aggregate the job works on.
    pub target: String,
    pub schedule_interval: String,
    pub scheduled: bool,
    pub last_run_status: Option<String>,
    pub last_run_started_at: Option<String>,
    pub last_successful_finish: Option<String>,
    pub next_start: Option<String>,
    pub total_runs: i64,
    pub total_failures: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PartitionHealth {
    /// Day partitions of `frames`.
    pub partitions: i64,
    /// Minutes written whose rollups the upkeep task has not computed yet.
    pub rollup_minutes_pending: i64,
}

impl StorageHealth {
    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The storage report of the database `client` is connected to.
pub async fn report(
    client: &impl GenericClient,
    backend: StorageBackend,
) -> Result<StorageHealth, tokio_postgres::Error> {
    let mut health = StorageHealth {
        backend: backend.as_str(),
        timescaledb: None,
        postgresql: None,
        problems: Vec::new(),
    };
    match backend {
        StorageBackend::TimescaleDb => {
            let timescale = timescale(client).await?;
            for job in &timescale.jobs {
                if !job.scheduled {
                    health.problems.push(format!(
                        "job {} {} ({}) is not scheduled",
                        job.job_id, job.proc_name, job.target
                    ));
                }
                if job.last_run_status.as_deref() == Some("Failed") {
                    health.problems.push(format!(
                        "job {} {} ({}) failed its last run ({} failures in {} runs)",
                        job.job_id, job.proc_name, job.target, job.total_failures, job.total_runs
                    ));
                }
            }
            health.timescaledb = Some(timescale);
        }
        StorageBackend::PostgreSql => {
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM pg_inherits WHERE inhparent = 'frames'::regclass),
                            (SELECT count(*) FROM rollup_pending)",
                    &[],
                )
                .await?;
            health.postgresql = Some(PartitionHealth {
                partitions: row.get(0),
                rollup_minutes_pending: row.get(1),
            });
        }
    }
    Ok(health)
}

async fn timescale(client: &impl GenericClient) -> Result<TimescaleHealth, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'),
                    (SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'frames'),
                    (SELECT count(*) FROM timescaledb_information.chunks
                      WHERE hypertable_name = 'frames' AND is_compressed),
                    s.before_compression_total_bytes::int8,
                    s.after_compression_total_bytes::int8
             FROM hypertable_compression_stats('frames') s",
            &[],
        )
        .await?;
    let (before, after): (Option<i64>, Option<i64>) = (row.get(3), row.get(4));
    let jobs = client
        .query(
            "SELECT j.job_id, j.proc_name::text, coalesce(c.view_name, j.hypertable_name)::text,
                    j.schedule_interval::text, j.scheduled, s.last_run_status,
                    -- never-run jobs report -infinity
                    CASE WHEN isfinite(s.last_run_started_at) THEN s.last_run_started_at END,
                    CASE WHEN isfinite(s.last_successful_finish) THEN s.last_successful_finish END,
                    CASE WHEN isfinite(s.next_start) THEN s.next_start END,
                    coalesce(s.total_runs, 0), coalesce(s.total_failures, 0)
             FROM timescaledb_information.jobs j
             LEFT JOIN timescaledb_information.job_stats s ON s.job_id = j.job_id
             LEFT JOIN timescaledb_information.continuous_aggregates c
                    ON c.materialization_hypertable_name = j.hypertable_name
             WHERE j.proc_name LIKE 'policy_%' AND j.hypertable_name IS NOT NULL
             ORDER BY j.job_id",
            &[],
        )
        .await?;
    // Absent before migration 6.
    let has_late_hours: bool = client
        .query_one("SELECT to_regclass('rollup_late_hours') IS NOT NULL", &[])
        .await?
        .get(0);
    let late_hours: i64 = if has_late_hours {
        client
            .query_one("SELECT count(*) FROM rollup_late_hours", &[])
            .await?
            .get(0)
    } else {
        0
    };
    let time = |t: Option<OffsetDateTime>| t.map(rfc3339);
    Ok(TimescaleHealth {
        version: row.get::<_, Option<String>>(0).unwrap_or_default(),
        chunks: row.get(1),
        compressed_chunks: row.get(2),
        bytes_before_compression: before,
        bytes_after_compression: after,
        compression_ratio: match (before, after) {
            (Some(b), Some(a)) if a > 0 => Some(b as f64 / a as f64),
            _ => None,
        },
        late_rollup_hours_pending: late_hours,
        jobs: jobs
            .iter()
            .map(|r| JobHealth {
                job_id: r.get(0),
                proc_name: r.get(1),
                target: r.get::<_, Option<String>>(2).unwrap_or_default(),
                schedule_interval: r.get(3),
                scheduled: r.get(4),
                last_run_status: r.get(5),
                last_run_started_at: time(r.get(6)),
                last_successful_finish: time(r.get(7)),
                next_start: time(r.get(8)),
                total_runs: r.get(9),
                total_failures: r.get(10),
            })
            .collect(),
    })
}

impl std::fmt::Display for StorageHealth {
    /// The report as a technician reads it in a terminal.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "storage: {}", self.backend)?;
        if let Some(t) = &self.timescaledb {
            writeln!(f, "timescaledb: {}", t.version)?;
            write!(
                f,
                "chunks: {} ({} compressed)",
                t.chunks, t.compressed_chunks
            )?;
            if let (Some(before), Some(after), Some(ratio)) = (
                t.bytes_before_compression,
                t.bytes_after_compression,
                t.compression_ratio,
            ) {
                write!(f, "; compressed {before} → {after} bytes ({ratio:.1}×)")?;
            }
            writeln!(f)?;
            writeln!(
                f,
                "late hours waiting for a rollup refresh: {}",
                t.late_rollup_hours_pending
            )?;
            writeln!(
                f,
                "{:>6}  {:<38} {:<12} {:<10} {:<9} {:>5} {:>8}  last success",
                "job", "policy", "on", "every", "last run", "runs", "failures"
            )?;
            for j in &t.jobs {
                writeln!(
                    f,
                    "{:>6}  {:<38} {:<12} {:<10} {:<9} {:>5} {:>8}  {}",
                    j.job_id,
                    j.proc_name,
                    j.target,
                    j.schedule_interval,
                    j.last_run_status.as_deref().unwrap_or("never"),
                    j.total_runs,
                    j.total_failures,
                    j.last_successful_finish.as_deref().unwrap_or("-"),
                )?;
            }
        }
        if let Some(p) = &self.postgresql {
            writeln!(
                f,
                "day partitions: {}; minutes waiting for rollups: {}",
                p.partitions, p.rollup_minutes_pending
            )?;
        }
        if self.problems.is_empty() {
            writeln!(f, "problems: none")
        } else {
            for problem in &self.problems {
                writeln!(f, "PROBLEM: {problem}")?;
            }
            Ok(())
        }
    }
}

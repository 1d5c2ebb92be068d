//! `bess-collector export`: the history lake exporter as its own service.
//! It needs only the database and the bucket, so it runs on its own
//! instances, as many as wanted (they share the work per site-hour).

use anyhow::Context as _;
use clap::Args;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

use bess_collector::lake::{pending, ExportSettings, Exporter, Lake, LakeLocation};
use bess_collector::service;
use bess_collector::storage::StoragePreference;

#[derive(Args)]
pub struct ExportArgs {
    /// PostgreSQL connection URL (the collector's database).
    #[arg(
        long,
        env = "BESS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/bess"
    )]
    database_url: String,
    /// How long to wait for the database at start-up.
    #[arg(long, env = "BESS_DATABASE_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    database_wait: Duration,
    /// Where the lake is: s3://bucket[/prefix]. Credentials and region come
    /// from the usual AWS_* environment variables.
    #[arg(long, env = "BESS_LAKE_URL")]
    bucket: String,
    /// An S3-compatible endpoint instead of AWS (MinIO, Ceph, a local
    /// server), e.g. http://127.0.0.1:9000. Plain http is allowed for it.
    #[arg(long, env = "BESS_LAKE_ENDPOINT")]
    endpoint: Option<String>,
    /// Export a site-hour once it ended this long ago and nothing was
    /// written to it for this long (a late backlog is written once, after it).
    #[arg(long, env = "BESS_LAKE_GRACE", default_value = "5m", value_parser = humantime::parse_duration)]
    grace: Duration,
    /// Sleep between passes that found nothing to export.
    #[arg(long, env = "BESS_LAKE_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Site-hours exported at the same time.
    #[arg(long, env = "BESS_LAKE_JOBS", default_value_t = 2)]
    jobs: usize,
    /// First mark every site-hour stored in the database for export: fills
    /// the lake with history written before the exporter ran.
    #[arg(long)]
    backfill: bool,
    /// Export what is eligible now, then exit (for cron jobs and backfills).
    #[arg(long)]
    once: bool,
    /// Also export hours that have not ended (rewritten as they fill).
    #[arg(long, hide = true)]
    open_hours: bool,
}

pub fn export(args: ExportArgs, runtime: tokio::runtime::Runtime) -> anyhow::Result<()> {
    let location = LakeLocation::parse(&args.bucket, args.endpoint.clone())?;
    let lake = Lake::open(location.clone()).context("opening the bucket")?;
    let settings = ExportSettings {
        grace: args.grace,
        open_hours: args.open_hours,
        interval: args.interval,
        jobs: args.jobs.max(1),
    };
    runtime.block_on(async {
        let pool = service::pool(&args.database_url, settings.jobs + 1)?;
        service::prepare_database_with(&pool, args.database_wait, StoragePreference::Auto).await?;
        if args.backfill {
            let client = pool.get().await?;
            let marked = pending::mark_all_stored(&**client).await?;
            println!("bess-collector: backfill marked {marked} site-hours");
        }
        let exporter = Exporter::new(pool, lake, settings);
        let cancel = CancellationToken::new();
        tokio::spawn(crate::shutdown_signal(cancel.clone()));
        println!("bess-collector: exporting to {}", location.samples_url());
        if args.once {
            let totals = exporter.export_pending(&cancel).await?;
            println!(
                "bess-collector: exported {} objects, {} samples, {} bytes ({} refused)",
                totals.objects, totals.rows, totals.bytes, totals.refused
            );
        } else {
            exporter.run(cancel).await;
        }
        Ok(())
    })
}

//! Fault suite: the real binaries under link cuts, crashes, restarts and
//! rebalances. Each scenario ends by counting every sample end to end, per
//! device, point and timestamp: none lost, none doubled.
//!
//! Scenarios run one at a time (they are heavy for a 2-core machine and
//! some of them time their faults by progress, not by the clock).

use std::time::Duration;
use tokio::sync::Mutex;

use bess_tests::audit::{load_record, load_stored, reconcile};
use bess_tests::postgres::{timescaledb_installed, PrivatePostgres};
use bess_tests::proxy::LinkProxy;
use bess_tests::scenario::*;
use bess_tests::*;

static SERIAL: Mutex<()> = Mutex::const_new(());

const LONG: Duration = Duration::from_secs(120);

/// Wait until the edge has had `n` more batches acknowledged than `from`.
async fn wait_acked(status_url: &str, n: u64) -> anyhow::Result<u64> {
    wait_for(&format!("{n} acknowledged batches"), LONG, || async move {
        edge_acked(status_url).await.filter(|acked| *acked >= n)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_buffers_at_the_edge_and_loses_nothing_when_restored() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let scratch = Scratch::new("link-cut");
    let database = TestDatabase::create("link_cut").await?;
    let (proxy, _broker) = broker_behind_link(&scratch).await?;
    let brokers = proxy.addr.to_string();

    let sim = start_sim(&scratch.dir, 3, 11).await?;
    let (_collector, _api) =
        start_collector(&scratch.dir, "collector", &database.url(), &brokers).await?;
    let config = write_edge_config(&scratch.dir, sim.addr, &brokers, "")?;
    let record = scratch.path("record.jsonl");
    let (edge, status) = start_edge(&scratch.dir, "edge", &config, &record).await?;
    let acked = wait_acked(&status, 3).await?;

    proxy.cut();
    // While the link is down the edge keeps polling and buffers batches.
    wait_for("a backlog in the edge buffer", LONG, || {
        let status = status.clone();
        async move {
            let (_, s) = get_json(&format!("{status}/status")).await.ok()?;
            (s["buffer"]["batches"].as_u64()? >= 4).then_some(())
        }
    })
    .await?;
    proxy.restore();
    wait_acked(&status, acked + 6).await?;
    stop_and_count(edge, &[record], &database.url(), 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed_repeatedly_resumes_from_its_buffer_without_loss_or_doubles(
) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let scratch = Scratch::new("edge-kill");
    let database = TestDatabase::create("edge_kill").await?;
    let broker = Broker::start(&scratch.dir).await?;
    let sim = start_sim(&scratch.dir, 3, 12).await?;
    let (_collector, _api) = start_collector(
        &scratch.dir,
        "collector",
        &database.url(),
        &broker.brokers(),
    )
    .await?;
    let config = write_edge_config(&scratch.dir, sim.addr, &broker.brokers(), "")?;

    let kills = 3;
    let mut records = Vec::new();
    for run in 0..kills {
        let record = scratch.path(&format!("record-{run}.jsonl"));
        let (mut edge, status) =
            start_edge(&scratch.dir, &format!("edge-{run}"), &config, &record).await?;
        records.push(record);
        wait_acked(&status, 2).await?;
        edge.kill9();
    }
    let record = scratch.path("record-last.jsonl");
    let (edge, status) = start_edge(&scratch.dir, "edge-last", &config, &record).await?;
    records.push(record);
    wait_acked(&status, 2).await?;
    stop_and_count(edge, &records, &database.url(), kills).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_repeatedly_writes_every_batch_exactly_once() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let scratch = Scratch::new("collector-kill");
    let database = TestDatabase::create("collector_kill").await?;
    let broker = Broker::start(&scratch.dir).await?;
    let sim = start_sim(&scratch.dir, 3, 13).await?;
    let config = write_edge_config(&scratch.dir, sim.addr, &broker.brokers(), "")?;
    let record = scratch.path("record.jsonl");
    let (edge, _status) = start_edge(&scratch.dir, "edge", &config, &record).await?;

    let mut written = 0;
    for run in 0..3 {
        let (mut collector, _) = start_collector(
            &scratch.dir,
            &format!("collector-{run}"),
            &database.url(),
            &broker.brokers(),
        )
        .await?;
        written += 3;
        wait_for_ledger(&database.url(), written, LONG).await?;
        collector.kill9();
    }
    let (_collector, _) = start_collector(
        &scratch.dir,
        "collector-last",
        &database.url(),
        &broker.brokers(),
    )
    .await?;
    stop_and_count(edge, &[record], &database.url(), 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_run_delays_writes_but_loses_nothing() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let scratch = Scratch::new("pg-restart");
    let postgres = PrivatePostgres::start(&scratch.dir).await?;
    database_restart_mid_run(&scratch, &postgres, "postgresql").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_mid_run_delays_writes_but_loses_nothing_on_timescaledb(
) -> anyhow::Result<()> {
    let test = "faults::a_database_restart_mid_run_delays_writes_but_loses_nothing_on_timescaledb";
    if !timescaledb_installed() {
        skip_without_timescaledb(
            test,
            "TimescaleDB is not installed for the local PostgreSQL",
        );
        return Ok(());
    }
    let _serial = SERIAL.lock().await;
    let scratch = Scratch::new("tsdb-restart");
    let postgres = PrivatePostgres::start_with_timescaledb(&scratch.dir).await?;
    database_restart_mid_run(&scratch, &postgres, "timescaledb").await
}

/// Stop the collector's database server mid-run and start it again: the
/// collector rides it out and every sample is stored once.
async fn database_restart_mid_run(
    scratch: &Scratch,
    postgres: &PrivatePostgres,
    storage: &str,
) -> anyhow::Result<()> {
    let database_url = postgres.create_database("bess").await?;
    let broker = Broker::start(&scratch.dir).await?;
    let sim = start_sim(&scratch.dir, 3, 14).await?;
    let (mut collector, _) = start_collector_with(
        &scratch.dir,
        "collector",
        &database_url,
        &broker.brokers(),
        &["--storage", storage],
    )
    .await?;
    let config = write_edge_config(&scratch.dir, sim.addr, &broker.brokers(), "")?;
    let record = scratch.path("record.jsonl");
    let (edge, status) = start_edge(&scratch.dir, "edge", &config, &record).await?;
    wait_for_ledger(&database_url, 3, LONG).await?;

    postgres.stop()?;
    // Batches keep reaching the broker while the database is down.
    let acked = edge_acked(&status).await.unwrap_or(0);
    wait_acked(&status, acked + 4).await?;
    postgres.resume().await?;
    assert!(
        collector.is_running(),
        "the collector must ride out a database outage\n{}",
        collector.log_tail(20)
    );
    let acked = edge_acked(&status).await.unwrap_or(0);
    wait_for_ledger(&database_url, acked as i64, LONG).await?;
    stop_and_count(edge, &[record], &database_url, 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_share_the_topic_and_a_killed_one_loses_nothing() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let scratch = Scratch::new("rebalance");
    let database = TestDatabase::create("rebalance").await?;
    let broker = Broker::start(&scratch.dir).await?;
    let sim = start_sim(&scratch.dir, 3, 15).await?;
    let (mut first, _) = start_collector(
        &scratch.dir,
        "collector-a",
        &database.url(),
        &broker.brokers(),
    )
    .await?;
    let (_second, _) = start_collector(
        &scratch.dir,
        "collector-b",
        &database.url(),
        &broker.brokers(),
    )
    .await?;
    let config = write_edge_config(&scratch.dir, sim.addr, &broker.brokers(), "")?;
    let record = scratch.path("record.jsonl");
    let (edge, _status) = start_edge(&scratch.dir, "edge", &config, &record).await?;
    wait_for_ledger(&database.url(), 4, LONG).await?;
    first.kill9();
    let db = connect(&database.url()).await?;
    let before = ledger_count(&db).await;
    wait_for_ledger(&database.url(), before + 6, LONG).await?;
    stop_and_count(edge, &[record], &database.url(), 0).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_every_binary_shuts_down_cleanly_without_loss() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let scratch = Scratch::new("sigterm");
    let database = TestDatabase::create("sigterm").await?;
    let broker = Broker::start(&scratch.dir).await?;
    let mut sim = start_sim(&scratch.dir, 2, 16).await?;
    let (mut collector, _) = start_collector(
        &scratch.dir,
        "collector-1",
        &database.url(),
        &broker.brokers(),
    )
    .await?;
    let config = write_edge_config(&scratch.dir, sim.addr, &broker.brokers(), "")?;

    // Edge: stop and start again; the second run continues the sequence.
    let first_record = scratch.path("record-1.jsonl");
    let (mut edge, status) = start_edge(&scratch.dir, "edge-1", &config, &first_record).await?;
    wait_acked(&status, 2).await?;
    let exit = edge.terminate(Duration::from_secs(60)).await?;
    assert!(exit.success(), "edge exit {exit}");
    let sealed = load_record(&[first_record.as_path()])?.seqs.len() as i64;
    // Stop the collector while it is a working member of the group. (Tansu
    // 0.6 keeps a member that leaves during its very first join as the
    // group's leader, which stalls the next member; a collector stopped
    // seconds after its start can hit that broker bug.)
    wait_for_ledger(&database.url(), sealed, LONG).await?;

    // Collector: stop and start again.
    let exit = collector.terminate(Duration::from_secs(60)).await?;
    assert!(
        exit.success(),
        "collector exit {exit}\n{}",
        collector.log_tail(20)
    );
    let (_collector, _) = start_collector(
        &scratch.dir,
        "collector-2",
        &database.url(),
        &broker.brokers(),
    )
    .await?;

    let second_record = scratch.path("record-2.jsonl");
    let (edge, status) = start_edge(&scratch.dir, "edge-2", &config, &second_record).await?;
    wait_acked(&status, 2).await?;
    stop_and_count(edge, &[first_record, second_record], &database.url(), 0).await?;

    let exit = sim.proc.terminate(Duration::from_secs(10)).await?;
    assert!(exit.success(), "simulator exit {exit}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_during_an_outage_drops_exactly_what_its_gap_records_report(
) -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let scratch = Scratch::new("disk-cap");
    let database = TestDatabase::create("disk_cap").await?;
    let (proxy, _broker) = broker_behind_link(&scratch).await?;
    let brokers = proxy.addr.to_string();

    let sim = start_sim(&scratch.dir, 3, 17).await?;
    let (_collector, _api) =
        start_collector(&scratch.dir, "collector", &database.url(), &brokers).await?;
    let config = write_edge_config(&scratch.dir, sim.addr, &brokers, "")?;
    // A tiny disk cap: a few seconds of this site's data.
    let text = std::fs::read_to_string(&config)?;
    let cap_line = text
        .lines()
        .find(|l| l.starts_with("max_size = "))
        .expect("buffer max_size line")
        .to_owned();
    std::fs::write(&config, text.replacen(&cap_line, "max_size = \"6KB\"", 1))?;
    let record = scratch.path("record.jsonl");
    let (mut edge, status) = start_edge(&scratch.dir, "edge", &config, &record).await?;
    let acked = wait_acked(&status, 2).await?;

    proxy.cut();
    wait_for("the edge to drop samples at its disk cap", LONG, || {
        let status = status.clone();
        async move {
            let (_, s) = get_json(&format!("{status}/status")).await.ok()?;
            (s["totals"]["samples_dropped"].as_u64()? >= 200).then_some(())
        }
    })
    .await?;
    proxy.restore();
    wait_acked(&status, acked + 4).await?;

    let exit = edge.terminate(Duration::from_secs(60)).await?;
    assert!(exit.success(), "edge exit {exit}\n{}", edge.log_tail(30));
    let summary = edge
        .stdout_lines()
        .into_iter()
        .find(|l| l.starts_with("bess-edge: stopped;"))
        .expect("summary");
    let numbers: Vec<i64> = summary
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let (batches_acked, left) = (numbers[3], numbers[4]);
    assert_eq!(left, 0, "{summary}");
    wait_for_ledger(&database.url(), batches_acked, LONG).await?;

    let db = connect(&database.url()).await?;
    let recorded = load_record(&[record.as_path()])?;
    let stored = load_stored(&db).await?;
    let verdict = reconcile(&recorded, &stored);
    assert!(
        verdict.doubled.is_empty(),
        "doubled: {:?}",
        verdict.doubled.first()
    );
    assert!(
        verdict.unrecorded.is_empty(),
        "unrecorded: {:?}",
        verdict.unrecorded.first()
    );
    assert!(
        verdict.mismatched.is_empty(),
        "mismatched: {:?}",
        verdict.mismatched.first()
    );

    // Every sample that did not arrive is covered by a gap record, and the
    // gap records count exactly the samples that did not arrive.
    let gaps = db
        .query(
            "SELECT d.name, (extract(epoch FROM g.first_ts) * 1000)::int8, (extract(epoch FROM g.last_ts) * 1000)::int8, g.samples, g.reason
             FROM gaps g JOIN devices d USING (device_id)",
            &[],
        )
        .await?;
    let reported: i64 = gaps.iter().map(|g| g.get::<_, i64>(3)).sum();
    assert!(
        !verdict.lost.is_empty(),
        "the outage should have overflowed the cap"
    );
    assert_eq!(
        reported as usize,
        verdict.lost.len(),
        "gap records count exactly the dropped samples"
    );
    for (device, point, ts) in &verdict.lost {
        let covered = gaps.iter().any(|g| {
            g.get::<_, String>(0) == *device
                && g.get::<_, i64>(1) <= *ts
                && *ts <= g.get::<_, i64>(2)
        });
        assert!(
            covered,
            "lost sample {device}/{point}@{ts} is not covered by a gap record"
        );
    }
    Ok(())
}

/// The broker restarts (stopped, then started again on the same storage)
/// while the edge keeps polling: its messages and the collector's committed
/// offsets survive, the edge buffers meanwhile, and both sides reconnect.
///
/// Traffic is quiesced (the link cut) before the broker stops. Tansu's S3
/// storage, restarted under a produce request it was still writing, was
/// seen to answer the idempotent producer's retry of that request with
/// `DuplicateSequenceNumber` (so the edge counted it delivered) without the
/// record reaching the partition; a Kafka broker with `acks=all` never
/// acknowledges what it has not stored. What this test holds the edge and
/// the collector to is theirs: nothing they sent is lost or doubled across
/// the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_with_persistent_storage_loses_and_doubles_nothing() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().await;
    let scratch = Scratch::new("broker-restart");
    let database = TestDatabase::create("broker_restart").await?;
    let store = S3Store::start(&scratch.dir).await?;
    let proxy_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let broker_port = free_port();
    let proxy = LinkProxy::start(proxy_listener, ([127, 0, 0, 1], broker_port).into())?;
    let mut broker =
        Broker::start_persistent_advertising(&scratch.dir, broker_port, proxy.addr.port(), &store)
            .await?;
    let brokers = proxy.addr.to_string();
    let sim = start_sim(&scratch.dir, 3, 18).await?;
    let (collector, _) =
        start_collector(&scratch.dir, "collector", &database.url(), &brokers).await?;
    let config = write_edge_config(&scratch.dir, sim.addr, &brokers, "")?;
    let record = scratch.path("record.jsonl");
    let (edge, status) = start_edge(&scratch.dir, "edge", &config, &record).await?;
    wait_for_ledger(&database.url(), 3, LONG).await?;

    let backlog = |batches: u64| {
        let status = status.clone();
        wait_for("a backlog in the edge buffer", LONG, move || {
            let status = status.clone();
            async move {
                let (_, s) = get_json(&format!("{status}/status")).await.ok()?;
                (s["buffer"]["batches"].as_u64()? >= batches).then_some(())
            }
        })
    };
    // Cut, and let the broker finish what it was handling (the edge's
    // buffer grows meanwhile), then restart it.
    proxy.cut();
    backlog(2).await?;
    broker.stop().await?;
    // The edge keeps sealing while the broker is away.
    backlog(4).await?;
    broker.resume().await?;
    proxy.restore();
    let acked = edge_acked(&status).await.unwrap_or(0);
    wait_acked(&status, acked + 4).await?;
    let mut collector = collector;
    assert!(
        collector.is_running(),
        "the collector must ride out a broker restart\n{}",
        collector.log_tail(20)
    );
    stop_and_count(edge, &[record], &database.url(), 0).await
}

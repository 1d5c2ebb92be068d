//! `SampleWriter` against a real database, each body on plain PostgreSQL
//! and on TimescaleDB: exactly-once writes through the ledger, and bad
//! messages set aside with their reason.

#[macro_use]
mod support;

use bess_collector::message::IngestMessage;
use bess_collector::writer::SampleWriter;
use bess_protocol::*;
use bess_tests::TestDatabase;
use support::Backend;

fn catalog() -> Catalog {
    Catalog {
        devices: vec![DeviceInfo {
            name: "bms-1".into(),
            model: "test".into(),
        }],
        groups: vec![GroupInfo {
            device: 0,
            name: "fast".into(),
            interval_ms: 1000,
            points: vec![
                PointInfo::new("soc", "%", PointKind::Analog, 0.01, 0.0),
                PointInfo::new("power", "W", PointKind::Analog, 1.0, 0.0),
            ],
        }],
    }
}

fn batch(seq: u64, with_catalog: bool, first_ts: i64, frames: usize) -> Batch {
    let catalog = catalog();
    Batch {
        site: SiteId::new("site-w").unwrap(),
        seq: BatchSeq(seq),
        catalog_hash: catalog.hash(),
        catalog: with_catalog.then_some(catalog),
        frames: (0..frames)
            .map(|i| Frame {
                group: GroupIndex(0),
                ts_ms: first_ts + i as i64 * 1000,
                values: vec![
                    Reading::Int(5000 + i as i64),
                    Reading::Missing(MissingReason::Exception(2)),
                ],
            })
            .collect(),
        gaps: vec![],
    }
}

fn message(offset: i64, payload: Vec<u8>) -> IngestMessage {
    IngestMessage {
        topic: "t".into(),
        partition: 0,
        offset,
        key: Some(b"site-w".to_vec()),
        payload,
        received_ms: 0,
    }
}

async fn writer(backend: Backend, database: &TestDatabase) -> SampleWriter {
    let (pool, storage) = backend.prepare(database, 2).await;
    SampleWriter::new(pool, storage)
}

async fn count(database: &TestDatabase, sql: &str) -> i64 {
    database
        .client()
        .await
        .unwrap()
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

on_both_backends!(a_redelivered_batch_is_skipped_and_counted_as_duplicate);
async fn a_redelivered_batch_is_skipped_and_counted_as_duplicate(backend: Backend) {
    let database = backend.database("writer_dup").await;
    let writer = writer(backend, &database).await;
    let first = message(
        0,
        batch(1, true, 1_700_000_000_000, 3)
            .encode(Codec::Zstd)
            .unwrap(),
    );
    let second = message(
        1,
        batch(2, false, 1_700_000_003_000, 2)
            .encode(Codec::Zstd)
            .unwrap(),
    );

    let outcome = writer
        .write(&[first.clone(), second.clone()])
        .await
        .unwrap();
    assert_eq!(
        (
            outcome.batches_written,
            outcome.batches_duplicate,
            outcome.samples_written
        ),
        (2, 0, 10)
    );

    // The same two again (a redelivery after a crash), plus one twice in one chunk.
    let outcome = writer
        .write(&[first.clone(), second.clone(), first])
        .await
        .unwrap();
    assert_eq!(
        (
            outcome.batches_written,
            outcome.batches_duplicate,
            outcome.samples_written
        ),
        (0, 3, 0)
    );
    assert_eq!(count(&database, "SELECT count(*) FROM frames").await, 5);
    assert_eq!(
        count(&database, "SELECT count(*) FROM batch_ledger").await,
        2
    );
}

on_both_backends!(values_are_scaled_and_missing_ones_keep_their_reason);
async fn values_are_scaled_and_missing_ones_keep_their_reason(backend: Backend) {
    let database = backend.database("writer_values").await;
    let writer = writer(backend, &database).await;
    writer
        .write(&[message(
            0,
            batch(1, true, 1_700_000_000_000, 1)
                .encode(Codec::None)
                .unwrap(),
        )])
        .await
        .unwrap();
    let row = database
        .client()
        .await
        .unwrap()
        .query_one("SELECT vals, status FROM frames", &[])
        .await
        .unwrap();
    let vals: Vec<Option<f64>> = row.get(0);
    let status: Vec<i16> = row.get(1);
    assert_eq!(vals, vec![Some(50.0), None]);
    assert_eq!(status, vec![0, MissingReason::Exception(2).code() as i16]);
}

on_both_backends!(a_new_instance_resolves_a_catalog_another_one_registered);
async fn a_new_instance_resolves_a_catalog_another_one_registered(backend: Backend) {
    let database = backend.database("writer_catalog").await;
    writer(backend, &database)
        .await
        .write(&[message(
            0,
            batch(1, true, 1_700_000_000_000, 1)
                .encode(Codec::Zstd)
                .unwrap(),
        )])
        .await
        .unwrap();
    let fresh = writer(backend, &database).await;
    let outcome = fresh
        .write(&[message(
            1,
            batch(2, false, 1_700_000_001_000, 1)
                .encode(Codec::Zstd)
                .unwrap(),
        )])
        .await
        .unwrap();
    assert_eq!(outcome.batches_written, 1);
    assert_eq!(outcome.messages_rejected, 0);
}

on_both_backends!(bad_messages_are_set_aside_with_the_reason_and_the_rest_is_written);
async fn bad_messages_are_set_aside_with_the_reason_and_the_rest_is_written(backend: Backend) {
    let database = backend.database("writer_bad").await;
    let writer = writer(backend, &database).await;
    let mut wrong_hash = batch(3, true, 1_700_000_000_000, 1);
    wrong_hash.catalog_hash = CatalogHash(1);
    let mut wrong_width = batch(4, true, 1_700_000_000_000, 1);
    wrong_width.frames[0].values.pop();
    let messages = [
        message(0, b"garbage, not a batch".to_vec()),
        message(
            1,
            batch(1, false, 1_700_000_000_000, 1)
                .encode(Codec::Zstd)
                .unwrap(),
        ), // catalog never seen
        message(2, wrong_hash.encode(Codec::Zstd).unwrap()),
        message(3, wrong_width.encode(Codec::Zstd).unwrap()),
        message(
            4,
            batch(5, true, 1_700_000_000_000, 2)
                .encode(Codec::Zstd)
                .unwrap(),
        ),
    ];
    let outcome = writer.write(&messages).await.unwrap();
    assert_eq!(outcome.messages_rejected, 4);
    assert_eq!(outcome.batches_written, 1);
    let client = database.client().await.unwrap();
    let reasons: Vec<String> = client
        .query(
            "SELECT reason FROM rejected_messages ORDER BY kafka_offset",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        reasons[0].starts_with("undecodable: bad magic"),
        "{reasons:?}"
    );
    assert!(reasons[1].starts_with("unknown catalog"), "{reasons:?}");
    assert!(reasons[2].contains("does not match"), "{reasons:?}");
    assert!(reasons[3].contains("has 1 values"), "{reasons:?}");
    // Re-delivery of the same bad message does not set it aside twice.
    writer.write(&messages[..1]).await.unwrap();
    assert_eq!(
        count(&database, "SELECT count(*) FROM rejected_messages").await,
        4
    );
}

on_both_backends!(migrations_are_safe_to_run_from_several_instances_at_once);
async fn migrations_are_safe_to_run_from_several_instances_at_once(backend: Backend) {
    let database = backend.database("writer_migrate").await;
    let url = database.url();
    let runs = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let pool = bess_collector::service::pool(&url, 1).unwrap();
            bess_collector::service::prepare_database_with(
                &pool,
                std::time::Duration::from_secs(10),
                backend.preference(),
            )
            .await
        })
    });
    for run in futures::future::join_all(runs).await {
        assert_eq!(run.unwrap().unwrap(), backend.storage());
    }
    assert_eq!(
        count(&database, "SELECT count(*) FROM schema_migrations").await,
        backend.migration_count()
    );
}

on_both_backends!(a_second_instance_keeps_the_backend_and_data_of_an_existing_schema);
async fn a_second_instance_keeps_the_backend_and_data_of_an_existing_schema(backend: Backend) {
    use bess_collector::storage::StoragePreference;
    let database = backend.database("writer_second").await;
    let first = writer(backend, &database).await;
    first
        .write(&[message(
            0,
            batch(1, true, 1_700_000_000_000, 3)
                .encode(Codec::Zstd)
                .unwrap(),
        )])
        .await
        .unwrap();

    // A second instance with the default `--storage auto` finds the schema
    // and keeps its backend; nothing is applied again.
    let pool = bess_collector::service::pool(&database.url(), 2).unwrap();
    let again =
        bess_collector::service::prepare_database(&pool, std::time::Duration::from_secs(10))
            .await
            .unwrap();
    assert_eq!(again, backend.storage());
    let mut client = database.client().await.unwrap();
    let applied = bess_collector::migrations::apply(&mut client, StoragePreference::Auto)
        .await
        .unwrap();
    assert!(applied.versions.is_empty(), "{:?}", applied.versions);
    assert_eq!(
        count(&database, "SELECT count(*) FROM schema_migrations").await,
        backend.migration_count()
    );

    // Its writes continue the first one's: a redelivery is a duplicate, a new batch is written.
    let second = SampleWriter::new(pool, again);
    let outcome = second
        .write(&[
            message(
                0,
                batch(1, true, 1_700_000_000_000, 3)
                    .encode(Codec::Zstd)
                    .unwrap(),
            ),
            message(
                1,
                batch(2, false, 1_700_000_003_000, 2)
                    .encode(Codec::Zstd)
                    .unwrap(),
            ),
        ])
        .await
        .unwrap();
    assert_eq!((outcome.batches_duplicate, outcome.batches_written), (1, 1));
    assert_eq!(count(&database, "SELECT count(*) FROM frames").await, 5);

    // Asking for the other backend is refused, naming both.
    let other = match backend {
        Backend::PostgreSql => StoragePreference::TimescaleDb,
        Backend::TimescaleDb => StoragePreference::PostgreSql,
    };
    let err = bess_collector::migrations::apply(&mut client, other)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(backend.storage().as_str()) && err.contains("requested"),
        "{err}"
    );
}

on_both_backends!(gap_records_are_stored_with_the_batch_that_carried_them_once);
async fn gap_records_are_stored_with_the_batch_that_carried_them_once(backend: Backend) {
    let database = backend.database("writer_gaps").await;
    let writer = writer(backend, &database).await;
    let mut with_gap = batch(1, true, 1_700_000_000_000, 1);
    with_gap.gaps.push(Gap {
        device: 0,
        first_ts_ms: 1_699_999_000_000,
        last_ts_ms: 1_699_999_059_000,
        samples: 120,
        reason: GapReason::DiskCap,
    });
    let m = message(0, with_gap.encode(Codec::Zstd).unwrap());
    let outcome = writer.write(std::slice::from_ref(&m)).await.unwrap();
    assert_eq!(outcome.gaps_written, 1);
    writer.write(&[m]).await.unwrap(); // redelivered: no second gap row
    let row = database
        .client()
        .await
        .unwrap()
        .query_one(
            "SELECT d.name, g.samples, g.reason FROM gaps g JOIN devices d USING (device_id)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, i64>(1),
            row.get::<_, String>(2)
        ),
        ("bms-1".into(), 120, "disk_cap".into())
    );

    let mut bad_device = batch(2, false, 1_700_000_001_000, 1);
    bad_device.gaps.push(Gap {
        device: 9,
        first_ts_ms: 0,
        last_ts_ms: 0,
        samples: 1,
        reason: GapReason::DiskCap,
    });
    let outcome = writer
        .write(&[message(1, bad_device.encode(Codec::Zstd).unwrap())])
        .await
        .unwrap();
    assert_eq!(outcome.messages_rejected, 1);
    assert_eq!(outcome.rejected[0].class.as_str(), "bad_frame");
}

on_both_backends!(a_whole_site_gap_from_a_corrupt_edge_buffer_is_stored_without_a_device);
async fn a_whole_site_gap_from_a_corrupt_edge_buffer_is_stored_without_a_device(backend: Backend) {
    let database = backend.database("writer_site_gap").await;
    let writer = writer(backend, &database).await;
    let mut with_gap = batch(1, true, 1_700_000_000_000, 1);
    with_gap.gaps.push(Gap {
        device: u16::MAX,
        first_ts_ms: 1_699_999_000_000,
        last_ts_ms: 1_699_999_500_000,
        samples: 0,
        reason: GapReason::BufferCorrupt,
    });
    let outcome = writer
        .write(&[message(0, with_gap.encode(Codec::Zstd).unwrap())])
        .await
        .unwrap();
    assert_eq!(
        (
            outcome.batches_written,
            outcome.messages_rejected,
            outcome.gaps_written
        ),
        (1, 0, 1)
    );
    let row = database
        .client()
        .await
        .unwrap()
        .query_one("SELECT device_id, reason FROM gaps", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, Option<i32>>(0), row.get::<_, String>(1)),
        (None, "buffer_corrupt".into())
    );
}

/// What a registry resolved, as comparable ids.
fn ids(layouts: &bess_collector::catalog::CatalogLayouts) -> Vec<(i32, i32, Vec<i32>)> {
    layouts
        .groups
        .iter()
        .map(|l| {
            (
                l.layout_id,
                l.device_id,
                l.points.iter().map(|p| p.point_id).collect(),
            )
        })
        .collect()
}

on_both_backends!(a_restarted_collector_reads_registered_catalogs_back_with_the_same_ids);
async fn a_restarted_collector_reads_registered_catalogs_back_with_the_same_ids(backend: Backend) {
    use bess_collector::catalog::CatalogRegistry;
    let database = backend.database("catalog_restart").await;
    let _ = writer(backend, &database).await; // migrations
    let mut client = database.client().await.unwrap();
    let catalog = catalog();
    let before = CatalogRegistry::default();
    let site = before.site_id(&client, "site-r").await.unwrap();
    let registered = before
        .register(&mut client, site, catalog.hash(), &catalog)
        .await
        .unwrap();

    // A new instance (empty caches) given the catalog, or only its hash.
    let after = CatalogRegistry::default();
    let again = after
        .register(&mut client, site, catalog.hash(), &catalog)
        .await
        .unwrap();
    assert_eq!(ids(&again), ids(&registered));
    assert_eq!(again.device_ids, registered.device_ids);
    assert_eq!(
        again.groups[0].points[0].scale, 0.01,
        "scale from the catalog"
    );
    let looked_up = CatalogRegistry::default()
        .lookup(&mut client, site, catalog.hash())
        .await
        .unwrap()
        .expect("known catalog");
    assert_eq!(ids(&looked_up), ids(&registered));

    // A changed catalog (another point) is registered anew, keeping the old point ids.
    let mut grown = catalog.clone();
    grown.groups[0]
        .points
        .push(PointInfo::new("temp", "°C", PointKind::Analog, 0.1, 0.0));
    let grown_layouts = after
        .register(&mut client, site, grown.hash(), &grown)
        .await
        .unwrap();
    assert_ne!(
        grown_layouts.groups[0].layout_id,
        registered.groups[0].layout_id
    );
    assert_eq!(
        grown_layouts.groups[0].points[..2]
            .iter()
            .map(|p| p.point_id)
            .collect::<Vec<_>>(),
        ids(&registered)[0].2
    );
    assert_eq!(count(&database, "SELECT count(*) FROM layouts").await, 2);
    assert_eq!(count(&database, "SELECT count(*) FROM points").await, 3);
}

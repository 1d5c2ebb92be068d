//! The signature check on a real database: only batches signed by a key
//! enrolled for their site are stored; every other case is set aside with
//! its reason and stores nothing, and what is stored is counted exactly.

#[macro_use]
mod support;

use std::sync::Arc;

use bess_collector::dead_letter::RejectClass;
use bess_collector::message::IngestMessage;
use bess_collector::site_keys::{store, Enrolment, SignaturePolicy, SiteKeys};
use bess_collector::writer::SampleWriter;
use bess_protocol::*;
use bess_tests::TestDatabase;
use support::Backend;

const T0: i64 = 1_764_000_000_000;

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

/// Batch `seq` of `site`: 10 frames of 2 samples from `T0 + seq * 10 s`.
fn batch(site: &str, seq: u64) -> Batch {
    let catalog = catalog();
    Batch {
        site: SiteId::new(site).unwrap(),
        seq: BatchSeq(seq),
        catalog_hash: catalog.hash(),
        catalog: (seq == 1).then_some(catalog),
        frames: (0..10)
            .map(|i| Frame {
                group: GroupIndex(0),
                ts_ms: T0 + (seq as i64 * 10 + i) * 1000,
                values: vec![Reading::Int(5000 + i), Reading::Int(-i)],
            })
            .collect(),
        gaps: vec![],
    }
}

fn signed(site: &str, seq: u64, signer: &SiteSigner) -> Vec<u8> {
    batch(site, seq)
        .encode_signed(Codec::Zstd, Effort::Fast, signer)
        .unwrap()
}

fn message(offset: i64, payload: Vec<u8>) -> IngestMessage {
    IngestMessage {
        topic: "t".into(),
        partition: 0,
        offset,
        key: None,
        payload,
        received_ms: 0,
    }
}

async fn setup(
    backend: Backend,
    database: &TestDatabase,
    policy: SignaturePolicy,
) -> (SampleWriter, Arc<SiteKeys>, deadpool_postgres::Pool) {
    let (pool, storage) = backend.prepare(database, 3).await;
    let keys = SiteKeys::new(policy);
    keys.refresh(&**pool.get().await.unwrap()).await.unwrap();
    let writer = SampleWriter::new(pool.clone(), storage).with_site_keys(keys.clone());
    (writer, keys, pool)
}

async fn enrol(pool: &deadpool_postgres::Pool, site: &str, key: &SiteSigner) {
    let mut client = pool.get().await.unwrap();
    store::enrol(
        &mut client,
        &Enrolment {
            site: site.into(),
            public_key: key.public_key(),
            valid_from: None,
            valid_until: None,
            note: String::new(),
            by: "test".into(),
        },
    )
    .await
    .unwrap();
}

async fn samples(database: &TestDatabase) -> i64 {
    let db = database.client().await.unwrap();
    db.query_one(
        "SELECT coalesce(sum(samples), 0)::int8 FROM batch_ledger",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

on_both_backends!(only_batches_signed_by_their_sites_enrolled_key_are_stored);
async fn only_batches_signed_by_their_sites_enrolled_key_are_stored(backend: Backend) {
    let database = backend.database("signatures_cases").await;
    let (writer, keys, pool) = setup(backend, &database, SignaturePolicy::STRICT).await;
    let (site_a, site_b) = (
        SiteSigner::from_seed([1; 32]),
        SiteSigner::from_seed([2; 32]),
    );
    enrol(&pool, "site-a", &site_a).await;
    enrol(&pool, "site-b", &site_b).await;
    keys.refresh(&**pool.get().await.unwrap()).await.unwrap();

    let good = signed("site-a", 1, &site_a);
    let mut tampered = signed("site-a", 2, &site_a);
    let at = tampered.len() - 100; // inside the body
    tampered[at] ^= 0x01;
    let mut renumbered = signed("site-a", 3, &site_a);
    renumbered[8 + 6 + 7] = 9; // seq 3 -> 9: a replay under a new number
    let cases: Vec<(Vec<u8>, Option<RejectClass>)> = vec![
        (good.clone(), None),
        (
            batch("site-a", 4).encode(Codec::Zstd).unwrap(),
            Some(RejectClass::Unsigned),
        ),
        (tampered, Some(RejectClass::BadSignature)),
        (renumbered, Some(RejectClass::BadSignature)),
        // Site A's batch signed with site B's key.
        (signed("site-a", 5, &site_b), Some(RejectClass::UnknownKey)),
        // A site nobody enrolled.
        (
            signed("site-x", 1, &SiteSigner::from_seed([9; 32])),
            Some(RejectClass::UnknownSite),
        ),
        (signed("site-a", 6, &site_a), None),
        // The same batch again: a valid signature, the ledger's duplicate.
        (good, None),
    ];
    let messages: Vec<IngestMessage> = cases
        .iter()
        .enumerate()
        .map(|(i, (payload, _))| message(i as i64, payload.clone()))
        .collect();
    let outcome = writer.write(&messages).await.unwrap();
    for (i, (_, expected)) in cases.iter().enumerate() {
        let got = outcome
            .rejected
            .iter()
            .find(|r| r.message == i)
            .map(|r| r.class);
        assert_eq!(got, *expected, "case {i}: {:?}", outcome.rejected);
    }
    assert_eq!(outcome.batches_written, 2);
    assert_eq!(outcome.batches_duplicate, 1);
    // Exactly the two good batches' samples: 2 × 10 frames × 2 points.
    assert_eq!(samples(&database).await, 40);
    let db = database.client().await.unwrap();
    let sites: i64 = db
        .query_one("SELECT count(*) FROM sites WHERE name = 'site-x'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sites, 0, "a refused site is never registered");
}

on_both_backends!(a_revoked_key_or_one_outside_its_window_signs_nothing_more);
async fn a_revoked_key_or_one_outside_its_window_signs_nothing_more(backend: Backend) {
    let database = backend.database("signatures_revoke").await;
    let (writer, keys, pool) = setup(backend, &database, SignaturePolicy::STRICT).await;
    let (old, new) = (
        SiteSigner::from_seed([3; 32]),
        SiteSigner::from_seed([4; 32]),
    );
    let mut client = pool.get().await.unwrap();
    // Rotation: the old key signs readings before T0 + 35 s, the new one after.
    let cut =
        time::OffsetDateTime::from_unix_timestamp_nanos((T0 + 35_000) as i128 * 1_000_000).unwrap();
    for (key, from, until) in [(&old, None, Some(cut)), (&new, Some(cut), None)] {
        store::enrol(
            &mut client,
            &Enrolment {
                site: "site-r".into(),
                public_key: key.public_key(),
                valid_from: from,
                valid_until: until,
                note: String::new(),
                by: "test".into(),
            },
        )
        .await
        .unwrap();
    }
    keys.refresh(&**client).await.unwrap();
    // Batches 1-2 cover T0+10..29 s (old key); 3 covers 30..39 s (straddles
    // the cut: neither key covers it whole); 4 covers 40..49 s (new key).
    let outcome = writer
        .write(&[
            message(0, signed("site-r", 1, &old)),
            message(1, signed("site-r", 2, &old)),
            message(2, signed("site-r", 3, &old)),
            message(3, signed("site-r", 4, &old)),
            message(4, signed("site-r", 4, &new)),
        ])
        .await
        .unwrap();
    let classes: Vec<(usize, RejectClass)> = outcome
        .rejected
        .iter()
        .map(|r| (r.message, r.class))
        .collect();
    assert_eq!(
        classes,
        vec![(2, RejectClass::ExpiredKey), (3, RejectClass::ExpiredKey)]
    );
    assert_eq!(outcome.batches_written, 3);

    store::revoke(&mut client, "site-r", new.key_id(), "test")
        .await
        .unwrap();
    keys.refresh(&**client).await.unwrap();
    let outcome = writer
        .write(&[message(5, signed("site-r", 5, &new))])
        .await
        .unwrap();
    assert_eq!(outcome.rejected[0].class, RejectClass::RevokedKey);
    assert_eq!(samples(&database).await, 3 * 20);
}

on_both_backends!(
    a_key_enrolled_after_the_table_was_loaded_is_found_and_pinning_takes_the_first_key_only
);
async fn a_key_enrolled_after_the_table_was_loaded_is_found_and_pinning_takes_the_first_key_only(
    backend: Backend,
) {
    let database = backend.database("signatures_pin").await;
    let (writer, _keys, pool) = setup(
        backend,
        &database,
        SignaturePolicy {
            require: true,
            pin_first_key: true,
        },
    )
    .await;
    // Enrolled after the writer loaded its keys: found in the database.
    let late = SiteSigner::from_seed([5; 32]);
    enrol(&pool, "site-late", &late).await;
    let pinned = SiteSigner::from_seed([6; 32]);
    let intruder = SiteSigner::from_seed([7; 32]);
    let outcome = writer
        .write(&[
            message(0, signed("site-late", 1, &late)),
            // Batch 1 carries the catalog, so its key: pinned.
            message(1, signed("site-new", 1, &pinned)),
            message(2, signed("site-new", 2, &pinned)),
            // Another key for the same site, later: refused.
            message(3, signed("site-new", 3, &intruder)),
        ])
        .await
        .unwrap();
    let classes: Vec<(usize, RejectClass)> = outcome
        .rejected
        .iter()
        .map(|r| (r.message, r.class))
        .collect();
    assert_eq!(classes, vec![(3, RejectClass::UnknownKey)]);
    let listed = store::list(&**pool.get().await.unwrap(), Some("site-new"))
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key_id, pinned.key_id());
    assert_eq!(listed[0].note, "pinned on first use");
    assert_eq!(samples(&database).await, 3 * 20);
}

on_both_backends!(unsigned_batches_are_stored_only_where_the_policy_allows_them);
async fn unsigned_batches_are_stored_only_where_the_policy_allows_them(backend: Backend) {
    let database = backend.database("signatures_optional").await;
    let (writer, _keys, _pool) = setup(backend, &database, SignaturePolicy::MIGRATING).await;
    let outcome = writer
        .write(&[
            message(0, batch("site-u", 1).encode(Codec::Zstd).unwrap()),
            // Signed but unknown: still refused when unsigned ones are allowed.
            message(1, signed("site-u", 2, &SiteSigner::from_seed([8; 32]))),
        ])
        .await
        .unwrap();
    assert_eq!(outcome.batches_written, 1);
    assert_eq!(outcome.rejected.len(), 1);
    assert_eq!(outcome.rejected[0].class, RejectClass::UnknownSite);
}

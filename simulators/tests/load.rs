//! The load generator against a real Kafka-compatible broker: everything
//! it reports as sent is on the topic, and every message is a valid batch.

use std::{collections::BTreeMap, time::Duration};

use bess_protocol::Batch;
use bess_sim::load::{run, LoadConfig, POINTS_PER_FRAME};
use bess_tests::{Broker, Scratch};
use rdkafka::{
    consumer::{Consumer as _, StreamConsumer},
    ClientConfig, Message as _,
};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn load_generator_writes_valid_batches_that_decode_to_the_reported_sample_count() {
    let scratch = Scratch::new("sim-load");
    let broker = Broker::start(&scratch.dir).await.unwrap();
    let config = LoadConfig {
        live_topic: None,
        brokers: broker.brokers(),
        topic: "bess.telemetry.load-test".into(),
        sites: 3,
        units: 2,
        rate: 900,
        duration: Duration::from_secs(2),
        batch_interval: Duration::from_millis(500),
        seed: 1,
        kafka_properties: vec![],
        progress_every: Duration::from_secs(1),
    };
    let summary = run(&config, CancellationToken::new()).await.unwrap();
    assert_eq!(summary.failed, 0, "broker log: {}", broker.log_tail());
    assert!(summary.batches >= 3 && summary.samples > 0);

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.brokers())
        .set("group.id", "sim-load-test")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[config.topic.as_str()]).unwrap();
    let (mut batches, mut samples) = (0_u64, 0_u64);
    let mut by_site: BTreeMap<String, Vec<Batch>> = BTreeMap::new();
    while batches < summary.batches {
        let message = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .expect("a message")
            .unwrap();
        let batch = Batch::decode(message.payload().unwrap()).expect("a valid batch");
        assert_eq!(message.key(), Some(batch.site.as_str().as_bytes()));
        batches += 1;
        samples += batch.sample_count() as u64;
        by_site
            .entry(batch.site.as_str().to_owned())
            .or_default()
            .push(batch);
    }
    assert_eq!((batches, samples), (summary.batches, summary.samples));
    assert_eq!(samples % POINTS_PER_FRAME as u64, 0);
    assert_eq!(by_site.len(), 3);
    for site in by_site.values() {
        assert!(
            site[0].catalog.is_some(),
            "first batch of a site carries the catalog"
        );
        assert!(
            site.windows(2).all(|w| w[1].seq.0 == w[0].seq.0 + 1),
            "sequence numbers follow each other"
        );
        assert!(
            site[0].seq.0 > 1_600_000_000_000_000,
            "sequence starts at unix ms x 1000"
        );
    }
}

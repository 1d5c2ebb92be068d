//! `IngestMessage`: one Kafka message as the ingest takes it off the topic,
//! owned, with the time it was received. The writer decodes it, the
//! dead-letter producer hands it on unchanged; neither needs the consumer.

/// One message as taken off the topic.
#[derive(Debug, Clone)]
pub struct IngestMessage {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// When it was taken off the consumer (Unix epoch milliseconds).
    pub received_ms: i64,
}

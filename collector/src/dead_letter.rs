//! Dead letters: messages that are not valid batches. Each one is recorded
//! in `rejected_messages` inside the chunk's transaction (the durable local
//! record, queryable with SQL) and then produced, unchanged, to the
//! dead-letter topic with the reason and its origin in headers, so other
//! tools can inspect or replay it. The chunk's offsets are stored only after
//! the commit *and* the dead-letter delivery reports.

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::time::Duration;

use crate::message::IngestMessage;

/// Header names on a dead-letter message.
pub const HEADER_REASON_CLASS: &str = "bess-reason-class";
pub const HEADER_REASON: &str = "bess-reason";
pub const HEADER_SOURCE_TOPIC: &str = "bess-source-topic";
pub const HEADER_SOURCE_PARTITION: &str = "bess-source-partition";
pub const HEADER_SOURCE_OFFSET: &str = "bess-source-offset";

/// Why a message was set aside: the `reason` label of
/// `bess_collector_messages_rejected_by_reason_total` and the
/// `bess-reason-class` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectClass {
    /// Not a batch at all (bad magic, truncated, corrupt body, ...).
    Undecodable,
    /// A batch of a format version, codec or flag this build does not read.
    UnsupportedVersion,
    /// No batch of this site ever carried the catalog it names.
    UnknownCatalog,
    /// The catalog it carries does not hash to the hash in its header.
    CatalogMismatch,
    /// Frames or gaps that do not fit the catalog (group, width, device).
    BadFrame,
    /// Not signed, where signatures are required.
    Unsigned,
    /// Signed, but its site has no key enrolled.
    UnknownSite,
    /// Signed by a key its site does not have (another site's, or none).
    UnknownKey,
    /// Signed by a revoked key.
    RevokedKey,
    /// Signed by a key whose validity window does not cover its readings.
    ExpiredKey,
    /// The signature does not match: altered, re-numbered, or forged.
    BadSignature,
}

impl RejectClass {
    pub const ALL: [RejectClass; 11] = [
        RejectClass::Undecodable,
        RejectClass::UnsupportedVersion,
        RejectClass::UnknownCatalog,
        RejectClass::CatalogMismatch,
        RejectClass::BadFrame,
        RejectClass::Unsigned,
        RejectClass::UnknownSite,
        RejectClass::UnknownKey,
        RejectClass::RevokedKey,
        RejectClass::ExpiredKey,
        RejectClass::BadSignature,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectClass::Undecodable => "undecodable",
            RejectClass::UnsupportedVersion => "unsupported_version",
            RejectClass::UnknownCatalog => "unknown_catalog",
            RejectClass::CatalogMismatch => "catalog_mismatch",
            RejectClass::BadFrame => "bad_frame",
            RejectClass::Unsigned => "unsigned",
            RejectClass::UnknownSite => "unknown_site",
            RejectClass::UnknownKey => "unknown_key",
            RejectClass::RevokedKey => "revoked_key",
            RejectClass::ExpiredKey => "expired_key",
            RejectClass::BadSignature => "bad_signature",
        }
    }

    pub fn of_decode_error(e: &bess_protocol::DecodeError) -> Self {
        use bess_protocol::DecodeError as E;
        match e {
            E::UnsupportedVersion(_)
            | E::UnknownCodec(_)
            | E::UnknownFlags(_)
            | E::SignatureUnsupported => RejectClass::UnsupportedVersion,
            _ => RejectClass::Undecodable,
        }
    }
}

/// A message set aside, with why.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Index of the message in its chunk.
    pub message: usize,
    pub class: RejectClass,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
#[error("dead-letter delivery of {topic}/{partition}@{offset} failed: {error}")]
pub struct DeadLetterError {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub error: rdkafka::error::KafkaError,
}

/// Produces set-aside messages to the dead-letter topic (idempotent
/// producer, `acks=all`).
#[derive(Clone)]
pub struct DeadLetterProducer {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetterProducer {
    pub fn new(base: &ClientConfig, topic: &str) -> Result<Self, rdkafka::error::KafkaError> {
        let mut config = base.clone();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "30000")
            .set("client.id", "bess-collector-dlq");
        for consumer_only in [
            "group.id",
            "enable.auto.commit",
            "auto.commit.interval.ms",
            "enable.auto.offset.store",
            "auto.offset.reset",
            "session.timeout.ms",
            "heartbeat.interval.ms",
            "enable.partition.eof",
            "queued.max.messages.kbytes",
        ] {
            config.remove(consumer_only);
        }
        Ok(Self {
            producer: config.create()?,
            topic: topic.to_owned(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produce one message and wait for its delivery report.
    pub async fn deliver(
        &self,
        message: &IngestMessage,
        class: RejectClass,
        reason: &str,
    ) -> Result<(), DeadLetterError> {
        let partition = message.partition.to_string();
        let offset = message.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_REASON_CLASS,
                value: Some(class.as_str()),
            })
            .insert(Header {
                key: HEADER_REASON,
                value: Some(reason),
            })
            .insert(Header {
                key: HEADER_SOURCE_TOPIC,
                value: Some(message.topic.as_str()),
            })
            .insert(Header {
                key: HEADER_SOURCE_PARTITION,
                value: Some(partition.as_str()),
            })
            .insert(Header {
                key: HEADER_SOURCE_OFFSET,
                value: Some(offset.as_str()),
            });
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
            .payload(&message.payload)
            .headers(headers);
        if let Some(key) = &message.key {
            record = record.key(key.as_slice());
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(error, _)| DeadLetterError {
                topic: message.topic.clone(),
                partition: message.partition,
                offset: message.offset,
                error,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_format_version_is_classed_apart_from_garbage() {
        let mut bytes = b"BESS\x03\x00\x00\x01a".to_vec();
        bytes.extend_from_slice(&[0; 20]);
        let e = bess_protocol::Batch::decode(&bytes).unwrap_err();
        assert_eq!(
            RejectClass::of_decode_error(&e),
            RejectClass::UnsupportedVersion
        );
        let e = bess_protocol::Batch::decode(b"not a batch at all").unwrap_err();
        assert_eq!(RejectClass::of_decode_error(&e), RejectClass::Undecodable);
    }
}
